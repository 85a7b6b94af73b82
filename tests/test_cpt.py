"""Stage 02 (elchat.cpt, elchat.checkpoint, elchat.packing) on tiny models: strategies, exact
resume, crash safety, bad input, NaN stop, the notebook's plan of runs. Each training run takes
about a second on one thread."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from elchat import checkpoint, cpt, method
from elchat.checkpoint import find_checkpoint
from elchat.cpt import CPTConfig, train
from elchat.packing import document_separator, pack_blocks, token_stream

from conftest import CPT_DOCS as DOCS, CPT_VALID as VALID  # noqa: E402

TIMING = {"tokens_per_s", "elapsed_s"}
pytestmark = pytest.mark.usefixtures("one_thread_own_cache")


def small(**kw) -> CPTConfig:
    base = dict(max_steps=6, block_size=32, batch_size=2, log_every=1, eval_every=2, save_every=3)
    return CPTConfig(**{**base, **kw})


def tensors(path):
    return load_file(str(path / "model.safetensors"))


def changed(before: dict, after: dict) -> set[str]:
    assert set(before) == set(after)
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def reference(tiny_pair, tmp_path_factory):
    """A straight 2K-step run (K=3) of 2x2ls on layers (0, -1) of the untied chat model."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cpt_ref") / "ref"
    summary = train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1)), progress=False)
    return {"out": out, "summary": summary, "rows": json.loads((out / "log.json").read_text())}


def expected_changed(names, strategy, layers=()):
    """Which saved tensors a strategy may change, derived from tensor names alone."""
    def layer(n):
        return int(n.split(".")[2]) if n.startswith("model.layers.") else None
    emb = {n for n in names if n.startswith(("model.embed_tokens", "lm_head"))}
    if strategy == "full":
        return set(names)
    if strategy == "embeddings":
        return emb
    if strategy == "2x2ls":
        return emb | {"model.norm.weight"} | {n for n in names if layer(n) in layers}
    if strategy == "lora":
        return emb | {n for n in names if n.endswith("proj.weight")}
    raise AssertionError(strategy)


@pytest.mark.parametrize("strategy", ["2x2ls", "embeddings", "full", "lora"])
def test_strategy_changes_exactly_its_parameters(strategy, tiny_pair, tmp_path, reference):
    if strategy == "2x2ls":  # the module-scoped reference run is this case
        out, summary = reference["out"], reference["summary"]
    else:
        out = tmp_path / strategy
        summary = train(tiny_pair["chat"], DOCS, VALID, out, small(strategy=strategy, save_every=0),
                        progress=False)
    before, after = tensors(tiny_pair["chat"]), tensors(out)
    assert changed(before, after) == expected_changed(before, strategy, layers={0, 3})
    assert summary["steps"] == 6 and summary["tokens"] == 6 * 2 * 32
    assert not (out / "checkpoints").exists()  # dropped once the final model is written
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(AutoTokenizer.from_pretrained(out)) == model.config.vocab_size
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.mark.parametrize("strategy", ["2x2ls", "lora"])
def test_tied_embeddings_stay_tied_and_train(strategy, tiny_tied_chat, tmp_path):
    from transformers import AutoModelForCausalLM
    out = tmp_path / strategy
    train(tiny_tied_chat, DOCS, VALID, out, small(strategy=strategy, max_steps=3, save_every=0,
                                                 layers=(0, -1)), progress=False)
    before, after = tensors(tiny_tied_chat), tensors(out)
    assert changed(before, after) == expected_changed(before, strategy, layers={0, 3})
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_gradient_checkpointing_gives_the_same_weights(tiny_pair, tmp_path):
    plain, ckpt = tmp_path / "plain", tmp_path / "gc"
    for out, gc in ((plain, False), (ckpt, True)):
        train(tiny_pair["chat"], DOCS, None, out, small(max_steps=2, save_every=0,
                                                        gradient_checkpointing=gc), progress=False)
    a, b = tensors(plain), tensors(ckpt)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert changed(tensors(tiny_pair["chat"]), b)  # it did train


