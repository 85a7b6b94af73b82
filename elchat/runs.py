"""The run layout: what each stage writes under `runs/<preset>/<lang>/`, read and written here only.

    runs/<preset>/<lang>/
        00_source/sources.json      the source chat (and base) model of the run   write_sources
        01_vocab/chat_ve, base_ve   vocabulary-expanded models (HF directories)
        02_cpt/<run>/               CPT results; cpt_summary.json records the CPT config
        03_merge/models.json        every model stage 04 evaluates, and the t sweep  write_models
        04_eval/results.csv         one row per model x task x metric
    runs/<preset>/report/           stage 05, across languages

Paths inside the run directory are stored relative to it, so a run stays valid when moved (e.g.
copied off a cloud machine); paths outside it (a cached source model) are stored absolute.
A reader that finds an earlier stage's output missing names the notebook that writes it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write_json
from .paths import is_hub_id

STAGE_DIRS = {"00": "00_source", "01": "01_vocab", "02": "02_cpt", "03": "03_merge",
              "04": "04_eval"}
STAGE_NOTEBOOKS = {"00": "00_source_models", "01": "01_vocabulary_expansion",
                   "02": "02_continual_pretraining", "03": "03_merging", "04": "04_evaluation",
                   "05": "05_report"}


def preset_dir(runs_root: str | os.PathLike, preset: str) -> Path:
    """Where one preset's runs live (a hub id's "/" made safe).

    Example: `preset_dir("runs", "Qwen/Qwen2.5-0.5B") == Path("runs/Qwen__Qwen2.5-0.5B")`.
    """
    return Path(runs_root) / str(preset).strip("/").replace("/", "__")


def run_dir(runs_root: str | os.PathLike, preset: str, lang: str) -> Path:
    """Where one preset/language's stage outputs live.

    Example: `run_dir("runs", "micro", "am") == Path("runs/micro/am")`.
    """
    return preset_dir(runs_root, preset) / Path(str(lang)).stem


def report_dir(runs_root: str | os.PathLike, preset: str) -> Path:
    """Stage 05's folder for a preset. Example: `report_dir("runs", "micro") == Path("runs/micro/report")`."""
    return preset_dir(runs_root, preset) / "report"


def stage_dir(run: str | os.PathLike, stage: str) -> Path:
    """A stage's output folder in a run. Example: `stage_dir("runs/micro/am", "02").name == "02_cpt"`."""
    return Path(run) / STAGE_DIRS[stage]


def require(path: str | os.PathLike, stage: str) -> Path:
    """`path` if it exists, else a clear error naming the notebook that writes it.

    Example: `require(run / "02_cpt" / "chat_cpt" / "config.json", "02")`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/{STAGE_NOTEBOOKS[stage]}.ipynb "
                                "for this preset/language first")
    return path


def has_model(path: str | os.PathLike) -> bool:
    """True when `path` holds a finished Hugging Face model (its config.json is written last)."""
    return (Path(path) / "config.json").is_file()


def _store(run: Path, path) -> str | None:
    if path is None:
        return None
    p = Path(str(path))
    if not p.exists():
        return str(path)  # a hub id
    try:
        return str(p.resolve().relative_to(Path(run).resolve()))
    except ValueError:
        return str(p.resolve())


def _load(run: Path, stored: str | None):
    if stored is None:
        return None
    p = Path(stored)
    if p.is_absolute():
        return p
    inside = Path(run) / p
    return inside if inside.exists() or not is_hub_id(stored) else stored


def write_sources(run: str | os.PathLike, chat, base=None, **info) -> Path:
    """Stage 00's record of the run's source models (`00_source/sources.json`).

    Example: `write_sources(run, chat="~/.cache/elchat/models/x", base=None, notes="...")`.
    """
    run = Path(run)
    record = {"chat": _store(run, chat), "base": _store(run, base), **info}
    return atomic_write_json(stage_dir(run, "00") / "sources.json", record)


def read_sources(run: str | os.PathLike) -> dict:
    """The run's source models: `{"chat": Path | hub id, "base": Path | hub id | None, ...}`.

    Example: `read_sources("runs/micro/am")["base"]`.
    """
    run = Path(run)
    record = json.loads(require(stage_dir(run, "00") / "sources.json", "00").read_text())
    return {**record, "chat": _load(run, record["chat"]), "base": _load(run, record.get("base"))}


def write_models(run: str | os.PathLike, models: dict, sweep: dict | None = None) -> Path:
    """Stage 03's list of models to evaluate: `{name: dir}` and the t sweep `{t: dir}`.

    Example: `write_models(run, {"Chat": chat, "ElChat": run / "03_merge/elchat"}, {0.5: ...})`.
    """
    run = Path(run)
    listing = {"models": {name: _store(run, p) for name, p in models.items()},
               "sweep": {f"{float(t):.2f}": _store(run, p) for t, p in (sweep or {}).items()}}
    return atomic_write_json(stage_dir(run, "03") / "models.json", listing)


def read_models(run: str | os.PathLike) -> tuple[dict, dict, list]:
    """(`{name: path}`, `{t: path}`, names listed but missing on disk) from stage 03's list.

    Example: `models, sweep, missing = read_models("runs/micro/am")`.
    """
    run = Path(run)
    listing = json.loads(require(stage_dir(run, "03") / "models.json", "03").read_text())
    models = {name: _load(run, p) for name, p in listing.get("models", {}).items()}
    sweep = {float(t): _load(run, p) for t, p in listing.get("sweep", {}).items()}
    exists = lambda p: not isinstance(p, Path) or p.is_dir()  # noqa: E731  hub ids count as present
    missing = [name for name, p in models.items() if not exists(p)]
    return ({n: p for n, p in models.items() if exists(p)},
            {t: p for t, p in sorted(sweep.items()) if exists(p)}, missing)


def cpt_config(run: str | os.PathLike, name: str = "chat_cpt") -> dict:
    """The CPT settings a stage-02 run recorded (its `cpt_summary.json` "config").

    Stage 03 reads the transition layers from here, so it merges exactly the layers CPT trained.
    Example: `cpt_config("runs/micro/am")["layers"] == [0, 1, -2, -1]`.
    """
    path = require(stage_dir(run, "02") / name / "cpt_summary.json", "02")
    return json.loads(path.read_text())["config"]
