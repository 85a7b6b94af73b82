"""Strict loading and the one model-argument rule (issue 12, item 6).

Reproduces the two cases found as a new user: `elchat cpt` on a directory whose only weights are a
pickle `pytorch_model.bin` (it trained a random model), and `elchat eval` on a `model.safetensors`
holding half the model's tensors (it scored a half-random model). Each now stops with an error that
names the tensors, before any work or writing. The expected tensor lists are computed here from the
saved state dict, independently of `elchat.model_files`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from elchat import cli, cpt, model_files, models
from elchat.errors import UserError


def _copy_meta(src: Path, dst: Path, tokenizer: bool = True) -> Path:
    """config.json (and the tokenizer files) of `src` in a new directory, no weights."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "config.json" or (tokenizer and f.is_file() and not f.name.endswith(".safetensors")
                                       and f.name != "generation_config.json"):
            shutil.copy2(f, dst / f.name)
    return dst


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ELCHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ELCHAT_ALLOW_HUB", raising=False)


@pytest.fixture(scope="module")
def chat_state(tiny_pair):
    return load_file(tiny_pair["chat"] / "model.safetensors")


def test_pickle_only_dir_is_refused_by_cpt_before_any_work(tiny_pair, tmp_path, cache):
    pickled = _copy_meta(tiny_pair["chat"], tmp_path / "pickled")
    torch.save({"unrelated.weight": torch.zeros(3)}, pickled / "pytorch_model.bin")
    out = tmp_path / "cpt_out"
    argv = ["cpt", "--model", str(pickled), "--lang", "am", "--out", str(out), "--max-steps", "1"]
    assert cli.main(argv) == 2
    assert not out.exists()
    for load in (models.load_model, models.fetch, models.resolve_model_dir):
        with pytest.raises(UserError, match=r"no \*\.safetensors weights \(found: pytorch_model\.bin\)"):
            load(pickled)


