"""English instruction data with verifiable instructions, for the `micro` chat model's fine-tuning.

Each example is a one-turn ChatML conversation: the user asks for a short text about a topic under
one or two verifiable instructions of the families the evaluation's `ifeval` task checks (IFEval,
Zhou et al. 2023; same ids and kwargs): word/sentence limits, paragraphs, include a keyword / a
keyword N times / avoid words, all capitals / lowercase, start/end phrase, double quotes, N bullet
points, JSON, a <<title>>, a P.S., no commas. The answer is built so it satisfies them by
construction, in an order where no step can undo an earlier one:

    body      = sentences drawn from comma-free templates about the topic
    content   + keyword sentences                        (existence, frequency)
    structure = bullets | paragraphs | JSON | quotes     (at most one)
    framing   + title, start phrase, P.S., end phrase
    case      = upper() | lower()                        (every checker of phrases ignores case)
    limits    : N for "fewer than N words/sentences" / "at least N" and the forbidden words are
                chosen *after* the answer exists, from its own counts, so they hold.

Everything is drawn from one `random.Random`, so the data is a pure function of (n, seed, split).
`train` and `heldout` use disjoint topics, and a prompt equal to one of the evaluation's prompts
(`elchat.evaluation.ifeval.load_prompts`) is skipped, so the evaluation never scores a tuned prompt.
"""
from __future__ import annotations

import json
import random
import re

from .evaluation.ifeval import count_sentences, count_words, load_prompts
from .errors import is_count

TOPICS = [
    "the ocean", "mountains", "rain", "a small garden", "bread", "trains", "the moon", "winter",
    "coffee", "a quiet library", "bicycles", "rivers", "old maps", "birds", "the night sky",
    "a village market", "music", "apples", "bridges", "clocks", "honey bees", "the desert",
    "snow", "a lighthouse", "tea", "forests", "a letter to a friend", "boats", "cats", "dogs",
    "the wind", "summer", "candles", "a city park", "paper", "the harbor", "farms", "islands",
    "a kitchen", "stones", "the spring", "a long walk", "songs", "the sun", "flowers", "horses",
    "a school day", "windows", "the road home", "a storm", "fish", "a mill", "lamps", "books",
]
_ASKS = ["Write a short note about {t}.", "Tell me about {t}.", "Describe {t} in a few sentences.",
         "Say something about {t}.", "Write a few lines on {t}.", "Give me a short text about {t}."]
# Templates have no commas, so every answer also passes punctuation:no_comma.
_SENTENCES = [
    "{T} is a good subject for a short note.", "Many people like to learn about {t}.",
    "There is a lot to say about {t}.", "{T} can be simple to explain.",
    "A good note about {t} starts with the basics.", "People often ask questions about {t}.",
    "Learning about {t} takes a little time.", "Some old stories are about {t}.",
    "Children and adults both enjoy {t}.", "I think {t} is worth a closer look.",
    "You can find {t} in many places.", "Every season brings something new to {t}.",
    "Writers have praised {t} for a long time.", "It is easy to talk about {t} with friends.",
]
_KEYWORDS = ["light", "water", "friend", "morning", "history", "color", "quiet", "journey",
             "simple", "home", "gentle", "bright", "story", "road", "green", "warm"]
_FORBIDDEN = ["dragon", "money", "war", "danger", "machine", "problem", "secret", "price", "good",
              "people", "time", "easy"]
_STARTS = ["Here is my answer:", "Sure thing.", "Let me explain.", "Good question."]
_ENDS = ["Is there anything else I can help with?", "That is all for now.", "Thank you for reading.",
         "I hope this helps."]

FAMILIES = (
    "length_constraints:number_words", "length_constraints:number_sentences",
    "length_constraints:number_paragraphs", "keywords:existence", "keywords:frequency",
    "keywords:forbidden_words", "change_case:english_capital", "change_case:english_lowercase",
    "startend:start_checker", "startend:end_checker", "startend:quotation",
    "detectable_format:number_bullet_lists", "detectable_format:json_format",
    "detectable_format:title", "punctuation:no_comma", "detectable_content:postscript",
)
_STRUCTURE = {"detectable_format:number_bullet_lists", "length_constraints:number_paragraphs",
              "detectable_format:json_format", "startend:quotation"}
