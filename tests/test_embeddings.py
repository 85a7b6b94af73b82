"""resize_and_initialize: old rows bit-identical, mean rows as computed here, ties kept, padding."""
from __future__ import annotations

import pytest
import torch

from conftest import plain_bpe
from elchat import embeddings, vocab

AMHARIC = ("ሰላም ለዓለም ይህ የአማርኛ ጽሑፍ ነው ኢትዮጵያ በአፍሪካ ቀንድ ትገኛለች አዲስ አበባ ዋና ከተማ ናት "
           "ሀገር ህዝብ ቋንቋ መጽሐፍ ትምህርት ቤት ተማሪ መምህር ውሃ ቡና እንጀራ").split()
ENGLISH = "The quick brown fox jumps over the lazy dog. Open the file and read every line."


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer):
    import random

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(AMHARIC) for _ in range(10)) for _ in range(200)]
    new, info = vocab.expand_vocabulary(tiny_tokenizer, corpus, 60)
    assert info["num_added"] == 60
    return tiny_tokenizer, new


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _reference_bpe(old_tok, token: str) -> list[int]:
    """Plain BPE (lowest-ranked merge first) over the old merges: the source tokenization."""
    import json

    model = json.loads(old_tok.backend_tokenizer.to_str())["model"]
    ranks = {tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m): r
             for r, m in enumerate(model["merges"])}
    return [model["vocab"][p] for p in plain_bpe(token, ranks)]


def _expected_mean(old_tok, new_tok, matrix):
    """Mean of the old rows of each new token's source tokenization, computed independently."""
    old_vocab = old_tok.get_vocab()
    return {i: matrix[_reference_bpe(old_tok, tok)].double().mean(0)
            for tok, i in new_tok.get_vocab().items() if tok not in old_vocab}


