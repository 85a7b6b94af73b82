"""Forgetting against continual pre-training: the study's headline curve.

Continual pre-training (CPT) of a chat model C on unlabeled target text buys a target-language
gain and wears away chat behaviour; ElChat's merge is meant to keep the gain and give the chat
behaviour back. One final model is one point of that trade. The curve follows it along CPT:

- stage 02 keeps snapshots of the chat model's CPT (`elchat.cpt.CPTConfig.snapshots`);
- stage 03 (`merge_points`) ElChat-merges every point A_k of the chat model's path, with the
  same layers and t as the final ElChat: E_k = ElChat(C, A_k). The points are k = 0 tokens
  (vocabulary expansion and initialization only, `01_vocab/chat_ve`), every snapshot, and the
  final Chat+VE; `03_merge/forgetting.json` lists them;
- stage 04 (`score_points`) scores A_k ("Chat+VE") and E_k ("ElChat") and C itself on target
  bits per character (held-out target text: the gain, lower is better), English bits per
  character, and chat reply bits per character (the source chat model's own greedy replies scored
  teacher-forced, `elchat.evaluation.reply`: retention, C's own value is the reference), each with
  a 95% bootstrap interval over items; `paired_rows` gives ElChat - Chat+VE at every point with a
  paired bootstrap interval over the same items (`elchat.evaluation.paired`);
- `plot` draws each metric against CPT tokens with interval bands and C as a reference line.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import runs
from .atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from .evaluation import paired, stage
from .merge import elchat_merge

REGIME_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"  # cpt_regime.py --save
LISTING = "forgetting.json"   # in 03_merge: the points of the curve and their two models
TABLE = "forgetting.csv"      # in 04_eval: one row per point x model x metric
CURVES = ("Chat+VE", "ElChat")
TASKS = ["bpc", "reply"]
# (task, metric) -> axis label; the first is the gain, the others retention
METRICS = {("bpc", "bpc"): "target BPC (gain: lower is better)",
           ("reply", "bpc_en"): "chat reply BPC, English prompts (retention: near Chat)",
           ("reply", "bpc_target"): "chat reply BPC, target prompts (retention: near Chat)",
           ("bpc", "bpc_en"): "English BPC (lower is better)"}


def regime_record(preset: str) -> pd.DataFrame | None:
    """The measurement a preset's CPT learning rate was chosen by (`benchmarks/cpt_regime.py
    --save benchmarks/results/cpt_regime_<preset>.csv`), or None when there is none.

    One row per learning rate and point: target-BPC gain over the initialized model and chat reply
    BPC above Chat's, each with a paired interval and whether it is decided.
    Example: `regime_record("micro")["lr"].unique()`.
    """
    path = REGIME_DIR / f"cpt_regime_{preset}.csv"
    return pd.read_csv(path) if path.is_file() else None


def path_points(run) -> list[dict]:
    """The chat model's path through CPT: `[{"step", "tokens", "adapted": dir}]`, step 0 first.

    Step 0 is the vocabulary-expanded chat model before any training (when stage 01 wrote it),
    then every snapshot stage 02 kept (`02_cpt/snapshots.json`), then the final Chat+VE.
    Example: `[p["step"] for p in path_points("runs/micro/am")] == [0, 50, 100, 200]`.
    """
    run = Path(run)
    cpt_dir = runs.stage_dir(run, "02")
    summary = json.loads(runs.require(cpt_dir / "chat_cpt" / "cpt_summary.json", "02").read_text())
    listing = cpt_dir / "snapshots.json"
    snaps = json.loads(listing.read_text()).get("chat_cpt", []) if listing.is_file() else []
    init = runs.stage_dir(run, "01") / "chat_ve"
    points = [{"step": 0, "tokens": 0, "adapted": init}] if runs.has_model(init) else []
    points += [{"step": s["step"], "tokens": s["tokens"], "adapted": cpt_dir / s["path"]} for s in snaps]
    points.append({"step": summary["steps"], "tokens": summary["tokens"], "adapted": cpt_dir / "chat_cpt"})
    return sorted(points, key=lambda p: p["step"])


def merge_points(run, chat, layers, t, final_merged=None) -> list[dict]:
    """Stage 03: ElChat-merge every point of the path; writes and returns the listing.

    Each merge is `elchat.merge.elchat_merge(chat, A_k, 03_merge/forgetting/step-k, layers, t)`,
    the final ElChat's recipe; `final_merged`, when given and present (stage 03's own ElChat of
    the final Chat+VE, same recipe), stands for the last point instead of merging it again.
    Listing rows: `{"step", "tokens", "Chat+VE": dir, "ElChat": dir}` with paths relative to the
    run directory. Example: `merge_points(run, inputs.chat, inputs.layers, inputs.t, out_dir / "elchat")`.
    """
    run = Path(run)
    out_root = runs.stage_dir(run, "03") / "forgetting"
    points = path_points(run)
    rows = []
    for point in points:
        merged = out_root / f"step-{point['step']}"
        if point is points[-1] and final_merged is not None and runs.has_model(Path(final_merged)):
            merged = Path(final_merged)
        else:
            elchat_merge(chat, point["adapted"], merged, layers=layers, t=t)
        rows.append({"step": point["step"], "tokens": point["tokens"],
                     "Chat+VE": _relative(point["adapted"], run), "ElChat": _relative(merged, run)})
    atomic_write_json(runs.stage_dir(run, "03") / LISTING, {"points": rows})
    return read_points(run)


def _relative(path: Path, run: Path) -> str:
    return str(Path(path).resolve().relative_to(run.resolve()))


def read_points(run) -> list[dict]:
    """Stage 03's listing with absolute paths. Example: `read_points(run)[0]["ElChat"]`."""
    run = Path(run)
    listing = json.loads(runs.require(runs.stage_dir(run, "03") / LISTING, "03").read_text())
    return [{**p, **{name: run / p[name] for name in CURVES}} for p in listing["points"]]


def _metric_rows(result: dict, model: str, point: dict | None) -> list[dict]:
    rows = []
    for (task, name), label in METRICS.items():
        entry = result["tasks"].get(task, {}).get(name)
        if not entry or entry.get("value") is None:
            continue
        lo, hi = entry.get("ci95") or (math.nan, math.nan)
        rows.append({"model": model, "step": None if point is None else point["step"],
                     "tokens": None if point is None else point["tokens"], "task": task,
                     "metric": name, "label": label, "value": entry["value"], "ci_low": lo,
                     "ci_high": hi, "n": entry["n"]})
    return rows


def _saved_results(out_dir: Path, limits: dict, max_new_tokens: int) -> dict:
    """The main evaluation's results (`out_dir/results/*.json`) that ran `TASKS` on the same items:
    the same number (`limits`: task -> items or None) and replies of the same length
    (`max_new_tokens`); `{resolved model directory: result cut to TASKS}`."""
    out = {}
    for file in sorted((out_dir / "results").glob("*.json")):
        res = json.loads(file.read_text(encoding="utf-8"))
        meta = res.get("metadata", {})
        if any(t not in res["tasks"] for t in TASKS) or meta.get("max_new_tokens") != max_new_tokens:
            continue
        ran = {t: (meta.get("task_limits") or {}).get(t, meta.get("limit")) or None for t in TASKS}
        if ran == limits:
            out[Path(str(meta["model"])).resolve()] = {"metadata": meta,
                                                       "tasks": {t: res["tasks"][t] for t in TASKS}}
    return out


def score_points(run, lang, out_dir, limit=None, batch_size: int = 8, seed: int = 0,
                 device: str = "auto", task_limits: dict | None = None,
                 decode_batch_size: int | None = None,
                 max_new_tokens: int = stage.DEFAULT_MAX_NEW_TOKENS) -> tuple[pd.DataFrame, dict]:
    """Stage 04: C, then Chat+VE and ElChat at every point, on `TASKS`; writes `out_dir/TABLE`.

    Items per task: `task_limits[task]`, else `limit` (None or 0 = all); `max_new_tokens`: the
    length of the source chat model's replies (pass the main evaluation's, so that every point
    scores the same replies). A model the main evaluation already scored on the same items (C,
    the final Chat+VE and ElChat: its results in `out_dir/results/`) is read back, not scored
    again. Replies are cached in `out_dir/replies` (shared with the main evaluation). Returns
    (the table, `{(model, step): result}` with per-item scores, for `paired_rows`).
    Example: `curve, results = score_points(run, "am", run / "04_eval")`.
    """
    run, out_dir = Path(run), Path(out_dir)
    task_limits = {t: n for t, n in (task_limits or {}).items() if t in TASKS}
    limits = {t: task_limits.get(t, limit) or None for t in TASKS}
    chat = runs.read_sources(run)["chat"]
    jobs = [("Chat", chat, None)] + [(name, p[name], p) for p in read_points(run) for name in CURVES]
    saved = _saved_results(out_dir, limits, max_new_tokens)
    rows, results = [], {}
    for model, path, point in jobs:
        res = saved.get(Path(path).resolve())
        if res is None:
            res = stage.evaluate(path, lang, TASKS, limit=limit, batch_size=batch_size, seed=seed,
                                 device=device, name=model, task_limits=task_limits, source=chat,
                                 cache_dir=out_dir / "replies", decode_batch_size=decode_batch_size,
                                 max_new_tokens=max_new_tokens)
        results[(model, None if point is None else point["step"])] = res
        rows += _metric_rows(res, model, point)
    table = pd.DataFrame(rows)
    atomic_write_text(out_dir / TABLE, table.to_csv(index=False))
    return table, results


def paired_rows(results: dict, seed: int = 0) -> pd.DataFrame:
    """ElChat - Chat+VE at every point and metric, with a paired bootstrap interval over the
    same items (negative = ElChat lower, better for every metric here).

    Example: `paired_rows(score_points(run, "am", out)[1])`.
    """
    rows = []
    for (model, step), res in sorted(results.items(), key=lambda kv: (kv[0][1] is None, kv[0][1] or 0)):
        other = results.get(("Chat+VE", step))
        if model != "ElChat" or other is None:
            continue
        for task, name in METRICS:
            a, b = res["tasks"].get(task, {}).get(name), other["tasks"].get(task, {}).get(name)
            if not a or not b or "items" not in a or "items" not in b:
                continue
            d = paired.difference(a, b, seed=seed)
            rows.append({"step": step, "task": task, "metric": name, "diff": d["value"],
                         "ci_low": d["ci95"][0], "ci_high": d["ci95"][1], "n": d["n"],
                         "verdict": paired.verdict(d, lower_is_better=True)})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path=None, title: str = ""):
    """One panel per metric: value against CPT tokens for Chat+VE and ElChat with 95% bands,
    Chat (C) as a dashed line with its band; saved atomically to `path` when given.

    Example: `fig = plot(pd.read_csv(run / "04_eval/forgetting.csv"))`.
    """
    keys = [k for k in METRICS if ((table["task"] == k[0]) & (table["metric"] == k[1])).any()]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.8), squeeze=False)
    for ax, (task, name) in zip(axes[0], keys):
        rows = table[(table["task"] == task) & (table["metric"] == name)]
        ref = rows[rows["model"] == "Chat"]
        if len(ref):
            ax.axhline(ref["value"].iloc[0], color="black", ls="--", lw=1, label="Chat (C)")
            ax.axhspan(ref["ci_low"].iloc[0], ref["ci_high"].iloc[0], color="black", alpha=0.08)
        for model, color in zip(CURVES, ("tab:red", "tab:blue")):
            curve = rows[rows["model"] == model].sort_values("tokens")
            ax.plot(curve["tokens"], curve["value"], marker="o", color=color, label=model)
            ax.fill_between(curve["tokens"], curve["ci_low"], curve["ci_high"], color=color, alpha=0.2)
        ax.set_xlabel("CPT tokens")
        ax.set_title(f"{METRICS[(task, name)]}\n(n = {int(rows['n'].max())}, 95% bands)", fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Forgetting against CPT{' · ' + title if title else ''}")
    fig.tight_layout()
    if path is not None:
        atomic_save_figure(fig, path)
    plt.close(fig)  # the caller displays it once (a notebook would otherwise show it twice)
    return fig
