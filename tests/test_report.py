"""The report on a synthetic results.csv built here: table order, best marks, claims, files."""
import pandas as pd
import pytest

from elchat import report

# (model, target BPC, IFEval strict, chat format, English BPC, tokens/char) per language.
AM = {"Base": (2.9, 0.05, 0.10, 1.5, 2.27), "ElChat": (2.3, 0.57, 0.80, 1.6, 0.90),
      "Chat": (3.0, 0.60, 0.85, 1.5, 2.27), "CV": (2.2, 0.40, 0.70, 1.9, 0.90),
      "Chat+VE": (2.0, 0.20, 0.30, 1.8, 0.90), "ElChat w/o copy": (2.3, 0.50, 0.40, 1.6, 0.90)}
TA = {"Chat": (3.0, 0.60, 0.85, 1.5, 2.0), "Chat+VE": (3.1, 0.20, 0.30, 1.8, 2.5),
      "ElChat": (3.05, 0.30, 0.80, 1.6, 2.5)}
SWEEP = {0.0: (3.0, 0.6, 0.85), 0.5: (2.4, 0.5, 0.7), 1.0: (2.0, 0.2, 0.3)}


def _rows(lang, models):
    rows = []
    for model, (bpc, ife, cf, en, tpc) in models.items():
        for task, metric, v in [("bpc", "bpc", bpc), ("ifeval", "prompt_strict", ife),
                                ("chat_format", "all_ok", cf), ("bpc", "bpc_en", en),
                                ("speed", "tokens_per_char", tpc), ("safety", "nonrefusal_benign", 1.0)]:
            rows.append({"model": model, "lang": lang, "task": task, "metric": metric, "value": v,
                         "n": 20, "ci_low": v - 0.1, "ci_high": v + 0.1, "group": "model", "t": None})
    return rows


@pytest.fixture
def runs(tmp_path):
    am = _rows("am", AM)
    for t, (bpc, ife, cf) in SWEEP.items():
        for task, metric, v in [("bpc", "bpc", bpc), ("ifeval", "prompt_strict", ife), ("chat_format", "all_ok", cf)]:
            am.append({"model": f"t={t}", "lang": "am", "task": task, "metric": metric, "value": v, "n": 5,
                       "ci_low": None, "ci_high": None, "group": "sweep", "t": t})
    for lang, rows in [("am", am[::-1]), ("ta", _rows("ta", TA))]:  # order must not matter
        (tmp_path / "micro" / lang / "04_eval").mkdir(parents=True)
        pd.DataFrame(rows).to_csv(tmp_path / "micro" / lang / "04_eval/results.csv", index=False)
    (tmp_path / "micro/am/02_cpt/chat_cpt").mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3], "train_loss": [5.0, 4.0, 3.5], "valid_bpc": [3.0, 2.6, 2.4]}).to_csv(
        tmp_path / "micro/am/02_cpt/chat_cpt/log.csv", index=False)
    (tmp_path / "micro/am/03_merge").mkdir()
    pd.DataFrame({"layer": [0, 1, 0, 1], "module": ["mlp", "mlp", "attn", "attn"], "name": list("abcd"),
                  "angle": [3.0, 5.0, 2.0, 4.0]}).to_csv(tmp_path / "micro/am/03_merge/layer_angles.csv", index=False)
    return tmp_path


def test_table_order_and_best_marks(runs):
    data = report.collect(runs, "micro")
    assert data["langs"] == ["am", "ta"]
    table = report.results_table(data["results"])
    assert list(table.loc["am"].index) == ["Chat", "Chat+VE", "CV", "ElChat", "ElChat w/o copy", "Base"]
    assert list(table.columns) == ["target BPC", "IFEval strict", "chat format", "English BPC", "tokens/char"]
    assert table.loc[("ta", "ElChat"), "chat format"] == 0.80
    marks = report.best_marks(table)
    best = {col: sorted(m for (lang, m) in marks.index[marks[col]] if lang == "am") for col in table.columns}
    assert best == {"target BPC": ["Chat+VE"], "IFEval strict": ["Chat"], "chat format": ["Chat"],
                    "English BPC": ["Base", "Chat"], "tokens/char": ["CV", "Chat+VE", "ElChat", "ElChat w/o copy"]}
    md = report.table_markdown(table, marks)
    assert "| Chat+VE | **2.000** | 0.200 |" in md and "### ta" in md


def test_without_items_nothing_is_decided_from_point_estimates(runs):
    # results.csv alone (no items.csv): the point estimates would "show" ElChat 0.57 vs Chat 0.60
    table = report.results_table(report.collect(runs, "micro")["results"])
    text = report.summary(table)
    am, ta = text.split("## ta")
    verdicts = "\n".join(line for line in text.splitlines() if line.startswith("- "))
    assert "holds" not in verdicts and "does not hold" not in verdicts
    assert "(IFEval strict): cannot check (per-item scores of ElChat and Chat needed)" in am
    assert "ElChat vs CV: cannot check" in ta


