"""Paired comparisons: is model A better than model B on the same items, and how sure are we?

Two models scored on the same prompts or texts differ item by item much less than their scores
vary across items, so the interval of the DIFFERENCE, resampling items jointly for both models
(the paired bootstrap), is far narrower than two separate intervals side by side. Every metric
entry keeps its items (`results.item_metric`: ids with num/den, statistic = sum(num) / sum(den)),
so for items common to A and B:

    diff* = stat_A(items*) - stat_B(items*)   for each resample items* of the common ids (n_boot),
    95% interval = the 2.5% and 97.5% quantiles of diff*.

A claim "A is better than B" (or, with a margin m >= 0, "A is not worse than B by more than m")
is then decided from that interval, oriented so that positive means A is better:
  - "holds"          the whole interval lies above -m;
  - "does not hold"  the whole interval lies below -m;
  - "inconclusive at n = N" otherwise: the data cannot tell at this number of items.
Never a point estimate against a threshold: one item more or less cannot flip a decided verdict
unless the interval was already touching the line. `no_signal` flags metrics at floor or ceiling
for every model (e.g. chrF < 5): differences there decide nothing.
Hand-written (not scipy.stats.bootstrap) because the statistic is a ratio of sums over items
shared by several models, resampled jointly; numpy does it vectorized in milliseconds.
"""
from __future__ import annotations

import numpy as np

N_BOOT = 2000


def _items(entry) -> dict:
    """`{"id", "num", "den"}` of a metric entry (or the items dict itself)."""
    items = entry.get("items", entry) if isinstance(entry, dict) else None
    if not items or "id" not in items:
        raise ValueError("paired comparison needs per-item scores (a metric entry with 'items')")
    return items


def common_arrays(entries) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(common ids, num[k, n], den[k, n]) of k entries over the ids they all have, in A's order."""
    maps = [dict(zip(map(str, it["id"]), zip(it["num"], it["den"]))) for it in map(_items, entries)]
    ids = [i for i in maps[0] if all(i in m for m in maps[1:])]
    num = np.array([[m[i][0] for i in ids] for m in maps], dtype=float).reshape(len(maps), len(ids))
    den = np.array([[m[i][1] for i in ids] for m in maps], dtype=float).reshape(len(maps), len(ids))
    return ids, num, den


def bootstrap(entries, fn, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Point value and paired 95% interval of `fn(stat_1, ..., stat_k)` over the common items.

    `fn` takes numpy arrays (one statistic per model, vectorized over resamples). Example:
    `bootstrap([a, b], lambda x, y: x - y)["ci95"]`.
    """
    ids, num, den = common_arrays(entries)
    n = len(ids)
    if n == 0:
        return {"value": None, "ci95": None, "n": 0}
    value = float(fn(*(num.sum(axis=1) / den.sum(axis=1))))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    stats = num[:, idx].sum(axis=2) / den[:, idx].sum(axis=2)  # [k, n_boot]
    boot = np.asarray(fn(*stats), dtype=float)
    boot = boot[np.isfinite(boot)]
    ci = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))] if boot.size else None
    return {"value": value, "ci95": ci, "n": n}


def difference(a, b, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """stat(A) - stat(B) over their common items with its paired bootstrap interval.

    Example: `difference(elchat["reply"]["bpc_en"], chat_ve["reply"]["bpc_en"])` ->
    `{"value": -0.0009, "ci95": [-0.0013, -0.0004], "n": 186}`.
    """
    return bootstrap([a, b], lambda x, y: x - y, n_boot, seed)


def verdict(result: dict, lower_is_better: bool = False, margin: float = 0.0, line: float = 0.0) -> str:
    """Decide "A better than B (within `margin`)" from a paired interval of A - B (see module doc).

    `line` moves the comparison point (e.g. 1 for a ratio such as a speed-up). Example:
    `verdict({"value": 0.1, "ci95": [0.02, 0.2], "n": 80}) == "holds"`.
    """
    ci, n = result.get("ci95"), result.get("n", 0)
    if not ci or not n:
        return "inconclusive at n = 0"
    lo, hi = (-ci[1] + line, -ci[0] + line) if lower_is_better else (ci[0] - line, ci[1] - line)
    if lo > -margin:
        return "holds"
    if hi < -margin:
        return "does not hold"
    return f"inconclusive at n = {n}"


def no_signal(values, floor: float | None = None, ceiling: float | None = None) -> bool:
    """True when every model's value sits at or below `floor` or every one at or above `ceiling`.

    Example: `no_signal([0.8, 4.1, 2.0], floor=5) is True` (chrF below 5 for all models).
    """
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return True
    return (floor is not None and max(vals) <= floor) or (ceiling is not None and min(vals) >= ceiling)


def entry_from_rows(rows) -> dict:
    """A metric entry with items from rows of stage 04's `items.csv` (columns item, num, den).

    Example: `entry_from_rows(items[(items.model == "Chat") & (items.metric == "bpc")])`.
    """
    return {"items": {"id": [str(i) for i in rows["item"]], "num": list(rows["num"]),
                      "den": list(rows["den"])}}
