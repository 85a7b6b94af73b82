"""Tests of the micro preset builder (`elchat.micro`), its quality checks
(`elchat.evaluation.turns`) and the instruction generator.

The nano pair is built once per module (seconds); a second build checks bit-identical weights.
Instruction answers are checked with small checkers written here, independent of the generator.
"""
from __future__ import annotations

import json
import math
import re

import pytest


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    from elchat.micro import build
    return build("nano", seed=0, out=tmp_path_factory.mktemp("nano") / "pair")


def _tensors(path):
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


def test_nano_build_is_deterministic(nano, tmp_path):
    import torch
    from elchat.micro import build
    again = build("nano", seed=0, out=tmp_path / "again")
    for role in ("base", "chat"):
        a, b = _tensors(nano[role]), _tensors(again[role])
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{role} weights differ between builds"
    base, chat = _tensors(nano["base"]), _tensors(nano["chat"])
    assert any(not torch.equal(base[k], chat[k]) for k in base), "chat tuning changed nothing"


def test_reloads_with_auto_classes_chatml_untied(nano):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    for role in ("base", "chat"):
        tok = AutoTokenizer.from_pretrained(nano[role])
        model = AutoModelForCausalLM.from_pretrained(nano[role])
        assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
        assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
        assert tok.bos_token is None
        msgs = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
        expected = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        assert tok.apply_chat_template(msgs, tokenize=False) == expected
        prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
        assert prompt == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"  # no system turn
        cfg = model.config
        assert cfg.model_type == "llama" and cfg.tie_word_embeddings is False
        assert cfg.num_hidden_layers >= 4 and 32 <= cfg.hidden_size <= 64
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert emb.data_ptr() != head.data_ptr() and not (emb == head).all()
        assert 256 < len(tok) <= 512 and model.config.vocab_size == len(tok)


def test_labels_cover_assistant_turns_only(nano):
    from transformers import AutoTokenizer
    from elchat.micro import chat_example
    tok = AutoTokenizer.from_pretrained(nano["chat"])
    msgs = [{"role": "user", "content": "What is rain?"}, {"role": "assistant", "content": "Water."},
            {"role": "user", "content": "And snow?"}, {"role": "assistant", "content": "Cold water."}]
    ids, labels = chat_example(tok, msgs, max_len=512)
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ids == full and len(labels) == len(ids)
    kept = [t for t in labels if t != -100]
    assert tok.decode(kept) == "Water.<|im_end|>Cold water.<|im_end|>"
    assert all(lab in (-100, t) for lab, t in zip(labels, ids))
    first = ids.index(tok.convert_tokens_to_ids("<|im_end|>"))  # the user's turn end
    assert all(lab == -100 for lab in labels[:first + 1])
    short_ids, short_labels = chat_example(tok, msgs, max_len=5)
    assert len(short_ids) == 5 and all(lab == -100 for lab in short_labels)


def test_manifest_records_the_build(nano):
    from elchat.micro import config_for
    for role in ("base", "chat"):
        m = json.loads((nano[role] / "build_manifest.json").read_text())
        assert m["role"] == role and m["seed"] == 0 and m["size"] == "nano"
        assert m["config"] == config_for("nano")
        assert m["steps"] == {"pretrain": m["config"]["pre_steps"], "chat": m["config"]["chat_steps"]}
        assert len(m["log"]["pretrain"]) == m["steps"]["pretrain"] and len(m["log"]["chat"]) == m["steps"]["chat"]
        assert all(math.isfinite(x) for x in m["final_loss"].values())
        assert re.fullmatch(r"[0-9a-f]{64}", m["data"]["en_train"]["sha256"])
        assert re.fullmatch(r"[0-9a-f]{64}", m["data"]["chat"]["sha256"])
        assert m["wall_time_s"]["total_s"] > 0 and m["environment"]["threads"] >= 1
    # pre-training lowered the loss from its random-init value of about ln(vocab)
    assert m["log"]["pretrain"][-1] < m["log"]["pretrain"][0]