# Pairs that cannot both hold, or that one answer shape cannot show naturally.
_CLASH = [{"change_case:english_capital", "change_case:english_lowercase"},
          {"detectable_format:title", "startend:start_checker"}]
_WRAPPED = {"detectable_format:json_format", "startend:quotation"}
_FRAMING = {"detectable_format:title", "startend:start_checker", "startend:end_checker",
            "detectable_content:postscript"}


def _compatible(a: str, b: str) -> bool:
    if a == b or {a, b} in _CLASH or {a, b} <= _STRUCTURE:
        return False
    return not ({a, b} & _WRAPPED and {a, b} & _FRAMING)


def _add_keywords(rng: random.Random, ids: list[str], body: list[str], kw: dict, phrases: dict) -> None:
    """Content: sentences carrying the keywords (existence, frequency), appended to `body`."""
    if "keywords:existence" in ids:
        ks = rng.sample(_KEYWORDS, 2)
        body.append(f"It reminds me of {ks[0]} and {ks[1]}.")
        kw["keywords:existence"] = {"keywords": ks}
        phrases["keywords:existence"] = f"Mention the words \"{ks[0]}\" and \"{ks[1]}\" somewhere."
    if "keywords:frequency" in ids:
        k, f = rng.choice(_KEYWORDS), rng.randint(2, 3)
        body.append(" ".join([f"I like the word {k}."] + [f"Yes {k}."] * (f - 1)))
        kw["keywords:frequency"] = {"keyword": k, "frequency": f, "relation": "at least"}
        phrases["keywords:frequency"] = f"The word \"{k}\" should appear at least {f} times."


def _structure(rng: random.Random, ids: list[str], body: list[str], fill, kw: dict, phrases: dict) -> str:
    """Structure: the body as bullets, paragraphs or one block, then wrapped in JSON or quotes."""
    if "detectable_format:number_bullet_lists" in ids:
        n = len(body)
        text = "\n".join(f"* {s}" for s in body)
        kw["detectable_format:number_bullet_lists"] = {"num_bullets": n}
        phrases["detectable_format:number_bullet_lists"] = (
            f"Use exactly {n} markdown bullet points such as:\n* first point\n* second point")
    elif "length_constraints:number_paragraphs" in ids:
        n = rng.randint(2, 3)
        body += [fill(x) for x in rng.sample([x for x in _SENTENCES if fill(x) not in body], max(0, n - len(body)))]
        cut = [round(i * len(body) / n) for i in range(n + 1)]
        text = "\n***\n".join(" ".join(body[cut[i]:cut[i + 1]]) for i in range(n))
        kw["length_constraints:number_paragraphs"] = {"num_paragraphs": n}
        phrases["length_constraints:number_paragraphs"] = (
            f"Write {n} paragraphs and put the markdown divider *** between them.")
    else:
        text = " ".join(body)
    if "detectable_format:json_format" in ids:
        text = json.dumps({"answer": text})
        phrases["detectable_format:json_format"] = "Give the whole output as valid JSON."
    if "startend:quotation" in ids:
        text = f"\"{text}\""
        phrases["startend:quotation"] = "Put double quotation marks around your entire answer."
    return text


def _frame(rng: random.Random, ids: list[str], text: str, topic: str, kw: dict, phrases: dict) -> str:
    """Framing: title, start phrase, P.S. and end phrase around the text."""
    if "detectable_format:title" in ids:
        text = f"<<{topic.title()}>>\n{text}"
        phrases["detectable_format:title"] = "Start with a title in double angular brackets like <<title>>."
    if "startend:start_checker" in ids:
        p = rng.choice(_STARTS)
        text = f"{p}\n{text}" if text.startswith("*") else f"{p} {text}"  # keep bullets at line start
        kw["startend:start_checker"] = {"start_phrase": p}
        phrases["startend:start_checker"] = f"The first words of your answer must be \"{p}\""
    if "detectable_content:postscript" in ids:
        text = f"{text}\nP.S. Thank you for asking about {topic}."
        kw["detectable_content:postscript"] = {"postscript_marker": "P.S."}
        phrases["detectable_content:postscript"] = "Finish with a postscript that starts with P.S."
    if "startend:end_checker" in ids:
        p = rng.choice(_ENDS)
        text = f"{text} {p}"
        kw["startend:end_checker"] = {"end_phrase": p}
        phrases["startend:end_checker"] = f"The last words of your response must be \"{p}\" exactly."
    return text


