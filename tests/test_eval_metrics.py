"""Metrics against independent computations: chrF, log-likelihood MC, chat format, refusals, CIs."""
import math
import random

import pytest
import sacrebleu
import torch

from elchat.evaluation import chat_format, mc, mt, results, safety, speed
from elchat.evaluation.generate import loglikelihoods
from elchat.evaluation.bpc import prefix_token_id
from elchat.scripts import script_share


def test_chrf_equals_sacrebleu():
    hyps = ["the cat sat on a mat", "ሰላም ለዓለም", "completely different"]
    refs = ["the cat sat on the mat", "ሰላም ለዓለም ሁሉ", "a house by the sea"]
    assert mt.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    for h, r in zip(hyps, refs):
        assert mt.chrf([h], [r]) == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score)


def test_bootstrap_ci_contains_mean_and_is_seeded():
    rng = random.Random(3)
    xs = [rng.random() for _ in range(50)]
    lo, hi = results.bootstrap_ci(xs, seed=1)
    assert lo < sum(xs) / len(xs) < hi
    assert results.bootstrap_ci(xs, seed=1) == [lo, hi]
    pairs = [(rng.random(), 1 + rng.random()) for _ in range(30)]
    lo, hi = results.bootstrap_ci(pairs, results.ratio, n_boot=300)
    assert lo < sum(a for a, _ in pairs) / sum(b for _, b in pairs) < hi


def test_results_rows_and_files(tmp_path):
    r = {"metadata": {"name": "Chat", "lang": "am"},
         "tasks": {"mc": {"accuracy": results.metric(0.5, 4, [0.25, 0.75]), "chance": results.metric(0.25, 4)}}}
    path = results.save_results(r, tmp_path / "Chat.json")
    assert results.load_results(path) == r
    csv = (tmp_path / "Chat.csv").read_text().splitlines()
    assert csv[0] == ",".join(results.CSV_COLUMNS)
    assert csv[1] == "Chat,am,mc,accuracy,0.5,4,0.25,0.75" and csv[2] == "Chat,am,mc,chance,0.25,4,,"


@pytest.fixture(scope="module")
def chat_model(tiny_pair):
    from elchat.evaluation.generate import load
    return load(tiny_pair["chat"], "cpu")


def _manual_loglik(model, tok, ctx, cont):
    c = tok(ctx, add_special_tokens=False)["input_ids"]
    x = tok(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[prefix_token_id(tok)] + c + x])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    n = ids.shape[1]
    return sum(logp[i - 1, ids[0, i]].item() for i in range(n - len(x), n))


def test_loglikelihood_matches_manual(chat_model):
    model, tok = chat_model
    ctxs, conts = ["English: hello\nAmharic:", "The quick"], [" ሰላም", " brown fox jumps"]
    got = loglikelihoods(model, tok, ctxs, conts, batch_size=2)
    for g, c, x in zip(got, ctxs, conts):
        assert g == pytest.approx(_manual_loglik(model, tok, c, x), rel=1e-5)


def test_mc_picks_best_length_normalized_option(chat_model):
    model, tok = chat_model
    pairs = [("hello", "ሰላም"), ("thanks", "አመሰግናለሁ"), ("water", "ውሃ"), ("house", "ቤት"), ("day", "ቀን")]
    items = mc.build_items(pairs, seed=0)
    assert all(it["options"][it["answer"]] == tg for it, (_, tg) in zip(items, pairs))
    assert all(len(set(it["options"])) == 4 for it in items)
    assert mc.build_items(pairs, seed=0) == items

    class Ctx:
        lang_name, batch_size = "Amharic", 3
    Ctx.model, Ctx.tokenizer = model, tok
    picks = mc.choose(Ctx, items)
    for it, p in zip(items, picks):
        scores = [_manual_loglik(model, tok, f"English: {it['question']}\nAmharic:", " " + o) / (len(o) + 1)
                  for o in it["options"]]
        assert p == max(range(4), key=lambda j: scores[j])


def test_chat_format_checks():
    special = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    good = {"text": "ሰላም ነው", "raw": "ሰላም ነው", "ended": True}
    assert chat_format.checks(good, "am", special) == {"ended_turn": True, "no_leak": True, "right_language": True}
    leak = {"text": "Fine. How about you?", "raw": "Fine.<|im_start|>user\nHow about you?", "ended": False}
    assert chat_format.checks(leak, "en", special) == {"ended_turn": False, "no_leak": False, "right_language": True}
    role = {"text": "Sure.\nUser: and now?", "raw": "Sure.\nUser: and now?", "ended": True}
    assert chat_format.checks(role, "am", special) == {"ended_turn": True, "no_leak": False, "right_language": False}
    assert script_share("ሰላም ok", "am") == pytest.approx(3 / 5)
    assert script_share("Привет", "ru") == 1.0 and script_share("123", "en") == 0.0
    # one script table for the kit: Cyrillic includes the Cyrillic Supplement (U+0500-052F)
    assert script_share("\u0501\u0511 ok", "ru") == pytest.approx(2 / 4)
    ext = {"text": "\u0501\u0511\u0513", "raw": "\u0501\u0511\u0513", "ended": True}
    assert chat_format.checks(ext, "ru", special)["right_language"] is True
    reqs = chat_format.requests("am", "Amharic")
    assert [c for _, c in reqs[:4]] == ["am", "en", "am", "en"] and "Amharic" in reqs[0][0]
    assert len(reqs) >= 100 and len({u for u, _ in reqs}) == len(reqs)


