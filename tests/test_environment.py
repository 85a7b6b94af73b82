"""environment.yml (conda route) and pyproject.toml (pip route) name the same floors."""
import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; 3.10 users run the rest

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # conda-forge names that differ from PyPI's


def _floors(requirements):
    out = {}
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)\s*", req)
        assert m, f"not a floor pin: {req!r}"
        out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = _floors(project["dependencies"] + project["optional-dependencies"]["dev"])
    pip = {CONDA_NAMES.get(k, k): v for k, v in pip.items()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_reqs = [d for d in env["dependencies"] if isinstance(d, str) and d not in ("pip",)]
    conda = _floors(conda_reqs)
    assert conda.pop("python") == project["requires-python"].removeprefix(">=")
    pip_section = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert "-e ." in pip_section
    # packages conda-forge lacks at the floor go to the pip section, with the same floor
    pip_only = _floors([d.split("#")[0] for d in pip_section if d != "-e ."])
    assert {k: pip[k] for k in pip_only if k in pip} == pip_only
    assert conda == {k: v for k, v in pip.items() if k not in pip_only}
