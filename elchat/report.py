"""Stage 05: the cross-language report — results table, figures, and a summary of the claims.

Reads, for one preset, every `runs/<preset>/<lang>/`:
  04_eval/results.csv        tidy rows: model, lang, task, metric, value, n, ci_low, ci_high,
                             group ("model" | "sweep"), t   (required for the table)
  01_vocab/tokens_per_char.csv, 02_cpt/*/log.csv, 03_merge/layer_angles.csv   (figures, optional)
and writes `runs/<preset>/report/` atomically: `results_table.{md,csv}`, `results_long.csv`,
`summary.md`, `missing.txt` and PNG figures. Anything absent is listed, never fatal.

Which numbers are reported is said in ONE place, `METRICS`: table column -> the (task, metric)
pair of results.csv that holds it, whether lower is better (bits and tokens per character), the
chance level where the task records one, and what a relative value is relative to. `wide_table`
pivots tidy results into those columns (stage 04's table and this report's both use it).

The summary tests the papers' claims per language with plain ratios:
  chat retention   = ElChat / Chat on IFEval (strict) and chat format   (claim: >= RETAIN)
  gain kept        = (BPC(Chat) - BPC(ElChat)) / (BPC(Chat) - BPC(Chat+VE))  (claim: >= KEEP)
  ElChat vs CV     = differences on IFEval, chat format (higher) and English BPC (lower)
  VE speed-up      = tokens/char of Chat+VE / Chat (< 1) and the measured generation speed-up.
Yamaguchi et al. 2025, "ElChat: Adapting Chat Language Models Using Only Target Unlabeled
Language Data"; Chat Vector: Huang et al. 2024; LEP: Tikhomirov & Chernyshev 2024.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import runs
from .atomic import atomic_dir


@dataclass(frozen=True)
class Metric:
    """One reported number: where it sits in results.csv and how to read it."""
    task: str
    metric: str
    lower_is_better: bool = False
    chance: str | None = None       # the metric of the same task holding the chance level, if any
    relative_to: str | None = None  # the model a relative value is measured against (stage 04's reference)

    @property
    def arrow(self) -> str:
        return " ↓" if self.lower_is_better else ""


# The ONE list of reported numbers: table column -> Metric, in table order. The notebooks (04, 05),
# the report's table, best marks, summary and figures all read it.
METRICS: dict[str, Metric] = {
    "target BPC":      Metric("bpc", "bpc", lower_is_better=True),
    "chrF en→L":       Metric("mt", "chrf_en2x"),
    "chrF L→en":       Metric("mt", "chrf_x2en"),
    "MC accuracy":     Metric("mc", "accuracy", chance="chance"),
    "IFEval strict":   Metric("ifeval", "prompt_strict"),
    "IFEval loose":    Metric("ifeval", "prompt_loose"),
    "chat format":     Metric("chat_format", "all_ok"),
    "refuses harmful": Metric("safety", "refusal_harmful"),
    "helps benign":    Metric("safety", "compliance_benign"),
    "English BPC":     Metric("bpc", "bpc_en", lower_is_better=True),
    "tokens/char":     Metric("speed", "tokens_per_char", lower_is_better=True),
    "speed-up":        Metric("speed", "speedup", relative_to="Chat"),  # generation characters/s
}

MODEL_ORDER = ["Chat", "Chat+VE", "CV", "ElChat", "ElChat w/o copy", "LEP", "Base"]
RETAIN = 0.9   # "close to the source chat model": keeps >= 90% of its score
KEEP = 0.5     # "most of the target-language gain": >= half of Chat+VE's BPC improvement


def collect(runs_root, preset: str, langs=None) -> dict:
    """Everything the report reads for one preset: DataFrames plus a `missing` list.

    Example: `collect("runs", "micro")["results"].columns` -> model, lang, task, metric, value, ...
    """
    base = runs.preset_dir(runs_root, preset)
    if langs is None:
        langs = sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "04_eval").is_dir()) \
            if base.is_dir() else []
    parts = {"results": [], "tokens_per_char": [], "cpt": [], "angles": []}
    missing = []
    for lang in langs:
        d = runs.run_dir(runs_root, preset, lang)
        for key, pattern in [("results", "04_eval/results.csv"), ("tokens_per_char", "01_vocab/tokens_per_char.csv"),
                             ("cpt", "02_cpt/*/log.csv"), ("angles", "03_merge/layer_angles.csv")]:
            files = sorted(d.glob(pattern))
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


def summary(table: pd.DataFrame, missing=()) -> str:
    """The claims, checked per language with the numbers; says plainly what does not hold.

    Example: `print(summary(results_table(df)))`.
    """
    lines = ["# Does the study reproduce the papers' claims?", ""]
    if table.empty:
        return "\n".join(lines + ["No evaluation results found: nothing to check.", ""])
    for lang in dict.fromkeys(table.index.get_level_values(0)):
        value = lambda model, col: _get(table, lang, model, col)  # noqa: E731
        lines += [f"## {lang}", ""]
        for check in (_claim_chat_kept, _claim_gain_kept, _claim_vs_cv, _claim_copy_helps,
                      _claim_ve_speedup):
            lines += check(value)
        lines.append("")
    lines.append("Scores come from small evaluation sets (see n and the intervals in results_long.csv); "
                 "differences inside the 95% intervals are not conclusive.")
    if missing:
        lines += ["", f"Missing inputs ({len(missing)}): see missing.txt."]
    return "\n".join(lines) + "\n"


def _claim_chat_kept(value) -> list[str]:
    """1. ElChat keeps chat ability close to the source chat model."""
    lines = []
    for col in ("IFEval strict", "chat format"):
        chat, el, ve = value("Chat", col), value("ElChat", col), value("Chat+VE", col)
        if chat is None or el is None:
            lines.append(f"- {col}: cannot check (needs Chat and ElChat).")
        elif chat <= 0:
            lines.append(f"- ElChat keeps {col} close to Chat: cannot judge — the source Chat "
                         f"scores {chat:.3f} (ElChat {el:.3f}); more items or a larger model needed.")
        else:
            keep = el / chat
            verdict = "holds" if keep >= RETAIN else "does NOT hold"
            ve_txt = f", Chat+VE {ve:.3f}" if ve is not None else ""
            lines.append(f"- ElChat keeps {col} close to Chat: {verdict} — ElChat {el:.3f} vs Chat "
                         f"{chat:.3f} ({keep:.0%} kept, threshold {RETAIN:.0%}){ve_txt}.")
    return lines


def _claim_gain_kept(value) -> list[str]:
    """2. ElChat keeps most of Chat+VE's target-language gain."""
    chat, el, ve = value("Chat", "target BPC"), value("ElChat", "target BPC"), value("Chat+VE", "target BPC")
    if None in (chat, el, ve):
        return ["- Target-language gain: cannot check (needs target BPC of Chat, Chat+VE, ElChat)."]
    if chat - ve <= 0:
        return [f"- Target-language gain: does NOT hold — Chat+VE ({ve:.3f} BPC) is not better "
                f"than Chat ({chat:.3f}), so there is no gain to keep (more CPT needed)."]
    kept = (chat - el) / (chat - ve)
    verdict = "holds" if kept >= KEEP else "does NOT hold"
    return [f"- ElChat keeps most of Chat+VE's target-language gain: {verdict} — BPC Chat "
            f"{chat:.3f}, Chat+VE {ve:.3f}, ElChat {el:.3f} ({kept:.0%} of the gain kept, "
            f"threshold {KEEP:.0%})."]