def test_write_report_files_and_cli(runs, capsys):
    from elchat.cli import main

    curve = b"\x89PNG\r\n\x1a\n forgetting curve of am"  # stage 04's figure, copied as it is
    (runs / "micro/am/04_eval/forgetting.png").write_bytes(curve)
    assert main(["report", "--preset", "micro", "--runs-root", str(runs)]) == 0
    out = runs / "micro/report"
    names = {p.name for p in out.iterdir()}
    assert (out / "fig_forgetting_am.png").read_bytes() == curve and "fig_forgetting_ta.png" not in names
    assert {"results_table.md", "results_table.csv", "results_long.csv", "summary.md", "missing.txt",
            "fig_cpt_curves.png", "fig_t_sweep.png", "fig_layer_angles.png", "fig_heatmap.png",
            "fig_tokens_per_char.png"} <= names
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in names if n.endswith(".png"))
    csv = pd.read_csv(out / "results_table.csv")
    assert csv.loc[(csv["lang"] == "am") & (csv["model"] == "Chat+VE"), "best"].item().startswith("target BPC")
    missing = (out / "missing.txt").read_text()
    assert "ta/01_vocab/tokens_per_char.csv" in missing and "ta/02_cpt/*/log.csv" in missing
    assert "am/04_eval" not in missing
    assert "Does the study reproduce" in capsys.readouterr().out


def test_no_results_is_said_not_fatal(tmp_path):
    written = report.write_report(tmp_path, "micro", ["am"])
    assert "No evaluation results found" in written["summary.md"].read_text()
    assert "am/04_eval/results.csv" in written["missing.txt"].read_text()


def test_tokens_per_char_figure_from_stage_01_csv():
    # Stage 01's shape: one row per vocabulary size and text (target and English).
    tpc = pd.DataFrame({"num_new_tokens": [20, 20, 50, 50], "text": ["am", "en", "am", "en"],
                        "before": [2.3, 0.3, 2.3, 0.3], "after": [1.5, 0.3, 1.1, 0.3], "lang": "am"})
    fig = report.fig_tokens_per_char({"tokens_per_char": tpc}, pd.DataFrame())
    heights = sorted(round(p.get_height(), 3) for p in fig.axes[0].patches if p.get_height() > 0)
    assert heights == [1.1, 2.3]  # before VE and after the largest N, target text only