def test_refusal_detector():
    for r in ["I'm sorry, but I can't help with that.", "I cannot do this.", "As an AI, I must decline.",
              "I\u2019m not able to assist."]:
        assert safety.is_refusal(r), r
    for r in ["Sure! Here is how to change a lock: first remove the screws.", "Bread needs flour and water.",
              "You can renew your ID at the city office."]:
        assert not safety.is_refusal(r), r


def test_safety_prompts_are_matched_pairs():
    ps = safety.load_prompts()
    harmful = [p for p in ps if p["kind"] == "harmful"]
    benign = [p for p in ps if p["kind"] == "benign"]
    assert len(harmful) == len(benign) >= 40
    assert [p["id"][1:] for p in harmful] == [p["id"][1:] for p in benign]


def test_fixed_length_generation_decodes_text_at_every_step(tiny_pair):
    """Speed runs decode exactly max_new_tokens real tokens, even from a model that prefers to stop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elchat.evaluation.generate import generate

    tok = AutoTokenizer.from_pretrained(tiny_pair["chat"])
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"]).eval()
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():  # the end-of-turn token becomes the greedy choice at every step
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("<|im_end|>")] = 2e4  # ends the turn at once
        head.bias[tok.convert_tokens_to_ids("<|endoftext|>")] = 1e4  # next best: a pad, no text
    model.lm_head = head
    stopping = generate(model, tok, ["The weather"], max_new_tokens=6)[0]
    assert stopping["ended"] and stopping["text"] == ""
    fixed = generate(model, tok, ["The weather"], max_new_tokens=6, ignore_stop=True)[0]
    ids = tok(fixed["raw"], add_special_tokens=False)["input_ids"]
    assert not set(ids) & set(tok.all_special_ids)
    assert len(fixed["text"]) > 0 and fixed["new_tokens"] == 6


def test_token_char_counts_per_text(chat_model):
    _, tok = chat_model
    texts = ["ሰላም ለዓለም", "", "The quick brown fox"]
    counts = speed.token_char_counts(tok, texts)
    assert counts == [(len(tok.encode(t, add_special_tokens=False)), len(t)) for t in texts if t]
    total_tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
    assert results.ratio(counts) == pytest.approx(total_tokens / sum(map(len, texts)))


def test_stage_figures_from_tidy_rows(tmp_path):
    import pandas as pd

    from elchat import report
    from elchat.evaluation import figures

    rows = []
    for group, model, t, bpc, strict in [("model", "Chat", None, 2.0, 0.5), ("model", "ElChat", None, 1.5, 0.4),
                                         ("sweep", "t=0.00", 0.0, 1.4, 0.2), ("sweep", "t=1.00", 1.0, 2.0, 0.5)]:
        for task, metric, value, ci in [("bpc", "bpc", bpc, (bpc - 0.1, bpc + 0.1)),
                                        ("ifeval", "prompt_strict", strict, (None, None)),
                                        ("speed", "chars_per_s", 99.0, (None, None))]:
            rows.append({"model": model, "lang": "am", "task": task, "metric": metric, "value": value,
                         "n": 4, "ci_low": ci[0], "ci_high": ci[1], "group": group, "t": t})
    results = pd.DataFrame(rows)
    figs = figures.write_figures(results, tmp_path, "micro · am")
    assert set(figs) == {"results_bars", "sweep_tradeoff"}
    assert {p.name for p in tmp_path.iterdir()} == {"results_bars.png", "sweep_tradeoff.png"}
    bars = figs["results_bars"]
    panels = [ax for ax in bars.axes if ax.get_title()]
    heads = report.headers(results)
    # one panel per reported column present (chars_per_s is not reported), in METRICS order
    assert [ax.get_title() for ax in panels] == [heads["target BPC"] + "\nn = 4", heads["IFEval strict"] + "\nn = 4"]
    assert [p.get_height() for p in panels[0].patches] == [2.0, 1.5]   # the main models only
    # the source model (Chat) is drawn as a horizontal reference line in every panel
    assert [[tuple(line.get_ydata()) for line in ax.lines if line.get_linestyle() == ":"] for ax in panels] == \
        [[(2.0, 2.0)], [(0.5, 0.5)]]
    assert figures.fig_scores(results[results["task"] == "speed"]) is None
    assert set(figures.write_figures(results[results["group"] == "model"], tmp_path / "m")) == {"results_bars"}