def _claim_vs_cv(value) -> list[str]:
    """3. ElChat vs Chat Vector on chat/IF and English."""
    if value("CV", "target BPC") is None and value("CV", "IFEval strict") is None:
        return ["- ElChat vs CV: cannot check (no CV row; the preset has no base model)."]
    lines = []
    for col in ("IFEval strict", "chat format", "English BPC"):
        el, cv = value("ElChat", col), value("CV", col)
        if el is None or cv is None:
            lines.append(f"- ElChat vs CV on {col}: cannot check (missing).")
            continue
        lower = METRICS[col].lower_is_better
        better = el < cv if lower else el > cv
        word = "better" if better else ("equal" if el == cv else "worse")
        verdict = "holds" if better or el == cv else "does NOT hold"
        lines.append(f"- ElChat at least as good as CV on {col}: {verdict} — ElChat {el:.3f} vs "
                     f"CV {cv:.3f} ({word}{', lower is better' if lower else ''}).")
    return lines


def _claim_copy_helps(value) -> list[str]:
    """3b. The special-token copy is what keeps the chat format (ElChat's ablation)."""
    el, no_copy = value("ElChat", "chat format"), value("ElChat w/o copy", "chat format")
    if el is None or no_copy is None:
        return []
    verdict = "holds" if el > no_copy else ("no difference" if el == no_copy else "does NOT hold")
    return [f"- Copying the chat-template token rows helps the chat format: {verdict} — "
            f"ElChat {el:.3f} vs ElChat w/o copy {no_copy:.3f}."]


