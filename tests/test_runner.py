"""The study runner on small synthetic notebooks made in tmp (not the real stages).

Each synthetic stage appends "<stage> <lang>" to runs/calls.log (so the order and the number of
executions are observable) and writes the parameters it received to NN_x/params.json.
"""
import json

import nbformat
import pytest

from elchat import paths, runner

BODY = '''
import json, os, pathlib
where = pathlib.Path(runs_root) / preset / {where}
out = where / "{out}"
out.mkdir(parents=True, exist_ok=True)
got = {{k: v for k, v in dict(globals()).items() if k in {names!r}}}
(out / "params.json").write_text(json.dumps(got))
with open(pathlib.Path(runs_root) / "calls.log", "a") as f:
    f.write("{stage} " + {tag} + "\\n")
'''


def _notebook(path, stage, param_lines, where="lang", out=None, fail=False):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("\n".join(param_lines))
    cell.metadata["tags"] = ["parameters"]
    names = [line.split(":")[0] for line in param_lines]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# stage {stage}"), cell]
    if fail:  # fails only for the language named by `fail_lang`
        nb.cells.append(nbformat.v4.new_code_cell(
            "if lang == fail_lang:\n    raise ValueError(f'boom for {lang}')"))
    nb.cells.append(nbformat.v4.new_code_cell(BODY.format(
        where="lang" if where == "lang" else '""', out=out or f"{stage}_x", names=names,
        stage=stage, tag="lang" if where == "lang" else "'*'")))
    nbformat.write(nb, path)


@pytest.fixture
def study(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    (nbs / "params").mkdir(parents=True)
    common = ['preset: str = "micro"  # p', 'lang: str = "am"  # l', 'runs_root: str = "runs"  # r',
              'seed: int = 0  # s']
    _notebook(nbs / "00_first.ipynb", "00", common + ['lr: float = 0.1  # lr', 'tag: str = "nb"  # t'])
    _notebook(nbs / "01_second.ipynb", "01", common + ['batch_size: int = 1  # b',
                                                        'fail_lang: str = ""  # f'], fail=True)
    _notebook(nbs / "05_report.ipynb", "05", ['preset: str = "micro"  # p', 'langs: list = ["am"]  # l',
                                              'runs_root: str = "runs"  # r'], where="preset",
              out="report")
    (nbs / "params" / "defaults.yaml").write_text(
        'presets: ["micro"]\nlangs: ["am"]\npreset: "micro"\nlang: "am"\nparameters:\n  seed: 3\n')
    (nbs / "params" / "micro.yaml").write_text('lr: 1e-4\ntag: "preset"\nbatch_size: 2\n')
    (nbs / "params" / "am.yaml").write_text('lang: "am"\ntag: "language"\n')
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbs)
    return tmp_path


STAGES = "00,01,05"  # the synthetic study's notebooks


def _calls(root):
    log = root / "calls.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def _run(tmp, **kw):
    lines = []
    kw.setdefault("presets", ["micro"])
    kw.setdefault("langs", ["am"])
    summary = runner.run(runs_root=tmp / "runs", progress=False, log=lines.append, **kw)
    return summary, "\n".join(lines)


