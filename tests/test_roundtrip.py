"""Round trips through files the kit writes: what `.ci/floor_check` runs at the dependency floors.

`pyproject.toml` promises that the kit works with transformers / tokenizers / huggingface-hub at
their floor versions. These tests write a vocabulary-expanded model (tokenizer + weights) and an
ElChat merge with the kit, and read every file back with plain transformers (`AutoTokenizer`,
`AutoModelForCausalLM`) and with the kit's strict loaders. `make test` runs them with the
installed versions; `.ci/floor_check` runs them again in a venv holding exactly the floors (there
`ELCHAT_FLOOR_CHECK=1`, and the first test checks the versions really are the floors).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from elchat import data, merge, models, vocab

FLOOR_PACKAGES = ("transformers", "tokenizers", "huggingface-hub")


def floor_versions(pyproject: Path = Path(__file__).parents[1] / "pyproject.toml") -> dict[str, str]:
    """{package: floor version} of `FLOOR_PACKAGES`, read from pyproject's `name>=X` requirements."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; 3.10 users run the other tests
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:,.*)?", dep)
        name = m.group(1).lower().replace("_", "-") if m else None  # PEP 503 spelling
        if name in FLOOR_PACKAGES:
            floors[name] = m.group(2)
    return floors


def test_floor_versions_are_declared_and_in_use():
    from importlib.metadata import version

    floors = floor_versions()
    assert set(floors) == set(FLOOR_PACKAGES), floors
    for name, floor in floors.items():
        installed = tuple(int(x) for x in re.findall(r"\d+", version(name))[:3])
        wanted = tuple(int(x) for x in re.findall(r"\d+", floor)[:3])
        assert installed[:len(wanted)] >= wanted, f"{name} {version(name)} is below the floor {floor}"
        if os.environ.get("ELCHAT_FLOOR_CHECK") == "1":  # .ci/floor_check: exactly the floor
            assert installed[:len(wanted)] == wanted, f"{name} {version(name)} is not the floor {floor}"


@pytest.fixture(scope="module")
def expanded(tiny_pair, tiny_tokenizer, tmp_path_factory):
    """The kit's stage-01 output: the chat model with an Amharic-expanded vocabulary."""
    texts = data.load_texts("am", "train")[:200]
    new_tok, info = vocab.expand_vocabulary(tiny_tokenizer, texts, 30, eval_texts=texts[:20])
    out = tmp_path_factory.mktemp("roundtrip") / "chat_ve"
    vocab.write_expanded_model(tiny_pair["chat"], tiny_tokenizer, new_tok, out, seed=0, info=info,
                               device="cpu", dtype="float32")
    return out, new_tok, texts[:20]


def test_tokenizer_written_by_the_kit_loads(expanded, tiny_tokenizer):
    out, new_tok, texts = expanded
    for tok in (AutoTokenizer.from_pretrained(out), models.load_tokenizer(out)):
        assert len(tok) == len(new_tok) > len(tiny_tokenizer)
        assert tok.get_vocab() == new_tok.get_vocab()
        assert [tok(t).input_ids for t in texts] == [new_tok(t).input_ids for t in texts]
        assert all(tok.decode(tok(t).input_ids) == t for t in texts)
        assert tok.chat_template == tiny_tokenizer.chat_template
        assert tok.convert_tokens_to_ids("<|im_end|>") == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_model_saved_by_the_kit_loads(expanded):
    out, new_tok, texts = expanded
    plain = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    strict = models.load_model(out, device="cpu", dtype="float32")
    ids = new_tok(texts[0], return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = plain(ids).logits, strict(ids).logits
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert plain.get_input_embeddings().weight.shape[0] >= len(new_tok)


def test_merge_output_loads(expanded, tiny_pair):
    out, new_tok, texts = expanded
    merged = merge.elchat_merge(tiny_pair["chat"], out, out.parent / "elchat")["out"]
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, use_safetensors=True).eval()
    assert tok.get_vocab() == new_tok.get_vocab()
    ids = tok.apply_chat_template([{"role": "user", "content": texts[0][:40]}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    assert models.load_model(merged, device="cpu") is not None
