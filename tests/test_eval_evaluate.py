"""evaluate() end to end on a tiny model (tiny data substituted), the CLI, and input errors."""
import json
import math

import pytest

from elchat.evaluation import speed
from elchat.evaluation import stage as ev

AM = ["ሰላም ለዓለም። እንዴት ነህ?", "ውሃ ለሕይወት አስፈላጊ ነው።", "ቤቱ ትልቅ ነው።", "ዛሬ ቀኑ ጥሩ ነው።", "መጽሐፍ አነባለሁ።"]
EN = ["The weather is nice today.", "Open the file and read it.", "A small house by the sea."]
PAIRS = [("hello world", "ሰላም ለዓለም"), ("water is life", "ውሃ ሕይወት ነው"), ("the house is big", "ቤቱ ትልቅ ነው"),
         ("today is good", "ዛሬ ጥሩ ነው"), ("I read a book", "መጽሐፍ አነባለሁ")]


@pytest.fixture
def tiny_data(monkeypatch):
    monkeypatch.setattr(ev, "_languages", lambda: {"en": "English", "am": "Amharic"})
    monkeypatch.setattr(ev, "_load_texts", lambda lang, split="test": EN if lang == "en" else AM)
    monkeypatch.setattr(ev, "_load_pairs", lambda lang, split="test": PAIRS)
    monkeypatch.setattr(speed, "REPEATS", 2)  # the timing itself is tested in test_eval_speed.py
    monkeypatch.setattr(speed, "TIMED_CHARS", 12)


def test_evaluate_end_to_end(tiny_pair, tiny_data, tmp_path):
    r = ev.evaluate(tiny_pair["chat"], "am", limit=2, batch_size=2, max_new_tokens=3,
                    reference=tiny_pair["base"], device="cpu")
    assert list(r["tasks"]) == ev.check_tasks(None)
    # limit 2 per prompt group; a reply the tiny source model left empty is not scored
    assert set(r["tasks"]["reply"]) <= {"bpc_en", "bpc_target", "eot_en", "eot_target"}
    assert 1 <= r["tasks"]["reply"]["bpc_en"]["n"] <= 2
    assert set(r["tasks"]["bpc"]) == {"bpc", "bpc_en"} and r["tasks"]["bpc"]["bpc"]["n"] == 2
    assert set(r["tasks"]["ifeval"]) == {"prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose"}
    assert r["tasks"]["mc"]["chance"]["value"] == 0.25 and r["tasks"]["mc"]["accuracy"]["n"] == 2
    assert r["tasks"]["safety"]["refusal_harmful"]["n"] == 2
    assert {"tokens_per_char_ratio", "speedup"} <= set(r["tasks"]["speed"])
    # same tokenizer as the reference: the tokens-per-character ratio is exactly 1
    assert r["tasks"]["speed"]["tokens_per_char_ratio"]["value"] == pytest.approx(1.0)
    for task in r["tasks"].values():
        for m in task.values():
            if m["ci95"] is not None:
                assert m["ci95"][0] <= m["value"] + 1e-9 and m["value"] <= m["ci95"][1] + 1e-9
    assert r["metadata"]["prompt_format"] == "chat_template" and r["metadata"]["limit"] == 2
    again = ev.evaluate(tiny_pair["chat"], "am", tasks=["mt"], limit=2, batch_size=2,
                        max_new_tokens=3, device="cpu")
    assert again["tasks"]["mt"] == r["tasks"]["mt"]        # deterministic
    path = ev.save_results(r, tmp_path / "chat.json")
    assert json.loads(path.read_text())["tasks"]["bpc"] == r["tasks"]["bpc"]


