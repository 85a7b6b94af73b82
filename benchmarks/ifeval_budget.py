"""Does the IFEval-style task measure instruction following or truncation? For one model, the
prompts are answered twice: with one fixed budget for every prompt (the old behaviour, `--fixed`
new tokens) and with `ifeval.token_budget` per prompt (words its instructions need x the model's
tokens per word). Printed per budget: tokens per word, the budgets' range, the share of replies
that hit the budget without ending their turn (truncated), prompt-level strict/loose accuracy, and
the generation time (load-dependent: compare on a quiet machine).

    .venv/bin/python benchmarks/ifeval_budget.py --model smollm2-135m --limit 60
    .venv/bin/python benchmarks/ifeval_budget.py --model runs/micro/am/03_merge/elchat --limit 60
"""
from __future__ import annotations

import argparse
import statistics
import time

from elchat.evaluation import ifeval
from elchat.evaluation.generate import Context, load


def _answer(ctx, prompts, budgets):
    replies = [None] * len(prompts)
    for budget in sorted(set(budgets)):
        idx = [i for i, b in enumerate(budgets) if b == budget]
        out = ctx.generate([ctx.prompt(prompts[i]["prompt"]) for i in idx], max_new_tokens=budget)
        for i, r in zip(idx, out, strict=True):
            replies[i] = r
    return replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a preset, model directory or run model path")
    ap.add_argument("--limit", type=int, default=60, help="first N shipped prompts")
    ap.add_argument("--fixed", type=int, default=48, help="the fixed budget to compare with")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    model, tok = load(args.model, device="cpu")
    ctx = Context(model, tok, batch_size=args.batch, max_new_tokens=args.fixed)
    prompts = ifeval.load_prompts()[:args.limit]
    per_word = ifeval.tokens_per_word(tok, [p["prompt"] for p in prompts])
    print(f"{args.model}: {per_word:.2f} tokens/word on the prompts; n = {len(prompts)} prompts")
    for name, budgets in (("fixed", [args.fixed] * len(prompts)),
                          ("per prompt", [ifeval.token_budget(p, per_word, args.fixed) for p in prompts])):
        t0 = time.perf_counter()
        replies = _answer(ctx, prompts, budgets)
        seconds = time.perf_counter() - t0
        cut = sum(not r["ended"] and r["new_tokens"] >= b for r, b in zip(replies, budgets, strict=True))
        scores = ifeval.score(prompts, [r["text"] for r in replies])
        print(f"{name:10s} budget {min(budgets)}-{max(budgets)} (median {statistics.median(budgets):.0f}): "
              f"truncated {cut}/{len(prompts)}, prompt strict {scores['prompt_strict']['value']:.3f}, "
              f"loose {scores['prompt_loose']['value']:.3f}, {seconds:.0f} s")


if __name__ == "__main__":
    main()
