"""Colab path: one repository URL, the whole-study notebook, and a stage notebook opened alone on an
empty runs root (it runs the missing earlier stages through the runner, or names the command)."""
from __future__ import annotations

import re
import shutil

import nbformat
import pytest

from elchat import colab, runner
from elchat import params as P
from elchat.errors import UserError
from elchat.paths import NOTEBOOKS_DIR, PARAMS_DIR, REPO_ROOT

ALL_NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/")


def _colab_cell(nb):
    cells = [c for c in nb.cells if c.cell_type == "code" and '"google.colab" in sys.modules' in c.source]
    assert len(cells) == 1
    return cells[0].source


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=[p.name for p in ALL_NOTEBOOKS])
def test_every_notebook_carries_the_one_repository_url(path):
    nb = nbformat.read(path, as_version=4)
    assert f'REPO_URL = "{colab.REPO_URL}"' in _colab_cell(nb)
    assert "REPO_URL, \"/content/elchat\"" in _colab_cell(nb)  # the clone uses it, no second literal
    text = "\n".join(c.source for c in nb.cells)
    assert colab.badge_url(path.name) in text
    owner_repo = colab.REPO_URL.removeprefix("https://github.com/")
    assert set(COLAB_LINK.findall(text)) == {owner_repo}


def test_readme_carries_the_one_repository_url():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    owner_repo = colab.REPO_URL.removeprefix("https://github.com/")
    assert set(COLAB_LINK.findall(readme)) == {owner_repo}
    assert f"git clone {colab.REPO_URL}" in readme
    for path in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        assert colab.badge_url(path.name) in readme


def test_sync_repo_url_rewrites_only_the_kit_links(tmp_path):
    shutil.copy(REPO_ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "notebooks").mkdir()
    for p in ALL_NOTEBOOKS:
        shutil.copy(p, tmp_path / "notebooks" / p.name)
    with open(tmp_path / "README.md", "a", encoding="utf-8") as f:
        f.write("\nsee https://github.com/karpathy/minbpe and https://github.com/elchat-kit/elchat-extra\n")
    changed = colab.sync_repo_url(colab.REPO_URL, "https://github.com/me/fork", root=tmp_path)
    assert len(changed) == 1 + len(ALL_NOTEBOOKS)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "colab.research.google.com/github/me/fork/blob/main/notebooks/" in readme
    assert "git clone https://github.com/me/fork" in readme
    assert "https://github.com/karpathy/minbpe" in readme and "elchat-kit/elchat-extra" in readme
    nb = nbformat.read(tmp_path / "notebooks" / "02_continual_pretraining.ipynb", as_version=4)
    assert 'REPO_URL = "https://github.com/me/fork"' in _colab_cell(nb)


def test_colab_study_notebook_is_not_a_stage_and_keeps_conventions():
    path = NOTEBOOKS_DIR / "colab_study.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.outputs for c in nb.cells if c.cell_type == "code")
    assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    declared = runner.declared_parameters(path)
    assert {"preset", "langs", "runs_root", "stages"} <= set(declared)
    assert "colab_study" not in [p.stem for p in runner._find_notebooks(NOTEBOOKS_DIR, runner.STAGES).values()]


def test_missing_stages_and_one_line_command(tmp_path):
    assert colab.missing_stages("03", "micro", "am", tmp_path) == ["00", "01", "02"]
    assert colab.missing_stages("00", "micro", "am", tmp_path) == []
    with pytest.raises(UserError) as err:
        colab.prepare_stage("02", "micro", "am", tmp_path / "runs", run_earlier=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"elchat run --preset micro --lang am --stages 00-01 --runs-root {tmp_path / 'runs'}" in message
    assert not (tmp_path / "runs").exists()  # nothing written
    (tmp_path / "micro/am/00_source").mkdir(parents=True)
    (tmp_path / "micro/am/00_source/sources.json").write_text("{}")
    assert colab.missing_stages("02", "micro", ["am"], tmp_path) == ["01"]


@pytest.mark.slow
def test_stage_notebook_alone_on_empty_runs_root(tmp_path):
    """Notebook 01 executed on its own, with an empty runs root: it runs stage 00 through the runner
    (nano budgets) and then itself, and both stages' outputs exist."""
    import papermill

    root = tmp_path / "runs"
    nb = NOTEBOOKS_DIR / "01_vocabulary_expansion.ipynb"
    layer = runner._layer(P.load_yaml(PARAMS_DIR / "nano.yaml"), "nano.yaml")
    parameters = runner.stage_parameters(runner.declared_parameters(nb), [layer], "01",
                                         {"preset": "micro", "lang": "am", "runs_root": str(root)})
    parameters["earlier_params"] = str(PARAMS_DIR / "nano.yaml")
    papermill.execute_notebook(str(nb), str(tmp_path / "01_alone.ipynb"), parameters=parameters,
                               kernel_name="python3", progress_bar=False, cwd=str(REPO_ROOT))
    assert (root / "micro/am/00_source/sources.json").is_file()  # stage 00, run by the runner
    assert (root / "micro/am/00_source_models.ipynb").is_file()
    assert (root / "micro/am/01_vocab/chat_ve/config.json").is_file()  # the notebook itself


def test_report_stage_reports_finished_languages_without_rerunning(tmp_path):
    done = tmp_path / "micro/am"
    for rel in colab.STAGE_DONE.values():
        (done / rel).parent.mkdir(parents=True, exist_ok=True)
        (done / rel).write_text("x")
    calls = []
    colab.prepare_stage("05", "micro", ["am", "ta"], tmp_path, run_earlier=False, log=calls.append)
    assert calls == []  # ta is missing, am finished: no error, nothing run
    with pytest.raises(UserError, match="--lang ta --stages 00-04"):
        colab.prepare_stage("05", "micro", ["ta"], tmp_path, run_earlier=False)