def test_base_model_without_template_falls_back(tiny_pair, tiny_data, tmp_path):
    import shutil
    d = tmp_path / "base"
    shutil.copytree(tiny_pair["base"], d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in d.glob("chat_template.*"):
        f.unlink()
    r = ev.evaluate(d, "am", tasks=["chat_format"], limit=2, max_new_tokens=4, device="cpu")
    assert r["metadata"]["prompt_format"] == "plain"
    assert any("plain prompts" in n for n in r["metadata"]["notes"])


def test_text_file_language(tiny_pair, tiny_data, tmp_path):
    f = tmp_path / "my_lang.txt"
    f.write_text("\n".join(AM) + "\n", encoding="utf-8")
    r = ev.evaluate(tiny_pair["chat"], str(f), tasks=["bpc"], limit=3, device="cpu")
    assert r["tasks"]["bpc"]["bpc"]["n"] == 3 and "bpc_en" not in r["tasks"]["bpc"]
    with pytest.raises(ValueError, match="need a shipped language"):
        ev.evaluate(tiny_pair["chat"], str(f), tasks=["mt"])


def test_bad_input_errors(tiny_pair, tiny_data, tmp_path):
    with pytest.raises(ValueError, match="known tasks: bpc, mt, mc, ifeval"):
        ev.evaluate(tiny_pair["chat"], "am", tasks=["bpc", "rouge"])
    with pytest.raises(ValueError, match="unknown language 'xx'.*en, am"):
        ev.evaluate(tiny_pair["chat"], "xx", tasks=["bpc"])
    with pytest.raises(FileNotFoundError, match="not found"):
        ev.evaluate(tmp_path / "missing", "am", tasks=["bpc"])
    with pytest.raises(ValueError, match="limit"):
        ev.evaluate(tiny_pair["chat"], "am", limit=0)


def test_cli(tiny_pair, tiny_data, tmp_path, capsys):
    from elchat.cli import main
    out = tmp_path / "r.json"
    code = main(["eval", "--model", str(tiny_pair["chat"]), "--lang", "am", "--tasks", "mc",
                 "--limit", "2", "--device", "cpu", "--out", str(out)])
    assert code == 0 and out.is_file() and out.with_suffix(".csv").is_file()
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", "--model", str(tiny_pair["chat"]), "--lang", "am", "--tasks", "nope",
                 "--out", str(out)]) == 2


def test_check_stage_params_names_the_bad_parameter():
    assert ev.check_stage_params("bpc", ["bpc", "ifeval"], 0, 2, 4, 8, "am") == (["bpc"], ["bpc", "ifeval"])
    for args, name in [((["bpc"], ["rouge"], 0, 0, 1, 1), "sweep_tasks"), ((["bpc"], ["bpc"], -1, 0, 1, 1), "limit"),
                       ((["bpc"], ["bpc"], 0, 1.5, 1, 1), "sweep_limit"),
                       ((["bpc"], ["bpc"], 0, 0, 0, 1), "eval_batch_size"),
                       ((["bpc"], ["bpc"], 0, 0, 1, True), "max_new_tokens")]:
        with pytest.raises(ValueError, match=f"parameter {name}="):
            ev.check_stage_params(*args, "am")


