"""Translation en->L and L->en on held-out parallel pairs, scored with chrF (sacrebleu).

chrF (Popovic 2015) is the F-score (beta = 2, recall weighted twice) of character n-grams
(n = 1..6) between hypothesis and reference, pooled over the corpus; it works for every script
without a word tokenizer. Zero-shot and greedy: chat models get the request through their chat
template, base models a plain "English: ...\\nAmharic:" prompt; decoding stops at the end of the
turn or at the first newline. The 95% interval resamples sentences and recomputes corpus chrF.
"""
from __future__ import annotations

import sacrebleu

from .results import bootstrap_ci, metric

N_BOOT = 200  # corpus chrF is recomputed per resample: 200 keeps it well under a second


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (0-100). Example: `chrf(["selam alem"], ["selam alem"]) == 100.0`."""
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def translation_prompt(ctx, text: str, src: str, tgt: str) -> str:
    """Chat or plain prompt asking to translate `text` from language `src` into `tgt`."""
    user = f"Translate the following {src} text into {tgt}. Reply with the translation only.\n\n{text}"
    return ctx.prompt(user, plain=f"{src}: {text}\n{tgt}:")


def translate(ctx, sources: list[str], src: str, tgt: str, desc: str) -> list[str]:
    """Greedy translations of `sources`, each cut at the end of the turn or its first newline."""
    prompts = [translation_prompt(ctx, s, src, tgt) for s in sources]
    return [r["text"] for r in ctx.generate(prompts, stop_at_newline=True, desc=desc)]


def run(ctx, pairs) -> dict:
    """chrF of both directions: `{"chrf_en2x": ..., "chrf_x2en": ...}` (metric entries)."""
    pairs = ctx.take(pairs)
    if not pairs:
        raise ValueError(f"mt: no test pairs for language {ctx.lang!r}")
    en, tg = [p[0] for p in pairs], [p[1] for p in pairs]
    out, samples = {}, {}
    for name, src, tgt, srcs, refs in [("chrf_en2x", "English", ctx.lang_name, en, tg),
                                       ("chrf_x2en", ctx.lang_name, "English", tg, en)]:
        hyps = translate(ctx, srcs, src, tgt, desc=f"mt {name}")
        items = list(zip(hyps, refs))
        ci = bootstrap_ci(items, lambda it: chrf([h for h, _ in it], [r for _, r in it]),
                          n_boot=N_BOOT, seed=ctx.seed)
        out[name] = metric(chrf(hyps, refs), len(items), ci)
        samples[name] = [{"source": s, "reference": r, "hypothesis": h}
                         for s, r, h in zip(srcs[:3], refs[:3], hyps[:3])]
    ctx.samples["mt"] = samples
    return out