def test_cached_pair_is_reused_and_bad_input_is_rejected(nano, monkeypatch, tmp_path):
    from elchat import micro, paths
    before = (nano["chat"] / "model.safetensors").stat().st_mtime_ns
    assert micro.build("nano", seed=0, out=nano["chat"].parent) == nano
    assert (nano["chat"] / "model.safetensors").stat().st_mtime_ns == before
    monkeypatch.setenv("ELCHAT_CACHE", str(tmp_path))
    assert paths.models_cache() == tmp_path / "models"
    assert micro.default_out("nano", 3) == tmp_path / "models" / "micro-nano-seed3"
    with pytest.raises(ValueError, match="size"):
        micro.build("huge")
    with pytest.raises(ValueError, match="steps"):
        micro.build("nano", steps=-3)
    with pytest.raises(ValueError, match="seed"):
        micro.build("nano", seed=-1)
    assert not (tmp_path / "models").exists()


def test_micro_depth_leaves_the_middle_frozen_under_2x2ls():
    """The micro recipe (built from its config, random weights: no training) has >= 8 layers, and
    2x2LS trains exactly layers 0, 1, n-2, n-1 of them: a minority, the middle frozen."""
    import torch
    from elchat import cpt
    from elchat.micro import _new_model, config_for
    cfg = config_for("micro")
    n = cfg["layers"]
    assert n >= 8 and cfg["precision"] in ("bf16", "fp32")
    torch.manual_seed(0)
    model = _new_model(cfg["vocab"], cfg)
    assert model.config.num_hidden_layers == n
    cpt.apply_strategy(model, cpt.CPTConfig(strategy="2x2ls", max_steps=1))
    per_layer = {}
    for name, p in model.named_parameters():
        if name.startswith("model.layers."):
            per_layer.setdefault(int(name.split(".")[2]), set()).add(p.requires_grad)
    assert sorted(per_layer) == list(range(n))
    trained = {i for i, flags in per_layer.items() if flags == {True}}
    frozen = {i for i, flags in per_layer.items() if flags == {False}}
    assert trained == {0, 1, n - 2, n - 1}          # the published transition layers, by hand
    assert frozen == set(range(2, n - 2)) and len(trained) < len(frozen)


def test_unigram_bpc_matches_hand_computation():
    from elchat.evaluation.turns import unigram_bpc
    # train "aab": a=2, b=1, N=3; test adds "c": V=3 -> p(a)=3/6, p(b)=2/6, p(c)=1/6
    expected = -(math.log2(3 / 6) + math.log2(2 / 6) + math.log2(1 / 6)) / 3
    assert unigram_bpc(["aab"], ["abc"]) == pytest.approx(expected)


