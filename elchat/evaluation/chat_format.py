"""Chat format: does the model still behave like a chat model after adaptation?

Per response, three checks (forgetting after continual pre-training shows here first):
- `ended_turn`: the model emitted its end-of-turn / end-of-text token before the token limit;
- `no_leak`: the text has no chat-template special token (`<|im_start|>`, ...) and no role header
  line (`assistant`, `User:`, ...) — signs the model continues the conversation by itself;
- `right_language`: at least half of the letters are in the requested language's script
  (`elchat.scripts`: the script of a letter is the first word of its Unicode name; English = Latin).
`all_ok` is the share passing all three. Every question is asked twice, for an answer in the
target language and in English (50 questions, 100 requests; only English when the language is a
text file).
"""
from __future__ import annotations

import re

from ..chat_tokens import chat_special_tokens
from ..scripts import LANGUAGE_SCRIPTS, script_share
from .results import mean_metric

QUESTIONS = [
    "What is a good breakfast?", "How do I greet a new colleague?", "Why do we need sleep?",
    "What can I do on a rainy day?", "How do plants grow?", "What is the capital of France?",
    "Give me one tip for learning faster.", "What is a computer?", "How do I make tea?",
    "Why is water important?", "Name three colours.", "What is your favourite season and why?",
    "How can I save money?", "What is the sun?", "Tell me something about cats.",
    "How do I write a short letter?", "What do farmers do?", "Why do birds sing?",
    "What is a good way to relax?", "How many days are in a week?", "What is music?",
    "How do I stay healthy?", "What is a library?", "Describe the sea in one sentence.",
    "What is a good gift for a friend?", "How do I plant a tree?", "Why is the sky blue?",
    "What should I pack for a short trip?", "How do I cook rice?", "What is a doctor's job?",
    "Name two animals that live in the sea.", "How can I sleep better?", "What is a map for?",
    "How do I thank someone for help?", "What do bees make?", "Why do we wash our hands?",
    "What is a good name for a cat?", "How do I start a new hobby?", "What is rain?",
    "How can I be a good neighbour?", "What is a market?", "Why do leaves fall in autumn?",
    "How do I ask for directions?", "What is a holiday?", "Give me one tip for cooking.",
    "What is the moon?", "How do I keep my room tidy?", "Why do people read books?",
    "What is a bicycle?", "How do I make a new friend?",
]

_ROLE = re.compile(r"(?im)^\s*(system|user|assistant|human|ai)\s*(:|$)")


def leaks(raw: str, special_tokens) -> bool:
    """Template tokens or role headers in a response. Example: `leaks("hi\\nuser\\nmore", [])`."""
    return any(t and t in raw for t in special_tokens) or bool(_ROLE.search(raw))


def checks(response: dict, lang: str | None, special_tokens) -> dict:
    """The three checks on one `generate` result (`text`, `raw`, `ended`) requested in `lang`."""
    ok_lang = True if lang not in LANGUAGE_SCRIPTS else script_share(response["text"], lang) >= 0.5
    return {"ended_turn": bool(response["ended"]), "no_leak": not leaks(response["raw"], special_tokens),
            "right_language": bool(ok_lang)}


def requests(lang: str | None, lang_name: str | None) -> list[tuple[str, str]]:
    """(user message, requested language code) pairs: each question in the target language, then in
    English (English only for a language without a known script)."""
    targets = [(lang, lang_name)] if lang in LANGUAGE_SCRIPTS and lang != "en" else []
    return [(f"{q} Please answer in {name}.", code)
            for q in QUESTIONS for code, name in targets + [("en", "English")]]


def run(ctx) -> dict:
    """The checks over `QUESTIONS` (chat template, greedy): each share and `all_ok`."""
    reqs = ctx.take(requests(ctx.lang, ctx.lang_name))
    prompts = [ctx.prompt(u, plain=f"Question: {u}\nAnswer:") for u, _ in reqs]
    results = ctx.generate(prompts, desc="chat_format")
    special = chat_special_tokens(ctx.tokenizer)
    per = [checks(r, code, special) for r, (_, code) in zip(results, reqs)]
    ctx.samples["chat_format"] = [{"prompt": u, "raw": r["raw"]} for (u, _), r in zip(reqs[:3], results)]
    out = {k: mean_metric([p[k] for p in per], ctx.seed) for k in ("ended_turn", "no_leak", "right_language")}
    out["all_ok"] = mean_metric([all(p.values()) for p in per], ctx.seed)
    return out
