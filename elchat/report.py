"""Stage 05: the cross-language report — results table, figures, and a summary of the claims.

Reads, for one preset, every `runs/<preset>/<lang>/`:
  04_eval/results.csv        tidy rows: model, lang, task, metric, value, n, ci_low, ci_high,
                             group ("model" | "sweep"), t   (required for the table)
  04_eval/items.csv          every item score (model, task, metric, item, num, den): paired verdicts
  01_vocab/tokens_per_char.csv, 02_cpt/*/log.csv, 03_merge/layer_angles.csv   (figures, optional)
  04_eval/forgetting.png     stage 04's forgetting-vs-CPT figure, copied as fig_forgetting_<lang>.png
and writes `runs/<preset>/report/` atomically: `results_table.{md,csv}`, `results_long.csv`,
`summary.md`, `missing.txt` and PNG figures. Anything absent is listed, never fatal.

Which numbers are reported is said in ONE place, `METRICS`: table column -> the (task, metric)
pair of results.csv that holds it, whether lower is better (bits and tokens per character), the
chance level where the task records one, and what a relative value is relative to. `wide_table`
pivots tidy results into those columns (stage 04's table and this report's both use it).

The summary decides the papers' claims per language from paired bootstrap intervals of the
difference over the same items (`elchat.evaluation.paired`): "holds", "does not hold" or
"inconclusive at n = ..."; metrics at floor/ceiling for every model say "no signal at this scale":
  chat retention   ElChat vs Chat (within a margin of 1 - RETAIN of Chat's value) and ElChat vs
                   Chat+VE on reply BPC, end-of-turn probability, IFEval strict, chat format
  gain             Chat+VE vs Chat on target BPC; share of it ElChat keeps,
                   (BPC(Chat) - BPC(ElChat)) / (BPC(Chat) - BPC(Chat+VE)) >= KEEP, paired over texts
  ElChat vs CV     the retention metrics and English BPC (same margin)
  copy             ElChat vs ElChat w/o copy on end-of-turn probability, chat format, reply BPC
  VE speed-up      tokens/char Chat+VE vs Chat (paired over texts) and the measured decoding
                   speed-up's interval against 1.
Yamaguchi et al. 2025, "ElChat: Adapting Chat Language Models Using Only Target Unlabeled
Language Data"; Chat Vector: Huang et al. 2024; LEP: Tikhomirov & Chernyshev 2024.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass

import pandas as pd

from . import runs
from .atomic import atomic_dir
from .evaluation import paired


@dataclass(frozen=True)
class Metric:
    """One reported number: where it sits in results.csv and how to read it."""
    task: str
    metric: str
    lower_is_better: bool = False
    chance: str | None = None       # the metric of the same task holding the chance level, if any
    relative_to: str | None = None  # the model a relative value is measured against (stage 04's reference)
    floor: float | None = None      # every model at or below it: no signal at this scale
    ceiling: float | None = None    # every model at or above it: no signal at this scale

    @property
    def arrow(self) -> str:
        return " ↓" if self.lower_is_better else ""


# The ONE list of reported numbers: table column -> Metric, in table order. The notebooks (04, 05),
# the report's table, best marks, summary and figures all read it.
METRICS: dict[str, Metric] = {
    "target BPC":      Metric("bpc", "bpc", lower_is_better=True),
    "chrF en→L":       Metric("mt", "chrf_en2x", floor=5.0),   # chrF 0-100: below 5 is noise
    "chrF L→en":       Metric("mt", "chrf_x2en", floor=5.0),
    "MC accuracy":     Metric("mc", "accuracy", chance="chance", floor=0.30),  # chance 0.25
    "reply BPC (en)":  Metric("reply", "bpc_en", lower_is_better=True),
    "reply BPC (L)":   Metric("reply", "bpc_target", lower_is_better=True),
    "end-of-turn p (en)": Metric("reply", "eot_en", floor=0.01, ceiling=0.99),
    "end-of-turn p (L)": Metric("reply", "eot_target", floor=0.01, ceiling=0.99),
    "IFEval strict":   Metric("ifeval", "prompt_strict", floor=0.0, ceiling=1.0),
    "IFEval loose":    Metric("ifeval", "prompt_loose", floor=0.0, ceiling=1.0),
    "chat format":     Metric("chat_format", "all_ok", floor=0.0, ceiling=1.0),
    "refuses harmful": Metric("safety", "refusal_harmful", floor=0.0, ceiling=1.0),
    "helps benign":    Metric("safety", "compliance_benign", floor=0.0, ceiling=1.0),
    "English BPC":     Metric("bpc", "bpc_en", lower_is_better=True),
    "tokens/char":     Metric("speed", "tokens_per_char", lower_is_better=True),
    "speed-up":        Metric("speed", "speedup", relative_to="Chat"),  # generation characters/s
}

MODEL_ORDER = ["Chat", "Chat+VE", "CV", "ElChat", "ElChat w/o copy", "LEP", "Base"]
RETAIN = 0.9   # "close to the source chat model": keeps >= 90% of its score
KEEP = 0.5     # "most of the target-language gain": >= half of Chat+VE's BPC improvement
# A measured speed-up counts only beyond 1 + this: the interval over a handful of repeats misses slow
# drifts of machine load (the same-architecture nano pair, whose true ratio is 1, measured 1.13x
# [1.04, 1.23] over 3 repeats on a loaded 2-core machine).
SPEED_TOLERANCE = 0.15


def collect(runs_root, preset: str, langs=None) -> dict:
    """Everything the report reads for one preset: DataFrames plus a `missing` list.

    Example: `collect("runs", "micro")["results"].columns` -> model, lang, task, metric, value, ...
    """
    base = runs.preset_dir(runs_root, preset)
    if langs is None:
        langs = sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "04_eval").is_dir()) \
            if base.is_dir() else []
    parts = {"results": [], "items": [], "tokens_per_char": [], "cpt": [], "angles": []}
    missing = []
    for lang in langs:
        d = runs.run_dir(runs_root, preset, lang)
        for key, pattern in [("results", "04_eval/results.csv"), ("tokens_per_char", "01_vocab/tokens_per_char.csv"),
                             ("cpt", "02_cpt/*/log.csv"), ("angles", "03_merge/layer_angles.csv")]:
            files = sorted(d.glob(pattern))
            if key == "results" and (d / "04_eval" / "items.csv").is_file():
                parts["items"].append(pd.read_csv(d / "04_eval" / "items.csv", dtype={"item": str})
                                      .assign(lang=str(lang)))
            if not files:
                missing.append(f"{d / pattern}")
            for f in files:
                df = pd.read_csv(f)
                df["lang"] = str(lang)  # the run directory names the language, whatever the file says
                if key == "cpt":
                    df["run"] = f.parent.name
                parts[key].append(df)
    out = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in parts.items()}
    out["missing"], out["langs"], out["preset"] = missing, list(langs), preset
    return out


def column_of(task: str, metric: str) -> str | None:
    """The table column a (task, metric) pair of results.csv is reported under, or None.

    Example: `column_of("bpc", "bpc_en") == "English BPC"`.
    """
    return _COLUMN_OF.get((task, metric))


_COLUMN_OF = {(m.task, m.metric): column for column, m in METRICS.items()}


def headers(results: pd.DataFrame | None = None) -> dict[str, str]:
    """Column -> header for display: "↓" where lower is better, the reference of a relative value,
    the chance level where the results hold one. Example: `headers()["target BPC"] == "target BPC ↓"`.
    """
    out = {}
    for column, m in METRICS.items():
        text = column + m.arrow + (f" (vs {m.relative_to})" if m.relative_to else "")
        if m.chance and results is not None and not results.empty:
            chance = results[(results["task"] == m.task) & (results["metric"] == m.chance)]["value"]
            if chance.nunique() == 1:
                text += f" (chance {chance.iloc[0]:g})"
        out[column] = text
    return out


def wide_table(results: pd.DataFrame, index=("model",), display: bool = False) -> pd.DataFrame:
    """Pivot tidy results (model, task, metric, value, ...) into one row per `index` key and one
    column per METRICS entry present, in METRICS order; rows keep their first appearance's order.

    With `display=True` the columns carry their `headers` ("target BPC ↓", "MC accuracy (chance 0.25)").
    Example: `wide_table(pd.DataFrame([{"model": "Chat", "task": "bpc", "metric": "bpc",
    "value": 1.5}])).loc["Chat", "target BPC"] == 1.5`.
    """
    if results.empty:
        return pd.DataFrame()
    column = [column_of(t, m) for t, m in zip(results["task"], results["metric"])]
    rows = results.assign(column=column).dropna(subset=["column", "value"])
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index=list(index), columns="column", values="value", aggfunc="first",
                            sort=False)
    wide = wide[[c for c in METRICS if c in wide.columns]]
    wide.columns.name = None
    return wide.rename(columns=headers(results)) if display else wide


def results_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (lang, model) in MODEL_ORDER, one column per METRICS entry found.

    Example: `results_table(collect("runs", "micro")["results"]).loc[("am", "ElChat"), "target BPC"]`.
    """
    table = wide_table(results[results["group"] == "model"], index=("lang", "model"))
    if table.empty:
        return table
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    order = sorted(table.index, key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1]))
    return table.loc[order]