def _claim_ve_speedup(value) -> list[str]:
    """4. Vocabulary expansion makes target text cheaper and generation faster."""
    tpc_chat, tpc_ve = value("Chat", "tokens/char"), value("Chat+VE", "tokens/char")
    speedup = value("Chat+VE", "speed-up")
    if tpc_chat is None or tpc_ve is None:
        return ["- VE speed-up: cannot check (needs tokens/char of Chat and Chat+VE)."]
    verdict = "holds" if tpc_ve < tpc_chat and (speedup is None or speedup > 1) else "does NOT hold"
    speed_txt = f", measured generation speed-up {speedup:.2f}x" if speedup is not None else ""
    return [f"- VE makes target text cheaper: {verdict} — tokens/char {tpc_chat:.3f} → "
            f"{tpc_ve:.3f} ({tpc_ve / tpc_chat:.0%} of the source){speed_txt}."]


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


def fig_t_sweep(data, table):
    """ElChat's SLERP weight t: target BPC against IFEval and chat format, one panel per language.

    Example: `fig_t_sweep(collect("runs", "micro"), table)` -> a Figure, or None without a sweep.
    """
    res = data["results"]
    if res.empty or "t" not in res:
        return None
    sweep = res[(res["group"] == "sweep") & res["t"].notna()]
    langs = sorted(sweep["lang"].unique())
    if not langs:
        return None
    plt, sns = _plt()
    fig, axes = plt.subplots(1, len(langs), figsize=(5 * len(langs), 4), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        piv = wide_table(sweep[sweep["lang"] == lang], index=("t",)).sort_index()
        if "target BPC" not in piv:
            ax.set_title(f"{lang}: no target BPC in the sweep")
            continue
        for col, marker in (("IFEval strict", "o"), ("chat format", "s")):
            if col in piv:
                both = pd.concat([piv["target BPC"], piv[col]], axis=1, keys=["x", "y"]).dropna()
                ax.plot(both["x"], both["y"], marker=marker, label=col)
                for t, r in both.iterrows():
                    ax.annotate(f"t={t:g}", (r["x"], r["y"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
                el = (_get(table, lang, "ElChat", "target BPC"), _get(table, lang, "ElChat", col)) if not table.empty else (None, None)
                if None not in el:
                    ax.scatter(*el, marker="*", s=250, color="red", zorder=5,
                               label="ElChat" if col == "IFEval strict" else None)
        ax.set_xlabel("target BPC (lower is better)")
        ax.set_ylabel("score")
        ax.set_title(f"t sweep — {lang}")
        ax.legend(fontsize=8)
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


def fig_heatmap(data, table):
    """Method x metric across languages; colour = position within the column's range (1 = best),
    text = value. Example: `fig_heatmap(data, results_table(data["results"]))` -> a Figure, or None.
    """
    if table.empty:
        return None
    plt, sns = _plt()
    wide = table.unstack(level=0)  # rows model, columns (metric, lang)
    wide = wide.loc[[m for m in dict.fromkeys(table.index.get_level_values(1))]]
    wide = wide.dropna(axis=1, how="all")
    if wide.empty:
        return None
    score = wide.copy()
    for col in wide.columns:
        v = wide[col]
        lo, hi = v.min(), v.max()
        s = (v - lo) / (hi - lo) if hi > lo else v * 0 + 1
        score[col] = 1 - s if METRICS[col[0]].lower_is_better else s
    wide.columns = score.columns = [f"{m} [{lang}]" for m, lang in wide.columns]
    fig, ax = plt.subplots(figsize=(1.1 * len(wide.columns) + 2, 0.5 * len(wide) + 2))
    sns.heatmap(score, annot=wide.round(2), fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": "relative (1 = best)"})
    ax.grid(False)
    ax.set_title("Methods x metrics")
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
        (tmp / "summary.md").write_text(summary(table, data["missing"]), encoding="utf-8")
        (tmp / "missing.txt").write_text("".join(f"{m}\n" for m in data["missing"]), encoding="utf-8")
        for name, plot in FIGURES.items():
            fig = plot(data, table)
            if fig is None:
                continue
            fig.savefig(tmp / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)  # the notebook shows the saved PNGs, the CLI needs no display
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
