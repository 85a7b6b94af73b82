"""Result schema, bootstrap confidence intervals, and the JSON / tidy CSV files the report reads.

One evaluation gives `{"metadata": {...}, "tasks": {task: {metric: {"value", "n", "ci95", "items"}}}}`:
`value` the score, `n` the number of items it is computed over, `ci95` a percentile bootstrap
95% interval [lo, hi] (items resampled with replacement `n_boot` times, seeded, so intervals are
reproducible) or null where a metric has no item-level variation (e.g. wall-clock throughput).
For ratio metrics (bits per character = sum of NLL / sum of characters; corpus chrF) the whole
statistic is recomputed on each resample, not averaged per item.

`items` (where a metric has item-level scores) keeps them so that two models can be compared item
by item (`elchat.evaluation.paired`): `{"id": [...], "num": [...], "den": [...]}` with
value = sum(num) / sum(den) — a mean when every `den` is 1 (accuracy, probabilities), a ratio
otherwise (bits per character: num = bits, den = characters). Items are identified by their
position in the task's fixed item list (or by an explicit id), so the same id means the same
prompt or text for every model. `item_rows` flattens them into the long `items.csv` of stage 04.

The tidy CSV has one row per (model, lang, task, metric): `CSV_COLUMNS`.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text

CSV_COLUMNS = ["model", "lang", "task", "metric", "value", "n", "ci_low", "ci_high"]
ITEM_COLUMNS = ["model", "lang", "task", "metric", "item", "num", "den"]


def metric(value, n: int, ci95=None, items=None) -> dict:
    """One metric entry. Example: `metric(0.5, 20, [0.3, 0.7])`."""
    ci = None if ci95 is None else [float(ci95[0]), float(ci95[1])]
    out = {"value": None if value is None else float(value), "n": int(n), "ci95": ci}
    if items is not None:
        out["items"] = items
    return out


def item_metric(num, den=None, ids=None, seed: int = 0, n_boot: int = 1000) -> dict:
    """sum(num) / sum(den) over items (den defaults to 1: the mean), its bootstrap interval, and the
    items kept for paired comparisons. Example: `item_metric([3, 1], [4, 4])["value"] == 0.5`.
    """
    num = [float(x) for x in num]
    den = [1.0] * len(num) if den is None else [float(x) for x in den]
    ids = [str(i) for i in (range(len(num)) if ids is None else ids)]
    if not len(num) == len(den) == len(ids):
        raise ValueError("item_metric: num, den and ids must have the same length")
    if not num:
        return metric(None, 0)
    pairs = np.array([num, den]).T
    value = pairs[:, 0].sum() / pairs[:, 1].sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    stats = pairs[idx, 0].sum(axis=1) / pairs[idx, 1].sum(axis=1)
    ci = [float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))]
    return metric(value, len(num), ci, {"id": ids, "num": num, "den": den})


def bootstrap_ci(items, statistic=None, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Percentile bootstrap interval of `statistic(resampled items)` (default: the mean).

    `items` is a list (of numbers, or of tuples the statistic understands). Example:
    `bootstrap_ci([1, 0, 1, 1])` -> `[0.25, 1.0]`-ish; `bootstrap_ci([(2, 4), (1, 4)], ratio)`.
    """
    if len(items) == 0:
        return None
    rng = np.random.default_rng(seed)
    if statistic is None:
        values = np.asarray(items, dtype=float)
        idx = rng.integers(0, len(values), size=(n_boot, len(values)))
        stats = values[idx].mean(axis=1)
    else:
        stats = np.array([statistic([items[i] for i in rng.integers(0, len(items), len(items))])
                          for _ in range(n_boot)])
    return [float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))]


def ratio(pairs) -> float:
    """sum of numerators / sum of denominators. Example: `ratio([(2, 4), (1, 4)]) == 0.375`."""
    den = sum(p[1] for p in pairs)
    return sum(p[0] for p in pairs) / den if den else float("nan")


def mean_metric(flags, seed: int = 0, ids=None) -> dict:
    """Mean of 0/1 (or numeric) item scores with its bootstrap interval and the items (ids default
    to positions). Example: `mean_metric([1, 0])["value"] == 0.5`.
    """
    flags = [float(f) for f in flags]
    if not flags:
        return metric(None, 0)
    ids = [str(i) for i in (range(len(flags)) if ids is None else ids)]
    return metric(sum(flags) / len(flags), len(flags), bootstrap_ci(flags, seed=seed),
                  {"id": ids, "num": flags, "den": [1.0] * len(flags)})


def item_rows(results: dict) -> list[dict]:
    """Long rows (`ITEM_COLUMNS`) of every stored item of one result: one per (task, metric, item).

    Example: `item_rows(evaluate(...))[0]` -> `{"model": "Chat", "task": "bpc", "item": "0", ...}`.
    """
    meta = results.get("metadata", {})
    name = meta.get("name") or meta.get("model")
    rows = []
    for task, metrics in results.get("tasks", {}).items():
        for mname, m in metrics.items():
            items = m.get("items") or {}
            for i, a, b in zip(items.get("id", []), items.get("num", []), items.get("den", [])):
                rows.append({"model": name, "lang": meta.get("lang"), "task": task, "metric": mname,
                             "item": i, "num": a, "den": b})
    return rows


def to_rows(results: dict) -> list[dict]:
    """Tidy rows (dicts with `CSV_COLUMNS`) of one result. Example: `to_rows(evaluate(...))[0]["task"]`."""
    meta = results.get("metadata", {})
    rows = []
    for task, metrics in results.get("tasks", {}).items():
        for name, m in metrics.items():
            ci = m.get("ci95") or [None, None]
            rows.append({"model": meta.get("name") or meta.get("model"), "lang": meta.get("lang"),
                         "task": task, "metric": name, "value": m.get("value"), "n": m.get("n"),
                         "ci_low": ci[0], "ci_high": ci[1]})
    return rows


def rows_to_csv(rows: list[dict], columns=None) -> str:
    columns = columns or (list(rows[0]) if rows else CSV_COLUMNS)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def save_results(results: dict, path) -> Path:
    """Write `results` as JSON at `path` and its tidy rows as CSV next to it (same stem), atomically.

    Example: `save_results(r, "runs/micro/am/04_eval/results/ElChat.json")` also writes `ElChat.csv`.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"save_results: expected a .json path, got {path}")
    atomic_write_json(path, results)
    atomic_write_text(path.with_suffix(".csv"), rows_to_csv(to_rows(results), CSV_COLUMNS))
    return path


def load_results(path) -> dict:
    """Read a results JSON written by `save_results`. Example: `load_results(p)["tasks"]["bpc"]`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
