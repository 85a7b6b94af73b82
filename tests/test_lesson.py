"""The lesson's toy examples (elchat.lesson), the three-prompt showcase (elchat.showcase) and the
figures' baselines, each checked against values computed here by hand."""
import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from elchat import lesson, method, runs, showcase

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)


def _unit(degrees: float) -> torch.Tensor:
    return torch.tensor([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


def test_slerp_arc_ends_norms_and_angles():
    a, c = _unit(0), _unit(100)
    arc = lesson.slerp_arc(a, c, [0, 0.25, 0.5, 1])
    assert torch.equal(arc[0], a) and torch.equal(arc[-1], c)  # t = 0 is A, t = 1 is C (weight of C)
    # on the unit circle, t walks the angle linearly: t = 0.25 sits at 25 degrees, 0.5 at 50
    assert torch.allclose(arc[1], _unit(25), atol=1e-6) and torch.allclose(arc[2], _unit(50), atol=1e-6)
    assert torch.allclose(arc.norm(dim=1), torch.ones(4), atol=1e-6)
    # lerp's midpoint is shorter by cos(50 degrees): the reason to interpolate on the sphere
    assert ((a + c) / 2).norm().item() == pytest.approx(math.cos(math.radians(50)))


def test_draw_slerp_arc_labels_each_end():
    a, c = _unit(0), _unit(100)
    fig, ax = plt.subplots()
    arc = lesson.draw_slerp_arc(ax, a, c, n=5)
    texts = {t.get_text(): t.xy for t in ax.texts if t.get_text()}  # annotations: the point labelled
    assert texts["t = 0: A (Chat+VE)"] == pytest.approx((1.0, 0.0))
    assert texts["t = 1: C (source Chat)"] == pytest.approx((math.cos(math.radians(100)), math.sin(math.radians(100))))
    slerp_line = next(line for line in ax.lines if line.get_label() == "slerp")
    assert np.allclose(slerp_line.get_xydata(), arc.numpy())
    plt.close(fig)


def test_toy_mean_init_is_the_mean_of_its_pieces():
    emb, sources, row = lesson.toy_mean_init()
    assert sources == {4: [1, 3]}
    assert row.tolist() == [(0.0 + 2.0) / 2, (2.0 - 2.0) / 2]  # rows 1 and 3 averaged by hand


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_toy_chat_vector_by_hand(ratio):
    toy = lesson.toy_chat_vector(ratio)
    # T = [[2, 0], [0, 1]], C - B = [[0, .5], [0, .5]]
    assert toy["CV"].tolist() == [[2.0, 0.5 * ratio], [0.0, 1.0 + 0.5 * ratio]]


def test_toy_lep_recovers_the_map():
    toy = lesson.toy_lep(n=10, h=3, new=2, seed=1)
    d_numpy = np.linalg.lstsq(toy["E_b"].numpy(), toy["E_i"].numpy(), rcond=None)[0]
    assert np.allclose(toy["D_fit"].numpy(), d_numpy) and torch.allclose(toy["D_fit"], toy["D"])
    assert toy["E_new"].shape == (12, 3)
    assert torch.allclose(toy["E_new"][10:], toy["E_d"][10:] @ toy["D"])  # new rows go through D too


def test_uniform_bpc_and_tokens_per_char(tiny_tokenizer):
    assert lesson.uniform_bpc(256, 0.5) == 4.0
    assert lesson.uniform_bpc(49152, 1.0) == pytest.approx(15.585, abs=1e-3)
    texts = ["hello world", "chat"]
    tokens = sum(len(tiny_tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    assert lesson.tokens_per_char(tiny_tokenizer, texts) == pytest.approx(tokens / 15)


def test_trainable_table_counts_what_2x2ls_trains(tiny_pair):
    from elchat.models import load_model

    model = load_model(tiny_pair["chat"], device="cpu")
    n = model.config.num_hidden_layers
    table = lesson.trainable_table(model, [0, -1])
    trained_params = sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert table["parameters"].sum() == total
    assert table.loc[table["trained"], "parameters"].sum() == trained_params
    layers = table[table["part"].str.startswith("layer ")]
    assert list(layers["part"]) == [f"layer {i} of {n}" for i in range(n)]
    assert list(layers["trained"]) == [i in (0, n - 1) for i in range(n)]
    assert table["share"].sum() == pytest.approx(1.0)
    # the published transition layers on a model of <= 4 layers are every layer: nothing stays frozen
    full = lesson.trainable_table(load_model(tiny_pair["chat"], device="cpu"), method.TRANSITION_LAYERS)
    frozen_layers = full[full["part"].str.startswith("layer ") & ~full["trained"]]
    assert len(frozen_layers) == max(0, n - len(set(method.resolve_layers(method.TRANSITION_LAYERS, n))))


def test_showcase_prompts_and_side_by_side():
    from elchat import data

    ps = showcase.prompts("am")
    first = next(d for d in data.load_texts("am", "test") if d.strip())
    assert ps == [*showcase.ENGLISH_PROMPTS, first.strip()[:showcase.TARGET_CHARS]]
    rows = [{"model": m, "prompt": p, "reply": f"{m}:{p}", "ended_turn": m == "Chat"}
            for m in ("Chat", "ElChat") for p in ("q1", "q2")]
    table = showcase.side_by_side(rows)
    assert list(table.columns) == ["Chat", "ElChat"] and list(table.index) == ["q1", "q2"]
    assert table.loc["q2", "Chat"] == "Chat:q2" and table.loc["q1", "ElChat"] == "ElChat:q1 …"


def test_showcase_writes_and_collects_in_stage_order(tiny_pair, tmp_path):
    run = tmp_path / "run"
    for stage in ("00", "02"):
        runs.stage_dir(run, stage).mkdir(parents=True)
    late = {"stage": "02", "rows": [{"model": "Chat+VE", "prompt": "q", "reply": "x", "ended_turn": True}]}
    (runs.stage_dir(run, "02") / showcase.FILE).write_text(json.dumps(late))
    table = showcase.write(run, "00", {"Chat": tiny_pair["chat"]}, "am", max_new_tokens=3)
    saved = json.loads((runs.stage_dir(run, "00") / showcase.FILE).read_text())
    assert [r["prompt"] for r in saved["rows"]] == showcase.prompts("am") and saved["max_new_tokens"] == 3
    assert list(table.columns) == ["Chat"] and len(table) == 3
    assert list(showcase.collect(run).columns) == ["Chat", "Chat+VE"]  # 00 before 02


def test_attribution_reads_the_cpt_log_and_adds_uniform_baselines(tiny_pair, tmp_path):
    import shutil

    from elchat.models import load_tokenizer

    cpt_dir = tmp_path / "chat_cpt"
    shutil.copytree(tiny_pair["chat"], cpt_dir)
    pd.DataFrame({"step": [0, 1, 2], "valid_bpc": [9.0, None, 7.5]}).to_csv(cpt_dir / "log.csv", index=False)
    config = {"eval_max_docs": 2, "block_size": 16, "batch_size": 2}
    (cpt_dir / "cpt_summary.json").write_text(json.dumps({"config": config}))
    docs = ["hello there", " ", "a short text", "not scored: past eval_max_docs"]
    frame = lesson.attribution(tiny_pair["chat"], cpt_dir, docs)
    docs = ["hello there", "a short text"]  # what CPT scored: non-empty documents, the first eval_max_docs
    assert list(frame["n_docs"]) == [2, 2, 2]
    assert list(frame["bpc"].iloc[1:]) == [9.0, 7.5]
    assert frame["model"].iloc[2] == "Chat+VE after CPT (step 2)"
    tok = load_tokenizer(cpt_dir)
    tokens = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in docs)
    assert frame["uniform_bpc"].iloc[2] == pytest.approx(math.log2(len(tok)) * tokens / sum(map(len, docs)))
    assert frame["bpc"].iloc[0] > 0


def test_attribution_scores_the_source_in_the_precision_cpt_validated_in(tiny_pair, tmp_path):
    import shutil

    import torch

    from elchat.evaluation.bpc import bits_per_char
    from elchat.models import load_model, load_tokenizer

    cpt_dir = tmp_path / "chat_cpt"
    shutil.copytree(tiny_pair["chat"], cpt_dir)
    pd.DataFrame({"step": [0, 2], "valid_bpc": [9.0, 7.5]}).to_csv(cpt_dir / "log.csv", index=False)
    config = {"eval_max_docs": 2, "block_size": 16, "batch_size": 2}
    docs = ["hello there", "a short text"]
    model, tok = load_model(tiny_pair["chat"], device="cpu").eval(), load_tokenizer(tiny_pair["chat"])
    with torch.no_grad():
        fp32 = bits_per_char(model, tok, docs, max_length=16, batch_size=2)["bpc"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = bits_per_char(model, tok, docs, max_length=16, batch_size=2)["bpc"]
    assert fp32 != bf16  # the two precisions are distinguishable on this model
    for precision, expected in (("bf16", bf16), ("no", fp32)):
        (cpt_dir / "cpt_summary.json").write_text(json.dumps({"config": config, "precision": precision}))
        frame = lesson.attribution(tiny_pair["chat"], cpt_dir, docs)
        assert frame["bpc"].iloc[0] == pytest.approx(expected, rel=1e-6, abs=0)


def test_stage_bars_draw_the_chance_level():
    from elchat.evaluation import figures

    rows = [{"model": m, "lang": "am", "task": "mc", "metric": metric, "value": v, "n": 20, "ci_low": None,
             "ci_high": None, "group": "model", "t": None}
            for m, acc in (("Chat", 0.3), ("ElChat", 0.4)) for metric, v in (("accuracy", acc), ("chance", 0.25))]
    fig = figures.fig_scores(pd.DataFrame(rows))
    ax = next(a for a in fig.axes if a.get_title())
    dashed = [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert dashed == [0.25] and ax.get_title().endswith("n = 20")
    plt.close(fig)