def test_order_filtering_precedence_skip_and_invalidation(study):
    runs = study / "runs"
    pfile = study / "extra.yaml"
    pfile.write_text('batch_size: 3\n"01":\n  batch_size: 4\n')
    summary, log = _run(study, stages=STAGES, params_file=pfile, overrides=["seed=7"])
    assert _calls(runs) == ["00 am", "01 am", "05 *"]
    got0 = json.loads((runs / "micro/am/00_x/params.json").read_text())
    # lr: preset YAML's `1e-4` (a string to PyYAML) arrives as the declared float; am.yaml beats
    # micro.yaml for `tag`; -p beats defaults.yaml for seed; runs_root is the absolute root.
    assert got0 == {"preset": "micro", "lang": "am", "runs_root": str(runs.resolve()), "seed": 7,
                    "lr": 1e-4, "tag": "language"}
    got1 = json.loads((runs / "micro/am/01_x/params.json").read_text())
    assert got1["batch_size"] == 4 and got1["seed"] == 7  # stage section beats the shared value
    injected = nbformat.read(runs / "micro/am/00_first.ipynb", as_version=4).cells[2]
    assert "injected-parameters" in injected.metadata.tags and "batch_size" not in injected.source
    rep = json.loads((runs / "micro/report/params.json").read_text())
    assert rep == {"preset": "micro", "langs": ["am"], "runs_root": str(runs.resolve())}
    assert (runs / "micro/am/.stages/01.json").is_file() and (runs / "micro/.stages/05.json").is_file()

    # Unchanged: nothing runs.
    summary, log = _run(study, stages=STAGES, params_file=pfile, overrides=["seed=7"])
    assert len(_calls(runs)) == 3 and [r["status"] for r in summary["records"]] == ["skipped"] * 3
    # A parameter of stage 01 changes: 01 and the report downstream re-run, 00 does not.
    summary, _ = _run(study, stages=STAGES, params_file=pfile, overrides=["seed=7", "01.batch_size=5"])
    assert _calls(runs)[3:] == ["01 am", "05 *"]
    assert json.loads((runs / "micro/am/01_x/params.json").read_text())["batch_size"] == 5
    # --force on stage 00 alone, then the normal run: the re-run upstream invalidates 01 and 05.
    _run(study, stages="00", force=True, params_file=pfile, overrides=["seed=7", "01.batch_size=5"])
    assert _calls(runs)[5:] == ["00 am"]
    _run(study, stages=STAGES, params_file=pfile, overrides=["seed=7", "01.batch_size=5"])
    assert _calls(runs)[6:] == ["01 am", "05 *"]


