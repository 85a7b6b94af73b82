"""IFEval-style instruction following: English prompts with instructions a program can verify.

Each prompt (`prompts/ifeval.jsonl`, written for this project) carries `instruction_id_list` and
one `kwargs` dict per instruction, as in IFEval (Zhou et al. 2023, arXiv:2311.07911). Scores, as
IFEval defines them:

- strict: the checker runs on the response as is;
- loose: an instruction counts as followed if the checker passes on any of 8 variants of the
  response: as is, with the first line removed, the last line removed, both removed, and each of
  those four with every `*` deleted (markdown emphasis);
- prompt-level accuracy: share of prompts whose instructions are all followed;
- instruction-level accuracy: share of all instructions followed.
An empty response follows nothing. Word counts use `\\w+` runs, sentences are split after
`.`, `!` or `?` (IFEval uses nltk for both; these need no download and agree on plain prose).

Generation budget: each prompt gets enough new tokens for a response that meets its length and
format instructions, so the task measures instruction following, not truncation (a 48-token cap cuts
an "at least 80 words" answer, and lets a rambling answer pass "less than 40 words"). `required_words`
is the length the instructions ask for (words; sentences x `WORDS_PER_SENTENCE`, paragraphs x
`WORDS_PER_PARAGRAPH`, bullets x `WORDS_PER_BULLET`, whichever is largest, "less than N" counted as N
so that a longer answer can be seen to break it) plus `MARGIN_WORDS`; `token_budget` turns it into
tokens with the model's own tokens per word on the prompts' English text, rounded up to a multiple of
`BUDGET_STEP` (prompts of one budget generate as one batch), never below the run's `max_new_tokens`
and never above `BUDGET_CAP` times it (the run's budget still bounds the cost: the test presets'
8 tokens allow 32). The budgets used, and how many prompts needed more than the cap, are recorded in
the results' notes: raise `max_new_tokens` until none does.
"""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import resources

from .results import mean_metric


WORDS_PER_SENTENCE = 12   # a plain English sentence
WORDS_PER_PARAGRAPH = 40  # two or three sentences
WORDS_PER_BULLET = 8      # one short line
MARGIN_WORDS = 15         # title, postscript, quoted or fixed ending
BUDGET_STEP = 32
BUDGET_CAP = 4            # at most 4 x the run's max_new_tokens


def count_words(text: str) -> int:
    """Words as `\\w+` runs. Example: `count_words("Hi there, you.") == 3`."""
    return len(re.findall(r"\w+", text))


def count_sentences(text: str) -> int:
    """Sentences split after `.`, `!` or `?`. Example: `count_sentences("Hi. Go! Ok?") == 3`."""
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", s)])


def _compare(count, relation, n):
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise ValueError(f"ifeval: unknown relation {relation!r} (use 'less than' or 'at least')")


def _json(text):
    text = text.strip()
    text = re.sub(r"^```(?:json|Json|JSON)?\s*", "", text)
    text = re.sub(r"\s*```$", "", text)
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _paragraphs(text, num_paragraphs):
    parts = re.split(r"\s?\*\*\*\s?", text)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def _postscript_pattern(marker):
    marker = marker.lower().strip()
    if marker == "p.s.":  # as IFEval: "P.S." or "P. S."
        return r"\s*p\.\s?s\..*$"
    if marker == "p.p.s":
        return r"\s*p\.\s?p\.\s?s.*$"
    return r"\s*" + re.escape(marker) + r".*$"


def _bullets(text, num_bullets):
    stars = re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


# instruction id -> checker(response, **kwargs) -> bool; the ids follow IFEval's naming.
CHECKERS = {
    "length_constraints:number_words":
        lambda r, relation, num_words: _compare(count_words(r), relation, num_words),
    "length_constraints:number_sentences":
        lambda r, relation, num_sentences: _compare(count_sentences(r), relation, num_sentences),
    "length_constraints:number_paragraphs": lambda r, num_paragraphs: _paragraphs(r, num_paragraphs),
    "keywords:existence":
        lambda r, keywords: all(re.search(re.escape(k), r, flags=re.IGNORECASE) for k in keywords),
    "keywords:forbidden_words": lambda r, forbidden_words: not any(
        re.search(r"\b" + re.escape(w) + r"\b", r, flags=re.IGNORECASE) for w in forbidden_words),
    "keywords:frequency": lambda r, keyword, frequency, relation: _compare(
        len(re.findall(re.escape(keyword), r, flags=re.IGNORECASE)), relation, frequency),
    "change_case:english_capital": lambda r: r.isupper(),
    "change_case:english_lowercase": lambda r: r.islower(),
    "startend:start_checker":
        lambda r, start_phrase: r.strip().lower().startswith(start_phrase.strip().lower()),
    "startend:end_checker":
        lambda r, end_phrase: r.strip().lower().endswith(end_phrase.strip().lower()),
    "startend:quotation": lambda r: len(r.strip()) > 1 and r.strip()[0] == r.strip()[-1] == '"',
    "detectable_format:number_bullet_lists": lambda r, num_bullets: _bullets(r, num_bullets),
    "detectable_format:json_format": lambda r: _json(r),
    "detectable_format:title": lambda r: any(t.strip() for t in re.findall(r"<<([^\n]+)>>", r)),
    "punctuation:no_comma": lambda r: "," not in r,
    "detectable_content:postscript": lambda r, postscript_marker: bool(re.search(
        _postscript_pattern(postscript_marker), r.lower(), flags=re.MULTILINE)),
}