def best_marks(table: pd.DataFrame) -> pd.DataFrame:
    """True where a value is the best of its column within its language (ties all marked; none
    when every row is equal).

    Example: `best_marks(table).loc[("am", "ElChat"), "IFEval strict"]` -> True/False.
    """
    marks = pd.DataFrame(False, index=table.index, columns=table.columns)
    for lang, block in table.groupby(level=0):
        for col in table.columns:
            vals = block[col].dropna()
            if vals.empty or (len(vals) > 1 and vals.nunique() == 1):
                continue  # all equal: no best to point at
            best = vals.min() if METRICS[col].lower_is_better else vals.max()
            marks.loc[vals.index[vals == best], col] = True
    return marks


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table_markdown(table: pd.DataFrame, marks: pd.DataFrame) -> str:
    """Markdown: one section per language, best value per column in bold (↓ = lower is better).

    Example: `print(table_markdown(t, best_marks(t)))`.
    """
    out = []
    for lang, block in table.groupby(level=0, sort=False):
        heads = [headers()[c] for c in table.columns]
        out += [f"### {lang}", "", "| model | " + " | ".join(heads) + " |",
                "|---|" + "---:|" * len(heads)]
        for (lg, model), row in block.iterrows():
            cells = [f"**{_fmt(v)}**" if marks.loc[(lg, model), c] else _fmt(v) for c, v in row.items()]
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _get(table, lang, model, col):
    try:
        v = table.loc[(lang, model), col]
    except KeyError:
        return None
    return None if pd.isna(v) else float(v)


