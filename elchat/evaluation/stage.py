"""Stage 04: every model of the study through the same tasks, into one results table.

`evaluate(model, lang, tasks)` loads a model (HF directory or preset name), runs each task module
and returns `{"metadata": {...}, "tasks": {task: {metric: {"value", "n", "ci95"}}}}`
(schema in `results`). Tasks (`TASKS`; the module scoring each in `TASK_MODULES`):

- `bpc` (bpc.py): bits per character on the target test split, and `bpc_en` on English test text;
- `mt` (mt.py): chrF of en->L and L->en translation of held-out pairs;
- `mc` (mc.py): 4-way multiple choice "which is the translation", accuracy vs chance 0.25;
- `ifeval` (ifeval.py): IFEval-style verifiable instructions, strict/loose prompt/instruction level;
- `chat_format` (chat_format.py): ends its turn, no template leaks, answers in the asked language;
- `safety` (safety.py): refusals of harmful requests, non-refusal of benign look-alikes;
- `reply` (reply.py): chat retention by forward passes — bits per character of the source chat
  model's own greedy replies (generated once per run, cached) and end-of-turn probability after them;
- `speed` (speed.py): tokens per character and characters per second, relative to a reference.

Chat tasks use the model's chat template; a model without one (a base model) gets plain prompts
and the result says so in `metadata.notes`. `evaluate_models` runs the stage: the study's models
(on `tasks`) and the t-sweep models (on `sweep_tasks`), each result saved as
`results/<model>.json`, all rows in one tidy `results.csv` with `group` ("model" | "sweep") and `t`,
and every item score in `items.csv` (for the report's paired comparisons).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from .. import data
from ..atomic import atomic_write_text
from ..errors import is_count
from . import bpc, chat_format, harness, ifeval, mc, mt, reply, safety, speed
from .generate import Context, load, resolve_model
from .results import CSV_COLUMNS, ITEM_COLUMNS, item_rows, save_results, to_rows

TASKS = {
    "bpc": "bits per character on target (and English) test text",
    "mt": "translation en<->L, chrF",
    "mc": "4-way translation multiple choice, accuracy",
    "ifeval": "verifiable instruction following (English)",
    "chat_format": "turn ending, no template leaks, requested language",
    "safety": "refusal of harmful / compliance with benign requests",
    "reply": "chat retention: bits/char of the chat model's replies, end-of-turn probability",
    "speed": "tokens per character, generation characters per second",
}
# task -> the module whose `run(ctx, *inputs)` scores it (inputs: `_task_inputs`); `harness` (the kit's
# mt/mc sets through lm-evaluation-harness) is opt-in: a valid task, not in the default list TASKS
TASK_MODULES = {"bpc": bpc, "mt": mt, "mc": mc, "ifeval": ifeval, "chat_format": chat_format,
                "safety": safety, "reply": reply, "speed": speed,
                "harness": harness}
CHAT_TASKS = ("ifeval", "chat_format", "safety")
# forward passes only (no decoding loop): cheap, so `task_limits` gives them many items on the sweep too
FORWARD_TASKS = ("bpc", "mc", "reply")
PAIR_TASKS = ("mt", "mc")
DEFAULT_MAX_NEW_TOKENS = 64
REFERENCE_MODEL = "Chat"  # the source chat model: what `speed` of every other model is relative to
STAGE_CSV_COLUMNS = CSV_COLUMNS + ["group", "t"]
ITEM_CSV_COLUMNS = ITEM_COLUMNS + ["group", "t"]


# Data access goes through these three so tests can substitute tiny data.
def _languages() -> dict:
    return data.LANGUAGES


def _load_texts(lang, split="test"):
    return data.load_texts(lang, split)


def _load_pairs(lang, split="test"):
    return data.load_pairs(lang, split)


def check_tasks(tasks, lang_is_file: bool = False) -> list[str]:
    """Validated task list (all tasks when None). Example: `check_tasks(["bpc"]) == ["bpc"]`."""
    if tasks is None:
        return [t for t in TASKS if not (lang_is_file and t in PAIR_TASKS)]
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if t not in TASK_MODULES]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(map(repr, unknown))}; known tasks: {', '.join(TASK_MODULES)}")
    if lang_is_file and any(t in PAIR_TASKS for t in tasks):
        raise ValueError(f"tasks {', '.join(PAIR_TASKS)} need a shipped language with parallel "
                         "pairs, not a text file; drop them or pass a language code")
    return tasks


def check_lang(lang: str) -> tuple[str | None, str | None, Path | None]:
    """(code, English name, text file) for a language code or a UTF-8 text file path."""
    if data.is_corpus_file(lang):
        path = Path(str(lang))
        return None, path.stem, path
    languages = _languages()
    if lang not in languages:
        raise ValueError(f"unknown language {lang!r}: not a text file, and not one of "
                         f"{', '.join(languages)}")
    return lang, languages[lang], None


def check_task_limits(task_limits) -> dict:
    """{task: items} overriding `limit` per task (0 = all). Example: `check_task_limits({"reply": 100})`."""
    task_limits = dict(task_limits or {})
    for task, n in task_limits.items():
        if task not in TASKS:
            raise ValueError(f"parameter task_limits: unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        if not is_count(n, 0):
            raise ValueError(f"parameter task_limits[{task!r}]={n!r}: expected 0 (all items) or a positive integer")
    return task_limits


def check_model_tasks(model_tasks, lang_is_file: bool = False) -> dict:
    """{model name: tasks} replacing `tasks` for that model (e.g. an ablation scored only where it
    differs). Example: `check_model_tasks({"ElChat w/o copy": ["reply"]}) == {"ElChat w/o copy": ["reply"]}`.
    """
    if not isinstance(model_tasks, dict):
        raise ValueError(f"parameter model_tasks={model_tasks!r}: expected a mapping "
                         '{model name: [tasks]}, e.g. {"ElChat w/o copy": ["reply", "chat_format"]}')
    out = {}
    for name, value in model_tasks.items():
        try:
            out[str(name)] = check_tasks(value, lang_is_file)
        except ValueError as e:
            raise ValueError(f"parameter model_tasks[{name!r}]: {e}") from None
    return out


def check_stage_params(tasks, sweep_tasks, limit, sweep_limit, eval_batch_size, max_new_tokens,
                       lang, task_limits=None, model_tasks=None,
                       decode_batch_size=1) -> tuple[list[str], list[str]]:
    """Notebook 04's parameters checked (the error names the bad one); returns the task lists.

    Example: `check_stage_params(["bpc"], "bpc", 8, 0, 8, 32, "am") == (["bpc"], ["bpc"])`.
    """
    check_task_limits(task_limits)
    lang_is_file = data.is_corpus_file(lang)
    check_model_tasks(model_tasks or {}, lang_is_file)
    checked = []
    for name, value in [("tasks", tasks), ("sweep_tasks", sweep_tasks)]:
        try:
            checked.append(check_tasks(value, lang_is_file))
        except ValueError as e:
            raise ValueError(f"parameter {name}={value!r}: {e}") from None
    for name, value, minimum in [("limit", limit, 0), ("sweep_limit", sweep_limit, 0),
                                 ("eval_batch_size", eval_batch_size, 1),
                                 ("decode_batch_size", decode_batch_size, 1),
                                 ("max_new_tokens", max_new_tokens, 1)]:
        if not is_count(value, minimum):
            expected = "0 (all items) or a positive integer" if minimum == 0 else "a positive integer"
            raise ValueError(f"parameter {name}={value!r}: expected {expected}")
    return checked[0], checked[1]


def _task_inputs(task: str, ctx, target) -> tuple:
    """What a task's `run` needs besides the context: test texts or pairs of the language."""
    if task == "bpc":
        english = _load_texts("en", "test") if ctx.lang not in (None, "en") else None
        return _load_texts(target, "test"), english
    if task in ("speed", "reply"):
        return (_load_texts(target, "test"),)
    if task in PAIR_TASKS:
        return (_load_pairs(ctx.lang, "test"),)
    return ()


