"""The study runner: execute the stage notebooks with papermill, per preset and language.

    elchat run                                   # the default study (notebooks/params/defaults.yaml)
    elchat run --preset micro --lang am --lang ta --stages 01-04 -p max_steps=50

For every preset, for every language, stages 00-04 run in order into `runs/<preset>/<lang>/
NN_name.ipynb` (kernel `python3`); then stage 05 (the report) runs once per preset across the
languages into `runs/<preset>/05_report.ipynb`. Each notebook gets only the parameters its
`parameters` cell declares (`papermill.inspect_notebook`), merged from the layers in
`elchat.params` and converted to the declared types. `run` is a short recipe: find the notebooks
(a stage asked for without one is an error), build the parameter layers, plan every execution with
its validated parameters (nothing runs before all are valid), then run or skip each stage.

Skipping: after a stage succeeds the runner writes `.stages/NN.json`, a manifest holding
    key = sha256(parameters, sha256(notebook file), sha256 of every earlier stage's manifest)
and the size of every file the stage wrote (`NN_*/`, or `report/` for 05). A stage is skipped when
its key is unchanged and those files are all still there. A stage that re-runs writes a new
manifest (new time stamp), so every later stage's key changes and they re-run too; `--force`
re-runs everything asked for (also the way to re-run after editing the `elchat` package itself,
which the key does not cover). A failing stage loses its manifest, keeps its executed notebook with
the error cell, stops that language, and the run goes on with the next language/preset; the
command exits 1 listing the failures.

Concurrency (`--jobs N`): each language's stages 00-04 run as one job, N jobs at a time, each a
child `elchat run` process for that one language with its own device group and its own log
(`runs/<preset>/<lang>/run.log`; executed notebooks where they always go). With GPUs, the visible
GPUs are split into N equal groups pinned through CUDA_VISIBLE_DEVICES (8 GPUs, --jobs 4: "0,1",
"2,3", ...); more jobs than GPUs is refused. On a CPU machine the cores are shared explicitly:
each job gets cores // N threads (OMP_NUM_THREADS, MKL_NUM_THREADS) and no GPU; more jobs than
cores is refused. A failing language never stops the others; the report (05) runs after all
languages of its preset, in the parent.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from . import params as P
from . import paths, runs
from .atomic import atomic_write_json
from .errors import is_count

KERNEL = "python3"
STAGES = ("00", "01", "02", "03", "04", "05")
REPORT_STAGE = "05"
_FIXED = ("preset", "lang", "langs", "runs_root")  # set by the runner, never by a file or -p


def parse_stages(spec: str) -> list[str]:
    """`"01-04"` -> ["01", "02", "03", "04"]; also `"2"`, `"00,03-05"`.

    Example: `parse_stages("03-05") == ["03", "04", "05"]`.
    """
    chosen = set()
    for part in str(spec).replace(" ", "").split(","):
        m = re.fullmatch(r"(\d{1,2})(?:-(\d{1,2}))?", part)
        if not m:
            raise ValueError(f"--stages {spec!r}: expected NN, NN-MM or a comma list (e.g. 01-04)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 0 <= lo <= hi <= 5:
            raise ValueError(f"--stages {spec!r}: stages are 00..05")
        chosen.update(f"{i:02d}" for i in range(lo, hi + 1))
    return sorted(chosen)


def parse_overrides(items) -> list[tuple[str | None, str, str]]:
    """`["lr=1e-4", "04.limit=5"]` -> [(None, "lr", "1e-4"), ("04", "limit", "5")] (raw text).

    Example: `parse_overrides(["lang_x=no"]) == [(None, "lang_x", "no")]`.
    """
    out = []
    for item in items or []:
        name, sep, raw = item.partition("=")
        m = re.fullmatch(r"(?:(\d\d)[.:])?([A-Za-z_]\w*)", name.strip())
        if not sep or not m:
            raise ValueError(f"-p {item!r}: expected name=value or NN.name=value (e.g. -p lr=1e-4)")
        if m.group(2) in _FIXED:
            raise ValueError(f"-p {item!r}: {m.group(2)} is set by the runner; use "
                             f"--{m.group(2).replace('_', '-').rstrip('s')} instead")
        out.append((m.group(1), m.group(2), raw.strip()))
    return out


def check_kernel(name: str = KERNEL) -> None:
    """Fail clearly when papermill's kernel is not registered.

    Example: `check_kernel()` returns None after `make setup`.
    """
    # Jupyter and papermill load slowly and only running notebooks needs them: imported on use.
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise ValueError(f"no Jupyter kernel named {name!r}; register it with `{sys.executable} "
                         f"-m ipykernel install --sys-prefix --name {name}` (make setup does)") from None


def declared_parameters(notebook) -> dict:
    """name -> {"inferred_type_name", "default", "help"} of a notebook's parameters cell.

    Example: `declared_parameters("notebooks/02_continual_pretraining.ipynb")["lr"]["default"]`.
    `papermill.inspect_notebook` skips a line with a second `=` (e.g. in its help) or an annotation
    such as `int | None`; such names are recovered from the cell with `ast` so the runner still
    passes them (tests/test_notebooks.py asks the notebook's author to fix the line).
    """
    import nbformat  # heavy: see check_kernel
    import papermill

    declared = dict(papermill.inspect_notebook(str(notebook)))
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if "parameters" in cell.metadata.get("tags", []):
            for stmt in ast.parse(cell.source).body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                        and stmt.target.id not in declared:
                    declared[stmt.target.id] = {
                        "name": stmt.target.id, "inferred_type_name": ast.unparse(stmt.annotation),
                        "default": ast.unparse(stmt.value) if stmt.value else None, "help": ""}
    return declared


def _layer(data: dict, source: str) -> tuple[str, dict, dict]:
    """Split a YAML mapping into (source, shared values, {stage: values})."""
    shared, per_stage = {}, {}
    for k, v in data.items():
        key = f"{k:02d}" if isinstance(k, int) and not isinstance(k, bool) else str(k)
        if re.fullmatch(r"\d\d", key):
            if not isinstance(v, dict):
                raise ValueError(f"{source}: section {key!r} must be a mapping of name: value")
            per_stage[key] = v
        elif key in _FIXED:
            continue  # e.g. `lang: "am"` in am.yaml documents the file; the runner sets it
        else:
            shared[key] = v
    return source, shared, per_stage


def stage_parameters(declared: dict, layers: list, stage: str, fixed: dict) -> dict:
    """Merge the layers for one stage, keep the names it declares, convert to declared types.

    Example: `stage_parameters(inspect_notebook(nb), [("x.yaml", {"lr": "1e-4"}, {})], "02",
    {"preset": "micro"})` -> `{"lr": 0.0001, "preset": "micro"}` when both are declared.
    """
    merged = {}
    for source, shared, per_stage in layers:
        for k, v in {**shared, **per_stage.get(stage, {})}.items():
            merged[k] = (v, source)
    merged.update({k: (v, "runner") for k, v in fixed.items()})
    out = {}
    for name, (value, source) in merged.items():
        if name not in declared:
            continue
        d = declared[name]
        kind = P._split_type(d.get("inferred_type_name"))[0]
        if isinstance(value, _Raw):  # -p text: strings stay as typed, the rest is YAML 1.2
            text = value.text
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
                value = text[1:-1] if kind == "str" else P.parse_value(text)
            else:
                value = text if kind == "str" else P.parse_value(text)
        out[name] = P.coerce(name, value, d.get("inferred_type_name"), d.get("default"),
                             where=f" (from {source})")
    return out


class _Raw:
    def __init__(self, text):
        self.text = text


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _outputs(stage: str, where: Path) -> dict:
    """Relative path -> size of every file stage `stage` wrote under `where`."""
    roots = [where / "report"] if stage == REPORT_STAGE else sorted(where.glob(f"{stage}_*/"))
    files = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.is_file() and not any(p.startswith(".tmp-") for p in f.relative_to(where).parts):
                files[str(f.relative_to(where))] = f.stat().st_size
    return files


def _manifest_hash(path: Path) -> str | None:
    return _sha(path.read_bytes()) if path.is_file() else None


def _is_current(manifest: Path, key: str, where: Path, out_nb: Path) -> bool:
    if not (manifest.is_file() and out_nb.is_file()):
        return False
    try:
        m = json.loads(manifest.read_text())
    except ValueError:
        return False
    if m.get("key") != key:
        return False
    return all((where / rel).is_file() and (where / rel).stat().st_size == size
               for rel, size in m.get("outputs", {}).items())


def _execute(nb: Path, out_nb: Path, parameters: dict, progress: bool) -> str | None:
    """Run one notebook; None on success, else 'cell N (Name: message)'."""
    import nbformat  # heavy: see check_kernel
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_nb.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(nb), str(out_nb), parameters=parameters,
                                   kernel_name=KERNEL, progress_bar=progress, cwd=str(nb.parent))
    except PapermillExecutionError as e:
        index, first = e.cell_index, ""
        try:  # papermill adds error banner cells: find the failed cell in the kept notebook
            cells = nbformat.read(out_nb, as_version=4).cells
            index = next(i for i, c in enumerate(cells)
                         if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
            src = cells[index].source.strip()
            first = f" at `{src.splitlines()[0][:70]}`" if src else ""
        except Exception:  # the message is still useful without the cell's source line
            pass
        evalue = str(e.evalue).strip().splitlines()[-1] if str(e.evalue).strip() else ""
        return f"cell {index} (In [{e.exec_count}]){first} ({e.ename}: {evalue})"
    except Exception as e:  # a dead kernel, a bad notebook: still this stage's failure only
        return f"{type(e).__name__}: {e}"
    return None


class Stage(NamedTuple):
    """One notebook execution of the plan: for a language, or (lang None) the preset's report."""
    preset: str
    lang: str | None
    stage: str
    notebook: Path
    parameters: dict


def run(presets=None, langs=None, stages="00-05", params_file=None, overrides=None,
        force=False, runs_root="runs", notebooks_dir=None, params_dir=None,
        progress=True, log=print, jobs=1) -> dict:
    """Run the study; returns {"records": [...], "failures": [...]}.

    `jobs` > 1 runs languages concurrently on their own device groups (module docstring).
    Example: `run(["micro"], ["am"], stages="00-02", overrides=["max_steps=5"])`.
    """
    nb_dir = Path(notebooks_dir) if notebooks_dir else paths.NOTEBOOKS_DIR
    prm_dir = Path(params_dir) if params_dir else nb_dir / "params"
    defaults = P.load_yaml(prm_dir / "defaults.yaml") if (prm_dir / "defaults.yaml").is_file() else {}
    presets, langs = _targets(presets, langs, defaults, prm_dir)
    root = Path(runs_root).resolve()
    # Everything that can be wrong is checked before the first notebook runs.
    for preset in presets:
        for lang in langs:
            P.check_common(preset, lang, str(root))
    wanted = parse_stages(stages)
    values = parse_overrides(overrides)
    notebooks = _find_notebooks(nb_dir, wanted)
    declared = {s: declared_parameters(nb) for s, nb in notebooks.items()}
    extra = _extra_layers(params_file, values, declared)
    check_kernel()
    layers = _ParameterLayers(defaults, prm_dir, extra)
    plan = _plan(presets, langs, {s: notebooks[s] for s in wanted}, declared, layers, root)
    envs = device_groups(jobs) if jobs != 1 else None  # refused before any work
    if envs is None or len(langs) < 2:
        records = _run_steps(plan, root, langs, force, progress, log)
    else:
        child = {"params_file": params_file, "overrides": overrides or [], "force": force,
                 "notebooks_dir": nb_dir.resolve(), "params_dir": prm_dir.resolve()}
        records = _run_jobs(plan, root, langs, envs, child, log)
        records += _run_steps([s for s in plan if s.lang is None], root, langs, force, progress, log)
    log(format_summary(records))
    return {"records": records, "failures": [r for r in records if r["status"] == "FAILED"]}


def _run_steps(plan: list, root: Path, langs, force: bool, progress: bool, log) -> list[dict]:
    """Run `plan` in order in this process; a failure stops only its language."""
    records, stopped = [], set()
    for step in plan:
        if (step.preset, step.lang) in stopped:
            records.append(_record(step, status="not run", message="an earlier stage failed"))
            continue
        records.append(_run_stage(step, root, langs, force, progress, log))
        if records[-1]["status"] == "FAILED":
            stopped.add((step.preset, step.lang))
    return records


def _visible_gpus() -> list[str]:
    """The CUDA device ids this process may use (CUDA_VISIBLE_DEVICES, else all torch sees)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import torch  # slow import, needed only for --jobs
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def device_groups(jobs: int, gpus: list[str] | None = None, cores: int | None = None) -> list[dict]:
    """The environment of each of `jobs` concurrent jobs: equal CUDA_VISIBLE_DEVICES groups when
    there are GPUs, else an explicit share of the CPU cores. Refuses more jobs than GPUs/cores.

    Example: `device_groups(2, gpus=["0", "1", "2", "3"]) == [{"CUDA_VISIBLE_DEVICES": "0,1"},
    {"CUDA_VISIBLE_DEVICES": "2,3"}]`.
    """
    if not is_count(jobs, 1):
        raise ValueError(f"--jobs {jobs!r}: expected a whole number >= 1")
    gpus = _visible_gpus() if gpus is None else list(gpus)
    if gpus:
        if jobs > len(gpus):
            raise ValueError(f"--jobs {jobs}: only {len(gpus)} GPU(s) visible ({','.join(gpus)}); "
                             f"each language needs its own GPU, use --jobs {len(gpus)} or fewer")
        k = len(gpus) // jobs
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * k:(i + 1) * k])} for i in range(jobs)]
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if jobs > cores:
        raise ValueError(f"--jobs {jobs}: no GPU here and only {cores} CPU core(s); concurrent "
                         f"languages would fight over the cores. Use --jobs {cores} or fewer "
                         "(each job then gets cores // jobs threads) or --jobs 1")
    threads = str(cores // jobs)
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            for _ in range(jobs)]


def _child_command(preset: str, lang: str, stages: list[str], root: Path, child: dict,
                   records: Path) -> list[str]:
    """The `elchat run` command of one language's job (same parameters, --jobs 1)."""
    cmd = [sys.executable, "-m", "elchat.cli", "run", "--preset", preset, "--lang", lang,
           "--stages", ",".join(stages), "--runs-root", str(root), "--no-progress",
           "--notebooks-dir", str(child["notebooks_dir"]), "--params-dir", str(child["params_dir"]),
           "--records-json", str(records)]
    cmd += ["--params", str(child["params_file"])] if child["params_file"] else []
    cmd += [x for item in child["overrides"] for x in ("-p", item)]
    return cmd + (["--force"] if child["force"] else [])


def _run_job(steps: list, root: Path, child: dict, envs: queue.Queue, log) -> list[dict]:
    """Run one language's stages as a child process on a free device group; its records."""
    preset, lang = steps[0].preset, steps[0].lang
    where = _stage_home(root, preset, lang)
    where.mkdir(parents=True, exist_ok=True)
    records_path = where / ".stages" / "job_records.json"
    records_path.unlink(missing_ok=True)
    env = envs.get()
    try:
        cmd = _child_command(preset, lang, [s.stage for s in steps], root, child, records_path)
        shown = " ".join(f"{k}={v!r}" for k, v in env.items())
        log(f"[{preset}/{lang}] job started ({shown}), log -> {where / 'run.log'}")
        with open(where / "run.log", "w", encoding="utf-8") as out:
            out.write(f"# {shown} {' '.join(cmd)}\n")
            out.flush()
            code = subprocess.run(cmd, env={**os.environ, **env}, stdout=out,
                                  stderr=subprocess.STDOUT).returncode
    finally:
        envs.put(env)
    if records_path.is_file():
        return json.loads(records_path.read_text())
    return [_record(s, status="FAILED", message=f"job exited {code} before recording; see "
                    f"{where / 'run.log'}") for s in steps]


def _run_jobs(plan: list, root: Path, langs, envs: list[dict], child: dict, log) -> list[dict]:
    """Every language's stages as concurrent jobs, one device group each; records in plan order."""
    chains: dict = {}
    for step in plan:
        if step.lang is not None:
            chains.setdefault((step.preset, step.lang), []).append(step)
    free: queue.Queue = queue.Queue()
    for env in envs:
        free.put(env)
    with ThreadPoolExecutor(max_workers=len(envs)) as pool:
        futures = [pool.submit(_run_job, steps, root, child, free, log) for steps in chains.values()]
        return [r for f in futures for r in f.result()]


def _targets(presets, langs, defaults: dict, prm_dir: Path) -> tuple[list, list]:
    """The presets and languages asked for, else the study defaults (defaults.yaml)."""
    presets = [presets] if isinstance(presets, str) else list(presets or defaults.get("presets") or [])
    langs = [langs] if isinstance(langs, str) else list(langs or defaults.get("langs") or [])
    if not presets or not langs:
        raise ValueError(f"no preset/language given and none in {prm_dir / 'defaults.yaml'}")
    return presets, langs


def _find_notebooks(nb_dir: Path, wanted: list[str]) -> dict[str, Path]:
    """stage -> its notebook `NN_*.ipynb` in `nb_dir` (one each); every stage asked for has one.

    All are returned: a `-p NN.name=value` may name a stage this run does not execute.
    """
    found = {}
    for path in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):
        if path.name[:2] in found:
            raise ValueError(f"two notebooks for stage {path.name[:2]}: {found[path.name[:2]].name} "
                             f"and {path.name}; keep one per stage in {nb_dir}")
        found[path.name[:2]] = path
    missing = [s for s in wanted if s not in found]
    if missing:
        raise ValueError(f"no notebook for stage(s) {', '.join(missing)} in {nb_dir} "
                         f"(expected {', '.join(f'{s}_*.ipynb' for s in missing)})")
    return found


