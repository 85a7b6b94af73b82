"""The whole study chain: the real stage notebooks run through the runner on the `micro` preset
with the tiny budgets of notebooks/params/nano.yaml (the `nano` pair), asserting on what each
stage writes.
"""
import time

import pandas as pd
import pytest

from elchat import runner, runs
from elchat.paths import PARAMS_DIR

pytestmark = pytest.mark.slow

STAGES = "00-05"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "runs"
    t0 = time.perf_counter()
    summary = runner.run(["micro"], ["am"], stages=STAGES, params_file=PARAMS_DIR / "nano.yaml",
                         runs_root=root, progress=False)
    wall = time.perf_counter() - t0
    return {"root": root, "run": root / "micro/am", "summary": summary, "wall": wall}


def _need(stage, study):
    rec = [r for r in study["summary"]["records"] if r["stage"] == stage]
    assert rec and rec[0]["status"] == "ran", f"stage {stage}: {rec and rec[0]['message']}"


def test_chain_ran_without_failures(study):
    assert not study["summary"]["failures"], runner.format_summary(study["summary"]["records"])
    print(f"chain {STAGES} wall {study['wall']:.1f} s")


def test_00_sources(study):
    _need("00", study)
    sources = runs.read_sources(study["run"])
    assert sources["preset"] == "micro"
    from transformers import AutoConfig
    for key in ("chat", "base"):  # micro has a base: the CV and LEP paths need it
        AutoConfig.from_pretrained(sources[key])


def test_01_vocab(study):
    _need("01", study)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    sources = runs.read_sources(study["run"])
    old = AutoTokenizer.from_pretrained(sources["chat"])
    new = AutoTokenizer.from_pretrained(study["run"] / "01_vocab/chat_ve")
    assert len(new) > len(old)
    model = AutoModelForCausalLM.from_pretrained(study["run"] / "01_vocab/chat_ve")
    assert model.get_input_embeddings().weight.shape[0] >= len(new)
    assert (study["run"] / "01_vocab/base_ve/config.json").is_file()
    tpc = pd.read_csv(study["run"] / "01_vocab/tokens_per_char.csv")
    assert len(tpc) >= 1


def test_02_cpt(study):
    _need("02", study)
    from transformers import AutoModelForCausalLM
    for run in ("chat_cpt", "base_cpt"):
        AutoModelForCausalLM.from_pretrained(study["run"] / "02_cpt" / run)
        assert len(pd.read_csv(study["run"] / "02_cpt" / run / "log.csv")) >= 1


def _models(study) -> dict:
    models, _, missing = runs.read_models(study["run"])
    assert not missing, f"models.json lists models that are not on disk: {missing}"
    return models


def test_03_merge(study):
    _need("03", study)
    models = _models(study)
    assert {"Chat", "Chat+VE", "CV", "ElChat", "ElChat w/o copy", "LEP"} <= set(models)
    for name, path in models.items():
        assert (path / "config.json").is_file(), f"{name}: {path} is not a model directory"


def test_04_eval(study):
    _need("04", study)
    from elchat.evaluation.stage import TASKS
    models = _models(study)
    res = pd.read_csv(study["run"] / "04_eval/results.csv")
    main = res[res["group"] == "model"]
    for model in models:
        tasks = set(main.loc[main["model"] == model, "task"])
        assert set(TASKS) <= tasks, f"{model}: no rows for {sorted(set(TASKS) - tasks)}"
    assert main["value"].notna().any()


def test_05_report(study):
    _need("05", study)
    report = study["root"] / "micro/report"
    assert (report / "summary.md").is_file()
    table = (report / "results_table.md").read_text()
    assert "| ElChat |" in table and "| CV |" in table


def test_rerun_skips_everything(study):
    if study["summary"]["failures"]:
        pytest.skip("the first run failed")
    summary = runner.run(["micro"], ["am"], stages=STAGES, params_file=PARAMS_DIR / "nano.yaml",
                         runs_root=study["root"], progress=False)
    assert {r["status"] for r in summary["records"]} == {"skipped"}