def item_entries(items: pd.DataFrame) -> dict:
    """{(lang, model, task, metric): metric entry with items} from stage 04's items.csv rows.

    Example: `item_entries(collect("runs", "micro")["items"])[("am", "Chat", "bpc", "bpc")]`.
    """
    if items is None or items.empty:
        return {}
    items = items[items["group"] == "model"] if "group" in items else items
    return {(str(k[0]), k[1], k[2], k[3]): paired.entry_from_rows(g)
            for k, g in items.groupby(["lang", "model", "task", "metric"], sort=False)}


def paired_differences(items: pd.DataFrame, reference: str = "Chat") -> pd.DataFrame:
    """Every model minus `reference` on every reported column with per-item scores: the paired
    difference, its 95% interval, n and the reading ("better", "worse", "inconclusive at n = ...").

    Example: `paired_differences(pd.read_csv(run / "04_eval/items.csv", dtype={"item": str}))`.
    """
    entries, rows = item_entries(items), []
    for (lang, model, task, metric), entry in entries.items():
        col, ref = column_of(task, metric), entries.get((lang, reference, task, metric))
        if col is None or ref is None or model == reference:
            continue
        d = paired.difference(entry, ref)
        verdict = paired.verdict(d, METRICS[col].lower_is_better)
        reading = {"holds": "better", "does not hold": "worse"}.get(verdict, verdict)
        lo, hi = d["ci95"] or (None, None)
        rows.append({"lang": lang, "model": model, "column": col + METRICS[col].arrow,
                     f"minus {reference}": d["value"], "ci_low": lo, "ci_high": hi, "n": d["n"],
                     "reading": reading})
    return pd.DataFrame(rows)


