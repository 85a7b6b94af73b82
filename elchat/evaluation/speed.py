"""Speed: what vocabulary expansion buys at inference time.

- `tokens_per_char`: tokens the tokenizer needs per character of target test text (sum over
  texts / sum of characters; fewer tokens per character = fewer decoding steps per character);
- `chars_per_s`: generation throughput in characters of decoded text per second, measured by
  greedy decoding exactly `max_new_tokens` tokens (end-of-turn ignored, so every model does the
  same number of steps) as continuations of the beginnings of target texts, after a warm-up call;
- relative to a reference model (the source chat model, when given): `tokens_per_char_ratio` =
  model / reference (below 1 is better) and `speedup` = model chars/s / reference chars/s.
Wall-clock throughput has no item-level interval (`ci95` null) and depends on machine load.
"""
from __future__ import annotations

from .generate import generate, load
from .results import bootstrap_ci, metric, ratio

PROMPT_CHARS = 100  # the continuation prompt: the first 100 characters of a target text
_REFERENCE_CACHE: dict = {}


def token_char_counts(tokenizer, texts) -> list[tuple[int, int]]:
    """Per non-empty text: (tokens, characters); `ratio` of them is tokens per character.

    Example: `ratio(token_char_counts(tok, ["ab"]))` -> tokens per character of "ab".
    """
    return [(len(tokenizer(t, add_special_tokens=False)["input_ids"]), len(t)) for t in texts if t]


def throughput(model, tokenizer, texts, max_new_tokens: int, batch_size: int) -> tuple[float, int]:
    """(characters per second, prompts used) for greedy decoding of `max_new_tokens` tokens."""
    prompts = [t[:PROMPT_CHARS] for t in texts if t][:batch_size]
    generate(model, tokenizer, prompts[:1], max_new_tokens=2, batch_size=1, ignore_stop=True,
             desc="speed warm-up")
    res = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   ignore_stop=True, desc="speed")
    seconds = sum(r["seconds"] for r in res)
    return sum(len(r["text"]) for r in res) / max(seconds, 1e-9), len(prompts)


def measure(model, tokenizer, texts, max_new_tokens, batch_size, seed=0) -> dict:
    """`tokens_per_char` (with its bootstrap interval) and `chars_per_s` of one model."""
    items = token_char_counts(tokenizer, texts)
    cps, n = throughput(model, tokenizer, texts, max_new_tokens, batch_size)
    return {"tokens_per_char": metric(ratio(items), len(items), bootstrap_ci(items, ratio, 200, seed)),
            "chars_per_s": metric(cps, n)}


def run(ctx, texts) -> dict:
    """Speed of `ctx.model` on target `texts`, relative to `ctx.reference` when one is set."""
    texts = ctx.take([t for t in texts if t])
    if not texts:
        raise ValueError("speed: no target text to measure on")
    out = measure(ctx.model, ctx.tokenizer, texts, ctx.max_new_tokens, ctx.batch_size, ctx.seed)
    if ctx.reference is not None:
        key = (str(ctx.reference), tuple(texts), ctx.max_new_tokens, ctx.batch_size)
        if key not in _REFERENCE_CACHE:  # the reference is measured once per process and setting
            ref_model, ref_tok = load(ctx.reference, ctx.device)
            _REFERENCE_CACHE[key] = measure(ref_model, ref_tok, texts, ctx.max_new_tokens,
                                            ctx.batch_size, ctx.seed)
            del ref_model
        ref = _REFERENCE_CACHE[key]
        out["tokens_per_char_ratio"] = metric(out["tokens_per_char"]["value"] / ref["tokens_per_char"]["value"], len(texts))
        out["speedup"] = metric(out["chars_per_s"]["value"] / max(ref["chars_per_s"]["value"], 1e-9),
                                out["chars_per_s"]["n"])
    return out