def check(instruction_id: str, response: str, kwargs: dict | None = None) -> bool:
    """Strict check of one instruction. Example: `check("punctuation:no_comma", "a b") is True`."""
    if instruction_id not in CHECKERS:
        raise ValueError(f"ifeval: unknown instruction {instruction_id!r}; known: {', '.join(CHECKERS)}")
    return bool(response.strip()) and CHECKERS[instruction_id](response, **(kwargs or {}))


def loose_variants(response: str) -> list[str]:
    """IFEval's 8 loose variants of a response. Example: `loose_variants("T\\nx\\nE")[4] == "x"`."""
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    return [response, response.replace("*", ""), first, last, both,
            first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]


def follows(prompt: dict, response: str, loose: bool = False) -> list[bool]:
    """Per instruction of `prompt`: followed by `response` (strict, or loose as IFEval defines it).

    Example: `follows({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, "ok")`.
    """
    variants = loose_variants(response) if loose else [response]
    return [any(check(iid, v, kw) for v in variants)
            for iid, kw in zip(prompt["instruction_id_list"], prompt["kwargs"], strict=True)]


def score(prompts: list[dict], responses: list[str], seed: int = 0) -> dict:
    """IFEval's four accuracies: prompt/instruction level x strict/loose (metric entries)."""
    out = {}
    for mode in ("strict", "loose"):
        per = [follows(p, r, loose=mode == "loose") for p, r in zip(prompts, responses, strict=True)]
        out[f"prompt_{mode}"] = mean_metric([all(f) for f in per], seed)
        out[f"instruction_{mode}"] = mean_metric([x for f in per for x in f], seed)
    return out


@lru_cache(maxsize=1)
def _load():
    text = resources.files(__package__).joinpath("prompts/ifeval.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def load_prompts() -> list[dict]:
    """The shipped prompts: dicts with `key`, `prompt`, `instruction_id_list`, `kwargs`.

    Example: `len(load_prompts()) >= 150`.
    """
    return [dict(p) for p in _load()]


def required_words(prompt: dict) -> int:
    """Words a response needs room for to meet (or visibly break) the prompt's length instructions.

    Example: `required_words({"instruction_id_list": ["length_constraints:number_words"],
    "kwargs": [{"relation": "at least", "num_words": 80}]}) == 80 + MARGIN_WORDS`.
    """
    need = 0
    for iid, kw in zip(prompt["instruction_id_list"], prompt["kwargs"], strict=True):
        kw = kw or {}
        need = max(need, kw.get("num_words", 0), kw.get("num_sentences", 0) * WORDS_PER_SENTENCE,
                   kw.get("num_paragraphs", 0) * WORDS_PER_PARAGRAPH, kw.get("num_bullets", 0) * WORDS_PER_BULLET)
    return need + MARGIN_WORDS


def tokens_per_word(tokenizer, texts) -> float:
    """The tokenizer's tokens per `count_words` word on `texts`. Example: `tokens_per_word(tok, ["a b"])`."""
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(1, sum(count_words(t) for t in texts))


def needed_tokens(prompt: dict, per_word: float) -> int:
    """`required_words` x `per_word`, rounded up to a multiple of BUDGET_STEP."""
    return math.ceil(required_words(prompt) * per_word / BUDGET_STEP) * BUDGET_STEP


def token_budget(prompt: dict, per_word: float, floor: int) -> int:
    """New tokens for `prompt`: `needed_tokens`, at least `floor`, at most BUDGET_CAP x `floor`.

    Example: `token_budget(p, 1.3, 48)` -> 128 for an "at least 80 words" prompt.
    """
    return min(max(int(floor), needed_tokens(prompt, per_word)), BUDGET_CAP * int(floor))


def _generate(ctx, prompts: list[dict]) -> list[str]:
    """Greedy responses, each prompt with its `token_budget` (one batch run per budget)."""
    per_word = tokens_per_word(ctx.tokenizer, [p["prompt"] for p in prompts])
    budgets = [token_budget(p, per_word, ctx.max_new_tokens) for p in prompts]
    responses = [""] * len(prompts)
    for budget in sorted(set(budgets)):
        idx = [i for i, b in enumerate(budgets) if b == budget]
        out = ctx.generate([ctx.prompt(prompts[i]["prompt"]) for i in idx], max_new_tokens=budget,
                           desc=f"ifeval ({budget} tokens)")
        for i, r in zip(idx, out, strict=True):
            responses[i] = r["text"]
    if budgets:
        short = sum(needed_tokens(p, per_word) > b for p, b in zip(prompts, budgets, strict=True))
        ctx.notes.append(f"ifeval: token budget per prompt {min(budgets)}-{max(budgets)} (median "
                         f"{sorted(budgets)[len(budgets) // 2]}; {per_word:.2f} tokens/word); {short} of "
                         f"{len(prompts)} prompts need more than {BUDGET_CAP} x max_new_tokens")
    return responses


def run(ctx) -> dict:
    """Generate a response per prompt (chat template, greedy, a budget that fits its instructions) and score it."""
    prompts = ctx.take(load_prompts())
    responses = _generate(ctx, prompts)
    ctx.samples["ifeval"] = [{"prompt": p["prompt"], "response": r}
                             for p, r in zip(prompts[:3], responses[:3])]
    return score(prompts, responses, ctx.seed)
