"""The same three prompts answered after every stage, side by side: forgetting and recovery, read directly.

Two English requests (does the model still chat in English?) and one target-language message (the
start of the first target-language test document: does the model answer in that script at all?)
go through each model's chat template, greedy, `MAX_NEW_TOKENS` tokens at most. Stages 00-03 each
answer them with the models they produce (source Chat; Chat after VE + init; after CPT; ElChat, CV,
LEP) and write `<stage dir>/showcase.json`; `collect(run)` gathers every stage's answers in stage
order, one column per model. Three prompts, not a metric: the tasks of stage 04 measure; this shows.
"""
from __future__ import annotations

import json
import os

import pandas as pd
import torch

from . import data, runs
from .atomic import atomic_write_json
from .evaluation.generate import build_prompt, generate, has_chat_template, load

ENGLISH_PROMPTS = ("Give me three tips for staying healthy.",
                   "What is the capital of France? Answer in one sentence.")
MAX_NEW_TOKENS = 48   # short: three prompts per model must cost seconds on a CPU
TARGET_CHARS = 160    # length of the target-language message
FILE = "showcase.json"
STAGES = ("00", "01", "02", "03")


def prompts(lang: str | os.PathLike) -> list[str]:
    """Two English prompts and the start of the first target-language test document.

    Example: `prompts("am")[:2] == list(ENGLISH_PROMPTS)`.
    """
    docs = [d for d in data.load_texts(lang, "test") if d.strip()]
    target = docs[0].strip()[:TARGET_CHARS] if docs else ""
    return [*ENGLISH_PROMPTS, target]


def answer(models: dict, lang, max_new_tokens: int = MAX_NEW_TOKENS, device: str = "cpu") -> list[dict]:
    """Greedy replies of each model (name -> path) to `prompts(lang)`: rows model, prompt, reply.

    A model without a chat template gets the bare prompt (recorded in `format`).
    Example: `answer({"Chat": "runs/micro/am/00_source/..."}, "am")[0]["reply"]`.
    """
    questions, rows = prompts(lang), []
    for name, path in models.items():
        model, tok = load(path, device=device)
        chat = has_chat_template(tok)
        with torch.no_grad():
            out = generate(model, tok, [build_prompt(tok, q, chat) for q in questions],
                           max_new_tokens=max_new_tokens, batch_size=len(questions), desc=f"showcase {name}")
        rows += [{"model": name, "prompt": q, "reply": r["text"], "ended_turn": r["ended"],
                  "format": "chat_template" if chat else "plain"} for q, r in zip(questions, out)]
        del model
    return rows


def write(run, stage: str, models: dict, lang, max_new_tokens: int = MAX_NEW_TOKENS,
          device: str = "cpu") -> pd.DataFrame:
    """Answer the prompts with `models`, save them as `<stage dir>/showcase.json`, return the table."""
    rows = answer(models, lang, max_new_tokens, device)
    atomic_write_json(runs.stage_dir(run, stage) / FILE, {"stage": stage, "max_new_tokens": max_new_tokens,
                                                          "rows": rows})
    return side_by_side(rows)


def collect(run) -> pd.DataFrame:
    """Every stage's saved answers, in stage order, one column per model (a model seen twice keeps
    its first answer). Example: `collect("runs/micro/am").columns[0] == "Chat"`."""
    rows, seen = [], set()
    for stage in STAGES:
        path = runs.stage_dir(run, stage) / FILE
        if path.exists():
            stage_rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
            rows += [r for r in stage_rows if r["model"] not in seen]
            seen |= {r["model"] for r in stage_rows}
    return side_by_side(rows)


def side_by_side(rows: list[dict]) -> pd.DataFrame:
    """Prompts as rows, models as columns (in the order they came), replies in the cells; a reply
    that did not end its turn within the budget is marked with a trailing ' …'."""
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    frame["reply"] = [r + ("" if e else " …") for r, e in zip(frame["reply"], frame["ended_turn"])]
    table = frame.pivot(index="prompt", columns="model", values="reply")
    return table.loc[list(dict.fromkeys(frame["prompt"])), list(dict.fromkeys(frame["model"]))]


def show(table: pd.DataFrame):
    """The table with wrapped cells (Jupyter), or plain text elsewhere."""
    return table.style.set_properties(**{"white-space": "pre-wrap", "text-align": "left",
                                         "vertical-align": "top"})
