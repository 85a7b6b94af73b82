"""Bridge to lm-evaluation-harness: paper-comparable tasks and the kit's own sets, one results table.

`evaluate(model, lang, tasks)` runs lm-eval (`simple_evaluate`, Hugging Face backend) on one model
directory and returns the kit's results schema, so its scores join `results.csv` next to the kit's
own tasks: `{"tasks": {"harness": {"<lm-eval task>/<metric>": {"value", "n", "ci95", "stderr"}}}}`,
where `ci95 = value +- 1.96 * stderr` (lm-eval's standard error: sample std / sqrt(n) for means,
a bootstrap for corpus metrics such as chrF).

Task names (`resolve_tasks`):
- the kit's sets as harness tasks, offline: `elchat_mt_<lang>_en2x`, `elchat_mt_<lang>_x2en`
  (chrF of held-out pairs) and `elchat_mc_<lang>` (4-way translation choice), written per run
  from the shipped pairs as JSONL + YAML that include the templates in `elchat/harness_tasks/`;
- the ElChat paper's evaluation where lm-eval has the task (`paper_tasks`): FLORES-200 devtest chrF
  both directions (`elchat_flores_<lang>_en2x/x2en`, built from the hub by `data.load_flores`),
  Belebele, XL-Sum ROUGE-L (`elchat_xlsum_<lang>`, script-aware tokens), IFEval, GSM8K/MGSM, MMLU,
  TruthfulQA, ToxiGen; every registry task of lm-eval by its own name;
- the set names `local`, `paper`, `paper:<group>` (groups in `PAPER_GROUPS`).

Chat tasks (`is_chat_task`) go through the model's chat template (lm-eval's
`apply_chat_template`), the others get plain prompts, as in the kit's own `mt` and `mc`. The MC
option is picked by log-likelihood per character (the kit's rule; `utils.process_mc`), next to
lm-eval's `acc`. Each MC context starts with the kit's conditioning token (`prefix_text`: BOS, else
the document separator; lm-eval alone would condition a tokenizer without BOS on nothing), so
lm-eval scores the very token sequences the kit's `mc` scores.

The kit keeps its own IFEval-style checker (`ifeval.py`) offline: lm-eval's `ifeval` needs nltk's
punkt data, which no PyPI package ships. Tasks that need the hub are named before anything runs
(`check_hub`); results are written only when every task has finished.
"""
from __future__ import annotations

import json
import math
import os
import socket
import tempfile
from pathlib import Path

import pandas as pd

from .. import data
from ..atomic import atomic_write_text
from ..device import pick_device
from ..errors import UserError, is_count
from . import mc
from .bpc import prefix_token_id
from .generate import resolve_model
from .results import load_results, metric, save_results, to_rows

TEMPLATES = Path(__file__).resolve().parent.parent / "harness_tasks"
LOCAL_KINDS = ("mt", "mc")
FLORES_CODES = data.FLORES_CODES
XLSUM_NAMES = {"am": "amharic", "bn": "bengali", "my": "burmese", "gu": "gujarati", "si": "sinhala",
               "ta": "tamil", "te": "telugu", "ru": "russian", "zh_TW": "chinese_traditional"}
MGSM_CODES = {"bn": "bn", "te": "te", "ru": "ru"}  # MGSM's languages among the kit's
# group -> (what it measures, where it sits in the ElChat paper, Yamaguchi et al. TMLR 2025)
PAPER_GROUPS = {
    "target": "target-language tasks: MT chrF en<->L, summarization, reading comprehension (paper Sec. 5.3)",
    "chat": "chat and instruction following: IFEval, math word problems (paper Sec. 5.2)",
    "english": "source-language (English) retention: MMLU (paper Sec. 5.3)",
    "safety": "safety: TruthfulQA, ToxiGen (paper Sec. 5.1)",
}
CHAT_PREFIXES = ("elchat_mt_", "elchat_flores_", "elchat_xlsum_", "ifeval", "leaderboard_ifeval",
                 "gsm8k", "mgsm")
HUB_HOST = ("huggingface.co", 443)
NOT_SCORES = ("sample_len", "sample_count")  # bookkeeping numbers in lm-eval's results