def evaluate(model, lang, tasks=None, limit=None, batch_size: int = 8, seed: int = 0,
             reference=None, device: str = "auto", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             name: str | None = None, task_limits: dict | None = None, source=None,
             cache_dir=None, decode_batch_size: int | None = None) -> dict:
    """Evaluate one model on one language. Example: `evaluate("runs/micro/am/03_merge/elchat", "am", ["bpc"], limit=20)`.

    `model`: HF directory or preset name; `lang`: language code or path to a text file (one
    document per line; then `bpc` and `speed` use it, `mt`/`mc` are not available); `limit`: items
    per task (None = all), `task_limits` {task: items, 0 = all} overriding it per task;
    `reference`: model the `speed` task compares with (the source chat model); `source`: the chat
    model whose replies `reply` scores (default: `reference`, else the model itself), cached under
    `cache_dir` (default: kept in memory); `decode_batch_size`: prompts per generation batch
    (default `batch_size`, which is the scoring batch).
    """
    task_limits = check_task_limits(task_limits)
    if limit is not None and not is_count(limit, 1):
        raise ValueError(f"limit={limit!r}: expected a positive integer or None")
    if batch_size < 1 or max_new_tokens < 1 or (decode_batch_size is not None and decode_batch_size < 1):
        raise ValueError("batch_size, decode_batch_size and max_new_tokens must be positive integers")
    code, lang_name, text_path = check_lang(lang)
    tasks = check_tasks(tasks, text_path is not None)
    path = resolve_model(model)
    if reference is not None and "speed" in tasks:
        resolve_model(reference)  # fail now, not after the other tasks
    torch.manual_seed(seed)
    mdl, tok = load(path, device)
    ctx = Context(mdl, tok, code, lang_name, text_path, limit, batch_size, seed, max_new_tokens,
                  reference, device, decode_batch_size)
    ctx.model_path, ctx.source, ctx.cache_dir = path, source or reference or path, cache_dir
    if not ctx.chat and any(t in CHAT_TASKS + ("mt",) for t in tasks):
        ctx.notes.append("model has no chat template: chat tasks and mt used plain prompts")
    target = str(text_path) if text_path else code
    results, seconds = {}, {}
    for task in tasks:
        ctx.limit = task_limits.get(task, limit) or None
        t0 = time.perf_counter()
        results[task] = TASK_MODULES[task].run(ctx, *_task_inputs(task, ctx, target))
        seconds[task] = round(time.perf_counter() - t0, 2)
    metadata = {"name": name or Path(str(path)).name, "model": str(path), "lang": code or str(text_path),
                "lang_name": lang_name, "tasks": tasks, "limit": limit,
                "task_limits": task_limits, "seed": seed,
                "batch_size": batch_size, "decode_batch_size": ctx.decode_batch_size,
                "max_new_tokens": max_new_tokens,
                "prompt_format": ctx.prompt_format, "reference": None if reference is None else str(reference),
                "device": str(next(mdl.parameters()).device), "seconds": seconds, "notes": ctx.notes,
                "samples": ctx.samples}
    return {"metadata": metadata, "tasks": results}