def _extra_layers(params_file, values, declared: dict) -> list:
    """The layers above the preset/language files: a `--params` file, then `-p` values."""
    extra = [_layer(P.load_yaml(params_file), str(params_file))] if params_file else []
    cli = {}
    for stage, name, raw in values:
        if not any(name in d for s, d in declared.items() if stage in (None, s)):
            where = f"stage {stage}" if stage else "any stage notebook"
            raise ValueError(f"-p {name}: no parameter of that name in {where}; "
                             f"known: {', '.join(sorted(set().union(*declared.values())))}")
        cli.setdefault(stage, {})[name] = _Raw(raw)
    return extra + [("-p", cli.pop(None, {}), cli)]


class _ParameterLayers:
    """The parameter layers of one preset (and language), lowest precedence first."""

    def __init__(self, defaults: dict, prm_dir: Path, extra: list):
        self.base = [_layer(defaults.get("parameters") or {}, "defaults.yaml")]
        self.prm_dir, self.extra = prm_dir, extra

    def __call__(self, preset: str, lang: str | None = None) -> list:
        out = list(self.base)
        for name in [preset] + ([lang] if lang else []):
            f = self.prm_dir / f"{Path(str(name)).name}.yaml"
            if f.is_file():
                out.append(_layer(P.load_yaml(f), f.name))
        return out + self.extra