def local_tasks(lang: str) -> list[str]:
    """The kit's shipped sets as harness tasks. Example: `local_tasks("am")[2] == "elchat_mc_am"`."""
    return [f"elchat_mt_{lang}_en2x", f"elchat_mt_{lang}_x2en", f"elchat_mc_{lang}"]


def paper_tasks(lang: str) -> dict[str, list[str]]:
    """group -> lm-eval task names mirroring the ElChat paper for `lang` (where lm-eval has them).

    Example: `paper_tasks("am")["target"][2] == "belebele_amh_Ethi"`.
    """
    target = [f"elchat_flores_{lang}_en2x", f"elchat_flores_{lang}_x2en",
              f"belebele_{FLORES_CODES[lang]}"] if lang in FLORES_CODES and lang != "en" else []
    target += [f"elchat_xlsum_{lang}"] if lang in XLSUM_NAMES else []
    chat = ["ifeval", "gsm8k"] + ([f"mgsm_direct_{MGSM_CODES[lang]}"] if lang in MGSM_CODES else [])
    return {"target": target, "chat": chat, "english": ["mmlu"],
            "safety": ["truthfulqa_mc2", "toxigen"]}


def resolve_tasks(spec, lang: str) -> list[str]:
    """Task names from a list / comma string of names and set names (`local`, `paper`, `paper:chat`).

    Example: `resolve_tasks("local", "am") == local_tasks("am")`.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if item == "local":
            names = local_tasks(lang)
        elif item == "paper":
            names = [t for group in paper_tasks(lang).values() for t in group]
        elif item.startswith("paper:"):
            if item[6:] not in PAPER_GROUPS:
                raise UserError(f"harness task set {item!r}: groups are {', '.join(PAPER_GROUPS)}")
            names = paper_tasks(lang)[item[6:]]
        else:
            names = [item] if item else []
        out += [n for n in names if n not in out]
    return out


def is_chat_task(task: str) -> bool:
    """True when the task's prompt goes through the chat template. Example: `is_chat_task("mmlu") is False`."""
    return task.startswith(CHAT_PREFIXES)


def _local_kind(task: str, lang: str) -> str | None:
    for name, kind in zip(local_tasks(lang), ("mt_en2x", "mt_x2en", "mc")):
        if task == name:
            return kind
    return None


def needs_hub(tasks: list[str], lang: str) -> list[str]:
    """The tasks whose data comes from the Hugging Face hub (all but the kit's local sets)."""
    return [t for t in tasks if _local_kind(t, lang) is None]


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when the hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or unreachable."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes")
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub(tasks: list[str], lang: str) -> None:
    """Fail before any work when a task needs the hub and the hub is not reachable."""
    remote = needs_hub(tasks, lang)
    if remote and not hub_reachable():
        raise UserError(f"harness tasks {', '.join(remote)} download their data from the Hugging Face "
                        f"hub, which is off (HF_HUB_OFFLINE) or unreachable; connect (and log in for "
                        f"gated sets such as FLORES-200), or run only the offline tasks: "
                        f"{','.join(local_tasks(lang))}")


def _items(kind: str, lang: str, seed: int, prefix: str = "") -> list[dict]:
    """JSONL rows of one local task: the same items the kit's `mt` / `mc` score."""
    name = data.LANGUAGES[lang]
    if kind == "mc":
        return [{**it, "lang_name": name, "prefix": prefix}
                for it in mc.build_items(data.load_pairs(lang, "test"), seed)]
    return _translation_rows(data.load_pairs(lang, "test"), name, kind.endswith("en2x"))


def _translation_rows(pairs, lang_name: str, en2x: bool) -> list[dict]:
    src, tgt = ("English", lang_name) if en2x else (lang_name, "English")
    rows = []
    for en, tg in pairs:
        text, target = (en, tg) if en2x else (tg, en)
        user = f"Translate the following {src} text into {tgt}. Reply with the translation only.\n\n{text}"
        rows.append({"source": text, "target": target, "user": user, "plain": f"{src}: {text}\n{tgt}:"})
    return rows