def result_file_name(name: str) -> str:
    """File name of a model's results JSON. Example: `result_file_name("ElChat w/o copy") == "ElChat_w-o_copy.json"`."""
    return name.replace("/", "-").replace(" ", "_") + ".json"


def evaluate_models(models: dict, sweep: dict, lang, out_dir, tasks=None, sweep_tasks=None,
                    limit: int | None = None, sweep_limit: int | None = None, eval_batch_size: int = 8,
                    seed: int = 0, device: str = "auto",
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                    task_limits: dict | None = None, model_tasks: dict | None = None,
                    decode_batch_size: int | None = None) -> pd.DataFrame:
    """Stage 04: `models` ({name: dir}) on `tasks` and the t-sweep `sweep` ({t: dir}) on
    `sweep_tasks`; writes `out_dir/results/<model>.json`, `out_dir/results.csv` and
    `out_dir/items.csv` (every item score, for paired comparisons), returns results.csv's rows.

    Limits of 0 or None mean all items; `task_limits` ({task: items}) overrides `limit` per task
    for the main models, and `sweep_limit` for the forward-pass tasks (`FORWARD_TASKS`) of the sweep;
    `model_tasks` ({name: tasks}) replaces `tasks` for the models it names (names not among
    `models` are an error).
    `speed` is relative to the model named `REFERENCE_MODEL` (whose own speed-up is 1 by definition,
    its decoding rate measured), and `reply` scores that model's replies, cached in
    `out_dir/replies/`.
    Example: `evaluate_models(*runs.read_models(run)[:2], "am", runs.stage_dir(run, "04"), limit=8)`.
    """
    if not models and not sweep:
        raise FileNotFoundError("no model to evaluate: none of the models stage 03 listed exists; "
                                "re-run notebooks/03_merging.ipynb")
    reference = models.get(REFERENCE_MODEL)
    task_limits = check_task_limits(task_limits)
    sweep_limits = {k: v for k, v in task_limits.items() if k in FORWARD_TASKS}
    model_tasks = check_model_tasks(model_tasks or {})
    unknown = sorted(set(model_tasks) - set(models))
    if unknown:
        raise ValueError(f"parameter model_tasks names {', '.join(map(repr, unknown))}, not among the "
                         f"models to evaluate ({', '.join(models)})")
    jobs = [(name, path, model_tasks.get(name, tasks), limit, "model", None) for name, path in models.items()]
    jobs += [(f"t={t:.2f}", path, sweep_tasks, sweep_limit, "sweep", t) for t, path in sorted(sweep.items())]
    rows, items, total = [], [], 0.0
    for name, path, job_tasks, job_limit, group, t in jobs:
        t0 = time.perf_counter()
        res = evaluate(path, lang, job_tasks, limit=job_limit or None, batch_size=eval_batch_size,
                       seed=seed, reference=reference, device=device, max_new_tokens=max_new_tokens,
                       name=name, task_limits=task_limits if group == "model" else sweep_limits,
                       cache_dir=Path(out_dir) / "replies", decode_batch_size=decode_batch_size)
        save_results(res, Path(out_dir) / "results" / result_file_name(name))
        rows += [{**row, "group": group, "t": t} for row in to_rows(res)]
        items += [{**row, "group": group, "t": t} for row in item_rows(res)]
        seconds = time.perf_counter() - t0
        total += seconds
        print(f"{name:18s} {seconds:6.1f} s  {'; '.join(res['metadata']['notes'])}")
    results = pd.DataFrame(rows, columns=STAGE_CSV_COLUMNS)
    atomic_write_text(Path(out_dir) / "results.csv", results.to_csv(index=False))
    atomic_write_text(Path(out_dir) / "items.csv",
                      pd.DataFrame(items, columns=ITEM_CSV_COLUMNS).to_csv(index=False))
    print(f"wrote {Path(out_dir) / 'results.csv'} ({len(results)} rows) in {total:.0f} s")
    return results


def _cli(args) -> int:
    res = harness.cli_results(args, evaluate)  # the kit's tasks, then --harness-tasks if given
    save_results(res, args.out)
    for row in to_rows(res):
        ci = "" if row["ci_low"] is None else f"  [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        print(f"{row['task']:12s} {row['metric']:24s} {row['value']:.4f}  n={row['n']}{ci}")
    print(f"wrote {args.out}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on the stage-04 tasks",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF model directory or preset name")
    p.add_argument("--lang", required=True, help="language code, or a UTF-8 text file (bpc, speed)")
    p.add_argument("--tasks", nargs="+", default=None, help=f"subset of: {' '.join(TASKS)}")
    p.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--reference", default=None, help="model that speed is relative to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="results JSON (a tidy CSV is written next to it)")
    p.add_argument("--harness-tasks", default=None, help="lm-eval tasks or sets, comma-separated "
                   "(e.g. belebele_amh_Ethi,ifeval or local, paper, paper:target); see README")
    p.set_defaults(func=_cli)