def test_end_of_turn_rate_counts_only_im_end(nano, monkeypatch):
    """The rate through the kit's decoder equals a plain `model.generate` that stops at <|im_end|> only
    (both in float32: the kit's bf16 decoding copy is tested in test_eval_decoding.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elchat.evaluation import generate
    monkeypatch.setattr(generate, "DECODE_IN_BF16", False)
    from elchat.evaluation.turns import end_of_turn_rate, heldout_prompts
    prompts = heldout_prompts(6)
    assert len(prompts) == 6 and len(set(prompts)) == 6
    for role in ("base", "chat"):
        got = end_of_turn_rate(nano[role], prompts, max_new_tokens=24, batch_size=1)
        tok = AutoTokenizer.from_pretrained(nano[role])
        model = AutoModelForCausalLM.from_pretrained(nano[role]).eval()
        end = tok.convert_tokens_to_ids("<|im_end|>")
        ended, replies = [], []
        for p in prompts:  # one prompt at a time: no padding, an independent path
            ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)["input_ids"]
            with torch.no_grad():
                row = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=end,
                                     pad_token_id=0)[0, ids.shape[1]:].tolist()
            ended.append(end in row)
            replies.append(tok.decode(row[:row.index(end)] if end in row else row))
        assert got["n"] == 6 and got["rate"] == pytest.approx(sum(ended) / 6)
        assert got["replies"] == replies


def test_write_quality_records_the_bars(nano, tmp_path):
    from elchat.evaluation import turns
    from elchat.micro import english_texts
    with pytest.raises(ValueError, match="n_prompts"):
        turns.write_quality(tmp_path / "run", nano, n_prompts=1)
    q = turns.write_quality(tmp_path / "run", nano, n_prompts=4, size="nano", seed=0)
    saved = json.loads((tmp_path / "run" / "00_source" / "quality.json").read_text())
    test = english_texts("test")[:300]
    assert q["path"] == tmp_path / "run" / "00_source" / "quality.json"
    assert saved == {"chat_end_of_turn": q["chat_end_of_turn"], "base_end_of_turn": q["base_end_of_turn"],
                     "base_bpc": q["base_bpc"], "unigram_bpc": q["unigram_bpc"], "test_docs": len(test),
                     "n_prompts": 4, "size": "nano", "seed": 0}
    assert len(q["prompts"]) == len(q["chat_replies"]) == len(q["base_replies"]) == 4
    assert 0.0 <= q["chat_end_of_turn"] <= 1.0 and math.isfinite(q["base_bpc"]) and q["base_bpc"] > 0
    assert q["unigram_bpc"] == pytest.approx(turns.unigram_bpc(english_texts("train"), test))


def _words(t):
    return len(re.findall(r"\w+", t))


def _sentences(t):
    return len([s for s in re.split(r"(?<=[.!?])\s+", t.strip()) if re.search(r"\w", s)])


def _satisfies(iid, r, kw):
    """Independent, minimal checks of one instruction."""
    low = r.lower()
    if iid.startswith("length_constraints:number_"):
        n = _words(r) if "words" in iid else (_sentences(r) if "sentences" in iid else None)
        if n is None:  # paragraphs
            return len([p for p in r.split("***") if p.strip()]) == kw["num_paragraphs"]
        limit = kw.get("num_words", kw.get("num_sentences"))
        return n < limit if kw["relation"] == "less than" else n >= limit
    return {
        "keywords:existence": lambda: all(k.lower() in low for k in kw.get("keywords", [])),
        "keywords:frequency": lambda: low.count(kw.get("keyword", "").lower()) >= kw.get("frequency", 0),
        "keywords:forbidden_words": lambda: not any(re.search(rf"\b{w}\b", low) for w in kw.get("forbidden_words", [])),
        "change_case:english_capital": lambda: r == r.upper() and r != r.lower(),
        "change_case:english_lowercase": lambda: r == r.lower(),
        "startend:start_checker": lambda: low.startswith(kw.get("start_phrase", "").lower()),
        "startend:end_checker": lambda: low.rstrip().endswith(kw.get("end_phrase", "").lower()),
        "startend:quotation": lambda: r.startswith('"') and r.endswith('"'),
        "detectable_format:number_bullet_lists":
            lambda: sum(line.startswith("* ") for line in r.splitlines()) == kw.get("num_bullets"),
        "detectable_format:json_format": lambda: isinstance(json.loads(r), dict),
        "detectable_format:title": lambda: re.search(r"<<[^\n]+>>", r) is not None,
        "punctuation:no_comma": lambda: "," not in r,
        "detectable_content:postscript": lambda: "\np.s." in low,
    }[iid]()


def test_instruction_answers_satisfy_their_instructions():
    from elchat.instructions import FAMILIES, make_examples
    data = make_examples(400, seed=3)
    assert len(data) == 400
    seen = set()
    for ex in data:
        user, assistant = ex["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        for iid, kw in zip(ex["instruction_id_list"], ex["kwargs"], strict=True):
            seen.add(iid)
            assert _satisfies(iid, assistant["content"], kw), (iid, kw, assistant["content"])
    assert seen == set(FAMILIES)
    assert sum(len(ex["instruction_id_list"]) == 2 for ex in data) > 100


def test_instructions_are_deterministic_and_heldout_is_disjoint():
    from elchat.instructions import make_examples
    assert make_examples(50, seed=1) == make_examples(50, seed=1)
    assert make_examples(50, seed=1) != make_examples(50, seed=2)
    train = {e["messages"][0]["content"] for e in make_examples(500, seed=0)}
    held = {e["messages"][0]["content"] for e in make_examples(100, seed=0, split="heldout")}
    assert not train & held
    with pytest.raises(ValueError, match="split"):
        make_examples(3, split="dev")


def test_no_overlap_with_eval_prompts():
    from elchat.evaluation.ifeval import load_prompts
    from elchat.instructions import make_examples
    from elchat.micro import config_for
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    evals = {norm(p["prompt"]) for p in load_prompts()}
    assert len(evals) >= 150
    ours = {norm(e["messages"][0]["content"]) for e in make_examples(config_for("micro")["n_instructions"], seed=0)}
    ours |= {norm(e["messages"][0]["content"]) for e in make_examples(200, seed=0, split="heldout")}
    assert not ours & evals
