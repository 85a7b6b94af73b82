"""Stage 04's figures, drawn from the tidy rows `evaluate_models` returns (one language).

- `fig_scores`: one panel per reported column (`elchat.report.METRICS`), a bar per model with its
  95% bootstrap interval as an error bar (none where a metric has no item-level interval);
- the t-sweep trade-off is the report's `fig_t_sweep` (target BPC against chat abilities, per t).
`write_figures` draws both and saves them as PNG atomically next to the results.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .. import report
from ..atomic import atomic_save_figure

PANELS_PER_ROW = 4


def fig_scores(results: pd.DataFrame, title: str = ""):
    """Bars per model for every reported column, with 95% intervals; None when nothing is reported.

    Example: `fig_scores(evaluate_models(...), "micro · am").savefig("bars.png")`.
    """
    rows = results[results["group"] == "model"]
    rows = rows.assign(column=[report.column_of(t, m) for t, m in zip(rows["task"], rows["metric"])])
    rows = rows.dropna(subset=["column", "value"])
    columns = [c for c in report.METRICS if c in set(rows["column"])]
    if not columns:
        return None
    ncol = min(PANELS_PER_ROW, len(columns))
    nrow = (len(columns) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False)
    colours = dict(zip(rows["model"].unique(), plt.get_cmap("tab10").colors))
    headers = report.headers(results)
    for ax, column in zip(axes.flat, columns):
        d = rows[rows["column"] == column]
        value, low, high = d["value"].astype(float), d["ci_low"].astype(float), d["ci_high"].astype(float)
        ax.bar(d["model"], value, color=[colours[m] for m in d["model"]])
        ok = low.notna()
        ax.errorbar(d["model"][ok], value[ok], yerr=[(value - low)[ok], (high - value)[ok]],
                    fmt="none", ecolor="k", lw=1)
        _baselines(ax, results, column, d)
        n = d["n"].dropna().astype(int) if "n" in d else pd.Series(dtype=int)
        n_text = "" if n.empty else f"\nn = {n.min()}" if n.nunique() == 1 else f"\nn = {n.min()}-{n.max()}"
        ax.set_title(headers[column] + n_text, fontsize=9)
        ax.tick_params(axis="x", rotation=60, labelsize=8)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.suptitle(f"{title}: every model on every task (bars: 95% bootstrap intervals; dotted: Chat; "
                 "dashed: chance)")
    fig.tight_layout()
    return fig


def _baselines(ax, results: pd.DataFrame, column: str, rows: pd.DataFrame) -> None:
    """The source model's value (dotted grey) and the task's chance level (dashed red), if recorded."""
    chat = rows.loc[rows["model"] == "Chat", "value"]
    if not chat.empty:
        ax.axhline(float(chat.iloc[0]), color="grey", ls=":", lw=1)
    m = report.METRICS[column]
    if m.chance:
        chance = results[(results["task"] == m.task) & (results["metric"] == m.chance)]["value"].dropna()
        if not chance.empty:
            ax.axhline(float(chance.iloc[0]), color="red", ls="--", lw=1)


def write_figures(results: pd.DataFrame, out_dir, title: str = "") -> dict:
    """Draw stage 04's figures and save each as `out_dir/<name>.png`; returns {name: figure}.

    Example: `write_figures(results, run / "04_eval", "micro · am")["results_bars"]`.
    """
    figures = {"results_bars": fig_scores(results, title)}
    sweep = results[results["group"] == "sweep"]
    if not sweep.empty:
        figures["sweep_tradeoff"] = report.fig_t_sweep({"results": results},
                                                       report.results_table(results))
    figures = {name: fig for name, fig in figures.items() if fig is not None}
    for name, fig in figures.items():
        fig.tight_layout()  # keeps axis labels inside the saved PNG
        atomic_save_figure(fig, Path(out_dir) / f"{name}.png")
        plt.close(fig)  # shown where the caller displays it, not at the end of every cell
    return figures
