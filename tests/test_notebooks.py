"""Static checks of every notebook in notebooks/ and of notebooks/params/*.yaml (no execution),
including that the notebooks' defaults agree with the single definitions in elchat/method.py.
"""
import ast
import re

import nbformat
import pytest

from elchat import colab, method, runner
from elchat import params as P
from elchat.paths import NOTEBOOKS_DIR, PARAMS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))  # stages; colab_study: tests/test_colab.py
STAGE_NOTEBOOKS = [p for p in NOTEBOOKS if re.match(r"0[0-4]_", p.name)]
EXPECTED = ["00_source_models", "01_vocabulary_expansion", "02_continual_pretraining", "03_merging",
            "04_evaluation", "05_report"]
LINE = re.compile(r"^(\w+): ([^=]+?) = (.+?)  # (.+)$")  # name: type = value  # help


def _ids(paths):
    return [p.name for p in paths]


def _params_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


def _declared(nb) -> dict:
    """name -> (type source, value) parsed with ast from the parameters cell."""
    out = {}
    for stmt in ast.parse(_params_cell(nb).source).body:
        out[stmt.target.id] = (ast.unparse(stmt.annotation), ast.literal_eval(stmt.value))
    return out


def test_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS if p.stem in EXPECTED] == EXPECTED, "a stage notebook is missing"
    unexpected = [p.stem for p in NOTEBOOKS if p.stem not in EXPECTED]
    assert not unexpected, f"notebooks not in the study's stage list: {unexpected}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"cell {i} has outputs: strip them"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "no title"
    badge = colab.badge_url(path.name)  # the one repository URL (elchat/colab.py)
    assert any(badge in c.source for c in nb.cells if c.cell_type == "markdown"), "no Colab badge"
    cell = _params_cell(nb)
    index = nb.cells.index(cell)
    install = [c for c in nb.cells[:index] if c.cell_type == "code"
               and '"google.colab" in sys.modules' in c.source and "pip" in c.source]
    assert install, "no Colab-only install cell (guarded by \"google.colab\" in sys.modules) before parameters"
    ast.parse(install[0].source)  # valid Python off Colab too (no bare `!pip`)
    for line in cell.source.splitlines():
        assert LINE.match(line), f"parameters line {line!r} is not `name: type = value  # help`"
        (stmt,) = ast.parse(line).body
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value
        ast.literal_eval(stmt.value)  # a literal: papermill replaces it, nothing is computed here
    after = nb.cells[index + 1]
    assert after.cell_type == "code" and "check_common(" in after.source, \
        "the cell after parameters must validate through elchat.params.check_common"


@pytest.mark.parametrize("path", STAGE_NOTEBOOKS, ids=_ids(STAGE_NOTEBOOKS))
def test_stage_common_parameters(path):
    declared = _declared(nbformat.read(path, as_version=4))
    d = P.defaults()
    assert {k: declared.get(k) for k in ("preset", "lang", "runs_root", "seed", "device")} == {
        "preset": ("str", d["preset"]), "lang": ("str", d["lang"]), "runs_root": ("str", "runs"),
        "seed": ("int", 0), "device": ("str", "auto")}


def test_report_notebook_parameters():
    path = NOTEBOOKS_DIR / "05_report.ipynb"
    declared = _declared(nbformat.read(path, as_version=4))
    d = P.defaults()
    assert declared["preset"] == ("str", d["preset"]) and declared["langs"] == ("list", [d["lang"]])
    assert declared["runs_root"] == ("str", "runs")


def test_defaults_live_in_one_place():
    d = P.defaults()
    assert (P.DEFAULT_PRESET, P.DEFAULT_LANG) == (d["preset"], d["lang"])
    assert d["presets"] == ["smollm2-135m", "micro"] and d["langs"] == ["am"]
    from elchat import presets
    from elchat.presets import PRESETS
    assert not hasattr(presets, "DEFAULT_PRESETS"), "defaults live in notebooks/params/defaults.yaml only"
    for name in d["presets"] + [d["preset"]]:
        assert name in PRESETS and (PARAMS_DIR / f"{name}.yaml").is_file()


def test_language_files_have_quoted_codes():
    for f in PARAMS_DIR.glob("*.yaml"):
        data = P.load_yaml(f)
        if "lang" in data and f.stem != "defaults":
            assert data["lang"] == f.stem, f"{f.name}: lang should be {f.stem!r}"
            assert re.search(rf'^lang: "{f.stem}"', f.read_text(), re.M), f"{f.name}: quote the code"


