"""lm-evaluation-harness bridge: the kit's local sets run through lm-eval offline on a tiny model and
agree with the kit's own scorers on the same items; hub tasks fail clearly offline, before any work."""
from __future__ import annotations

import pytest
import sacrebleu
from tokenizers import processors
from transformers import AutoTokenizer

from elchat import data
from elchat.errors import UserError
from elchat.evaluation import harness, mc, mt
from elchat.evaluation.generate import Context, load
from conftest import make_chatml_tokenizer, make_tiny_model

LANG, LIMIT = "am", 4


def _tiny_model(root, bos: bool):
    """A tiny random Llama (hidden 32) with a ChatML tokenizer trained on the pairs: without BOS
    (as SmolLM2/Qwen: the kit conditions on the document separator) or adding BOS (as Llama-3)."""
    pairs = data.load_pairs(LANG, "test")
    fast = make_chatml_tokenizer([t for p in pairs for t in p], vocab_size=600)
    if bos:
        fast.bos_token = "<|endoftext|>"
        fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", 0)])
    model = make_tiny_model(len(fast), tied=False, seed=5)
    model.save_pretrained(root, safe_serialization=True)
    fast.save_pretrained(root)
    assert (AutoTokenizer.from_pretrained(root)("a")["input_ids"][0] == 0) == bos
    return root


@pytest.fixture(scope="module", params=["no_bos", "bos"])
def agreement_model(request, tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("harness") / request.param, request.param == "bos")


@pytest.fixture(scope="module")
def bos_model(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("harness") / "model", bos=False)


@pytest.fixture(scope="module")
def lm_eval_raw(agreement_model, tmp_path_factory):
    """lm-eval's own output (every sample) for the three local tasks, offline."""
    lm = harness._lm(agreement_model, 4, "cpu")
    task_dir = harness.write_tasks(tmp_path_factory.mktemp("tasks"), harness.local_tasks(LANG), LANG,
                                   chat=True, max_new_tokens=8, prefix=harness.prefix_text(lm.tokenizer))
    return harness.run_lm_eval(lm, harness.local_tasks(LANG), task_dir, chat=True, limit=LIMIT)


def test_mc_accuracy_equals_kit_scorer(agreement_model, lm_eval_raw):
    """Same items, same conditioning token, same normalization (log-likelihood per character): the
    same option is right or wrong on every item, so accuracy is equal."""
    model, tok = load(agreement_model, "cpu")
    ctx = Context(model, tok, LANG, data.LANGUAGES[LANG], limit=LIMIT, batch_size=4)
    items = ctx.take(mc.build_items(data.load_pairs(LANG, "test"), ctx.seed))
    kit_correct = [float(p == it["answer"]) for p, it in zip(mc.choose(ctx, items), items)]
    samples = sorted(lm_eval_raw["samples"][f"elchat_mc_{LANG}"], key=lambda s: s["doc_id"])
    assert [s["acc_char"] for s in samples] == kit_correct
    kit = mc.run(ctx, data.load_pairs(LANG, "test"))["accuracy"]
    got = harness.to_metrics(lm_eval_raw)[f"elchat_mc_{LANG}/acc_char"]
    assert got["n"] == kit["n"] == LIMIT
    assert got["value"] == pytest.approx(kit["value"])
    assert got["stderr"] is not None and got["ci95"][0] <= got["value"] <= got["ci95"][1]


def test_chrf_both_directions_equal_kit_scorer(lm_eval_raw):
    """lm-eval's corpus chrF equals the kit's (sacrebleu) on the same hypotheses and references,
    and the references are the shipped test pairs in order."""
    pairs = data.load_pairs(LANG, "test")[:LIMIT]
    for direction, refs in [("en2x", [t for _, t in pairs]), ("x2en", [e for e, _ in pairs])]:
        task = f"elchat_mt_{LANG}_{direction}"
        samples = sorted(lm_eval_raw["samples"][task], key=lambda s: s["doc_id"])
        assert [s["doc"]["target"] for s in samples] == refs
        hyps = [s["filtered_resps"][0] for s in samples]
        assert lm_eval_raw["results"][task]["chrf,none"] == pytest.approx(mt.chrf(hyps, refs))
        assert mt.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)