def test_check_stage_params_text_file_has_no_pair_tasks(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("one document\n", encoding="utf-8")
    with pytest.raises(ValueError, match="parameter tasks=.*need a shipped language"):
        ev.check_stage_params(["bpc", "mt"], ["bpc"], 0, 0, 1, 1, str(f))


def test_evaluate_models_writes_the_stage_outputs(tiny_pair, tiny_data, tmp_path):
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elchat.evaluation.bpc import bits_per_char, text_nlls

    models = {"Chat": tiny_pair["chat"], "ElChat w/o copy": tiny_pair["base"]}
    out = tmp_path / "04_eval"
    rows = ev.evaluate_models(models, {0.5: tiny_pair["chat"]}, "am", out, tasks=["bpc", "speed"],
                              sweep_tasks=["bpc"], limit=2, sweep_limit=0, eval_batch_size=2,
                              device="cpu", max_new_tokens=2)
    assert list(rows.columns) == results_columns() + ["group", "t"]
    assert sorted((out / "results").iterdir()) == [out / "results" / n for n in
                                                    ("Chat.csv", "Chat.json", "ElChat_w-o_copy.csv",
                                                     "ElChat_w-o_copy.json", "t=0.50.csv", "t=0.50.json")]
    on_disk = pd.read_csv(out / "results.csv")
    assert list(on_disk.columns) == list(rows.columns) and len(on_disk) == len(rows)
    sweep = rows[rows["group"] == "sweep"]
    assert set(sweep["model"]) == {"t=0.50"} and set(sweep["t"]) == {0.5} and set(sweep["task"]) == {"bpc"}
    assert rows[rows["group"] == "model"]["t"].isna().all()
    value = lambda model, task, metric: rows[(rows["model"] == model) & (rows["task"] == task)  # noqa: E731
                                             & (rows["metric"] == metric)]["value"].item()
    # bpc against a direct computation; sweep_limit 0 scores every text
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_pair["chat"])
    assert value("Chat", "bpc", "bpc") == pytest.approx(bits_per_char(model, tok, AM[:2])["bpc"], rel=1e-6)
    assert value("t=0.50", "bpc", "bpc") == pytest.approx(bits_per_char(model, tok, AM)["bpc"], rel=1e-6)
    # speed is relative to Chat for every model, Chat itself included (measured against itself)
    assert value("ElChat w/o copy", "speed", "tokens_per_char_ratio") == pytest.approx(1.0)
    assert value("Chat", "speed", "tokens_per_char_ratio") == 1.0
    # every item score is kept for paired comparisons: one row per scored text here
    items = pd.read_csv(out / "items.csv")
    chat_bpc = items[(items["model"] == "Chat") & (items["metric"] == "bpc")]
    stats = [(n / math.log(2), c) for n, c, _ in text_nlls(model, tok, AM[:2])]
    assert list(chat_bpc["num"]) == pytest.approx([b for b, _ in stats], rel=1e-6)
    assert list(chat_bpc["den"]) == [c for _, c in stats] and set(items["group"]) == {"model", "sweep"}
    with pytest.raises(FileNotFoundError, match="no model to evaluate"):
        ev.evaluate_models({}, {}, "am", out)


def results_columns():
    from elchat.evaluation.results import CSV_COLUMNS
    return list(CSV_COLUMNS)


def test_model_tasks_replace_the_tasks_of_the_named_model(tiny_pair, tiny_data, tmp_path):
    import pandas as pd

    models = {"Chat": tiny_pair["chat"], "ElChat w/o copy": tiny_pair["base"]}
    out = tmp_path / "04_eval"
    ev.evaluate_models(models, {}, "am", out, tasks=["bpc", "mc"], limit=2, eval_batch_size=2,
                       device="cpu", max_new_tokens=2, model_tasks={"ElChat w/o copy": ["bpc"]})
    rows = pd.read_csv(out / "results.csv")
    assert set(rows[rows["model"] == "Chat"]["task"]) == {"bpc", "mc"}
    assert set(rows[rows["model"] == "ElChat w/o copy"]["task"]) == {"bpc"}
    with pytest.raises(ValueError, match="'LEP', not among the models"):
        ev.evaluate_models(models, {}, "am", out, tasks=["bpc"], model_tasks={"LEP": ["bpc"]})
    with pytest.raises(ValueError, match=r"model_tasks\['Chat'\]: unknown task"):
        ev.check_stage_params(["bpc"], ["bpc"], 2, 2, 2, 2, "am", model_tasks={"Chat": ["nope"]})


def test_the_reference_itself_has_speedup_one_and_its_own_rate(tiny_pair, tiny_data, tmp_path):
    res = ev.evaluate(tiny_pair["chat"], "am", ["speed"], limit=2, reference=tiny_pair["chat"], device="cpu")
    sp = res["tasks"]["speed"]
    assert sp["speedup"]["value"] == 1.0 and sp["tokens_per_char_ratio"]["value"] == 1.0
    assert sp["chars_per_s"]["value"] == sp["reference_chars_per_s"]["value"] > 0