def no_signal_columns(table: pd.DataFrame, lang) -> list[str]:
    """Columns where every model of `lang` is at its metric's floor or ceiling (decide nothing)."""
    block = table.xs(lang, level=0)
    return [c for c in table.columns if METRICS[c].floor is not None or METRICS[c].ceiling is not None
            if paired.no_signal(block[c].tolist(), METRICS[c].floor, METRICS[c].ceiling)]


class _Checker:
    """Paired verdicts for one language: `compare(a, b, column)` -> one summary line."""

    def __init__(self, table, entries, lang):
        self.table, self.entries, self.lang = table, entries, lang
        self.silent = set(no_signal_columns(table, lang))

    def value(self, model, col):
        return _get(self.table, self.lang, model, col)

    def compare(self, claim, a, b, col, relative_margin=0.0):
        m = METRICS[col]
        if col in self.silent:
            return f"- {claim} ({col}): no signal at this scale — every model at floor/ceiling; decides nothing."
        ea = self.entries.get((self.lang, a, m.task, m.metric))
        eb = self.entries.get((self.lang, b, m.task, m.metric))
        if ea is None or eb is None:
            return f"- {claim} ({col}): cannot check (per-item scores of {a} and {b} needed)."
        d = paired.difference(ea, eb)
        vb = self.value(b, col)
        margin = relative_margin * abs(vb) if vb is not None else 0.0
        if d["ci95"] is None:
            return f"- {claim} ({col}): cannot check (no common items)."
        verdict = paired.verdict(d, m.lower_is_better, margin)
        lo, hi = d["ci95"]
        extra = f"; margin {margin:.3g}" if margin else ""
        return (f"- {claim} ({col}{m.arrow}): **{verdict}** — {a} − {b} = {d['value']:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}], paired, n = {d['n']}{extra}.")


def summary(table: pd.DataFrame, missing=(), items: pd.DataFrame | None = None,
            results: pd.DataFrame | None = None) -> str:
    """The papers' claims, each decided per language from a paired bootstrap interval of the
    difference over the same items: "holds", "does not hold" or "inconclusive at n = ...".

    Example: `print(summary(results_table(df), items=collect(...)["items"]))`.
    """
    lines = ["# Does the study reproduce the papers' claims?", "",
             "Each claim is decided from the 95% paired bootstrap interval of the difference over the "
             "same items (never from point estimates): **holds** when the whole interval is on the "
             "claimed side, **does not hold** when it is wholly on the other side, otherwise "
             "**inconclusive at n = ...**. \"Close to\" claims allow a margin of "
             f"{1 - RETAIN:.0%} of the reference model's value. Metrics where every model sits at "
             "floor or ceiling give no signal at this scale.", ""]
    if table.empty:
        return "\n".join(lines + ["No evaluation results found: nothing to check.", ""])
    entries = item_entries(items)
    for lang in dict.fromkeys(table.index.get_level_values(0)):
        check = _Checker(table, entries, lang)
        lines += [f"## {lang}", ""]
        if check.silent:
            lines.append(f"- No signal at this scale: {', '.join(sorted(check.silent))}.")
        for claim in (_claim_chat_kept, _claim_gain_kept, _claim_vs_cv, _claim_copy_helps):
            lines += claim(check)
        lines += _claim_ve_speedup(check, results)
        lines.append("")
    if missing:
        lines += ["", f"Missing inputs ({len(missing)}): see missing.txt."]
    return "\n".join(lines) + "\n"


RETENTION = ("reply BPC (en)", "reply BPC (L)", "end-of-turn p (en)", "IFEval strict", "chat format")