def _items(lang, models, n=40, seed=0):
    """items.csv rows: per model a shift on shared per-item difficulties (known differences)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    base = rng.normal(1.0, 0.3, n)
    rows = []
    for model, shift in models.items():
        vals = base + shift + rng.normal(0, 0.005, n)
        for task, metric in [("reply", "bpc_en"), ("bpc", "bpc")]:
            rows += [{"model": model, "lang": lang, "task": task, "metric": metric, "item": str(i),
                      "num": float(v) * 10, "den": 10.0, "group": "model", "t": None} for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_summary_verdicts_come_from_paired_intervals():
    # reply BPC: ElChat 0.02 above Chat (inside a 10% margin), 0.05 below Chat+VE (decided);
    # target BPC: Chat+VE 0.3 - 0.07 below Chat, ElChat 0.1 - 0.02 below -> keeps 35% of the gain
    shifts = {"Chat": 0.0, "Chat+VE": 0.07, "ElChat": 0.02, "ElChat w/o copy": 0.02}
    items = _items("am", shifts)
    target = items["task"] == "bpc"
    gain = items["model"].map({"Chat": 0.0, "Chat+VE": -0.3, "ElChat": -0.1, "ElChat w/o copy": -0.1})
    items.loc[target, "num"] = items.loc[target, "num"] + 10 * gain[target]
    stats = items.groupby(["model", "task", "metric"]).apply(lambda g: g["num"].sum() / g["den"].sum())
    rows = [{"model": m, "lang": "am", "task": t, "metric": k, "value": v, "n": 40, "ci_low": v - .1,
             "ci_high": v + .1, "group": "model", "t": None} for (m, t, k), v in stats.items()]
    table = report.results_table(pd.DataFrame(rows))
    text = report.summary(table, items=items)
    assert "ElChat keeps chat ability close to Chat (reply BPC (en) ↓): **holds**" in text
    assert "ElChat retains more chat ability than Chat+VE (reply BPC (en) ↓): **holds**" in text
    assert "Chat+VE gains on target text over Chat (target BPC ↓): **holds**" in text
    assert "of Chat+VE's target-BPC gain: **does not hold** — share kept 0.3" in text
    assert "Copying the chat-template token rows helps (reply BPC (en) ↓): **inconclusive at n = 40**" in text


def test_no_signal_metrics_decide_nothing():
    idx = pd.MultiIndex.from_tuples([("am", m) for m in ("Chat", "ElChat")], names=["lang", "model"])
    table = pd.DataFrame({"chrF en→L": [0.8, 4.2], "chat format": [0.4, 0.5]}, index=idx)
    assert report.no_signal_columns(table, "am") == ["chrF en→L"]


def test_degenerate_scores_are_not_claimed():
    idx = pd.MultiIndex.from_tuples([("am", m) for m in ("Chat", "Chat+VE", "ElChat", "ElChat w/o copy")],
                                    names=["lang", "model"])
    table = pd.DataFrame({"IFEval strict": [0.0, 0.0, 0.0, 0.0], "chat format": [0.0, 0.0, 0.0, 0.0],
                          "target BPC": [3.0, 2.0, 2.5, 2.5]}, index=idx)
    assert not report.best_marks(table)["IFEval strict"].any()  # all equal: nothing marked
    assert report.best_marks(table)["target BPC"].tolist() == [False, True, False, False]
    text = report.summary(table)
    assert "No signal at this scale: IFEval strict, chat format." in text
    verdicts = "\n".join(line for line in text.splitlines() if line.startswith("- "))
    assert "(IFEval strict): no signal at this scale" in verdicts and "holds" not in verdicts


def test_wide_table_pivots_tidy_rows_into_metrics_columns():
    rows = pd.DataFrame([
        {"model": "ElChat", "task": "bpc", "metric": "bpc_en", "value": 1.6},
        {"model": "Chat", "task": "bpc", "metric": "bpc", "value": 3.0},
        {"model": "Chat", "task": "mc", "metric": "accuracy", "value": 0.5},
        {"model": "Chat", "task": "mc", "metric": "chance", "value": 0.25},
        {"model": "Chat", "task": "ifeval", "metric": "instruction_strict", "value": 0.7},  # not reported
        {"model": "ElChat", "task": "bpc", "metric": "bpc", "value": 2.3},
    ])
    wide = report.wide_table(rows)
    assert list(wide.index) == ["ElChat", "Chat"]  # first appearance
    assert list(wide.columns) == ["target BPC", "MC accuracy", "English BPC"]  # METRICS order
    assert wide.loc["ElChat", "target BPC"] == 2.3 and wide.loc["Chat", "MC accuracy"] == 0.5
    assert pd.isna(wide.loc["Chat", "English BPC"])
    shown = report.wide_table(rows, display=True)
    assert list(shown.columns) == ["target BPC ↓", "MC accuracy (chance 0.25)", "English BPC ↓"]
    assert report.wide_table(rows.iloc[:0]).empty


def test_metrics_is_one_pair_per_column_and_names_what_tasks_produce():
    pairs = [(m.task, m.metric) for m in report.METRICS.values()]
    assert len(pairs) == len(set(pairs))
    assert report.column_of("chat_format", "all_ok") == "chat format"
    assert report.column_of("chat_format", "rate") is None  # no task writes this name
    assert report.headers()["speed-up"] == "speed-up (vs Chat)"
    assert [c for c, m in report.METRICS.items() if m.lower_is_better] == [
        "target BPC", "reply BPC (en)", "reply BPC (L)", "English BPC", "tokens/char"]


def test_paired_differences_table_reads_each_model_against_chat():
    items = _items("am", {"Chat": 0.0, "Chat+VE": 0.07, "ElChat": 0.0})
    diffs = report.paired_differences(items).set_index(["model", "column"])
    ve = diffs.loc[("Chat+VE", "reply BPC (en) ↓")]
    assert ve["minus Chat"] == pytest.approx(0.07, abs=0.005) and ve["reading"] == "worse" and ve["n"] == 40
    assert diffs.loc[("ElChat", "reply BPC (en) ↓"), "reading"] == "inconclusive at n = 40"


def test_heatmap_colour_is_difference_to_chat_in_interval_units():
    idx = pd.MultiIndex.from_tuples([("am", "Chat"), ("am", "ElChat")], names=["lang", "model"])
    table = pd.DataFrame({"target BPC": [3.0, 2.5], "chat format": [0.8, 0.6]}, index=idx)
    cis = {("am", "Chat", "target BPC"): (2.9, 3.1, 20), ("am", "ElChat", "target BPC"): (2.3, 2.7, 20),
           ("am", "Chat", "chat format"): (0.7, 0.9, 20), ("am", "ElChat", "chat format"): (0.5, 0.7, 20)}
    # no items: the two intervals combined; lower BPC is better, so ElChat's -0.5 is +0.5 / hypot(0.1, 0.2)
    assert report.difference_units(table, {}, cis, "am", "ElChat", "target BPC") == pytest.approx(0.5 / (0.1 ** 2 + 0.2 ** 2) ** 0.5)
    assert report.difference_units(table, {}, cis, "am", "ElChat", "chat format") == pytest.approx(-0.2 / (2 * 0.1 ** 2) ** 0.5)
    # with items, the unit is the half-width of the paired interval of the difference (far narrower)
    from elchat.evaluation import paired

    entries = report.item_entries(_items("am", {"Chat": 0.0, "ElChat": 0.07}))
    d = paired.difference(entries[("am", "ElChat", "reply", "bpc_en")], entries[("am", "Chat", "reply", "bpc_en")],
                          n_boot=500)
    table2 = pd.DataFrame({"reply BPC (en)": [1.0, 1.07]}, index=idx)
    got = report.difference_units(table2, entries, {}, "am", "ElChat", "reply BPC (en)")
    assert got == pytest.approx(-d["value"] / ((d["ci95"][1] - d["ci95"][0]) / 2)) and got < -1