def _plan(presets, langs, notebooks: dict, declared: dict, layers, root: Path) -> list[Stage]:
    """Every execution in order, its parameters already merged and validated."""
    plan = []
    for preset in presets:
        for lang in langs:
            for s in (s for s in notebooks if s != REPORT_STAGE):
                fixed = {"preset": preset, "lang": lang, "runs_root": str(root)}
                plan.append(Stage(preset, lang, s, notebooks[s],
                                  stage_parameters(declared[s], layers(preset, lang), s, fixed)))
        if REPORT_STAGE in notebooks:
            fixed = {"preset": preset, "langs": langs, "runs_root": str(root)}
            plan.append(Stage(preset, None, REPORT_STAGE, notebooks[REPORT_STAGE],
                              stage_parameters(declared[REPORT_STAGE], layers(preset), REPORT_STAGE, fixed)))
    return plan


def _stage_home(root: Path, preset: str, lang: str | None) -> Path:
    """Where a stage's outputs, executed notebook and `.stages/` manifest go."""
    return runs.run_dir(root, preset, lang) if lang else runs.preset_dir(root, preset)


def _record(step: Stage, status: str = "", message: str = "") -> dict:
    return {"preset": step.preset, "lang": step.lang or "*", "stage": step.stage,
            "notebook": step.notebook.stem, "status": status, "wall_s": 0.0, "message": message}