def _claim_chat_kept(check) -> list[str]:
    """1. ElChat keeps chat ability close to Chat, and better than Chat+VE (paired)."""
    out = [check.compare("ElChat keeps chat ability close to Chat", "ElChat", "Chat", c, 1 - RETAIN)
           for c in RETENTION if check.value("ElChat", c) is not None]
    out += [check.compare("ElChat retains more chat ability than Chat+VE", "ElChat", "Chat+VE", c)
            for c in RETENTION if check.value("Chat+VE", c) is not None]
    return out or ["- Chat retention: cannot check (needs Chat, Chat+VE and ElChat)."]


def _claim_gain_kept(check) -> list[str]:
    """2. VE+CPT improves target BPC, and ElChat keeps most of that gain (paired over texts)."""
    m = METRICS["target BPC"]
    get = lambda model: check.entries.get((check.lang, model, m.task, m.metric))  # noqa: E731
    if get("Chat") is None or get("Chat+VE") is None:
        return ["- Target-language gain: cannot check (needs target BPC items of Chat and Chat+VE)."]
    out = [check.compare("Chat+VE gains on target text over Chat", "Chat+VE", "Chat", "target BPC")]
    if get("ElChat") is not None:
        r = paired.bootstrap([get("Chat"), get("Chat+VE"), get("ElChat")],
                             lambda c, v, e: (c - e) / (c - v))
        if r["ci95"] is not None:
            lo, hi = r["ci95"]
            verdict = paired.verdict(r, line=KEEP)
            out.append(f"- ElChat keeps at least {KEEP:.0%} of Chat+VE's target-BPC gain: **{verdict}** — "
                       f"share kept {r['value']:.2f} [{lo:.2f}, {hi:.2f}], paired, n = {r['n']}.")
    return out


def _claim_vs_cv(check) -> list[str]:
    """3. ElChat at least as good as Chat Vector (margin as for "close to")."""
    if check.value("CV", "target BPC") is None:
        return ["- ElChat vs CV: cannot check (no CV row; the preset has no base model)."]
    return [check.compare("ElChat at least as good as CV", "ElChat", "CV", c, 1 - RETAIN)
            for c in RETENTION + ("English BPC",) if check.value("CV", c) is not None]


def _claim_copy_helps(check) -> list[str]:
    """4. The special-token copy is what keeps the chat format (ElChat's ablation)."""
    if check.value("ElChat w/o copy", "target BPC") is None:
        return []
    return [check.compare("Copying the chat-template token rows helps", "ElChat", "ElChat w/o copy", c)
            for c in ("end-of-turn p (en)", "chat format", "reply BPC (en)")
            if check.value("ElChat w/o copy", c) is not None]


def _claim_ve_speedup(check, results) -> list[str]:
    """5. VE makes target text cheaper (tokens/char, paired over texts) and decoding faster
    (speed-up: median of interleaved repeats, its interval against 1)."""
    if check.value("Chat+VE", "tokens/char") is None:
        return ["- VE speed-up: cannot check (needs tokens/char of Chat and Chat+VE)."]
    out = [check.compare("VE makes target text cheaper", "Chat+VE", "Chat", "tokens/char")]
    rows = pd.DataFrame() if results is None or results.empty else results[
        (results["lang"].astype(str) == str(check.lang)) & (results["model"] == "Chat+VE")
        & (results["task"] == "speed")]
    sp = rows[rows["metric"] == "speedup"] if not rows.empty else rows
    if not sp.empty and pd.notna(sp["ci_low"].iloc[0]):
        r = {"value": float(sp["value"].iloc[0]), "n": int(sp["n"].iloc[0]),
             "ci95": [float(sp["ci_low"].iloc[0]), float(sp["ci_high"].iloc[0])]}
        ratio = rows[rows["metric"] == "tokens_per_char_ratio"]["value"]
        exact = f"; exact tokens/char ratio {float(ratio.iloc[0]):.3f}" if not ratio.empty else ""
        verdict = paired.verdict(r, line=1.0 + SPEED_TOLERANCE)
        out.append(f"- VE decodes target text faster (by more than the {SPEED_TOLERANCE:.0%} measurement "
                   f"tolerance): **{verdict}** — measured speed-up {r['value']:.2f}x "
                   f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] (median of {r['n']} interleaved "
                   f"repeats){exact}.")
    return out