def _case(ids: list[str], text: str, phrases: dict) -> str:
    """Case (upper/lower) last among the edits; every checker of phrases ignores case."""
    if "change_case:english_capital" in ids:
        text = text.upper()
        phrases["change_case:english_capital"] = "Write everything in capital letters."
    if "change_case:english_lowercase" in ids:
        text = text.lower()
        phrases["change_case:english_lowercase"] = "Write everything in lowercase letters; no capitals."
    if "punctuation:no_comma" in ids:
        phrases["punctuation:no_comma"] = "Avoid commas completely."
    return text


def _limits(rng: random.Random, ids: list[str], text: str, kw: dict, phrases: dict) -> None:
    """Limits and forbidden words, taken from the finished answer so they hold by construction."""
    for iid, count, unit in (("length_constraints:number_words", count_words(text), "words"),
                             ("length_constraints:number_sentences", count_sentences(text), "sentences")):
        if iid in ids:
            if rng.random() < 0.5:
                n, rel, say = count + rng.randint(1, 8), "less than", "Keep it under {n} {u}."
            else:
                n, rel, say = max(1, count - rng.randint(0, 3)), "at least", "Use no fewer than {n} {u}."
            kw[iid] = {"relation": rel, ("num_words" if unit == "words" else "num_sentences"): n}
            phrases[iid] = say.format(n=n, u=unit)
    if "keywords:forbidden_words" in ids:
        absent = [w for w in _FORBIDDEN if not re.search(rf"\b{w}\b", text, flags=re.IGNORECASE)]
        ws = rng.sample(absent, min(2, len(absent)))
        kw["keywords:forbidden_words"] = {"forbidden_words": ws}
        phrases["keywords:forbidden_words"] = "Do not say " + " or ".join(f"\"{w}\"" for w in ws) + "."


def _example(rng: random.Random, ids: list[str], topic: str) -> tuple[str, str, list[dict]]:
    """(prompt, response, kwargs per instruction); the response satisfies every instruction.

    The steps run in the order of the module docstring, so no step undoes an earlier one.
    """
    fill = lambda s: s.format(t=topic, T=topic[0].upper() + topic[1:])  # noqa: E731
    body = [fill(s) for s in rng.sample(_SENTENCES, rng.randint(1, 3))]  # short: fits a tiny model
    kw, phrases = {}, {}
    _add_keywords(rng, ids, body, kw, phrases)
    text = _structure(rng, ids, body, fill, kw, phrases)
    text = _frame(rng, ids, text, topic, kw, phrases)
    text = _case(ids, text, phrases)
    _limits(rng, ids, text, kw, phrases)
    prompt = " ".join([rng.choice(_ASKS).format(t=topic)] + [phrases[i] for i in ids])
    return prompt, text, [kw.get(i, {}) for i in ids]


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def _eval_prompts() -> set[str]:
    return {_norm(p["prompt"]) for p in load_prompts()}


def make_examples(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """`n` examples: `{"messages": [user, assistant], "instruction_id_list": [...], "kwargs": [...]}`.

    Example: `make_examples(2, seed=0)[0]["messages"][1]["role"] == "assistant"`.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r}: expected 'train' or 'heldout'")
    if not is_count(n):
        raise ValueError(f"n={n!r}: expected a non-negative integer")
    # Every 6th topic is held out, so held-out prompts are about topics never tuned on.
    topics = [t for i, t in enumerate(TOPICS) if (i % 6 == 5) == (split == "heldout")]
    rng = random.Random(f"{seed}-{split}")
    banned, seen, out = _eval_prompts(), set(), []
    for _ in range(50 * n + 100):
        if len(out) == n:
            break
        first = FAMILIES[len(out) % len(FAMILIES)]
        ids = [first]
        if rng.random() < 0.5:
            ids.append(rng.choice([f for f in FAMILIES if _compatible(first, f)]))
        prompt, response, kwargs = _example(rng, ids, rng.choice(topics))
        if _norm(prompt) in banned or prompt in seen:
            continue
        seen.add(prompt)
        out.append({"messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": response}],
                    "instruction_id_list": ids, "kwargs": kwargs})
    return out