def test_half_covered_safetensors_is_refused_by_eval_naming_the_tensors(tiny_pair, chat_state, tmp_path,
                                                                        cache, capsys):
    names = sorted(chat_state)
    kept, dropped = names[::2], names[1::2]
    half = _copy_meta(tiny_pair["chat"], tmp_path / "half")
    save_file({k: chat_state[k] for k in kept}, half / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "eval"
    assert cli.main(["eval", "--model", str(half), "--lang", "am", "--tasks", "bpc", "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert f"{len(dropped)} missing" in err and dropped[0] in err
    with pytest.raises(UserError, match=f"{len(dropped)} missing") as e:
        models.load_model(half, device="cpu")
    assert all(name in str(e.value) for name in dropped[:6])
    assert model_files.weight_coverage(half) == {"missing": dropped, "unexpected": [], "mismatched": []}


def test_unexpected_and_mismatched_tensors_are_named(tiny_pair, chat_state, tmp_path):
    bad = dict(chat_state)
    bad["model.layers.0.mlp.up_proj.weight"] = torch.zeros(7, 32)
    bad["model.extra.weight"] = torch.zeros(2)
    d = _copy_meta(tiny_pair["chat"], tmp_path / "bad")
    save_file(bad, d / "model.safetensors", metadata={"format": "pt"})
    shape = list(chat_state["model.layers.0.mlp.up_proj.weight"].shape)
    with pytest.raises(UserError, match=r"1 unexpected \(model\.extra\.weight\); 1 mismatched "
                                        rf"\(model\.layers\.0\.mlp\.up_proj\.weight \[7, 32\] "
                                        rf"\(architecture: \[{shape[0]}, {shape[1]}\]\)\)"):
        models.load_model(d, device="cpu")
    out = tmp_path / "merged"
    assert cli.main(["merge", "elchat", "--chat", str(tiny_pair["chat"]), "--adapted", str(d),
                     "--out", str(out)]) == 2
    assert not out.exists()


def test_loading_report_of_transformers_is_strict_too(tiny_pair, chat_state, tmp_path, monkeypatch):
    """Hub ids are not on disk before from_pretrained: its own loading report is checked as well."""
    d = _copy_meta(tiny_pair["chat"], tmp_path / "partial")
    save_file({k: v for k, v in chat_state.items() if k != "model.norm.weight"}, d / "model.safetensors",
              metadata={"format": "pt"})
    monkeypatch.setattr(model_files, "_source", str)  # skip the header check: as for a hub id
    with pytest.raises(UserError, match=r"1 missing \(model\.norm\.weight\)"):
        models.load_model(d, device="cpu")


def test_tied_embeddings_need_no_lm_head(tiny_tied_chat):
    assert "lm_head.weight" not in load_file(tiny_tied_chat / "model.safetensors")
    assert model_files.weight_coverage(tiny_tied_chat) == {"missing": [], "unexpected": [], "mismatched": []}
    model = models.load_model(tiny_tied_chat, device="cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_dir_without_tokenizer_files_gives_a_clear_error(tiny_pair, tmp_path, cache, capsys):
    bare = _copy_meta(tiny_pair["chat"], tmp_path / "bare", tokenizer=False)
    shutil.copy2(tiny_pair["chat"] / "model.safetensors", bare / "model.safetensors")
    assert models.load_model(bare, device="cpu") is not None  # the weights alone are fine
    with pytest.raises(UserError, match="has no tokenizer files"):
        models.load_tokenizer(bare)
    with pytest.raises(UserError, match="has no tokenizer files"):
        models.resolve_model_dir(bare)
    assert cli.main(["cpt", "--model", str(bare), "--lang", "am", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer files" in err and "sentencepiece" not in err


def test_cpt_and_merge_accept_preset_names(tiny_pair, tmp_path, cache, monkeypatch, capsys):
    import elchat.gguf_convert as gc

    monkeypatch.setattr(gc, "convert_smollm2", lambda cache_root: tiny_pair["chat"])
    seen = {}

    def fake_train(model_dir, *args, **kwargs):
        seen["model_dir"] = model_dir
        return {"config": {}, "steps": 0}

    monkeypatch.setattr(cpt, "train", fake_train)
    assert cli.main(["cpt", "--model", "smollm2-135m", "--lang", "am", "--out", str(tmp_path / "c")]) == 0
    assert Path(seen["model_dir"]) == tiny_pair["chat"]
    out = tmp_path / "m"
    assert cli.main(["merge", "slerp", "--model-a", "smollm2-135m", "--model-b", str(tiny_pair["chat"]),
                     "--t", "0.5", "--out", str(out)]) == 0
    a, m = load_file(tiny_pair["chat"] / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(m[k], a[k]) for k in a)  # a model SLERPed with itself is itself
    assert json.loads((out / "merge_recipe.json").read_text())["model_a"] == str(tiny_pair["chat"])
    assert cli.main(["merge", "elchat", "--chat", "no-such-preset", "--adapted", "smollm2-135m",
                     "--out", str(tmp_path / "x")]) == 2
    assert "not a preset" in capsys.readouterr().err


def test_hub_id_offline_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="hub id someone/not-cached could not be downloaded"):
        models.resolve_model_dir("someone/not-cached")


def test_cpt_train_refuses_before_tokenizing(tiny_pair, chat_state, tmp_path):
    """The Python API (notebook 02) is as strict as the command: cpt.train checks the directory
    before it tokenizes the corpus (its token cache stays empty) or writes anything."""
    pickled = _copy_meta(tiny_pair["chat"], tmp_path / "pickled")
    torch.save({"unrelated.weight": torch.zeros(3)}, pickled / "pytorch_model.bin")
    half = _copy_meta(tiny_pair["chat"], tmp_path / "half")
    save_file({k: v for k, v in chat_state.items() if ".layers.1." not in k}, half / "model.safetensors",
              metadata={"format": "pt"})
    texts = ["ሰላም ለዓለም። " * 20] * 8
    for model_dir, match in [(pickled, r"no \*\.safetensors weights"), (half, r"missing \(model\.layers\.1\.")]:
        out, cache = tmp_path / f"out_{model_dir.name}", tmp_path / f"cache_{model_dir.name}"
        config = cpt.CPTConfig(max_steps=1, block_size=16, batch_size=1, cache_dir=str(cache))
        with pytest.raises(UserError, match=match):
            cpt.train(model_dir, texts, texts[:2], out, config)
        assert not out.exists() and not (cache.exists() and any(cache.iterdir()))