@pytest.mark.parametrize("tied", [False, True])
def test_mean_rows_old_rows_and_logits(tiny_pair, tiny_tied_chat, tokenizers, tied):
    old_tok, new_tok = tokenizers
    path = tiny_tied_chat if tied else tiny_pair["chat"]
    ref = _load(path)
    model = _load(path)
    E0 = ref.get_input_embeddings().weight.detach().clone()
    U0 = ref.get_output_embeddings().weight.detach().clone()
    embeddings.resize_and_initialize(model, old_tok, new_tok, method="mean")
    E, U = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    n_old = E0.shape[0]
    assert E.shape[0] == -(-len(new_tok) // 64) * 64 == model.config.vocab_size  # default padding
    assert torch.equal(E[:n_old], E0) and torch.equal(U[:n_old], U0)
    assert (U is E) == tied
    for i, row in _expected_mean(old_tok, new_tok, E0).items():
        assert torch.allclose(E[i].double(), row, atol=1e-6)
    for i, row in _expected_mean(old_tok, new_tok, U0).items():
        assert torch.allclose(U[i].double(), row, atol=1e-6)
    ids = torch.tensor([old_tok.encode(ENGLISH)])
    assert ids.max() < n_old and torch.equal(ids[0], torch.tensor(new_tok.encode(ENGLISH)))
    with torch.no_grad():
        before, after = ref(ids).logits, model(ids).logits
    assert after.shape[-1] == E.shape[0]
    assert torch.allclose(before, after[..., :n_old], atol=1e-5)


def test_save_reload_tied(tmp_path, tiny_tied_chat, tokenizers):
    old_tok, new_tok = tokenizers
    model = _load(tiny_tied_chat)
    embeddings.resize_and_initialize(model, old_tok, new_tok, method="merge", pad_to_multiple_of=64)
    model.save_pretrained(tmp_path)
    again = _load(tmp_path)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


@pytest.mark.parametrize("method", embeddings.METHODS)
@pytest.mark.parametrize("pad", [None, 8, 64])
def test_methods_padding(tiny_pair, tokenizers, method, pad):
    old_tok, new_tok = tokenizers
    model = _load(tiny_pair["chat"])
    E0 = model.get_input_embeddings().weight.detach().clone()
    U0 = model.get_output_embeddings().weight.detach().clone()
    embeddings.resize_and_initialize(model, old_tok, new_tok, method=method, pad_to_multiple_of=pad, seed=3)
    E, U = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    n = E.shape[0]
    assert n >= len(new_tok) and n % (pad or 1) == 0 and n - len(new_tok) < (pad or 1)
    assert model.config.vocab_size == n == U.shape[0]
    assert torch.equal(E[:E0.shape[0]], E0) and torch.equal(U[:U0.shape[0]], U0)
    assert torch.isfinite(E).all() and torch.isfinite(U).all()
    new = E[E0.shape[0]:len(new_tok)]
    assert not torch.equal(new, torch.zeros_like(new))
    # padded ids are never produced by the tokenizer
    text = " ".join(AMHARIC) + " " + ENGLISH
    assert max(new_tok.encode(text)) < len(new_tok) <= n
    again = _load(tiny_pair["chat"])
    embeddings.resize_and_initialize(again, old_tok, new_tok, method=method, pad_to_multiple_of=pad, seed=3)
    assert torch.equal(again.get_input_embeddings().weight, E)  # deterministic given seed


def test_merge_and_wmean_values(tiny_pair, tokenizers):
    old_tok, new_tok = tokenizers
    sources = embeddings.new_token_sources(old_tok, new_tok)
    E0 = _load(tiny_pair["chat"]).get_input_embeddings().weight.detach()
    parts = embeddings._merge_parts(new_tok, set(sources))
    merged = dict(zip(sources, embeddings.new_rows(E0, sources, "merge", parts)))
    for i, (a, b) in parts.items():  # the defining identity, one level deep
        ra = merged[a] if a in merged else E0[a]
        rb = merged[b] if b in merged else E0[b]
        assert torch.allclose(merged[i], (ra + rb) / 2, atol=1e-6)
    toks = {i: t for t, i in old_tok.get_vocab().items()}
    w = dict(zip(sources, embeddings.new_rows(E0, sources, "wmean", tokens=toks)))
    i, ids = next((i, s) for i, s in sources.items() if len(s) >= 3)
    weights = torch.tensor([(0.1 if toks[s] == "\u0120" else 1.0) / (j + 1) for j, s in enumerate(ids)])
    assert torch.allclose(w[i], (weights[:, None] * E0[ids]).sum(0) / weights.sum(), atol=1e-6)


def test_bad_input(tiny_pair, tokenizers):
    old_tok, new_tok = tokenizers
    model = _load(tiny_pair["chat"])
    with pytest.raises(ValueError, match="method"):
        embeddings.resize_and_initialize(model, old_tok, new_tok, method="focus")
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        embeddings.resize_and_initialize(model, old_tok, new_tok, pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="does not extend"):
        embeddings.resize_and_initialize(model, new_tok, old_tok)


def test_save_expanded(tmp_path, tiny_tied_chat, tokenizers):
    import json

    from transformers import AutoTokenizer

    old_tok, new_tok = tokenizers
    model = _load(tiny_tied_chat)
    embeddings.resize_and_initialize(model, old_tok, new_tok, method="mean")
    info = {"init": "mean", "num_added": 60, "scripts": ["ETHIOPIC"], "new_tokens": ["ሰላም"]}
    out = embeddings.save_expanded(model, new_tok, tmp_path / "chat_ve", info)
    assert out == tmp_path / "chat_ve" and not list(tmp_path.glob(".tmp-*"))
    assert json.loads((out / "vocab_expansion.json").read_text(encoding="utf-8")) == info
    again = _load(out)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == new_tok.get_vocab()
    embeddings.save_expanded(model, new_tok, out)  # overwrites in place; no info gives an empty record
    assert json.loads((out / "vocab_expansion.json").read_text(encoding="utf-8")) == {}


@pytest.mark.parametrize("method", embeddings.METHODS)
def test_default_pads_to_64_with_mean_rows(tiny_pair, tokenizers, method):
    """By default the rows are padded to a multiple of 64 (GPU kernels, vLLM, llama.cpp), and the
    padding rows, never produced by the tokenizer, are the mean of the old rows for every method."""
    old_tok, new_tok = tokenizers
    model = _load(tiny_pair["chat"])
    E0 = model.get_input_embeddings().weight.detach().clone()
    U0 = model.get_output_embeddings().weight.detach().clone()
    embeddings.resize_and_initialize(model, old_tok, new_tok, method=method, seed=1)
    E, U = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    rows = -(-len(new_tok) // 64) * 64
    assert E.shape[0] == U.shape[0] == model.config.vocab_size == rows > len(new_tok)
    for got, old in ((E, E0), (U, U0)):
        assert torch.equal(got[:old.shape[0]], old)
        pad = got[len(new_tok):].detach()
        assert torch.allclose(pad, old.mean(0).expand_as(pad), atol=1e-6)
    assert max(i for i in new_tok.get_vocab().values()) < len(new_tok)
