"""CPT snapshots (elchat.cpt, CPTConfig.snapshots): intermediate models kept as full HF directories
for forgetting-vs-CPT curves, listed in cpt_summary.json and the stage's snapshots.json."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from elchat import cpt
from elchat.cpt import CPTConfig, train

from conftest import CPT_DOCS as DOCS, CPT_VALID as VALID  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_own_cache")


def small(**kw) -> CPTConfig:
    base = dict(max_steps=8, block_size=32, batch_size=2, log_every=1, eval_every=0, save_every=3,
                layers=(0, -1))
    return CPTConfig(**{**base, **kw})


@pytest.mark.parametrize("fixture", ["tiny_pair", "tiny_tied_chat"])
def test_snapshots_equal_a_run_stopped_there(fixture, request, tmp_path):
    source = request.getfixturevalue(fixture)
    source = source["chat"] if isinstance(source, dict) else source
    out = tmp_path / "run"
    summary = train(source, DOCS, VALID, out, small(snapshots=(0.25, 0.5)), progress=False)
    tokens_per_step = 2 * 32
    assert summary["snapshots"] == [
        {"step": 2, "tokens": 2 * tokens_per_step, "path": "snapshots/step-2"},
        {"step": 4, "tokens": 4 * tokens_per_step, "path": "snapshots/step-4"}]
    assert json.loads((out / "cpt_summary.json").read_text())["snapshots"] == summary["snapshots"]
    assert not (out / "checkpoints").exists()
    # the independent reference: the same run with a 4-step budget would differ (cosine schedule),
    # so compare against the steps' own record instead: the snapshot at step 4 differs from the
    # source and from the final model, and loads as a complete HF model
    snap = out / "snapshots" / "step-4"
    model = AutoModelForCausalLM.from_pretrained(snap)
    final = AutoModelForCausalLM.from_pretrained(out)
    src = AutoModelForCausalLM.from_pretrained(source)
    emb = [m.get_input_embeddings().weight for m in (src, model, final)]
    assert not torch.equal(emb[0], emb[1]) and not torch.equal(emb[1], emb[2])
    assert set(load_file(str(snap / "model.safetensors"))) == set(
        load_file(str(out / "model.safetensors")))
    assert json.loads((snap / "config.json").read_text())["use_cache"] is True


def test_snapshot_matches_the_weights_at_that_step(tiny_pair, tmp_path, monkeypatch):
    """The snapshot at step 4 of a straight run equals the trainable weights that the checkpoint
    code saved at step 4 of a run killed there; resumed, that run keeps the snapshot."""
    out = tmp_path / "run"
    train(tiny_pair["chat"], DOCS, VALID, out, small(snapshots=(0.5,), save_every=4, max_steps=8),
          progress=False)
    # a second run that stops at step 4 keeps its checkpoint: the weights at step 4, saved by
    # the checkpoint code (independent of the snapshot writer)
    stop = tmp_path / "stop"
    real = cpt._checkpoint

    def kill_after_4(run, lr):
        real(run, lr)
        if run.step == 4:
            raise KeyboardInterrupt
    monkeypatch.setattr(cpt, "_checkpoint", kill_after_4)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_pair["chat"], DOCS, VALID, stop, small(snapshots=(0.5,), save_every=4,
                                                           max_steps=8), progress=False)
    at4 = load_file(str(stop / "checkpoints" / "last" / "trainable.safetensors"))
    snap = load_file(str(out / "snapshots" / "step-4" / "model.safetensors"))
    for name, value in at4.items():
        assert torch.equal(snap[name], value), name
    # resumed, the interrupted run finishes with the same snapshot list and final weights
    monkeypatch.setattr(cpt, "_checkpoint", real)
    resumed = train(tiny_pair["chat"], DOCS, VALID, stop, small(snapshots=(0.5,), save_every=4,
                                                                 max_steps=8), resume=True,
                    progress=False)
    assert resumed["snapshots"] == [{"step": 4, "tokens": 4 * 64, "path": "snapshots/step-4"}]
    assert (stop / "snapshots" / "step-4" / "model.safetensors").is_file()
    final_a, final_b = load_file(str(out / "model.safetensors")), load_file(str(stop / "model.safetensors"))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.parametrize("value", [[0.0], [1.0], [1.5], ["0.5"], "0.5", [True]])
def test_snapshot_fractions_are_validated(value):
    with pytest.raises(ValueError, match="snapshots="):
        CPTConfig(snapshots=value)


def test_snapshot_steps_round_and_dedupe():
    config = CPTConfig(snapshots=[0.5, 0.25, 0.26])
    assert config.snapshots == (0.25, 0.26, 0.5)
    assert config.snapshot_steps(8) == [2, 4]  # 0.26 * 8 = 2.08 -> 2, once
    assert config.snapshot_steps(1) == []       # nothing strictly inside a 1-step run


def test_stage_summary_lists_snapshots_relative_to_the_stage(tmp_path):
    row = {"strategy": "2x2ls", "steps": 8, "tokens": 512, "trainable_params": 1,
           "final_train_loss": 1.0, "final_valid_loss": None, "final_valid_bpc": None,
           "train_tokens_per_s": 1.0}
    snaps = [{"step": 2, "tokens": 128, "path": "snapshots/step-2"}]
    cpt.write_stage_summary(tmp_path, {"chat_cpt": {**row, "snapshots": snaps}, "base_emb": row})
    assert json.loads((tmp_path / "snapshots.json").read_text()) == {
        "chat_cpt": [{"step": 2, "tokens": 128, "path": "chat_cpt/snapshots/step-2"}],
        "base_emb": []}


def test_tracker_logs_offline_and_survives_the_final_write(tiny_pair, tmp_path):
    """log_with="tensorboard": accelerate's tracker writes event files under out_dir/tracker, kept
    in the final directory; the scalars read back equal log.json's train losses."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    train(tiny_pair["chat"], DOCS, VALID, out, small(max_steps=3, log_with="tensorboard"),
          progress=False)
    events = list((out / "tracker").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [round(e.value, 4) for e in acc.Scalars("train_loss")]
    rows = json.loads((out / "log.json").read_text())
    assert logged == [round(r["train_loss"], 4) for r in rows if r.get("train_loss") is not None]


def test_unknown_tracker_is_refused():
    with pytest.raises(ValueError, match="log_with='wandb'"):
        CPTConfig(log_with="wandb")
