"""Forgetting against CPT (`elchat.forgetting`) on a tiny run: the nano chat model, CPT with one
snapshot, ElChat merges of every point, scores, paired differences and the figure.

Known answers used as independent references: stage 01 here is the chat model itself (no new
tokens), so at step 0 Chat+VE *is* C and ElChat(C, C) must equal C tensor for tensor (SLERP of a
tensor with itself), every score of those models equals C's, and their paired difference is 0.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from elchat import cpt, forgetting, runs

DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i % 7} times, then rests."
        for i in range(60)]
VALID = ["The weather today is sunny with a light wind.", "Hello! How are you today?"]


@pytest.fixture(scope="module")
def tiny_run(tiny_pair, tmp_path_factory):
    """runs/<preset>/<lang> with 00 sources, 01 chat_ve (= chat), 02 chat_cpt (8 steps, snapshot at 4)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("forgetting") / "runs" / "nano" / "am"
    chat = tiny_pair["chat"]
    runs.write_sources(run, chat)
    chat_ve = runs.stage_dir(run, "01") / "chat_ve"
    shutil.copytree(chat, chat_ve)
    config = cpt.CPTConfig(max_steps=8, block_size=32, batch_size=2, log_every=1, eval_every=0,
                           save_every=0, snapshots=(0.5,), lr=1e-2,
                           cache_dir=str(tmp_path_factory.mktemp("tokens")))
    summary = cpt.train(chat_ve, DOCS, VALID, runs.stage_dir(run, "02") / "chat_cpt", config, progress=False)
    cpt.write_stage_summary(runs.stage_dir(run, "02"), {"chat_cpt": summary})
    yield run
    torch.set_num_threads(threads)


def _tensors(path):
    return load_file(str(path / "model.safetensors"))


def test_merge_points_follow_the_cpt_path(tiny_run, tiny_pair):
    points = forgetting.merge_points(tiny_run, tiny_pair["chat"], layers=[0, 1, -2, -1],
                                     t=[0.3, 0.5, 0.5, 0.3])
    assert [p["step"] for p in points] == [0, 4, 8]
    assert [p["tokens"] for p in points] == [0, 4 * 2 * 32, 8 * 2 * 32]  # steps x batch x block
    cpt_dir = runs.stage_dir(tiny_run, "02")
    assert [p["Chat+VE"] for p in points] == [runs.stage_dir(tiny_run, "01") / "chat_ve",
                                              cpt_dir / "chat_cpt/snapshots/step-4", cpt_dir / "chat_cpt"]
    listing = json.loads((runs.stage_dir(tiny_run, "03") / forgetting.LISTING).read_text())
    assert not any(p["ElChat"].startswith("/") for p in listing["points"])  # relative: the run can move
    chat, merged0 = _tensors(tiny_pair["chat"]), _tensors(points[0]["ElChat"])
    assert chat.keys() == merged0.keys()
    assert all(torch.allclose(chat[k], merged0[k], atol=1e-6) for k in chat)  # ElChat(C, C) == C
    merged8, adapted8 = _tensors(points[2]["ElChat"]), _tensors(points[2]["Chat+VE"])
    moved = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged8[moved], adapted8[moved]) and not torch.equal(merged8[moved], chat[moved])


def test_score_points_table_pairs_and_figure(tiny_run, tiny_pair, tmp_path):
    forgetting.merge_points(tiny_run, tiny_pair["chat"], layers=[0, 1, -2, -1], t=[0.3, 0.5, 0.5, 0.3])
    out = runs.stage_dir(tiny_run, "04")
    table, results = forgetting.score_points(tiny_run, "am", out, limit=3, batch_size=4)
    assert (out / forgetting.TABLE).is_file()
    assert set(table["model"]) == {"Chat", "Chat+VE", "ElChat"}
    assert sorted(table.dropna(subset=["step"])["step"].unique()) == [0, 4, 8]
    key = ["task", "metric"]
    chat = table[table["model"] == "Chat"].set_index(key)["value"]
    for model in forgetting.CURVES:  # step 0: both models are C's weights -> C's numbers
        at0 = table[(table["model"] == model) & (table["step"] == 0)].set_index(key)["value"]
        assert at0.to_dict() == pytest.approx(chat.to_dict(), rel=1e-5)
    assert {("bpc", "bpc"), ("reply", "bpc_en")} <= set(map(tuple, table[key].values))
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    diffs = forgetting.paired_rows(results)
    at0 = diffs[diffs["step"] == 0]
    assert len(at0) and at0["diff"].abs().max() < 1e-6 and (at0["ci_high"] - at0["ci_low"]).max() < 1e-6
    assert set(diffs["step"]) == {0, 4, 8}
    fig = forgetting.plot(table, tmp_path / "f.png", "nano · am")
    assert (tmp_path / "f.png").stat().st_size > 0
    assert len(fig.axes) == len({tuple(k) for k in table[key].values})
    assert all("n = " in ax.get_title() for ax in fig.axes)


def test_final_point_reuses_elchat_and_the_main_results(tiny_run, tiny_pair, tmp_path, monkeypatch):
    """The last point is stage 03's own ElChat (not merged again), and models the main evaluation
    scored on the same items are read back from `results/`, not scored again."""
    from elchat.evaluation import stage
    from elchat.merge import elchat_merge

    final = runs.stage_dir(tiny_run, "03") / "elchat"
    elchat_merge(tiny_pair["chat"], runs.stage_dir(tiny_run, "02") / "chat_cpt", final,
                 layers=[0, 1, -2, -1], t=[0.3, 0.5, 0.5, 0.3])
    points = forgetting.merge_points(tiny_run, tiny_pair["chat"], layers=[0, 1, -2, -1],
                                     t=[0.3, 0.5, 0.5, 0.3], final_merged=final)
    assert points[-1]["ElChat"] == final and points[0]["ElChat"] != final
    out = tmp_path / "04_eval"
    limits = {"bpc": 3, "reply": 3}
    stage.evaluate_models({"Chat": tiny_pair["chat"], "ElChat": final}, {}, "am", out,
                          tasks=forgetting.TASKS, limit=5, eval_batch_size=4, device="cpu",
                          max_new_tokens=8, task_limits=limits)
    scored = []
    evaluate = stage.evaluate
    resolved = lambda p: str(Path(p).resolve())  # noqa: E731
    monkeypatch.setattr(stage, "evaluate",
                        lambda path, *a, **k: scored.append(resolved(path)) or evaluate(path, *a, **k))
    table, results = forgetting.score_points(tiny_run, "am", out, limit=5, batch_size=4, task_limits=limits,
                                             max_new_tokens=8)
    assert resolved(final) not in scored and resolved(tiny_pair["chat"]) not in scored
    assert len(scored) == 2 * len(points) - 1  # every Chat+VE point and the ElChat points but the last
    saved = json.loads((out / "results" / "ElChat.json").read_text())
    assert results[("ElChat", points[-1]["step"])]["tasks"]["bpc"] == saved["tasks"]["bpc"]
    # every point scores the same replies: the main evaluation's, cached (one file, 8 tokens long)
    replies = sorted((out / "replies").glob("*.json"))
    assert len(replies) == 1 and json.loads(replies[0].read_text())["max_new_tokens"] == 8
    # other limits or other reply lengths than the main evaluation's: nothing is read back
    for kwargs in ({"limit": 2}, {"limit": 5, "task_limits": limits, "max_new_tokens": 12}):
        scored.clear()
        forgetting.score_points(tiny_run, "am", out, batch_size=4, **kwargs)
        assert len(scored) == 2 * len(points) + 1