def test_failing_stage_stops_that_language_only(study, capsys):
    from elchat.cli import main

    code = main(["run", "--lang", "am", "--lang", "bn", "--stages", "01,05", "-p", "fail_lang=am",
                 "--runs-root", str(study / "runs"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert _calls(study / "runs") == ["01 bn", "05 *"]  # am failed in 01; bn and the report went on
    assert "FAILED" in out and "ValueError: boom for am" in out
    kept = study / "runs/micro/am/01_second.ipynb"
    assert f"executed notebook kept at {kept.resolve()}" in out
    cells = nbformat.read(kept, as_version=4).cells
    failed = [i for i, c in enumerate(cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and f"cell {failed[0]} (In [" in out and "at `if lang == fail_lang:` (ValueError: boom for am)" in out
    assert not (study / "runs/micro/am/.stages/01.json").exists()
    assert (study / "runs/micro/bn/.stages/01.json").is_file()


def test_bad_input_fails_before_any_work(study):
    with pytest.raises(ValueError, match="no parameter of that name"):
        _run(study, stages="00-01", overrides=["not_a_param=1"])
    with pytest.raises(ValueError, match="expected a float"):
        _run(study, stages="00-01", overrides=["lr=fast"])
    with pytest.raises(ValueError, match="--lang"):
        _run(study, overrides=["lang=ta"])
    with pytest.raises(ValueError, match="stages are 00..05"):
        _run(study, stages="03-09")
    with pytest.raises(ValueError, match=r"no notebook for stage\(s\) 02, 03, 04"):
        _run(study)  # 00-05 asked for, three of them without a notebook
    assert not (study / "runs").exists()


def test_outputs_must_be_complete_to_skip(tmp_path):
    where = tmp_path / "micro/am"
    (where / "02_cpt/chat").mkdir(parents=True)
    (where / "02_cpt/chat/w.bin").write_bytes(b"1234")
    (where / "02_x.ipynb").write_text("{}")
    outputs = runner._outputs("02", where)
    assert outputs == {"02_cpt/chat/w.bin": 4}
    (where / ".stages").mkdir()
    (where / ".stages/02.json").write_text(json.dumps({"key": "k", "outputs": outputs}))
    assert runner._is_current(where / ".stages/02.json", "k", where, where / "02_x.ipynb")
    assert not runner._is_current(where / ".stages/02.json", "other", where, where / "02_x.ipynb")
    (where / "02_cpt/chat/w.bin").write_bytes(b"12")  # truncated by a killed copy
    assert not runner._is_current(where / ".stages/02.json", "k", where, where / "02_x.ipynb")


def test_parse_helpers_and_kernel_check():
    assert runner.parse_stages("00,03-05") == ["00", "03", "04", "05"]
    assert runner.parse_stages("1-2") == ["01", "02"]
    assert runner.parse_overrides(["04.limit=5", "lr = 1e-4"]) == [("04", "limit", "5"), (None, "lr", "1e-4")]
    with pytest.raises(ValueError, match="name=value"):
        runner.parse_overrides(["limit"])
    with pytest.raises(ValueError, match="ipykernel install"):
        runner.check_kernel("no-such-kernel-elchat")
    runner.check_kernel()  # the setup registers python3


def test_declared_parameters_recovers_what_papermill_drops(tmp_path):
    import papermill

    lines = ['limit: int = 12  # items per task (0 = all)', 'lr: float = 0.1  # rate']
    _notebook(tmp_path / "04_x.ipynb", "04", lines)
    assert "limit" not in papermill.inspect_notebook(str(tmp_path / "04_x.ipynb"))  # the papermill gap
    got = runner.declared_parameters(tmp_path / "04_x.ipynb")
    assert got["limit"]["inferred_type_name"] == "int" and got["limit"]["default"] == "12"
    assert got["lr"]["help"] == "rate"


def test_device_groups_split_gpus_or_share_cores():
    assert runner.device_groups(4, gpus=[str(i) for i in range(8)]) == [
        {"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"},
        {"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    assert runner.device_groups(3, gpus=["4", "5", "6", "7"]) == [  # 7 stays idle: equal groups
        {"CUDA_VISIBLE_DEVICES": "4"}, {"CUDA_VISIBLE_DEVICES": "5"}, {"CUDA_VISIBLE_DEVICES": "6"}]
    with pytest.raises(ValueError, match="only 2 GPU"):
        runner.device_groups(3, gpus=["0", "1"])
    assert runner.device_groups(2, gpus=[], cores=16) == [
        {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}] * 2
    with pytest.raises(ValueError, match="only 2 CPU core"):
        runner.device_groups(3, gpus=[], cores=2)
    with pytest.raises(ValueError, match="whole number"):
        runner.device_groups(0, gpus=[])


def test_jobs_beyond_the_cpu_are_refused_before_any_work(study, monkeypatch):
    monkeypatch.setattr(runner, "_visible_gpus", lambda: [])
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    with pytest.raises(ValueError, match="--jobs 3: no GPU here and only 2 CPU core"):
        _run(study, stages=STAGES, langs=["am", "bn"], jobs=3)
    assert not (study / "runs").exists()


def test_jobs_run_languages_concurrently_on_their_own_devices(study, monkeypatch):
    """Two languages as two child jobs pinned to fake GPUs 0 and 1; am fails in 01, bn finishes,
    the report runs after both; each job's notebook saw its own CUDA_VISIBLE_DEVICES."""
    nb_path = study / "notebooks" / "00_first.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, pathlib\n(pathlib.Path(runs_root) / preset / lang / 'env.txt').write_text("
        "os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + ' ' + str(os.getpid()))"))
    nbformat.write(nb, nb_path)
    monkeypatch.setattr(runner, "_visible_gpus", lambda: ["0", "1"])
    summary, log = _run(study, stages=STAGES, langs=["am", "bn"], jobs=2,
                        overrides=["fail_lang=am"])
    runs = study / "runs"
    status = {(r["lang"], r["stage"]): r["status"] for r in summary["records"]}
    assert status == {("am", "00"): "ran", ("am", "01"): "FAILED", ("bn", "00"): "ran",
                      ("bn", "01"): "ran", ("*", "05"): "ran"}
    devices = {lang: (runs / "micro" / lang / "env.txt").read_text().split() for lang in ("am", "bn")}
    assert {devices["am"][0], devices["bn"][0]} == {"0", "1"}
    assert devices["am"][1] != devices["bn"][1]  # separate processes
    for lang in ("am", "bn"):
        assert (runs / "micro" / lang / "run.log").is_file()
        assert (runs / "micro" / lang / "00_first.ipynb").is_file()
    assert "boom for am" in (runs / "micro" / "am" / "run.log").read_text()
    assert _calls(runs)[-1] == "05 *"