def test_log_rows_and_learning_rate_schedule(reference):
    rows = reference["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]  # step 0: evaluation before training
    assert "train_loss" not in rows[0] and rows[0]["tokens"] == 0
    rows = rows[1:]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert [r["step"] for r in rows if "valid_loss" in r] == [2, 4, 6]
    assert rows[-1]["tokens"] == 6 * 2 * 32 and rows[-1]["epoch"] > 0
    assert all(0 < r["valid_bpc"] < 20 for r in rows if "valid_bpc" in r)
    # warmup ceil(5% of 6) = 1 step at lr 0, then cosine from 5e-5: lr_s = 5e-5 * (1+cos(pi*(s-1)/5))/2
    lrs = [r["lr"] for r in rows]
    expect = [0.0] + [5e-5 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 5)) for s in range(1, 6)]
    assert np.allclose(lrs, expect, rtol=1e-6, atol=1e-12)
    csv_lines = (reference["out"] / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,tokens,") and len(csv_lines) == 8


def _kill_after_checkpoint(monkeypatch, at_step):
    real = checkpoint.save_checkpoint

    def save_then_die(path, named, optimizer, scheduler, state):
        real(path, named, optimizer, scheduler, state)
        if state["step"] == at_step:
            raise KeyboardInterrupt("simulated kill")
    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)


def test_resume_is_exact(tiny_pair, tmp_path, reference, monkeypatch):
    out = tmp_path / "resumed"
    _kill_after_checkpoint(monkeypatch, at_step=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1)), progress=False)
    assert not (out / "config.json").exists()  # no half-trained model where stage 03 reads
    assert json.loads((find_checkpoint(out) / "state.json").read_text())["step"] == 3
    monkeypatch.undo()
    torch.set_num_threads(1)
    summary = train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1)), resume=True,
                    progress=False)
    assert summary["resumed_from_step"] == 3
    ref, got = tensors(reference["out"]), tensors(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # bitwise on CPU
    rows = json.loads((out / "log.json").read_text())
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in reference["rows"]]
    # a finished run with the same settings is returned without training again
    again = train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1)), resume=True)
    assert again["resumed_from_step"] == 3 and again["steps"] == 6