def _stage_key(step: Stage, root: Path, langs) -> tuple[str, dict]:
    """(key, upstream manifests' hashes): the key changes with the parameters, the notebook file
    or any earlier stage's manifest (of this language; of every language for the report)."""
    if step.lang:
        where = _stage_home(root, step.preset, step.lang)
        upstream = {m: _manifest_hash(where / ".stages" / f"{m}.json") for m in STAGES if m < step.stage}
    else:
        upstream = {f"{lg}/{m}": _manifest_hash(runs.run_dir(root, step.preset, lg) / ".stages" / f"{m}.json")
                    for lg in langs for m in STAGES if m < step.stage}
    hashed = {k: v for k, v in step.parameters.items() if k != "runs_root"}  # location, not content
    key = _sha(json.dumps({"parameters": hashed, "notebook": _sha(step.notebook.read_bytes()),
                           "upstream": upstream}, sort_keys=True, default=str).encode())
    return key, upstream


def _run_stage(step: Stage, root: Path, langs, force: bool, progress: bool, log) -> dict:
    """Skip the stage when its key and outputs are unchanged, else execute it; its record."""
    where = _stage_home(root, step.preset, step.lang)
    tag = f"{step.preset}/{step.lang or '*'} {step.notebook.stem}"
    rec = _record(step)
    key, upstream = _stage_key(step, root, langs)
    manifest = where / ".stages" / f"{step.stage}.json"
    out_nb = where / step.notebook.name
    if not force and _is_current(manifest, key, where, out_nb):
        prev = json.loads(manifest.read_text()).get("wall_s", 0.0)
        rec.update(status="skipped", message=f"unchanged (ran in {prev:.1f} s; --force re-runs)")
        log(f"[{tag}] skipped: outputs complete, parameters and inputs unchanged")
        return rec
    manifest.unlink(missing_ok=True)  # an interrupted run must not look complete later
    log(f"[{tag}] running -> {out_nb}")
    t0 = time.perf_counter()
    error = _execute(step.notebook, out_nb, step.parameters, progress)
    rec["wall_s"] = round(time.perf_counter() - t0, 1)
    if error:
        rec.update(status="FAILED", message=f"{error}; executed notebook kept at {out_nb}")
        log(f"[{tag}] FAILED after {rec['wall_s']:.1f} s: {rec['message']}")
        return rec
    atomic_write_json(manifest, {
        "stage": step.stage, "notebook": step.notebook.name, "key": key,
        "parameters": step.parameters, "notebook_sha256": _sha(step.notebook.read_bytes()),
        "upstream": upstream, "outputs": _outputs(step.stage, where), "wall_s": rec["wall_s"],
        "finished_at": time.time()})
    rec["status"] = "ran"
    log(f"[{tag}] done in {rec['wall_s']:.1f} s")
    return rec


