"""Quality bars of a source base/chat pair: does the chat model end its turns, did the base learn?

End of turn: a chat model is told apart from its base by closing its reply with the end-of-turn
token. `end_of_turn_rate` is the share of held-out user prompts (chat template, greedy decoding by
`elchat.evaluation.generate`) whose reply emits `<|im_end|>` within `max_new_tokens`. Only
`<|im_end|>` counts and stops decoding: a base model that emits the document token
`<|endoftext|>` has not ended a chat turn.

Language modelling: the base's bits per character on English test text (`elchat.evaluation.bpc`)
against an add-one-smoothed character unigram model fitted on the training text,

    p(c) = (n_c + 1) / (N + V),    BPC = -(1/|x|) sum_i log2 p(x_i),

with V the distinct characters of train and test together (so unseen characters get mass).
Stage 00 writes both for the micro pair to `00_source/quality.json` (`write_quality`).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch

from ..atomic import atomic_write_json
from ..errors import is_count
from ..instructions import make_examples
from ..micro import chat_conversations, english_texts
from ..models import load_model, load_tokenizer
from ..runs import stage_dir
from .bpc import bits_per_char
from .generate import build_prompt, generate, load

END_OF_TURN = "<|im_end|>"
SUMMARY_KEYS = ("chat_end_of_turn", "base_end_of_turn", "base_bpc", "unigram_bpc", "test_docs")


def heldout_prompts(n: int = 60, seed: int = 0) -> list[str]:
    """English user prompts no chat tuning saw: chatterbot test prompts + held-out-topic instructions.

    Example: `len(heldout_prompts(10)) == 10`.
    """
    chat = sorted({c["messages"][0]["content"] for c in chat_conversations("test")})
    inst = [e["messages"][0]["content"] for e in make_examples(n - n // 2, seed=seed, split="heldout")]
    return [p for pair in zip(chat[: n // 2], inst) for p in pair] + inst[len(chat[: n // 2]):]


def end_of_turn_rate(model_dir, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16) -> dict:
    """Share of chat prompts whose greedy reply emits `<|im_end|>` within `max_new_tokens`.

    Returns `{"rate", "n", "replies"}` (replies up to the end of turn, special tokens kept).
    Example: `end_of_turn_rate(pair["chat"], heldout_prompts(20))["rate"]`.
    """
    model, tokenizer = load(model_dir, device="cpu")
    texts = [build_prompt(tokenizer, p, chat=True) for p in prompts]
    out = generate(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   desc="end of turn", stop_tokens=(END_OF_TURN,))
    ended = [o["ended"] for o in out]
    return {"rate": sum(ended) / max(1, len(ended)), "n": len(ended), "replies": [o["raw"] for o in out]}


def unigram_bpc(train_texts, test_texts) -> float:
    """Bits per character of the add-one-smoothed character unigram model (module docstring).

    Example: `unigram_bpc(["ab"], ["ab"]) == 1.0`.
    """
    counts = Counter("".join(train_texts))
    test = Counter("".join(test_texts))
    n, v = sum(counts.values()), len(set(counts) | set(test))
    bits = -sum(k * math.log2((counts[c] + 1) / (n + v)) for c, k in test.items())
    return bits / max(1, sum(test.values()))


def check_n_prompts(n_prompts) -> int:
    """`n_prompts` if it is an integer >= 2, else a ValueError naming it. Example: `check_n_prompts(60)`."""
    if not is_count(n_prompts, 2):
        raise ValueError(f"parameter n_prompts={n_prompts!r}: expected an integer >= 2")
    return n_prompts


def quality(pair: dict, n_prompts: int = 60, max_new_tokens: int = 64, n_test_docs: int = 300) -> dict:
    """The micro quality bars: end-of-turn rate of chat and base, English test BPC vs unigram.

    Example: `quality(micro.build("nano"), n_prompts=8)["chat_end_of_turn"]`.
    """
    check_n_prompts(n_prompts)
    threads = torch.get_num_threads()
    # One thread: these models are so small that a second thread only adds synchronization,
    # which on a shared 2-core machine made the nano evaluation ~10x slower (measured).
    torch.set_num_threads(1)
    try:
        return _quality(pair, n_prompts, max_new_tokens, n_test_docs)
    finally:
        torch.set_num_threads(threads)


def _quality(pair: dict, n_prompts: int, max_new_tokens: int, n_test_docs: int) -> dict:
    prompts = heldout_prompts(n_prompts)
    chat = end_of_turn_rate(pair["chat"], prompts, max_new_tokens)
    base = end_of_turn_rate(pair["base"], prompts, max_new_tokens)
    test = english_texts("test")[:n_test_docs]
    model = load_model(pair["base"], device="cpu")
    bpc = bits_per_char(model, load_tokenizer(pair["base"]), test, max_length=256)["bpc"]
    return {"prompts": prompts, "chat_end_of_turn": chat["rate"], "base_end_of_turn": base["rate"],
            "chat_replies": chat["replies"], "base_replies": base["replies"],
            "base_bpc": bpc, "unigram_bpc": unigram_bpc(english_texts("train"), test),
            "test_docs": len(test)}


def write_quality(run, pair: dict, n_prompts: int = 60, size: str | None = None,
                  seed: int | None = None) -> dict:
    """Stage 00's quality check of the pair, its summary written to `00_source/quality.json`.

    Returns everything `quality` returns (prompts and replies too) plus `path`.
    Example: `write_quality("runs/micro/am", pair, n_prompts=8, size="nano", seed=0)["base_bpc"]`.
    """
    result = quality(pair, n_prompts=n_prompts)
    summary = {k: result[k] for k in SUMMARY_KEYS}
    summary["n_prompts"] = len(result["prompts"])
    path = atomic_write_json(stage_dir(Path(run), "00") / "quality.json", dict(summary, size=size, seed=seed))
    return dict(result, path=path)