def test_killed_checkpoint_write_keeps_previous(tiny_pair, tmp_path, reference, monkeypatch):
    out = tmp_path / "killed"
    real_save, calls = torch.save, []

    def dying_save(obj, f, *a, **k):  # the optimizer file of the 2nd checkpoint never completes
        calls.append(f)
        if len(calls) == 2:
            raise OSError("simulated crash while writing the checkpoint")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1), save_every=2),
              progress=False)
    monkeypatch.undo()
    torch.set_num_threads(1)
    ckpt = find_checkpoint(out)
    assert json.loads((ckpt / "state.json").read_text())["step"] == 2
    assert not list((out / "checkpoints").glob(".tmp-*"))
    train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1), save_every=2), resume=True,
          progress=False)
    ref, got = tensors(reference["out"]), tensors(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_resume_with_other_settings_is_refused(tiny_pair, tmp_path, monkeypatch):
    out = tmp_path / "other"
    _kill_after_checkpoint(monkeypatch, at_step=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_pair["chat"], DOCS, VALID, out, small(), progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="lr"):
        train(tiny_pair["chat"], DOCS, VALID, out, small(lr=1e-3), resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_pair, tmp_path, reference, monkeypatch):
    import transformers
    real = transformers.get_cosine_schedule_with_warmup

    def exploding(optimizer, warmup, total):  # step 4 (scheduler index 3) gets an infinite lr
        sched = real(optimizer, warmup, total)
        normal = sched.lr_lambdas[0]
        sched.lr_lambdas[0] = lambda s: math.inf if s == 3 else normal(s)
        return sched
    monkeypatch.setattr(cpt, "get_cosine_schedule_with_warmup", exploding)  # what make_scheduler calls
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"step [45]\b.*last good checkpoint"):
        train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1), save_every=2),
              progress=False)
    ckpt = find_checkpoint(out)
    assert json.loads((ckpt / "state.json").read_text())["step"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "trainable.safetensors")).values())
    monkeypatch.undo()
    torch.set_num_threads(1)
    train(tiny_pair["chat"], DOCS, VALID, out, small(layers=(0, -1), save_every=2), resume=True,
          progress=False)
    ref, got = tensors(reference["out"]), tensors(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_infinite_lr_never_checkpoints_bad_weights(tiny_pair, tmp_path):
    out = tmp_path / "inf"
    with pytest.raises(FloatingPointError, match="non-finite|loss is"):
        train(tiny_pair["chat"], DOCS, VALID, out, small(lr=math.inf, warmup_ratio=0.0,
                                                         save_every=1), progress=False)
    assert find_checkpoint(out) is None and not (out / "config.json").exists()


@pytest.fixture
def unresized(tiny_pair, tmp_path):
    """A model dir whose tokenizer was expanded but whose embeddings were not resized."""
    from transformers import AutoTokenizer
    d = tmp_path / "unresized"
    shutil.copytree(tiny_pair["chat"], d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.add_tokens(["ሰላም", "ዓለም"])
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("case, match", [
    ("empty", "empty"), ("blank", "empty"), ("short", "fewer than one block"),
    ("block", "max_position_embeddings"), ("layers", "not a layer index"), ("vocab", "vocab size"),
    ("duplicate", "listed twice"),
])
def test_bad_input_fails_before_training(case, match, tiny_pair, tmp_path, unresized):
    model, texts, cfg = tiny_pair["chat"], DOCS, small()
    if case == "empty":
        texts = []
    elif case == "blank":
        texts = ["", "   \n"]
    elif case == "short":
        texts = ["hi"]
    elif case == "block":
        from transformers import AutoConfig
        cfg = small(block_size=AutoConfig.from_pretrained(model).max_position_embeddings + 1)
    elif case == "layers":
        cfg = small(layers=(0, 4))
    elif case == "duplicate":  # -1 and 3 are the same layer of the 4-layer model
        cfg = small(layers=(0, 3, -1))
    elif case == "vocab":
        model = unresized
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        train(model, texts, VALID, out, cfg, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("kw, match", [
    ({"strategy": "prefix"}, "unknown"), ({"max_steps": 0}, "budget"), ({"batch_size": 0}, "batch"),
    ({"dtype": "int8"}, "dtype"), ({"lr": -1.0}, "lr"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        CPTConfig(**kw)


def test_config_defaults_follow_the_papers():
    assert CPTConfig().lr == 5e-5 and CPTConfig(strategy="embeddings").lr == 1e-4
    assert CPTConfig().layers == (0, 1, -2, -1) and CPTConfig().block_size == 512
    assert CPTConfig().layers == method.TRANSITION_LAYERS  # the single definition
    assert all(CPTConfig(strategy=s).lr == method.default_lr(s) for s in method.CPT_STRATEGIES)
    assert CPTConfig(max_tokens=10_000, block_size=512).total_steps(4096) == 3


def test_packing_joins_documents_with_the_document_token(tiny_tokenizer, tmp_path):
    eot = tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert document_separator(tiny_tokenizer) == eot != tiny_tokenizer.eos_token_id  # not <|im_end|>
    docs = ["Hello world.", "The quick brown fox."]
    expect = []
    for d in docs:
        expect += tiny_tokenizer(d, add_special_tokens=False)["input_ids"] + [eot]
    stream = token_stream(tiny_tokenizer, docs, tmp_path)
    assert stream.tolist() == expect
    assert token_stream(tiny_tokenizer, docs, tmp_path).tolist() == expect  # from the cache
    assert len(list(tmp_path.glob("*.npy"))) == 1
    blocks = pack_blocks(stream, 4)
    assert blocks.shape == (len(expect) // 4, 4) and blocks.ravel().tolist() == expect[:blocks.size]


def test_cli_trains_from_a_text_file(tiny_pair, tmp_path):
    from elchat.cli import main
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n\n", encoding="utf-8")
    out = tmp_path / "cli_out"
    args = ["cpt", "--model", str(tiny_pair["chat"]), "--lang", str(corpus), "--max-steps", "2",
            "--block-size", "32", "--batch-size", "2", "--eval-every", "0", "--save-every", "0"]
    assert main(args + ["--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "log.csv").is_file()
    assert main(args + ["--out", str(tmp_path / "bad"), "--layers", "0,9"]) == 2
    assert not (tmp_path / "bad").exists()


def test_rng_state_round_trip():
    import random
    tensors, meta = checkpoint.rng_state()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    checkpoint.set_rng_state(tensors, meta)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_find_checkpoint_recovers_an_interrupted_rename(tmp_path):
    root = tmp_path / "checkpoints"
    assert find_checkpoint(tmp_path) is None
    old = root / ".tmp-last-old"  # atomic_dir moved the old checkpoint away, then was killed
    old.mkdir(parents=True)
    (old / "complete").write_text("ok\n")
    (root / "last").mkdir()  # a half-renamed new one, not complete
    assert find_checkpoint(tmp_path) == root / "last"
    assert (root / "last" / "complete").is_file() and not old.exists()


def test_check_compatible_names_what_differs(tmp_path):
    state = {"config": {"lr": 1e-4, "save_every": 10}, "n_blocks": 5}
    checkpoint.check_compatible(tmp_path, state, {"lr": 1e-4, "save_every": 20}, 5,
                                free={"save_every"})
    with pytest.raises(ValueError, match=r"lr, corpus \(5 blocks then, 6 now\)"):
        checkpoint.check_compatible(tmp_path, state, {"lr": 1e-3, "save_every": 10}, 6)


def test_config_rejects_layers_that_are_not_indices():
    with pytest.raises(ValueError, match="layers"):
        CPTConfig(layers=("first",))
    assert CPTConfig(layers=[0, -1]).layers == (0, -1)


def _vocab_run(tmp_path, base: bool):
    run = tmp_path / "micro" / "am"
    for name in ("chat_ve", "base_ve") if base else ("chat_ve",):
        (run / "01_vocab" / name).mkdir(parents=True)
        (run / "01_vocab" / name / "config.json").write_text("{}")
    return run


@pytest.mark.parametrize("base", [True, False])
def test_stage_plan_lists_the_runs_of_the_preset(tmp_path, base):
    run = _vocab_run(tmp_path, base)
    plan = cpt.stage_plan(run, strategy="2x2ls", base_strategy_lep="embeddings", lr=2e-4,
                          layers=[0, -1], max_steps=7, batch_size=3)
    vocab = run / "01_vocab"
    assert list(plan) == (["chat_cpt", "base_cpt", "base_emb"] if base else ["chat_cpt"])
    assert plan["chat_cpt"][0] == vocab / "chat_ve"
    assert all(cfg.layers == (0, -1) and cfg.max_steps == 7 and cfg.batch_size == 3
               for _, cfg in plan.values())
    assert (plan["chat_cpt"][1].strategy, plan["chat_cpt"][1].lr) == ("2x2ls", 2e-4)
    if base:
        assert plan["base_cpt"][0] == plan["base_emb"][0] == vocab / "base_ve"
        assert (plan["base_cpt"][1].strategy, plan["base_cpt"][1].lr) == ("2x2ls", 2e-4)
        assert (plan["base_emb"][1].strategy, plan["base_emb"][1].lr) == ("embeddings", 4e-4)


def test_stage_plan_errors_name_the_parameter_or_the_notebook(tmp_path):
    run = _vocab_run(tmp_path, base=True)
    with pytest.raises(ValueError, match="base_strategy_lep='prefix'"):
        cpt.stage_plan(run, base_strategy_lep="prefix", max_steps=1)
    with pytest.raises(ValueError, match="strategy='nope'"):
        cpt.stage_plan(run, strategy="nope", max_steps=1)
    with pytest.raises(FileNotFoundError, match="01_vocabulary_expansion.ipynb"):
        cpt.stage_plan(tmp_path / "micro" / "xx", max_steps=1)


def test_write_stage_summary(tmp_path):
    summary = {"strategy": "2x2ls", "steps": 6, "tokens": 384, "trainable_params": 1000,
               "final_train_loss": 3.5, "final_valid_loss": 3.25, "final_valid_bpc": None,
               "train_tokens_per_s": 12.5, "other": "not a column"}
    table = cpt.write_stage_summary(tmp_path, {"chat_cpt": summary})
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert lines == ["run,strategy,steps,tokens,trainable params,train loss,valid loss,valid BPC,"
                     "tokens/s", "chat_cpt,2x2ls,6,384,1000,3.5,3.25,,12.5"]
    assert table["valid loss"].tolist() == [3.25]


def test_cli_corpus_comes_from_the_data_module(tmp_path):
    import argparse
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n\n", encoding="utf-8")
    args = argparse.Namespace(hub_dataset=None, lang=str(corpus), eval_max_docs=2)
    train_docs, valid_docs = cpt._texts_for_cli(args)
    assert valid_docs == DOCS[:2] and train_docs == DOCS[2:]  # 60 // 20 = 3, capped at 2
