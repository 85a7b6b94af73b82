"""Learned Embedding Propagation: known-map recovery, swap, special rows, bad input, CLI."""
from __future__ import annotations

import pytest
import torch

from elchat import embeddings, lep, vocab
from elchat.method import LEP_MODES

AMHARIC = "ሰላም ለዓለም ይህ የአማርኛ ጽሑፍ ነው ኢትዮጵያ በአፍሪካ ቀንድ ትገኛለች አዲስ አበባ ዋና ከተማ ናት".split()


def test_conversion_recovers_known_map():
    g = torch.Generator().manual_seed(0)
    n, h, extra = 200, 16, 30
    e_base = torch.randn(n, h, generator=g)
    d = torch.randn(h, h, generator=g, dtype=torch.float64)
    e_inst = (e_base.double() @ d).float()
    sources = {n + k: torch.randint(0, n, (3,), generator=g).tolist() for k in range(extra)}
    e_donor = torch.cat([e_base, torch.randn(extra, h, generator=g)])
    for mode in ("conversion", "overlap"):
        out = lep.propagate_matrix(e_base, e_inst, e_donor, sources, mode)
        assert out.dtype == torch.float64 and out.shape == (n + extra, h)
        assert torch.allclose(out, e_donor.double() @ d, atol=1e-3)
    d_hat = lep.fit_map(lep.extend_mean(e_base, sources, n + extra), lep.extend_mean(e_inst, sources, n + extra))
    assert torch.allclose(d_hat, d, atol=1e-4)
    assert torch.equal(lep.propagate_matrix(e_base, e_inst, e_donor, sources, "swap"), e_donor.double())
    ext = lep.extend_mean(e_base, sources, n + extra)
    k = n + 5
    assert torch.allclose(ext[k], e_base[sources[k]].double().mean(0))


def test_matrix_bad_input():
    a = torch.zeros(10, 8)
    with pytest.raises(ValueError, match=r"hidden sizes differ.*\(10, 8\).*\(10, 6\)"):
        lep.propagate_matrix(a, torch.zeros(10, 6), torch.zeros(12, 8), {})
    with pytest.raises(ValueError, match=r"must extend.*donor \(9, 8\)"):
        lep.propagate_matrix(a, a, torch.zeros(9, 8), {})
    with pytest.raises(ValueError, match="mode"):
        lep.propagate_matrix(a, a, a, {}, "average")


@pytest.fixture(scope="module")
def donor_dir(tmp_path_factory, tiny_pair, tiny_tokenizer):
    """The base after VE (+ a perturbation standing in for embedding training)."""
    import random

    from transformers import AutoModelForCausalLM

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(AMHARIC) for _ in range(8)) for _ in range(100)]
    new_tok, info = vocab.expand_vocabulary(tiny_tokenizer, corpus, 40)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["base"])
    embeddings.resize_and_initialize(model, tiny_tokenizer, new_tok)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            w.add_(0.1 * torch.randn(w.shape, generator=g))
    path = tmp_path_factory.mktemp("donor") / "base_emb"
    model.save_pretrained(path)
    new_tok.save_pretrained(path)
    return path


def test_propagate_models_and_cli(tmp_path, tiny_pair, donor_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elchat.chat_tokens import chat_special_token_ids
    from elchat.cli import main

    inst = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"])
    donor = AutoModelForCausalLM.from_pretrained(donor_dir)
    special = chat_special_token_ids(tiny_tokenizer)
    assert special == [0, 1, 2]
    for mode in LEP_MODES:
        model, tok = lep.propagate_embeddings(tiny_pair["base"], tiny_pair["chat"], donor_dir, mode=mode)
        for get in ("get_input_embeddings", "get_output_embeddings"):
            w, wi, wd = (getattr(m, get)().weight for m in (model, inst, donor))
            assert w.shape == wd.shape
            assert torch.equal(w[special], wi[special])
            rest = [i for i in range(w.shape[0]) if i not in special]
            if mode == "swap":
                assert torch.equal(w[rest], wd[rest])
            else:
                assert not torch.allclose(w[rest], wd[rest])
        assert tok.chat_template == tiny_tokenizer.chat_template
        assert w.shape[0] == -(-len(tok) // 64) * 64  # the donor's rows: padded to a multiple of 64
        layer = "model.layers.0.mlp.up_proj.weight"
        assert torch.equal(model.state_dict()[layer], inst.state_dict()[layer])
    out = tmp_path / "lep"
    assert main(["lep", "--base", str(tiny_pair["base"]), "--instruct", str(tiny_pair["chat"]),
                 "--donor", str(donor_dir), "--out", str(out)]) == 0
    again = AutoModelForCausalLM.from_pretrained(out)
    assert (out / "model.safetensors").exists()
    assert AutoTokenizer.from_pretrained(out).chat_template == tiny_tokenizer.chat_template
    assert torch.equal(again.get_input_embeddings().weight[special], inst.get_input_embeddings().weight[special])
    assert main(["lep", "--base", str(tiny_pair["base"]), "--instruct", str(tmp_path / "nope"),
                 "--donor", str(donor_dir), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_donor_not_extending_base(tiny_pair, donor_dir):
    with pytest.raises(ValueError, match=r"does not extend the base tokenizer"):
        lep.propagate_embeddings(donor_dir, donor_dir, tiny_pair["base"])


def test_propagate_and_save(tmp_path, tiny_pair, donor_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = lep.propagate_and_save(tiny_pair["base"], tiny_pair["chat"], donor_dir, tmp_path / "lep", mode="overlap")
    assert out == tmp_path / "lep" and not list(tmp_path.glob(".tmp-lep-*"))
    saved, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    model, want_tok = lep.propagate_embeddings(tiny_pair["base"], tiny_pair["chat"], donor_dir, mode="overlap")
    for get in ("get_input_embeddings", "get_output_embeddings"):
        assert torch.equal(getattr(saved, get)().weight, getattr(model, get)().weight)
    assert len(tok) == len(want_tok) > len(tiny_tokenizer)
    assert saved.config.vocab_size == saved.get_input_embeddings().weight.shape[0] == -(-len(tok) // 64) * 64
    assert tok.get_vocab() == want_tok.get_vocab() and tok.chat_template == tiny_tokenizer.chat_template
    with pytest.raises(ValueError, match="mode"):
        lep.propagate_and_save(tiny_pair["base"], tiny_pair["chat"], donor_dir, tmp_path / "bad", mode="average")
    assert not (tmp_path / "bad").exists()
