"""Result schema, bootstrap confidence intervals, and the JSON / tidy CSV files the report reads.

One evaluation gives `{"metadata": {...}, "tasks": {task: {metric: {"value", "n", "ci95"}}}}`:
`value` the score, `n` the number of items it is computed over, `ci95` a percentile bootstrap
95% interval [lo, hi] (items resampled with replacement `n_boot` times, seeded, so intervals are
reproducible) or null where a metric has no item-level variation (e.g. wall-clock throughput).
For ratio metrics (bits per character = sum of NLL / sum of characters; corpus chrF) the whole
statistic is recomputed on each resample, not averaged per item.

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


def metric(value, n: int, ci95=None) -> dict:
    """One metric entry. Example: `metric(0.5, 20, [0.3, 0.7])`."""
    ci = None if ci95 is None else [float(ci95[0]), float(ci95[1])]
    return {"value": None if value is None else float(value), "n": int(n), "ci95": ci}


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


def mean_metric(flags, seed: int = 0) -> dict:
    """Mean of 0/1 (or numeric) item scores with its bootstrap interval. Example: `mean_metric([1, 0])`."""
    flags = [float(f) for f in flags]
    if not flags:
        return metric(None, 0)
    return metric(sum(flags) / len(flags), len(flags), bootstrap_ci(flags, seed=seed))


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
