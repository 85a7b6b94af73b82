"""Vocabulary expansion on the real tokenizers of each family: tokens/char before -> after.

For every tokenizer fixture (`elchat.families`: Qwen3, Llama-3.2, Llama-3.0, Gemma-3, Mistral v3)
and target language, expand with `elchat.vocab.expand_vocabulary` (trained on the language's
shipped train split, verified on its test split, as stage 01 does) and print one Markdown row:
tokens per character on the test split before and after, tokens added, the expansion's wall time.

    .venv/bin/python benchmarks/family_vocab.py                      # 5000 tokens, am ta ru
    .venv/bin/python benchmarks/family_vocab.py --new-tokens 1000 --langs am --families qwen3

Needs the fixtures (`make setup`, or `python -m elchat.families`); no other network.
"""
from __future__ import annotations

import argparse
import time

from elchat import families, vocab
from elchat.data import load_texts


def row(name: str, tok, lang: str, new_tokens: int) -> str:
    train, test = load_texts(lang, "train"), load_texts(lang, "test")
    t0 = time.perf_counter()
    new, info = vocab.expand_vocabulary(tok, train, new_tokens, eval_texts=test)
    wall = time.perf_counter() - t0
    return (f"| {name} | {lang} | {len(tok):,} | {info['tokens_per_char_before']:.3f} -> "
            f"{info['tokens_per_char_after']:.3f} | {info['num_added']:,} | {wall:.0f} s |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--new-tokens", type=int, default=5000)
    p.add_argument("--langs", nargs="+", default=["am", "ta", "ru"])
    p.add_argument("--families", nargs="+", default=list(families.FIXTURES))
    args = p.parse_args(argv)
    print(f"| tokenizer | lang | vocabulary | tokens/char (test) before -> after "
          f"| tokens added (of {args.new_tokens:,}) | wall |")
    print("|---|---|---|---|---|---|")
    for name in args.families:
        tok = families.load_tokenizer(name)
        for lang in args.langs:
            print(row(name, tok, lang, args.new_tokens), flush=True)


if __name__ == "__main__":
    main()