def test_evaluate_models_joins_results_table(bos_model, tmp_path):
    """Scores join results.csv (earlier rows kept) with standard-error intervals."""
    (tmp_path / "results.csv").write_text("model,lang,task,metric,value,n,ci_low,ci_high,group,t\n"
                                          "Chat,am,bpc,bpc,2.5,8,2.4,2.6,model,\n")
    table = harness.evaluate_models({"Chat": bos_model}, LANG, tmp_path, f"elchat_mc_{LANG}", limit=4,
                                    batch_size=4, device="cpu")
    assert list(table["task"]) == ["bpc", "harness", "harness"]
    assert set(table["metric"][1:]) == {f"elchat_mc_{LANG}/acc", f"elchat_mc_{LANG}/acc_char"}
    assert (tmp_path / "results" / "Chat.harness.json").is_file()
    row = table.iloc[2]
    assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_no_network_names_hub_tasks_before_work(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="belebele_amh_Ethi.*hub"):
        harness.evaluate_models({"Chat": tmp_path / "missing"}, "am", tmp_path, "belebele_amh_Ethi,local")
    assert not any(tmp_path.iterdir())


def test_task_sets_and_checks():
    assert harness.resolve_tasks("local", "ta") == ["elchat_mt_ta_en2x", "elchat_mt_ta_x2en", "elchat_mc_ta"]
    paper = harness.paper_tasks("am")
    assert "belebele_amh_Ethi" in paper["target"] and "ifeval" in paper["chat"]
    assert harness.is_chat_task("elchat_mt_am_en2x") and not harness.is_chat_task("elchat_mc_am")
    with pytest.raises(UserError, match="paper:nope"):
        harness.resolve_tasks("paper:nope", "am")
    with pytest.raises(UserError, match="elchat_mc_ta"):
        harness.check_params("elchat_mc_ta", "am", 0, 8, 8)


def test_cli_and_stage_task_entry(bos_model, tmp_path):
    """`elchat eval --harness-tasks` writes the harness scores; `--tasks harness` runs the local sets
    through stage 04's task table on the already loaded model."""
    import json

    from elchat.cli import main
    from elchat.evaluation import stage

    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(bos_model), "--lang", LANG, "--harness-tasks", f"elchat_mc_{LANG}",
                 "--limit", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert set(saved["tasks"]) == {"harness"}
    assert saved["tasks"]["harness"][f"elchat_mc_{LANG}/acc"]["n"] == 2
    res = stage.evaluate(bos_model, LANG, ["harness"], limit=2, batch_size=2, device="cpu", max_new_tokens=4)
    assert {f"elchat_mt_{LANG}_en2x/chrf", f"elchat_mt_{LANG}_x2en/chrf",
            f"elchat_mc_{LANG}/acc_char"} <= set(res["tasks"]["harness"])
    assert "harness" not in stage.check_tasks(None)  # opt-in: not in the default task list


def test_rouge_l_tokenizes_every_script():
    """rouge-score's default tokenizer keeps only [a-z0-9]: a Tamil or Amharic summary scores 0.
    The kit's tokenizer keeps whole words with their combining marks (checked by hand)."""
    from rouge_score import rouge_scorer

    from elchat.harness_tasks import utils

    assert utils.ScriptTokenizer().tokenize("வணக்கம் உலகம்!") == ["வணக்கம்", "உலகம்"]
    assert utils.ScriptTokenizer().tokenize("你好世界") == ["你", "好", "世", "界"]
    ref, hyp = "ሰላም ዓለም ዛሬ", "ሰላም ዛሬ"
    assert rouge_scorer.RougeScorer(["rougeL"]).score(ref, hyp)["rougeL"].fmeasure == 0.0
    # LCS = 2 words; precision 2/2, recall 2/3 -> F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8
    assert utils.rouge_l(hyp, ref) == pytest.approx(0.8)
    assert utils.process_mc({"options": ["a", "bbbb"], "answer": 1}, [(-2.0, False), (-3.0, False)]) == \
        {"acc": 0.0, "acc_char": 1.0}  # -2/2 = -1.0 < -3/5 = -0.6 per character
