"""Colab and stage-by-stage use: the repository URL, runs on a mounted Drive, a notebook opened alone.

`REPO_URL` is the one definition of where the kit lives. The README's badges and every notebook's
Colab set-up cell must carry a literal copy (a fresh Colab runtime has no kit to import it from),
so `python -m elchat.colab --repo-url URL` rewrites them all from here and
`tests/test_colab.py` fails when one differs.

A stage notebook reads what earlier stages wrote under `runs/<preset>/<lang>/`. Opened alone (a
fresh Colab runtime per badge) it calls `prepare_stage` first: the earlier stages whose outputs
are missing run through the study runner (`elchat.runner.run`, same preset, language and runs
root; parameters from the preset/language files, or `earlier_params`), or, with
`run_earlier=False`, one line says which command to run (the report, stage 05, runs earlier
stages only when no language has finished: it reports the finished ones). A `runs_root` under `/content/drive`
mounts Google Drive first, so a long run survives a disconnected runtime.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import runner, runs
from .atomic import atomic_write_text
from .errors import UserError
from .paths import NOTEBOOKS_DIR, REPO_ROOT

REPO_URL = "https://github.com/elchat-kit/elchat"
BRANCH = "main"
DRIVE = "/content/drive"
# stage -> a file, relative to runs/<preset>/<lang>/, that exists once the stage has finished
STAGE_DONE = {"00": "00_source/sources.json", "01": "01_vocab/chat_ve/config.json",
              "02": "02_cpt/summary.csv", "03": "03_merge/models.json",
              "04": "04_eval/results.csv"}


def badge_url(notebook: str) -> str:
    """The Open-in-Colab link of a notebook. Example: `badge_url("00_source_models.ipynb")`."""
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{notebook}"


def missing_stages(stage: str, preset: str, langs, runs_root) -> list[str]:
    """Earlier stages (before `stage`) whose outputs are missing for any of `langs`.

    Example: `missing_stages("02", "micro", ["am"], "empty_dir") == ["00", "01"]`.
    """
    langs = [langs] if isinstance(langs, str) else list(langs)
    earlier = [s for s in STAGE_DONE if s < stage]
    return [s for s in earlier
            if any(not (runs.run_dir(runs_root, preset, lang) / STAGE_DONE[s]).is_file() for lang in langs)]


def mount_drive(runs_root) -> None:
    """On Colab, mount Google Drive when `runs_root` lies on it and it is not mounted yet."""
    if str(runs_root).startswith(DRIVE) and "google.colab" in sys.modules \
            and not Path(DRIVE, "MyDrive").is_dir():
        from google.colab import drive  # exists only on Colab

        drive.mount(DRIVE)


def prepare_stage(stage: str, preset: str, langs, runs_root, run_earlier: bool = True,
                  earlier_params: str = "", log=print) -> None:
    """Make the earlier stages' outputs exist before stage `stage` reads them (see module docstring).

    Example: `prepare_stage("03", "micro", "am", "runs")` runs 00-02 first on an empty runs root.
    """
    mount_drive(runs_root)
    langs = [langs] if isinstance(langs, str) else list(langs)
    if stage == runner.REPORT_STAGE and any(not missing_stages(stage, preset, [lang], runs_root)
                                            for lang in langs):
        return  # the report covers the languages that finished and lists the others as missing
    missing = missing_stages(stage, preset, langs, runs_root)
    if not missing:
        return
    span = f"{missing[0]}-{max(s for s in STAGE_DONE if s < stage)}"
    command = (f"elchat run --preset {preset} " + " ".join(f"--lang {lang}" for lang in langs)
               + f" --stages {span} --runs-root {runs_root}"
               + (f" --params {earlier_params}" if earlier_params else ""))
    if not run_earlier:
        raise UserError(f"stage {stage} needs stages {span} first (missing under {runs_root}): run `{command}`")
    log(f"stages {span} are missing under {runs_root}: running them first (`{command}`)")
    summary = runner.run([preset], langs, stages=span, params_file=earlier_params or None,
                         runs_root=str(runs_root), progress=False, log=lambda *a: None)
    if summary["failures"]:
        failed = summary["failures"][0]
        raise UserError(f"earlier stage {failed['stage']} failed ({failed.get('message', '')}); "
                        f"open its executed notebook under {runs_root}")


def run_study(preset: str, langs, runs_root="runs", stages: str = "00-05", params_file: str = "",
              overrides=None, log=print) -> dict:
    """The "run the whole study" notebook's one call: mount Drive if needed, run the stages with the
    runner, and return `{"summary": runner summary, "report": stage 05's folder}`.

    Example: `run_study("micro", ["am"], "/content/drive/MyDrive/elchat-runs")`.
    """
    mount_drive(runs_root)
    summary = runner.run([preset], list(langs), stages=stages, params_file=params_file or None,
                         overrides=list(overrides or []), runs_root=str(runs_root), log=log)
    return {"summary": summary, "report": runs.report_dir(runs_root, preset)}


def show_report(report_dir) -> list[Path]:
    """Display stage 05's summary, table and figures inline (Jupyter); returns what was shown."""
    from IPython.display import Image, Markdown, display  # the notebook's display only

    shown = []
    for name in ("summary.md", "results_table.md"):
        if (Path(report_dir) / name).is_file():
            display(Markdown((Path(report_dir) / name).read_text(encoding="utf-8")))
            shown.append(Path(report_dir) / name)
    for png in sorted(Path(report_dir).glob("*.png")):
        display(Image(filename=str(png)))
        shown.append(png)
    if not shown:
        print(f"no report under {report_dir}: did stage 05 run? (see the runner's table above)")
    return shown


def sync_repo_url(old: str, new: str, root: Path = REPO_ROOT) -> list[Path]:
    """Replace repository URL `old` by `new` in the README and every notebook (badges, Colab
    cells); other GitHub links are left alone. Returns the files changed.

    Example: `sync_repo_url(REPO_URL, "https://github.com/me/elchat")`.
    """
    old_repo, new_repo = (u.removeprefix("https://github.com/").rstrip("/") for u in (old, new))
    changed = []
    for path in [root / "README.md"] + sorted((root / NOTEBOOKS_DIR.name).glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        out = text.replace(f"google.com/github/{old_repo}/", f"google.com/github/{new_repo}/")  # badges
        out = re.sub(rf"github\.com/{re.escape(old_repo)}(?![\w.-])", f"github.com/{new_repo}", out)
        if out != text:
            atomic_write_text(path, out)
            changed.append(path)
    return changed


def _set_repo_url(url: str) -> None:
    """Rewrite the definition in this file, then every copy."""
    me = Path(__file__)
    text = me.read_text(encoding="utf-8")
    atomic_write_text(me, re.sub(r'^REPO_URL = ".*"$', f'REPO_URL = "{url}"', text, count=1, flags=re.M))
    for path in sync_repo_url(REPO_URL, url):
        print(f"updated {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m elchat.colab", description=__doc__.splitlines()[0])
    parser.add_argument("--repo-url", required=True, help="https://github.com/<owner>/<repo> of your copy")
    args = parser.parse_args()
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", args.repo_url):
        sys.exit(f"--repo-url {args.repo_url!r}: expected https://github.com/<owner>/<repo>")
    _set_repo_url(args.repo_url)