# ---- figures: each takes (collected data, results table) and returns a Figure or None ----

def _plt():
    # Plotting libraries are heavy and only the figures need them: imported on first use.
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def fig_tokens_per_char(data, table):
    """Tokens per character of target text before (Chat) and after (Chat+VE) vocabulary expansion.

    Example: `fig_tokens_per_char(collect("runs", "micro"), table)` -> a Figure, or None without data.
    """
    rows = []
    if not table.empty and "tokens/char" in table:
        for (lang, model), v in table["tokens/char"].dropna().items():
            if model in ("Chat", "Chat+VE"):
                rows.append({"lang": lang, "tokenizer": "before VE" if model == "Chat" else "after VE", "tokens/char": v})
    tpc = data["tokens_per_char"]
    if not rows and not tpc.empty:  # stage 01's own measurement: one row per vocabulary size and text
        tpc = tpc[tpc["text"].astype(str) == tpc["lang"]]  # the target language, not English
        tpc = tpc.sort_values("num_new_tokens").groupby("lang").tail(1)  # the largest size compared
        for _, r in tpc.iterrows():
            rows += [{"lang": r["lang"], "tokenizer": "before VE", "tokens/char": r["before"]},
                     {"lang": r["lang"], "tokenizer": "after VE", "tokens/char": r["after"]}]
    if not rows:
        return None
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len({r["lang"] for r in rows}) + 2), 3.5))
    sns.barplot(pd.DataFrame(rows), x="lang", y="tokens/char", hue="tokenizer", ax=ax)
    ax.set_title("Tokens per character of target text")
    return fig


def fig_cpt_curves(data, table):
    """Continual pre-training: training loss and validation BPC against step, per run.

    Example: `fig_cpt_curves(collect("runs", "micro"), table)` -> a Figure, or None without logs.
    """
    cpt = data["cpt"]
    if cpt.empty or "step" not in cpt:
        return None
    plt, sns = _plt()
    ys = [c for c in ("train_loss", "valid_bpc") if c in cpt and cpt[c].notna().any()]
    if not ys:
        return None
    fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.5), squeeze=False)
    for ax, y in zip(axes[0], ys):
        sns.lineplot(cpt.dropna(subset=[y]), x="step", y=y, hue="run", style="lang", marker="o", ax=ax)
    fig.suptitle("Continual pre-training")
    return fig


SWEEP_COLUMNS = ("target BPC", "reply BPC (en)", "end-of-turn p (en)", "IFEval strict", "chat format")


def fig_t_sweep(data, table):
    """ElChat's SLERP weight t (weight of the source chat model): each metric against t with its 95%
    interval as a band, one line per language; ElChat's own value (layer-wise t) dashed.

    Example: `fig_t_sweep(collect("runs", "micro"), table)` -> a Figure, or None without a sweep.
    """
    res = data["results"]
    if res.empty or "t" not in res:
        return None
    sweep = res[(res["group"] == "sweep") & res["t"].notna()]
    sweep = sweep.assign(column=[column_of(t, m) for t, m in zip(sweep["task"], sweep["metric"])])
    cols = [c for c in SWEEP_COLUMNS if c in set(sweep["column"])]
    if not cols:
        return None
    plt, _ = _plt()
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.6), squeeze=False)
    for ax, col in zip(axes[0], cols):
        d = sweep[sweep["column"] == col]
        for lang, g in d.groupby("lang"):
            g = g.sort_values("t")
            line, = ax.plot(g["t"], g["value"], marker="o", label=str(lang))
            if g["ci_low"].notna().all():
                ax.fill_between(g["t"].astype(float), g["ci_low"].astype(float), g["ci_high"].astype(float),
                                alpha=0.2, color=line.get_color())
            el = _get(table, lang, "ElChat", col) if not table.empty else None
            if el is not None:
                ax.axhline(el, ls="--", lw=1, color=line.get_color(), label=f"ElChat ({lang})")
        n = sorted(set(d["n"].dropna().astype(int)))
        ax.set_title(f"{col}{METRICS[col].arrow} (n = {', '.join(map(str, n))})", fontsize=10)
        ax.set_xlabel("t (weight of the source chat model)")
        ax.legend(fontsize=7)
    fig.suptitle("t sweep: ElChat merge with weight t on the source chat model in the transition "
                 "layers; bands: 95% intervals")
    return fig


