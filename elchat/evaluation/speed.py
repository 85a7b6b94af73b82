"""Speed: what vocabulary expansion buys at inference time, measured so that only speed differs.

Free-running generation confounds speed with behaviour (a model writing English emits ~4
characters per token, one writing Amharic ~0.4) and with machine load between two measurements.
So every model decodes the SAME characters, teacher-forced: the held-out target text is tokenized
by the model's own tokenizer and fed one token per step with the KV cache, exactly the work of
generating that text (one forward step per token, cache growing). The reference (the source chat
model) is timed in the same process, interleaved with the model (alternating which goes first),
`REPEATS` times; per repeat r the speed-up is t_ref(r) / t_model(r), and the reported speed-up is
the median over repeats (robust to a repeat disturbed by other load), with a bootstrap interval of
that median. Both models decode as generation does (`generate.decoding_model`: a bf16 copy on a CPU
with native bf16). The reference against itself is not timed twice: its speed-up is 1 by
definition, and its `chars_per_s` is the median of `REPEATS` timings (tests/test_eval_speed.py
checks that `compare` of a model with itself measures 1.0). Beside it, the exact ratio of decoding steps
for the same characters:

    tokens_per_char_ratio = tokens_model(text) / tokens_reference(text)   (1 / the ideal speed-up
                                                                           when a step costs the same)
Metrics: `tokens_per_char` (over all taken texts, per-text items kept), `chars_per_s` and
`reference_chars_per_s` (timed text characters / median seconds), `tokens_per_char_ratio` (exact),
`speedup` (median of per-repeat ratios, 95% bootstrap interval over repeats).
A model measured against a copy of itself gives 1.0 within a few percent on a quiet machine
(tests/test_eval_speed.py allows ±25% under the shared test machine's load).
"""
from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from .bpc import prefix_token_id
from .generate import decoding_model, load, resolve_model
from .results import item_metric, metric

TIMED_CHARS = 30    # characters of held-out target text decoded per repeat (SmolLM2 on Amharic: ~70 steps)
REPEATS = 5         # interleaved repeats; the median of their ratios is reported
_REFERENCE: dict = {}  # the loaded reference model, kept across the models of one stage run


def token_char_counts(tokenizer, texts) -> list[tuple[int, int]]:
    """Per non-empty text: (tokens, characters); `ratio` of them is tokens per character.

    Example: `token_char_counts(tok, ["ab"])` -> `[(2, 2)]` for a character-level tokenizer.
    """
    return [(len(tokenizer(t, add_special_tokens=False)["input_ids"]), len(t)) for t in texts if t]


def timed_texts(texts, total_chars: int = TIMED_CHARS) -> list[str]:
    """The first `total_chars` characters of the texts, as whole texts plus a cut last one.

    Example: `timed_texts(["abc", "defg"], 5) == ["abc", "de"]`.
    """
    out, left = [], total_chars
    for t in texts:
        if left <= 0:
            break
        if t:
            out.append(t[:left])
            left -= len(out[-1])
    return out


def decode_ids(tokenizer, texts) -> list[list[int]]:
    """Per text: the document prefix token (when the tokenizer has one) + the text's tokens."""
    prefix = prefix_token_id(tokenizer)
    return [([prefix] if prefix is not None else []) + list(tokenizer(t, add_special_tokens=False)["input_ids"])
            for t in texts]


def decode_seconds(model, sequences) -> float:
    """Wall time of teacher-forced incremental decoding of every sequence (one token per step, KV cache).

    Example: `decode_seconds(model, [[0, 5, 6, 7]])` -> seconds for 4 cached forward steps.
    """
    device = next(model.parameters()).device
    # transformers 5 names the cache argument `cache` (`past_key_values` is deprecated there)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    t0 = time.perf_counter()
    with torch.no_grad():
        for ids in sequences:
            cache = DynamicCache(config=model.config)
            for tok in ids:
                out = model(input_ids=torch.tensor([[tok]], device=device), use_cache=True,
                            **{name: cache})
                cache = out.past_key_values
                out.logits[0, -1].argmax()  # the step's decision, as generation would make it
    return time.perf_counter() - t0


