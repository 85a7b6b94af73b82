"""Metric functions the kit's lm-eval task templates name with `!function utils.<name>`.

`process_mc`: accuracy of the option with the highest log-likelihood per character (the kit's
`mc` normalization, tokenizer-free) next to lm-eval's plain `acc` (highest total log-likelihood).
`process_rouge_l`: ROUGE-L F1 over words of any script. Hand-written tokenizer because
rouge-score's default one lower-cases and keeps only [a-z0-9], so a Tamil or Amharic summary has
no tokens at all; words here are runs of Unicode letters, combining marks and digits, and every
Han/Kana character is a word of its own (Chinese and Japanese have no spaces).
"""
from __future__ import annotations

import regex
from rouge_score import rouge_scorer

_WORD = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]|[\p{L}\p{M}\p{N}]+")


class ScriptTokenizer:
    """rouge-score tokenizer for every script. Example: `ScriptTokenizer().tokenize("ሰላም ዓለም!")`
    == ["ሰላም", "ዓለም"]."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.casefold())


_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=ScriptTokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (0-1) of one summary. Example: `rouge_l("ሰላም ዓለም", "ሰላም ዓለም") == 1.0`."""
    return _SCORER.score(reference, prediction)["rougeL"].fmeasure


def process_rouge_l(doc: dict, results: list[str]) -> dict:
    return {"rouge_l": rouge_l(results[0], doc["summary"])}


def process_mc(doc: dict, results: list) -> dict:
    """`results` holds one (log-likelihood, is_greedy) per option, in option order."""
    lls = [r[0] for r in results]
    lengths = [len(" " + o) for o in doc["options"]]  # the continuation scored: delimiter + option
    per_char = max(range(len(lls)), key=lambda i: lls[i] / lengths[i])
    total = max(range(len(lls)), key=lambda i: lls[i])
    return {"acc": float(total == doc["answer"]), "acc_char": float(per_char == doc["answer"])}