def fig_layer_angles(data, table):
    """Per-layer angle between the two checkpoints ElChat interpolates (SLERP geometry).

    Example: `fig_layer_angles(collect("runs", "micro"), table)` -> a Figure, or None.
    """
    ang = data["angles"]
    if ang.empty or not {"layer", "angle"} <= set(ang.columns):
        return None
    ang = ang.dropna(subset=["layer"])
    if ang.empty:
        return None
    plt, sns = _plt()
    hue = next((c for c in ("pair", "module") if c in ang and ang[c].nunique() <= 12), None)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sns.lineplot(ang, x="layer", y="angle", hue=hue, style="lang", marker="o", ax=ax, errorbar=None)
    from matplotlib.ticker import MaxNLocator  # matplotlib is loaded by _plt() only when plotting
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("angle (degrees)")
    ax.set_title("Per-layer angle between merged checkpoints")
    return fig


def _ci_lookup(results: pd.DataFrame) -> dict:
    """{(lang, model, column): (ci_low, ci_high, n)} of the model rows of results.csv."""
    if results is None or results.empty:
        return {}
    rows = results[results["group"] == "model"] if "group" in results else results
    out = {}
    for r in rows.itertuples():
        col = column_of(r.task, r.metric)
        if col is not None:
            out[(str(r.lang), r.model, col)] = (r.ci_low, r.ci_high, r.n)
    return out


def difference_units(table, entries, cis, lang, model, col) -> float:
    """(model - Chat) / half-width of its 95% interval, signed so that positive = better.

    The interval is the paired bootstrap interval of the difference when both have items, else the
    two separate intervals combined (sqrt of summed squared half-widths); NaN without intervals.
    Beyond ±1 the difference lies outside its interval. Example: `difference_units(...) == 2.1`.
    """
    m = METRICS[col]
    sign = -1.0 if m.lower_is_better else 1.0
    a, b = entries.get((lang, model, m.task, m.metric)), entries.get((lang, "Chat", m.task, m.metric))
    if a is not None and b is not None:
        d = paired.difference(a, b, n_boot=500)
        if d["ci95"] is not None and d["ci95"][1] > d["ci95"][0]:
            return sign * d["value"] / ((d["ci95"][1] - d["ci95"][0]) / 2)
    va, vb = _get(table, lang, model, col), _get(table, lang, "Chat", col)
    ca, cb = cis.get((lang, model, col)), cis.get((lang, "Chat", col))
    if None in (va, vb, ca, cb) or pd.isna(ca[0]) or pd.isna(cb[0]):
        return float("nan")
    half = math.hypot((ca[1] - ca[0]) / 2, (cb[1] - cb[0]) / 2)
    return sign * (va - vb) / half if half > 0 else float("nan")