def interleaved_seconds(model, ids, ref_model, ref_ids, repeats: int = REPEATS) -> tuple[list, list]:
    """(model seconds, reference seconds) per repeat, alternating which one runs first; after a
    warm-up of both (first calls allocate caches and pick kernels)."""
    decode_seconds(model, [ids[0][:4]])
    decode_seconds(ref_model, [ref_ids[0][:4]])
    t_model, t_ref = [], []
    for r in range(repeats):
        pair = [(model, ids, t_model), (ref_model, ref_ids, t_ref)]
        for mdl, seqs, sink in (pair if r % 2 == 0 else pair[::-1]):
            sink.append(decode_seconds(mdl, seqs))
    return t_model, t_ref


def median_ci(values, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the median. Example: `median_ci([1.0, 1.1, 0.9])`."""
    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    meds = np.median(v[idx], axis=1)
    return [float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))]


def compare(model, tokenizer, ref_model, ref_tokenizer, texts, repeats: int = REPEATS,
            seed: int = 0) -> dict:
    """Speed of `model` relative to `ref_model` on the same `texts` (see the module docstring).

    Example: `compare(m, tok, m, tok, ["ሰላም ለዓለም"])["speedup"]["value"]` -> ~1.0 (itself).
    """
    ids, ref_ids = decode_ids(tokenizer, texts), decode_ids(ref_tokenizer, texts)
    t_model, t_ref = interleaved_seconds(model, ids, ref_model, ref_ids, repeats)
    chars = sum(len(t) for t in texts)
    ratios = [r / max(m, 1e-9) for m, r in zip(t_model, t_ref)]
    steps, ref_steps = sum(len(s) for s in ids), sum(len(s) for s in ref_ids)
    return {"chars_per_s": metric(chars / float(np.median(t_model)), repeats),
            "reference_chars_per_s": metric(chars / float(np.median(t_ref)), repeats),
            "tokens_per_char_ratio": metric(steps / ref_steps, chars),
            "speedup": metric(float(np.median(ratios)), repeats, median_ci(ratios, seed=seed),
                              {"id": [str(r) for r in range(repeats)], "num": ratios,
                               "den": [1.0] * repeats})}


def _reference(ctx):
    """(model, tokenizer) of `ctx.reference`: the evaluated model itself when it is the reference,
    else loaded once and kept for the next model of the same run."""
    path = resolve_model(ctx.reference)
    if ctx.model_path is not None and Path(str(path)).resolve() == Path(str(ctx.model_path)).resolve():
        return ctx.model, ctx.tokenizer
    key = (str(path), ctx.device)
    if key not in _REFERENCE:
        _REFERENCE.clear()  # one reference at a time: a second model in memory is enough
        _REFERENCE[key] = load(path, ctx.device)
    return _REFERENCE[key]


def run(ctx, texts) -> dict:
    """Tokens per character of `ctx.model` on target `texts`, and its speed relative to
    `ctx.reference` (when set) on their first `TIMED_CHARS` characters."""
    texts = ctx.take([t for t in texts if t])
    if not texts:
        raise ValueError("speed: no target text to measure on")
    counts = token_char_counts(ctx.tokenizer, texts)
    out = {"tokens_per_char": item_metric([c[0] for c in counts], [c[1] for c in counts], seed=ctx.seed)}
    if ctx.reference is not None:
        ref_model, ref_tok = _reference(ctx)
        timed = timed_texts(texts, TIMED_CHARS)
        chars = sum(len(t) for t in timed)
        if ref_model is ctx.model:  # the reference itself: 1 by definition, its own rate measured
            ids = decode_ids(ctx.tokenizer, timed)
            model = decoding_model(ctx.model)
            decode_seconds(model, [ids[0][:4]])  # warm-up, as in interleaved_seconds
            rate = chars / float(np.median([decode_seconds(model, ids) for _ in range(REPEATS)]))
            out.update({"chars_per_s": metric(rate, REPEATS), "reference_chars_per_s": metric(rate, REPEATS),
                        "tokens_per_char_ratio": metric(1.0, chars),
                        "speedup": metric(1.0, REPEATS, [1.0, 1.0])})
        else:
            out.update(compare(decoding_model(ctx.model), ctx.tokenizer, decoding_model(ref_model),
                               ref_tok, timed, REPEATS, ctx.seed))
    return out