def test_yaml_traps(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("lang: no\nlr: 1e-4\nlr2: 1.0e-4\nflag: yes\nok: true\nn: 3\n")
    assert P.load_yaml(f) == {"lang": "no", "lr": 1e-4, "lr2": 1e-4, "flag": "yes", "ok": True, "n": 3}
    assert isinstance(P.load_yaml(f)["lr"], float)
    # What plain PyYAML would hand over is still coerced by the declared type.
    import yaml
    plain = yaml.safe_load("lr: 1e-4\nsteps: 2.0\n")
    assert plain["lr"] == "1e-4"  # the trap this guards against
    assert P.coerce("lr", plain["lr"], "float") == 1e-4
    assert P.coerce("steps", plain["steps"], "int") == 2
    assert P.coerce("sweep_t", [0, 1], "list", default="[0.0, 0.5]") == [0.0, 1.0]
    with pytest.raises(ValueError, match="quote it"):
        P.coerce("lang", False, "str")
    # `-p` values go through the declared type of the notebook receiving them.
    declared = {"lang": {"inferred_type_name": "str", "default": '"am"'},
                "lr": {"inferred_type_name": "float", "default": "0.1"},
                "name": {"inferred_type_name": "str", "default": '"x"'},
                "limit": {"inferred_type_name": "int | None", "default": "None"}}
    got = runner.stage_parameters(
        declared, [("-p", {k: runner._Raw(v) for k, v in
                           {"name": "no", "lr": "1e-4", "limit": "null"}.items()}, {})], "04",
        {"lang": "no"})
    assert got == {"name": "no", "lr": 1e-4, "limit": None, "lang": "no"}
    assert isinstance(got["lr"], float)
    got = runner.stage_parameters(declared, [("-p", {"name": runner._Raw('"007"'), "lr": runner._Raw("1.0e-4")}, {})], "04", {})
    assert got == {"name": "007", "lr": 1e-4}


def test_params_files_match_declared_parameters():
    """Every name in a params YAML is declared by some notebook, with a value of the declared type."""
    found = {p.name[:2]: p for p in NOTEBOOKS}
    import papermill
    declared = {s: papermill.inspect_notebook(str(p)) for s, p in found.items()}
    all_names = set().union(*declared.values()) if declared else set()
    for f in sorted(PARAMS_DIR.glob("*.yaml")):
        data = P.load_yaml(f)
        layer = runner._layer(data if f.stem != "defaults" else data.get("parameters", {}), f.name)
        for stage, d in declared.items():
            runner.stage_parameters(d, [layer], stage, {})  # raises on a value of the wrong type
        names = set(layer[1]) | set().union(*[set(v) for v in layer[2].values()])
        unknown = names - all_names
        assert not unknown, f"{f.name}: no notebook declares {sorted(unknown)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_papermill_sees_every_parameter(path):
    """papermill drops a parameters line with a second `=` (even in the help) or an annotation
    like `int | None`; then `papermill.inspect_notebook` and Jupyter's parameter UIs miss it."""
    import papermill

    seen = papermill.inspect_notebook(str(path))
    declared = _declared(nbformat.read(path, as_version=4))
    lost = [n for n in declared if n not in seen]
    assert not lost, (f"papermill cannot parse the parameters {lost}: keep one `=` per line (none "
                      "in the help text) and a simple annotation (int, float, str, bool, list, dict)")
    for name, (type_src, _) in declared.items():
        assert seen[name]["inferred_type_name"] == type_src, f"{name}: papermill reads type {seen[name]['inferred_type_name']!r}"


def _stage_declared(stem: str) -> dict:
    return _declared(nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4))


def test_notebook_defaults_are_the_published_settings():
    """The method's facts are defined once, in elchat/method.py; the notebooks' defaults agree."""
    cpt, merging = _stage_declared("02_continual_pretraining"), _stage_declared("03_merging")
    assert cpt.get("layers") == ("list", list(method.TRANSITION_LAYERS)), "02: layers"
    assert cpt["strategy"][1] == "2x2ls" and "2x2ls" in method.CPT_STRATEGIES
    assert merging.get("elchat_t") == ("list", list(method.ELCHAT_T)), "03: elchat_t"
    assert merging["lep_mode"][1] == method.LEP_DEFAULT_MODE and merging["lep_mode"][1] in method.LEP_MODES
    assert merging["cv_ratio"][1] == method.CV_RATIO
    assert cpt["lr"][1] == method.default_lr(cpt["strategy"][1])


def test_parameter_names_say_what_they_are():
    """One name per concept: no stage-ambiguous `batch_size`, and the SLERP weight is `elchat_t`
    (stage 03 merges the layers stage 02 recorded, so it declares no layers of its own)."""
    retired = {"batch_size": "cpt_batch_size (02) / eval_batch_size (04)", "elchat_rates": "elchat_t",
               "elchat_layers": "the layers stage 02 recorded"}
    offenders = [f"{p.name}: {name} (now {retired[name]})" for p in NOTEBOOKS
                 for name in _declared(nbformat.read(p, as_version=4)) if name in retired]
    assert not offenders, "retired parameter names: " + "; ".join(offenders)
    assert "cpt_batch_size" in _stage_declared("02_continual_pretraining")
    assert "eval_batch_size" in _stage_declared("04_evaluation")