def _write_task(task_dir: Path, task: str, template: str, rows: list[dict] | None, extra: dict) -> None:
    """One task YAML (including a template) and, for local items, its JSONL data file."""
    cfg = {"include": str(TEMPLATES / template), "task": task, **extra}
    if rows is not None:
        path = task_dir / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        cfg["dataset_kwargs"] = {"data_files": {"test": str(path)}}
    (task_dir / f"{task}.yaml").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")


def write_tasks(task_dir, tasks: list[str], lang: str, chat: bool, seed: int = 0,
                max_new_tokens: int = 64, prefix: str = "") -> Path:
    """Write the kit's tasks among `tasks` into `task_dir` (YAML is JSON-compatible); returns it.

    `prefix`: the text of the token MC contexts start with (`prefix_text`), as in the kit's `mc`.

    Example: `write_tasks(tmp, local_tasks("am"), "am", chat=True)`.
    """
    task_dir = Path(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    prompt = "{{user}}" if chat else "{{plain}}"
    gen = {"until": ["\n"], "do_sample": False, "max_gen_toks": max_new_tokens}
    for task in tasks:
        kind = _local_kind(task, lang)
        if kind == "mc":
            _write_task(task_dir, task, "_elchat_mc.yaml", _items("mc", lang, seed, prefix), {})
        elif kind:
            _write_task(task_dir, task, "_elchat_mt.yaml", _items(kind, lang, seed),
                        {"doc_to_text": prompt, "generation_kwargs": gen})
        elif task.startswith("elchat_flores_"):
            en2x = task.endswith("_en2x")
            rows = _translation_rows(data.load_flores(lang, "devtest"), data.LANGUAGES[lang], en2x)
            _write_task(task_dir, task, "_elchat_mt.yaml", rows, {"doc_to_text": prompt,
                                                                  "generation_kwargs": gen})
        elif task.startswith("elchat_xlsum_"):
            _write_task(task_dir, task, "_elchat_xlsum.yaml", None,
                        {"dataset_name": XLSUM_NAMES[lang]})
    return task_dir


def prefix_text(tokenizer) -> str:
    """The token the kit's log-likelihoods condition on, as text (BOS, else the document separator).

    Example: `prefix_text(smollm2_tokenizer) == "<|endoftext|>"`.
    """
    token_id = prefix_token_id(tokenizer)
    return "" if token_id is None else tokenizer.convert_ids_to_tokens(token_id)


def to_metrics(lm_results: dict) -> dict:
    """lm-eval's `results` -> `{"<task>/<metric>": metric entry with stderr}` (kit schema).

    Example: `{"results": {"x": {"acc,none": 0.5, "acc_stderr,none": 0.1}}, "n-samples": {"x":
    {"effective": 8}}}` -> `{"x/acc": {"value": 0.5, "n": 8, "ci95": [0.304, 0.696], "stderr": 0.1}}`.
    """
    out = {}
    for task, scores in lm_results["results"].items():
        n = lm_results.get("n-samples", {}).get(task, {}).get("effective", 0)
        for key, value in scores.items():
            name, _, filt = key.partition(",")
            if "_stderr" in name or name in NOT_SCORES or not isinstance(value, (int, float)) \
                    or isinstance(value, bool):
                continue
            se = scores.get(f"{name}_stderr,{filt}")
            se = float(se) if isinstance(se, (int, float)) and math.isfinite(se) else None
            ci = None if se is None else [value - 1.96 * se, value + 1.96 * se]
            label = name if filt in ("none", "") else f"{name}[{filt}]"
            out[f"{task}/{label}"] = {**metric(value, n, ci), "stderr": se}
    return out


def _lm(model, batch_size: int, device: str):
    """lm-eval's HF model over a model directory, or over an already loaded (model, tokenizer)."""
    try:  # slow import, needed only when the harness runs; an optional dependency
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("the harness tasks need lm-evaluation-harness: pip install 'lm-eval>=0.4.13' "
                        "(or pip install -e '.[harness]')") from None

    if isinstance(model, tuple):
        return HFLM(pretrained=model[0], tokenizer=model[1], batch_size=batch_size)
    return HFLM(pretrained=str(model), batch_size=batch_size, device=str(pick_device(device)),
                trust_remote_code=False)


def run_lm_eval(lm, tasks: list[str], task_dir, chat: bool, limit=None, seed: int = 0) -> dict:
    """`simple_evaluate` of `tasks` (kit tasks found in `task_dir`), chat tasks through the template.

    Returns lm-eval's dict (results, n-samples, samples), both groups merged.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's thousands of built-in YAMLs costs seconds: only when a registry task is asked.
    written = {p.stem for p in Path(task_dir).glob("*.yaml")}
    manager = TaskManager(include_path=str(task_dir), include_defaults=not set(tasks) <= written)
    merged: dict = {"results": {}, "n-samples": {}, "samples": {}}
    for use_chat in (True, False):
        group = [t for t in tasks if is_chat_task(t) == use_chat]
        if not group:
            continue
        res = simple_evaluate(model=lm, tasks=group, task_manager=manager, limit=limit,
                              apply_chat_template=use_chat and chat, bootstrap_iters=200,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed, log_samples=True)
        for key in merged:
            merged[key].update(res.get(key, {}))
    return merged


def evaluate(model, lang: str, tasks, limit=None, batch_size: int = 8, device: str = "auto",
             seed: int = 0, max_new_tokens: int = 64, name: str | None = None) -> dict:
    """One model through lm-eval on `tasks` (names or sets, see `resolve_tasks`), kit schema.

    `model`: HF directory or a loaded `(model, tokenizer)`. Example:
    `evaluate("runs/micro/am/03_merge/elchat", "am", "local", limit=20)["tasks"]["harness"]`.
    """
    tasks = check_params(tasks, lang, limit, batch_size, max_new_tokens)
    check_hub(tasks, lang)
    model = model if isinstance(model, tuple) else resolve_model(model)
    lm = _lm(model, batch_size, device)
    chat = bool(getattr(lm.tokenizer, "chat_template", None))
    with tempfile.TemporaryDirectory(prefix="elchat-harness-") as tmp:
        write_tasks(tmp, tasks, lang, chat, seed, max_new_tokens, prefix_text(lm.tokenizer))
        res = run_lm_eval(lm, tasks, tmp, chat, limit or None, seed)
    notes = [] if chat or not any(map(is_chat_task, tasks)) else \
        ["model has no chat template: chat tasks used plain prompts"]
    label = name or (Path(str(model)).name if not isinstance(model, tuple) else "model")
    metadata = {"name": label, "model": str(model) if not isinstance(model, tuple) else label,
                "lang": lang, "tasks": ["harness"], "harness_tasks": tasks, "limit": limit,
                "seed": seed, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                "prompt_format": "chat_template" if chat else "plain", "notes": notes,
                "samples": {"harness": _samples(res)}}
    return {"metadata": metadata, "tasks": {"harness": to_metrics(res)}}


def _samples(res: dict, k: int = 3) -> dict:
    """A few (prompt, response, target) of each generation task, kept for reading."""
    out = {}
    for task, rows in res.get("samples", {}).items():
        out[task] = [{"target": str(r.get("target")), "response": str((r.get("filtered_resps") or [""])[0])}
                     for r in rows[:k]]
    return out


def check_params(tasks, lang: str, limit, batch_size, max_new_tokens) -> list[str]:
    """Validated task names (the error names the bad parameter). Example: `check_params("local", "am", 8, 8, 32)`."""
    names = resolve_tasks(tasks, lang)
    if not names:
        raise UserError(f"harness_tasks={tasks!r}: no task named; e.g. {','.join(local_tasks(lang))}")
    local = [t for t in names if t.startswith(("elchat_mt_", "elchat_mc_"))]
    if local and lang not in data.TARGET_LANGUAGES:
        raise UserError(f"harness tasks {', '.join(local)} need a shipped target language with pairs "
                        f"({', '.join(data.TARGET_LANGUAGES)}), not {lang!r}")
    bad = [t for t in local if _local_kind(t, lang) is None]
    if bad:
        raise UserError(f"harness tasks {', '.join(bad)} are not this language's; use {', '.join(local_tasks(lang))}")
    for pname, value, minimum in [("limit", limit or 0, 0), ("batch_size", batch_size, 1),
                                  ("max_new_tokens", max_new_tokens, 1)]:
        if not is_count(value, minimum):
            raise UserError(f"parameter {pname}={value!r}: expected an integer >= {minimum}")
    return names


def run(ctx, tasks=None) -> dict:
    """The `harness` entry of stage 04's task table: the kit's local sets through lm-eval on the
    loaded model (metric entries named `<lm-eval task>/<metric>`)."""
    res = evaluate((ctx.model, ctx.tokenizer), ctx.lang, tasks or "local", ctx.limit, ctx.batch_size,
                   seed=ctx.seed, max_new_tokens=ctx.max_new_tokens)
    ctx.samples.update(res["metadata"]["samples"])
    return res["tasks"]["harness"]


def evaluate_models(models: dict, lang: str, out_dir, tasks, limit=None, batch_size: int = 8,
                    device: str = "auto", seed: int = 0, max_new_tokens: int = 64) -> pd.DataFrame:
    """Notebook 04's `harness_tasks`: every model through lm-eval, `results/<model>.harness.json`
    per model, and the rows added to `out_dir/results.csv` (replacing earlier harness rows).

    Example: `evaluate_models({"Chat": chat_dir}, "am", run / "04_eval", "local", limit=8)`.
    """
    tasks = check_params(tasks, lang, limit, batch_size, max_new_tokens)
    check_hub(tasks, lang)
    out_dir = Path(out_dir)
    results = {name: evaluate(path, lang, tasks, limit, batch_size, device, seed, max_new_tokens, name)
               for name, path in models.items()}  # all models first: nothing written if one fails
    rows = []
    for name, res in results.items():
        save_results(res, out_dir / "results" / f"{name.replace('/', '-').replace(' ', '_')}.harness.json")
        rows += [{**row, "group": "model", "t": None} for row in to_rows(res)]
    return _join_csv(out_dir / "results.csv", pd.DataFrame(rows))


def _join_csv(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """The results table with `new` harness rows in place of any earlier ones (atomic rewrite)."""
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=new.columns)
    joined = pd.concat([old[old["task"] != "harness"], new.reindex(columns=old.columns)],
                       ignore_index=True) if len(old.columns) else new
    atomic_write_text(path, joined.to_csv(index=False))
    return joined


def load_harness_results(out_dir) -> dict:
    """`{model: results}` of every `results/*.harness.json` in a stage-04 folder."""
    return {p.name[: -len(".harness.json")]: load_results(p)
            for p in sorted((Path(out_dir) / "results").glob("*.harness.json"))}


def cli_results(args, evaluate_kit) -> dict:
    """`elchat eval`: the kit's tasks (`--tasks`; none when only `--harness-tasks` is given), then the
    lm-eval tasks, in one result. Both are checked before either runs."""
    if not args.harness_tasks:
        return evaluate_kit(args.model, args.lang, args.tasks, args.limit, args.batch_size, args.seed,
                            args.reference, args.device, args.max_new_tokens)
    check_params(args.harness_tasks, args.lang, args.limit, args.batch_size, args.max_new_tokens)
    check_hub(resolve_tasks(args.harness_tasks, args.lang), args.lang)
    extra = evaluate(args.model, args.lang, args.harness_tasks, args.limit, args.batch_size, args.device,
                     args.seed, args.max_new_tokens)
    if not args.tasks:
        return extra
    res = evaluate_kit(args.model, args.lang, args.tasks, args.limit, args.batch_size, args.seed,
                       args.reference, args.device, args.max_new_tokens)
    res["tasks"]["harness"] = extra["tasks"]["harness"]
    res["metadata"]["harness_tasks"] = extra["metadata"]["harness_tasks"]
    res["metadata"]["samples"]["harness"] = extra["metadata"]["samples"]["harness"]
    return res


def check_stage_tasks(harness_tasks, lang: str, limit, batch_size, max_new_tokens) -> list[str]:
    """Notebook 04's `harness_tasks` checked up front ([] when none; hub tasks need the hub).

    Example: `check_stage_tasks([], "am", 8, 8, 32) == []`.
    """
    if not harness_tasks:
        return []
    names = check_params(harness_tasks, lang, limit, batch_size, max_new_tokens)
    check_hub(names, lang)
    return names