def fig_heatmap(data, table):
    """Method x metric across languages; colour = difference to Chat in units of its 95% interval
    (positive = better, beyond ±1 = outside the interval, clipped at ±3; Chat itself 0), text = the
    value and its own interval. Example: `fig_heatmap(data, results_table(data["results"]))`.
    """
    if table.empty:
        return None
    plt, sns = _plt()
    entries, cis = item_entries(data.get("items")), _ci_lookup(data.get("results"))
    models = list(dict.fromkeys(table.index.get_level_values(1)))
    cells = [(lang, col) for col in table.columns for lang in dict.fromkeys(table.index.get_level_values(0))
             if table.xs(lang, level=0)[col].notna().any()]
    if not cells:
        return None
    score = pd.DataFrame(index=models, columns=[f"{c} [{lg}]" for lg, c in cells], dtype=float)
    text = pd.DataFrame("", index=models, columns=score.columns)
    ns = []
    for (lang, col), name in zip(cells, score.columns):
        for model in models:
            v = _get(table, lang, model, col)
            if v is None:
                continue
            score.loc[model, name] = 0.0 if model == "Chat" else difference_units(table, entries, cis, lang, model, col)
            ci = cis.get((lang, model, col))
            has_ci = ci is not None and pd.notna(ci[0])
            text.loc[model, name] = f"{v:.3g}" + (f"\n[{ci[0]:.3g}, {ci[1]:.3g}]" if has_ci else "")
            ns += [int(ci[2])] if ci is not None and pd.notna(ci[2]) else []
    # a cell with a value but no interval (or a zero-width one) is drawn neutral, its text kept
    score = score.mask(score.isna() & (text != ""), 0.0)
    fig, ax = plt.subplots(figsize=(1.5 * len(score.columns) + 2, 0.7 * len(score) + 2))
    sns.heatmap(score.clip(-3, 3), annot=text, fmt="", cmap="RdBu", vmin=-3, vmax=3, ax=ax,
                annot_kws={"fontsize": 7}, cbar_kws={"label": "(model − Chat) / 95% half-width; + = better"})
    ax.grid(False)
    n_txt = f"n = {min(ns)}–{max(ns)} items per cell" if ns else "n unknown"
    ax.set_title(f"Methods x metrics vs Chat (|colour| > 1: outside the interval; {n_txt})")
    return fig


FIGURES = {"fig_tokens_per_char": fig_tokens_per_char, "fig_cpt_curves": fig_cpt_curves,
           "fig_t_sweep": fig_t_sweep, "fig_layer_angles": fig_layer_angles,
           "fig_heatmap": fig_heatmap}



def write_report(runs_root, preset: str, langs=None) -> dict:
    """Build everything into `runs/<preset>/report/` atomically; returns {name: path}.

    Example: `write_report("runs", "micro", ["am"])["results_table.md"]`.
    """
    import matplotlib.pyplot as plt  # heavy, and only the figures need it

    data = collect(runs_root, preset, langs)
    table = results_table(data["results"]) if not data["results"].empty else pd.DataFrame()
    out_dir = runs.report_dir(runs_root, preset)
    written = {}
    with atomic_dir(out_dir) as tmp:
        if not table.empty:
            marks = best_marks(table)
            csv = table.copy()
            csv["best"] = [";".join(c for c in table.columns if marks.loc[i, c]) for i in table.index]
            csv.reset_index().to_csv(tmp / "results_table.csv", index=False)
            (tmp / "results_table.md").write_text(f"# Results — preset {preset}\n\n"
                                                  + table_markdown(table, marks), encoding="utf-8")
            data["results"].to_csv(tmp / "results_long.csv", index=False)
        (tmp / "summary.md").write_text(summary(table, data["missing"], data["items"], data["results"]),
                                        encoding="utf-8")
        (tmp / "missing.txt").write_text("".join(f"{m}\n" for m in data["missing"]), encoding="utf-8")
        for name, plot in FIGURES.items():
            fig = plot(data, table)
            if fig is None:
                continue
            fig.savefig(tmp / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)  # the notebook shows the saved PNGs, the CLI needs no display
        for lang in data["langs"]:  # the headline figure of each language, drawn by stage 04
            curve = runs.stage_dir(runs.run_dir(runs_root, preset, lang), "04") / "forgetting.png"
            if curve.is_file():
                shutil.copyfile(curve, tmp / f"fig_forgetting_{lang}.png")
    for f in sorted(out_dir.iterdir()):
        written[f.name] = f
    return written


def _cli(args) -> int:
    written = write_report(args.runs_root, args.preset, args.lang)
    for name, path in written.items():
        print(path)
    print((written["summary.md"]).read_text())
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("report", help="cross-language results table, figures and summary")
    p.add_argument("--preset", required=True, help="preset whose runs/<preset>/<lang>/ to report")
    p.add_argument("--lang", action="append", help="languages (default: every one with 04_eval/)")
    p.add_argument("--runs-root", default="runs", help="runs directory (default runs)")
    p.set_defaults(func=_cli)