def format_summary(records: list[dict]) -> str:
    """The final table: one line per preset/language/stage with status and wall time.

    Example: `print(format_summary(run(...)["records"]))`.
    """
    lines = ["", f"{'preset':<14} {'lang':<6} {'stage':<28} {'status':<8} {'wall s':>8}  note",
             "-" * 80]
    for r in records:
        lines.append(f"{r['preset']:<14} {r['lang']:<6} {r['notebook']:<28} {r['status']:<8} "
                     f"{r['wall_s']:>8.1f}  {r['message']}")
    total = sum(r["wall_s"] for r in records)
    lines.append(f"total wall time {total:.1f} s")
    failed = [f"{r['preset']}/{r['lang']} {r['notebook']}" for r in records if r["status"] == "FAILED"]
    if failed:
        lines.append("FAILED: " + "; ".join(failed))
    return "\n".join(lines)


def _cli(args) -> int:
    summary = run(args.preset, args.lang, stages=args.stages, params_file=args.params,
                  overrides=args.param, force=args.force, runs_root=args.runs_root,
                  progress=not args.no_progress, jobs=args.jobs,
                  notebooks_dir=args.notebooks_dir, params_dir=args.params_dir)
    if args.records_json:  # a --jobs child hands its records to the parent
        atomic_write_json(args.records_json, summary["records"])
    return 1 if summary["failures"] else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("run", help="run the stage notebooks (the study) with papermill",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", action="append", help="preset (repeatable; default: defaults.yaml)")
    p.add_argument("--lang", action="append", help="language code (repeatable; default: defaults.yaml)")
    p.add_argument("--stages", default="00-05", help="stages to run, e.g. 01-04 or 00,03 (default 00-05)")
    p.add_argument("--params", help="a YAML file of parameters (above preset/language files)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="one parameter (repeatable; NN.name=value for stage NN only); highest precedence")
    p.add_argument("--force", action="store_true", help="re-run stages even when unchanged")
    p.add_argument("--runs-root", default="runs", help="where runs/<preset>/<lang>/ go (default runs)")
    p.add_argument("--no-progress", action="store_true", help="no papermill progress bar")
    p.add_argument("--jobs", type=int, default=1,
                   help="languages run concurrently, each on its own GPU group (CUDA_VISIBLE_DEVICES) "
                        "or share of the CPU cores, with its own log runs/<preset>/<lang>/run.log")
    for hidden in ("--notebooks-dir", "--params-dir", "--records-json"):  # --jobs children
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.set_defaults(func=_cli)
