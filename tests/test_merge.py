"""Merging: SLERP against an independent float64 reference, Chat Vector and ElChat checked tensor by
tensor against arithmetic done here on the loaded state dicts, error paths, atomicity, and the
streaming memory bound measured in a subprocess."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from elchat import method, runs
from elchat.errors import UserError
from elchat.merge import (Checkpoint, chat_vector_merge, elchat_merge, elchat_sweep, layer_angles,
                          slerp_merge, stage_inputs, write_layer_angles)
from elchat.merge_math import angle, gradient, layer_index, module_name, slerp, tensor_t
from elchat.shards import ShardedReader, ShardWriter

NEW_TOKENS = ["ሰላም", "ቋንቋ", "ኢትዮጵያ", "መጽሐፍ", "ትምህርት"]


# --------------------------------------------------------------------------- references
def ref_slerp(t, v0, v1, thr=0.9995, eps=1e-8):
    """Textbook SLERP in float64: normalized copies give the angle, weights hit the raw vectors."""
    a, b = v0.double().numpy().ravel(), v1.double().numpy().ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    an = a / na if na > eps else a
    bn = b / nb if nb > eps else b
    dot = float(np.clip(np.sum(an * bn), -1, 1))
    if abs(dot) > thr:
        out = (1 - t) * a + t * b
    else:
        th = np.arccos(dot)
        out = np.sin(th - t * th) / np.sin(th) * a + np.sin(t * th) / np.sin(th) * b
    return torch.from_numpy(out.reshape(tuple(v0.shape)))


def state(path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def load_tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def expanded_copy(src, dst, seed, scale=0.05, only_layers=None):
    """`src` with NEW_TOKENS added (resize_token_embeddings) and every weight moved: a fake VE+CPT."""
    from transformers import AutoModelForCausalLM

    tok = load_tok(src)
    tok.add_tokens(NEW_TOKENS)
    model = AutoModelForCausalLM.from_pretrained(src)
    model.resize_token_embeddings(len(tok))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return Path(dst)


@pytest.fixture(scope="module")
def models(tiny_pair, tiny_tied_chat, tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_models")
    return {
        "base": tiny_pair["base"], "chat": tiny_pair["chat"],
        "adapted": expanded_copy(tiny_pair["chat"], root / "adapted", seed=5),
        "base_cpt": expanded_copy(tiny_pair["base"], root / "base_cpt", seed=6),
        "tied_chat": tiny_tied_chat,
        "tied_adapted": expanded_copy(tiny_tied_chat, root / "tied_adapted", seed=7),
    }


# --------------------------------------------------------------------------- slerp math
@pytest.mark.parametrize("t", [0.0, 1.0, 0.5, 0.3, 0.9])
@pytest.mark.parametrize("case", ["random", "near_parallel", "anti_parallel", "zero_one", "zero_both"])
def test_slerp_matches_reference(t, case):
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(17, 9, generator=g)
    v1 = {"random": torch.randn(17, 9, generator=g),
          "near_parallel": 2 * v0 + 1e-3 * torch.randn(17, 9, generator=g),
          "anti_parallel": -3 * v0,
          "zero_one": torch.zeros(17, 9),
          "zero_both": torch.zeros(17, 9)}[case]
    if case == "zero_both":
        v0 = torch.zeros(17, 9)
    got = slerp(t, v0, v1)
    assert got.dtype == v0.dtype and got.shape == v0.shape
    torch.testing.assert_close(got.double(), ref_slerp(t, v0, v1), rtol=2e-6, atol=2e-6)
    if t == 0.0:
        assert torch.equal(got, v0)
    if t == 1.0:
        assert torch.equal(got, v1)


def test_slerp_geometry_and_dtype():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(0.5, e0, e1)
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5)] * 2))  # stays on the circle
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, generator=g).bfloat16(), torch.randn(64, generator=g).bfloat16()
    out = slerp(0.4, a, b)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref_slerp(0.4, a, b), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="shapes differ"):
        slerp(0.5, torch.zeros(3), torch.zeros(4))
    x, y = torch.randn(300, generator=g), torch.randn(300, generator=g)
    want = slerp(0.3, x, y)
    assert torch.equal(slerp(0.3, x.clone(), y, inplace=True), want)


def test_gradient_over_depth_is_piecewise_linear():
    values = [0.0, 0.5, 1.0, 0.2]
    for x in np.linspace(0, 1, 13):
        assert gradient(values, float(x)) == pytest.approx(np.interp(x, np.linspace(0, 1, 4), values))
    # layer i of L sits at i/(L-1); non-layer tensors at 0; the first matching filter wins
    assert tensor_t("model.layers.2.mlp.up_proj.weight", 5, [0, 1]) == pytest.approx(0.5)
    assert tensor_t("model.norm.weight", 5, [0.2, 1]) == pytest.approx(0.2)
    filters = {"self_attn": [1, 0], "mlp": 0.7}
    assert tensor_t("model.layers.1.self_attn.q_proj.weight", 5, 0.1, filters) == pytest.approx(0.75)
    assert tensor_t("model.layers.1.mlp.up_proj.weight", 5, 0.1, filters) == pytest.approx(0.7)
    assert tensor_t("model.layers.1.input_layernorm.weight", 5, 0.1, filters) == pytest.approx(0.1)


def test_slerp_equals_mergekit_kernel():
    mk = pytest.importorskip("mergekit.merge_methods.slerp")
    g = torch.Generator().manual_seed(3)
    for t in (0.1, 0.3, 0.5, 0.8):
        v0, v1 = torch.randn(40, 30, generator=g), torch.randn(40, 30, generator=g)
        v1 = v1 if t != 0.8 else v0 + 1e-4 * v1  # one near-parallel pair
        theirs = mk.slerp(torch.tensor(t), v0.unsqueeze(0), v1.unsqueeze(0))[0]
        ours = slerp(t, v0, v1)
        assert (ours - theirs).abs().max() <= 1e-6 * theirs.abs().max()


# --------------------------------------------------------------------------- model merges
def test_slerp_merge_per_layer_t(models, tmp_path):
    out = slerp_merge(models["chat"], models["base"], tmp_path / "s", t=[0.0, 1.0])
    a, b, m = state(models["chat"]), state(models["base"]), state(out)
    assert set(m) == set(a)
    for name in a:
        layer = next((int(p) for p in name.split(".") if p.isdigit()), None)
        t = 0.0 if layer is None else layer / 3
        torch.testing.assert_close(m[name].double(), ref_slerp(t, a[name], b[name]), rtol=1e-5, atol=1e-6)


def test_slerp_merge_expanded_vocabulary_keeps_new_rows(models, tmp_path):
    out = slerp_merge(models["adapted"], models["chat"], tmp_path / "s", t=0.4)
    a, c, m = state(models["adapted"]), state(models["chat"]), state(out)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        n = c[name].shape[0]
        assert m[name].shape == a[name].shape
        assert torch.equal(m[name][n:], a[name][n:])  # new rows: A's, never truncated
        torch.testing.assert_close(m[name][:n].double(), ref_slerp(0.4, a[name][:n], c[name]), rtol=1e-5, atol=1e-6)
    assert len(load_tok(out)) == len(load_tok(models["adapted"]))


def test_cli(models, tmp_path):
    from elchat.cli import main

    out = tmp_path / "cli"
    assert main(["merge", "elchat", "--chat", str(models["chat"]), "--adapted", str(models["adapted"]),
                 "--layers", "0", "-1", "--t", "0.5", "0.5", "--no-copy-special", "--out", str(out)]) == 0
    m, a, c = state(out), state(models["adapted"]), state(models["chat"])
    assert torch.equal(m["model.layers.1.mlp.up_proj.weight"], c["model.layers.1.mlp.up_proj.weight"])
    assert not torch.equal(m["model.layers.3.mlp.up_proj.weight"], a["model.layers.3.mlp.up_proj.weight"])
    assert main(["merge", "elchat", "--chat", str(models["chat"]), "--adapted", str(models["adapted"]),
                 "--t", "0.5", "--out", str(tmp_path / "bad")]) == 2
    assert main(["merge", "slerp", "--model-a", str(models["chat"]), "--model-b", str(models["base"]),
                 "--filter", "self_attn=0,1", "--t", "0", "--out", str(tmp_path / "s")]) == 0
    s, c, b = state(tmp_path / "s"), state(models["chat"]), state(models["base"])
    assert torch.equal(s["model.layers.0.mlp.up_proj.weight"], c["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(s["model.layers.3.self_attn.q_proj.weight"], b["model.layers.3.self_attn.q_proj.weight"])
    assert main(["merge", "chat-vector", "--base", str(models["base"]), "--chat", str(models["chat"]),
                 "--target", str(models["base_cpt"]), "--ratio", "0.5", "--skip-embed",
                 "--out", str(tmp_path / "cv")]) == 0


def test_chat_vector_exact(models, tmp_path):
    s = chat_vector_merge(models["base"], models["chat"], models["base_cpt"], tmp_path / "cv", ratio=0.7)
    b, c, t = (state(models[k]) for k in ("base", "chat", "base_cpt"))
    m = state(s["out"])
    tok, chat_tok = load_tok(s["out"]), load_tok(models["chat"])
    special = [0, 1, 2]  # <|endoftext|>, <|im_start|>, <|im_end|> in the fixture tokenizer
    v_old = c["model.embed_tokens.weight"].shape[0]
    for name in t:
        want = t[name] + 0.7 * (c[name] - b[name]) if name in c and c[name].shape == t[name].shape else None
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            want = t[name].clone()
            want[:v_old] += 0.7 * (c[name] - b[name])  # old rows get the vector, new rows do not
            want[special] = c[name][special]            # chat-template rows come from the chat model
            assert torch.equal(m[name][v_old:], t[name][v_old:])
        torch.testing.assert_close(m[name], want, rtol=0, atol=1e-6)
    assert len(tok) == len(load_tok(models["base_cpt"])) and tok.chat_template == chat_tok.chat_template

    skip = chat_vector_merge([models["base"], models["base"]], [models["chat"], models["chat"]],
                             models["base_cpt"], tmp_path / "cv2", ratio=[0.5, 0.25], skip_embed=True)
    m2 = state(skip["out"])
    want = t["model.embed_tokens.weight"].clone()
    want[special] = c["model.embed_tokens.weight"][special]
    assert torch.equal(m2["model.embed_tokens.weight"], want)
    name = "model.layers.1.mlp.up_proj.weight"
    torch.testing.assert_close(m2[name], t[name] + 0.75 * (c[name] - b[name]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["untied", "tied"])
def test_elchat_merge(models, tmp_path, kind):
    from transformers import AutoModelForCausalLM

    chat, adapted = (models["chat"], models["adapted"]) if kind == "untied" else \
        (models["tied_chat"], models["tied_adapted"])
    s = elchat_merge(chat, adapted, tmp_path / "e")
    c, a, m = state(chat), state(adapted), state(s["out"])
    assert s["t"] == {0: 0.3, 1: 0.5, 2: 0.5, 3: 0.3}  # 4 layers: -2, -1 are 2, 3
    rates = {0: 0.3, 1: 0.5, 2: 0.5, 3: 0.3}
    vocab_names = [n for n in a if n.endswith(("embed_tokens.weight", "lm_head.weight"))]
    assert len(vocab_names) == (1 if kind == "tied" else 2)
    for name in a:
        if name in vocab_names:
            v_old = c[name].shape[0]
            assert torch.equal(m[name][[0, 1, 2]], c[name][[0, 1, 2]])       # special rows: C's
            assert torch.equal(m[name][3:], a[name][3:])                     # others incl. new: A's
            assert m[name].shape[0] == v_old + len(NEW_TOKENS)
        elif ".layers." in name:
            layer = int(name.split(".")[2])
            torch.testing.assert_close(m[name].double(), ref_slerp(rates[layer], a[name], c[name]),
                                       rtol=1e-5, atol=1e-6)
        else:  # the final norm: C's, as the released code (it starts from C)
            assert name == "model.norm.weight" and torch.equal(m[name], c[name])
            assert not torch.equal(a[name], c[name])
    tok = load_tok(s["out"])
    assert tok.get_vocab() == load_tok(adapted).get_vocab()
    assert tok.chat_template == load_tok(chat).chat_template
    model = AutoModelForCausalLM.from_pretrained(s["out"])
    assert model.config.vocab_size == len(tok)
    ids = tok.apply_chat_template([{"role": "user", "content": "ሰላም"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    assert torch.isfinite(model(ids).logits).all()
    rec = json.loads((Path(s["out"]) / "merge_recipe.json").read_text())
    assert set(rec["special_rows"]) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}


def test_elchat_ablations_and_other_layers(models, tmp_path):
    # linear ablation with a non-zero t for the other layers; t=1 gives C's layer exactly; without
    # the copy the embeddings are A's untouched; all t = 0 reproduces A bit for bit.
    s = elchat_merge(models["chat"], models["adapted"], tmp_path / "l", layers=[1, -1], t=[1.0, 0.25],
                     other_t=0.5, method="linear", copy_special=False)
    c, a, m = state(models["chat"]), state(models["adapted"]), state(s["out"])
    name = "model.layers.2.self_attn.q_proj.weight"
    torch.testing.assert_close(m[name], 0.5 * a[name] + 0.5 * c[name])
    assert torch.equal(m["model.layers.1.mlp.up_proj.weight"], c["model.layers.1.mlp.up_proj.weight"])
    torch.testing.assert_close(m["model.layers.3.mlp.up_proj.weight"],
                               0.75 * a["model.layers.3.mlp.up_proj.weight"] + 0.25 * c["model.layers.3.mlp.up_proj.weight"])
    assert torch.equal(m["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    zero = elchat_merge(models["chat"], models["adapted"], tmp_path / "z", t=[0, 0, 0, 0],
                        other_t=0, copy_special=False)
    assert all(torch.equal(v, a[k]) for k, v in state(zero["out"]).items())
    # by default (other_t = 1) everything outside the transition layers and vocabulary is C's
    mid = state(elchat_merge(models["chat"], models["adapted"], tmp_path / "m", layers=[0, -1],
                             t=[0, 0], copy_special=False)["out"])
    for name in a:
        layer = layer_index(name)
        want = a if layer in (0, 3) or name.endswith(("embed_tokens.weight", "lm_head.weight")) else c
        assert torch.equal(mid[name], want[name]), name


def test_bad_inputs_error_before_writing(models, tmp_path, tiny_tokenizer):
    from conftest import make_tiny_model

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="vocabulary"):  # expanded model given as the chat model
        elchat_merge(models["adapted"], models["chat"], out)
    with pytest.raises(ValueError, match="one t per layer"):
        elchat_merge(models["chat"], models["adapted"], out, layers=[0, 1], t=[0.5])
    with pytest.raises(ValueError, match="not a layer index"):
        elchat_merge(models["chat"], models["adapted"], out, layers=[0, 9], t=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\]"):
        elchat_merge(models["chat"], models["adapted"], out, other_t=1.5)
    three = make_tiny_model(len(tiny_tokenizer), tied=False, seed=9)
    three.config.num_hidden_layers = 3
    del three.model.layers[3]
    three.save_pretrained(tmp_path / "three")
    with pytest.raises(ValueError, match="num_hidden_layers"):
        slerp_merge(models["chat"], tmp_path / "three", out)
    with pytest.raises(ValueError, match="tie_word_embeddings|different tensors"):
        elchat_merge(models["chat"], models["tied_adapted"], out)
    # a shape mismatch outside the vocabulary dimension
    sd = state(models["chat"])
    sd["model.layers.0.mlp.up_proj.weight"] = torch.zeros(65, 32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((models["chat"] / "config.json").read_text())
    with ShardWriter(bad, [(k, v.dtype, tuple(v.shape)) for k, v in sd.items()]) as w:
        for k, v in sd.items():
            w.write(k, v)
    with pytest.raises(UserError, match=r"model-b model: .*1 mismatched \(model\.layers\.0\.mlp\.up_proj"):
        slerp_merge(models["chat"], bad, out)  # refused by the strict check before any merge work
    # a checkpoint that does not cover its architecture (both models would agree on the tensor set)
    part = tmp_path / "part"
    shutil.copytree(models["adapted"], part)
    kept = {k: v for k, v in state(models["adapted"]).items() if ".mlp." not in k}
    for f in part.glob("model*.safetensors*"):
        f.unlink()
    save_file(kept, part / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"adapted model: .*12 missing \(model\.layers\.0\.mlp\.down_proj"):
        elchat_merge(models["chat"], part, out)
    with pytest.raises(FileNotFoundError, match="config.json"):
        slerp_merge(models["chat"], tmp_path / "nothing", out)
    assert not out.exists() and not list(tmp_path.glob(".tmp-out-*"))


def test_failed_merge_leaves_no_partial_dir(models, tmp_path):
    sd = state(models["adapted"])
    sd["model.layers.3.mlp.down_proj.weight"][0, 0] = float("nan")  # late tensor: shards already written
    nan = tmp_path / "nan"
    nan.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (models["adapted"] / f).exists():
            (nan / f).write_bytes((models["adapted"] / f).read_bytes())
    with ShardWriter(nan, [(k, v.dtype, tuple(v.shape)) for k, v in sd.items()]) as w:
        for k, v in sd.items():
            w.write(k, v)
    out = tmp_path / "elchat"
    with pytest.raises(ValueError, match="NaN"):
        elchat_merge(models["chat"], nan, out)
    assert not out.exists() and not list(tmp_path.glob(".tmp-elchat-*"))


def test_layer_angles(models):
    rows = layer_angles(models["chat"], models["adapted"])
    c, a = state(models["chat"]), state(models["adapted"])
    by_name = {r["name"]: r for r in rows}
    x, y = c["model.layers.2.mlp.up_proj.weight"].double(), a["model.layers.2.mlp.up_proj.weight"].double()
    cos = float((x * y).sum() / (x.norm() * y.norm()))
    assert by_name["model.layers.2.mlp.up_proj.weight"]["angle"] == pytest.approx(math.degrees(math.acos(cos)), abs=1e-6)
    assert by_name["model.layers.2.mlp.up_proj.weight"]["module"] == "mlp.up_proj.weight"
    assert by_name["model.embed_tokens.weight"]["layer"] is None
    assert all(r["angle"] == 0 for r in layer_angles(models["chat"], models["chat"]))


def test_write_layer_angles_csv(models, tmp_path):
    import csv

    rows = write_layer_angles(models["chat"], models["adapted"], tmp_path / "a" / "angles.csv", "C vs A")
    with open(tmp_path / "a" / "angles.csv", newline="") as f:
        read = list(csv.DictReader(f))
    want = layer_angles(models["chat"], models["adapted"])
    assert [r["name"] for r in read] == [r["name"] for r in want] and len(rows) == len(want)
    for got, ref in zip(read, want):
        assert got["pair"] == "C vs A" and got["module"] == ref["module"]
        assert got["layer"] == ("" if ref["layer"] is None else str(ref["layer"]))
        assert float(got["angle"]) == pytest.approx(ref["angle"], abs=1e-9)


def test_tensor_names_and_angle():
    assert layer_index("model.layers.12.self_attn.q_proj.weight") == 12
    assert layer_index("transformer.h.3.attn.c_attn.weight") == 3
    assert layer_index("model.norm.weight") is None
    assert module_name("model.layers.12.self_attn.q_proj.weight") == "self_attn.q_proj.weight"
    assert module_name("lm_head.weight") == "lm_head.weight"
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert angle(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0])) == pytest.approx(45.0)


def test_checkpoint_names_its_role(models, tmp_path):
    ckpt = Checkpoint.open(models["adapted"], "adapted")
    sd, cfg = state(models["adapted"]), json.loads((models["adapted"] / "config.json").read_text())
    assert set(ckpt.names) == set(sd) and ckpt.num_layers == cfg["num_hidden_layers"] == 4
    assert ckpt.path == models["adapted"] and ckpt.role == "adapted"
    for name, dtype, shape in ckpt.plan():
        assert dtype == sd[name].dtype and shape == tuple(sd[name].shape) == ckpt.shape(name)
        assert ckpt.is_vocab(name) == (shape[0] == cfg["vocab_size"]) == name.endswith(
            ("embed_tokens.weight", "lm_head.weight"))
        assert torch.equal(ckpt.read(name), sd[name])
    with pytest.raises(FileNotFoundError, match="donor model .*config.json"):
        Checkpoint.open(tmp_path, "donor")


def _stage02_run(root: Path, models, layers, base_cpt=True) -> Path:
    """A run directory as stages 00-02 leave it: sources.json, 02_cpt/chat_cpt (+ base_cpt)."""
    import shutil

    run = runs.run_dir(root, "micro", "am")
    runs.write_sources(run, chat=models["chat"], base=models["base"])
    cpt = runs.stage_dir(run, "02")
    shutil.copytree(models["adapted"], cpt / "chat_cpt")
    (cpt / "chat_cpt" / "cpt_summary.json").write_text(json.dumps({"config": {"layers": layers}}))
    if base_cpt:
        shutil.copytree(models["base_cpt"], cpt / "base_cpt")
    return run


def test_stage_inputs_reads_layers_stage_02_recorded(models, tmp_path):
    run = _stage02_run(tmp_path, models, layers=[0, -1])
    inputs = stage_inputs(run, elchat_t=[0.2, 0.4], sweep_t=[0, 1], cv_ratio=1, lep_mode="swap")
    assert inputs.layers == [0, -1] and inputs.t == [0.2, 0.4] and inputs.sweep_t == [0.0, 1.0]
    assert stage_inputs(run, elchat_t=[0.2, 0.4], sweep_t=[], cv_ratio=1, lep_mode="swap").sweep_t == []  # no sweep
    assert inputs.chat == Path(models["chat"]).resolve() and inputs.base == Path(models["base"]).resolve()
    assert inputs.chat_cpt == run / "02_cpt" / "chat_cpt" and inputs.base_cpt == run / "02_cpt" / "base_cpt"
    assert inputs.base_emb is None and inputs.out_dir == run / "03_merge"
    assert inputs.cv_ratio == 1.0 and inputs.lep_mode == "swap"
    # the published t list has 4 values; this run trained 2 layers: the error names elchat_t
    with pytest.raises(ValueError, match=r"elchat_t=.*2 transition layers \[0, -1\]"):
        stage_inputs(run, elchat_t=list(method.ELCHAT_T), sweep_t=[0.5])
    for bad, match in [({"sweep_t": [0.5, 1.5]}, "sweep_t"), ({"sweep_t": 0.5}, "sweep_t"),
                       ({"elchat_t": []}, "elchat_t"),
                       ({"elchat_t": [0.2, -0.1]}, "elchat_t"), ({"lep_mode": "average"}, "lep_mode"),
                       ({"cv_ratio": "1"}, "cv_ratio")]:
        with pytest.raises(ValueError, match=f"parameter {match}="):
            stage_inputs(run, **{"elchat_t": [0.2, 0.4], "sweep_t": [0.5], **bad})
    no_cpt = runs.run_dir(tmp_path, "micro", "ta")
    runs.write_sources(no_cpt, chat=models["chat"])
    with pytest.raises(FileNotFoundError, match="02_continual_pretraining"):
        stage_inputs(no_cpt, sweep_t=[0.5])
    published = _stage02_run(tmp_path / "published", models, layers=list(method.TRANSITION_LAYERS), base_cpt=False)
    inputs = stage_inputs(published, sweep_t=[0.5])
    assert inputs.layers == [0, 1, -2, -1] and inputs.t == [0.3, 0.5, 0.5, 0.3] and inputs.base_cpt is None


def test_elchat_sweep_sets_every_layer_to_t(models, tmp_path):
    sweep = elchat_sweep(models["chat"], models["adapted"], tmp_path / "sweep", [0, 1], layers=[0, -1])
    assert sweep == {0.0: tmp_path / "sweep" / "t0.00", 1.0: tmp_path / "sweep" / "t1.00"}
    c, a = state(models["chat"]), state(models["adapted"])
    zero, one = state(sweep[0.0]), state(sweep[1.0])
    for layer, at_zero in [(0, a), (1, c), (2, c), (3, a)]:  # layers 1, 2 (not swept): C's
        name = f"model.layers.{layer}.mlp.up_proj.weight"
        assert torch.equal(zero[name], at_zero[name]) and torch.equal(one[name], c[name])
    assert json.loads((sweep[1.0] / "merge_recipe.json").read_text())["t"] == {"0": 1.0, "3": 1.0}


# --------------------------------------------------------------------------- streaming memory
def test_streaming_peak_memory_is_a_few_tensors(tmp_path):
    """A 4-shard, ~112 MiB-per-model merge (12 MLP tensors of 8 MiB, the rest small) must stay within
    6 tensors + 16 MiB of baseline (a merge that loads its two inputs needs > 224 MiB). Measured:
    about 3 tensors (two inputs and the result) on a quiet machine; 54 MiB once in a fresh-clone
    CI run with the other test worker busy (allocator arenas), hence the margin.

    The models are complete Llama checkpoints (the merges refuse any other) of 4 layers, hidden
    512, intermediate 4096, a vocabulary of 8."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak-RSS counter")
    tensor_mb, n = 8, 12
    config = LlamaConfig(vocab_size=8, hidden_size=512, intermediate_size=4096, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    assert sum(math.prod(s) * 4 == tensor_mb * 2**20 for s in shapes.values()) == n
    for k, seed in (("a", 0), ("b", 1)):
        d = tmp_path / k
        d.mkdir()
        config.save_pretrained(d)
        g = torch.Generator().manual_seed(seed)
        with ShardWriter(d, [(x, torch.float32, s) for x, s in shapes.items()], max_shard_bytes=25 * 2**20) as w:
            for x, s in shapes.items():
                w.write(x, torch.randn(s, generator=g))
    assert len(list((tmp_path / "a").glob("*.safetensors"))) >= 4
    # A first merge warms code pages and the allocator; then the kernel's peak-RSS counter (VmHWM) is
    # reset (Linux /proc/self/clear_refs) and a second merge is measured against the current RSS.
    # Loading one whole model the non-streaming way afterwards shows the measurement can fail.
    code = textwrap.dedent(f"""
        import gc, re, psutil
        from pathlib import Path
        from safetensors.torch import load_file, save_file
        from elchat.merge import slerp_merge
        def hwm():
            return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024
        def reset():
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")
            return psutil.Process().memory_info().rss
        args = ({str(tmp_path / 'a')!r}, {str(tmp_path / 'b')!r}, {str(tmp_path / 'out')!r})
        slerp_merge(*args, t=0.3, max_shard_bytes=25 * 2**20)
        before = reset()
        slerp_merge(*args, t=0.3, max_shard_bytes=25 * 2**20)
        merged = hwm() - before
        before = reset()
        whole = [{{k: v.clone() for k, v in load_file(f).items()}} for f in sorted(Path(args[0]).glob("*.safetensors"))]
        print(merged, hwm() - before)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    merged, loaded = (int(v) / 2**20 for v in res.stdout.split())
    model_mb, bound = sum(math.prod(s) for s in shapes.values()) * 4 / 2**20, 6 * tensor_mb + 16
    print(f"merge RSS growth {merged:.1f} MiB; loading one model {loaded:.1f} MiB "
          f"(model {model_mb:.0f} MiB, bound {bound} MiB)")
    assert merged < bound
    assert loaded > bound  # the measurement does see a whole-model load
    a, b = ShardedReader(tmp_path / "a"), ShardedReader(tmp_path / "b")
    out = ShardedReader(tmp_path / "out")
    name = "model.layers.3.mlp.up_proj.weight"
    torch.testing.assert_close(out.get(name).double(), ref_slerp(0.3, a.get(name), b.get(name)),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- released-code fidelity
@pytest.fixture(scope="module")
def qwen2_pair(tiny_tokenizer, tmp_path_factory):
    """A tiny Qwen2 chat model C (q/k/v projections with biases) and a fake adapted A of it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("qwen2")
    torch.manual_seed(11)
    config = Qwen2Config(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False, eos_token_id=2)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # random biases (the default init makes them zero: nothing to tell apart)
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_()
    model.save_pretrained(root / "chat")
    tiny_tokenizer.save_pretrained(root / "chat")
    return {"chat": root / "chat", "adapted": expanded_copy(root / "chat", root / "adapted", seed=12)}


def test_elchat_merge_follows_released_code_on_qwen2(qwen2_pair, tmp_path):
    """The authors' merge (chat-cve add_transition + copy_emb --consider_special_tokens), by hand:
    start from C; in each transition layer i, every `.weight` <- slerp(t_i; A, C); biases and the
    final norm stay C's; embeddings/lm_head <- A's, special-token rows <- C's."""
    c, a = state(qwen2_pair["chat"]), state(qwen2_pair["adapted"])
    biases = [n for n in c if n.endswith(".bias")]
    assert len(biases) == 3 * 4 and all(not torch.equal(a[n], c[n]) for n in biases)
    m = state(elchat_merge(qwen2_pair["chat"], qwen2_pair["adapted"], tmp_path / "e")["out"])
    rates = dict(zip([0, 1, 2, 3], method.ELCHAT_T))
    for name in c:
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            want = a[name].clone()
            want[[0, 1, 2]] = c[name][[0, 1, 2]]
            assert torch.equal(m[name], want), name
        elif name.endswith(".bias") or layer_index(name) is None:
            assert torch.equal(m[name], c[name]), name
        else:
            torch.testing.assert_close(m[name].double(), ref_slerp(rates[layer_index(name)], a[name], c[name]),
                                       rtol=1e-5, atol=1e-6)
    # the option: biases SLERPed with their layer's t; layers outside `layers` entirely C's
    m = state(elchat_merge(qwen2_pair["chat"], qwen2_pair["adapted"], tmp_path / "b", layers=[0, -1],
                           t=[0.3, 0.6], interpolate_biases=True)["out"])
    for name in biases:
        layer = layer_index(name)
        if layer in (1, 2):
            assert torch.equal(m[name], c[name]), name
        else:
            want = ref_slerp({0: 0.3, 3: 0.6}[layer], a[name], c[name])
            torch.testing.assert_close(m[name].double(), want, rtol=1e-5, atol=1e-6)
    recipe = json.loads((tmp_path / "b" / "merge_recipe.json").read_text())
    assert recipe["interpolate_biases"] is True and recipe["other_t"] == method.ELCHAT_OTHER_T == 1.0


def test_cli_interpolate_biases_and_other_t(qwen2_pair, tmp_path):
    from elchat.cli import main

    c, a = state(qwen2_pair["chat"]), state(qwen2_pair["adapted"])
    args = ["merge", "elchat", "--chat", str(qwen2_pair["chat"]), "--adapted", str(qwen2_pair["adapted"])]
    assert main(args + ["--out", str(tmp_path / "d")]) == 0
    d = state(tmp_path / "d")
    assert torch.equal(d["model.layers.0.self_attn.q_proj.bias"], c["model.layers.0.self_attn.q_proj.bias"])
    assert torch.equal(d["model.norm.weight"], c["model.norm.weight"])
    assert main(args + ["--interpolate-biases", "--other-t", "0", "--out", str(tmp_path / "o")]) == 0
    o = state(tmp_path / "o")
    name = "model.layers.0.self_attn.q_proj.bias"
    torch.testing.assert_close(o[name].double(), ref_slerp(0.3, a[name], c[name]), rtol=1e-5, atol=1e-6)
    assert torch.equal(o["model.norm.weight"], a["model.norm.weight"])


def test_merge_reads_hub_ids_through_a_snapshot(models, tmp_path, monkeypatch):
    """Stage 03 of a hub preset (qwen2.5-*) gets the chat model as a hub id: the merge reads the
    snapshot that huggingface_hub downloads (here: a stand-in that returns the local copy)."""
    import elchat.model_files as mf

    asked = []

    def fake_snapshot(repo_id, allow_patterns):
        asked.append((repo_id, tuple(allow_patterns)))
        return str(models["chat"])

    monkeypatch.setattr(mf, "snapshot_download", fake_snapshot)
    s = elchat_merge("owner/chat-model", models["adapted"], tmp_path / "hub")
    want = elchat_merge(models["chat"], models["adapted"], tmp_path / "local")
    assert asked and asked[0][0] == "owner/chat-model" and "*.safetensors" in asked[0][1]
    assert not any(p.endswith((".bin", ".pt")) or p == "*" for p in asked[0][1])
    got, ref = state(s["out"]), state(want["out"])
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    assert s["special_rows"] == want["special_rows"] and s["special_rows"]

    def offline(repo_id, allow_patterns):
        raise OSError("offline")

    monkeypatch.setattr(mf, "snapshot_download", offline)
    with pytest.raises(UserError, match="hub id owner/chat-model could not be downloaded"):
        elchat_merge("owner/chat-model", models["adapted"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
