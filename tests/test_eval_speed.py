"""Speed measured on the same characters: a model against itself is 1.0, step ratios are exact."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from elchat.evaluation import speed

TEXT = ("ሰላም ለዓለም። እንዴት ነህ? ውሃ ለሕይወት አስፈላጊ ነው። ቤቱ ትልቅ ነው። ዛሬ ቀኑ ጥሩ ነው። "
        "The weather is nice today. Open the file and read it. ") * 3

# Tolerance of the self-comparison: the median of 5 interleaved repeats is within a few percent of
# 1 on a quiet machine; the shared 2-core test machine runs other jobs, hence 25%.
SELF_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def chat(tiny_pair):
    # one thread: two threads contend with the other jobs of a loaded 2-core machine and make every
    # step of the tiny model 20x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoModelForCausalLM.from_pretrained(tiny_pair["chat"]).eval(), AutoTokenizer.from_pretrained(tiny_pair["chat"])
    torch.set_num_threads(threads)


def test_model_against_itself_is_one(chat):
    model, tok = chat
    res = speed.compare(model, tok, model, tok, [TEXT[:60], TEXT[60:120]], repeats=5)
    assert res["speedup"]["value"] == pytest.approx(1.0, abs=SELF_TOLERANCE)
    lo, hi = res["speedup"]["ci95"]
    assert lo <= res["speedup"]["value"] <= hi and res["speedup"]["n"] == 5
    assert res["tokens_per_char_ratio"]["value"] == 1.0


def test_exact_step_ratio_and_timed_text(chat, tiny_pair):
    model, tok = chat
    texts = speed.timed_texts(["abc", "", "defgh", "ijk"], 6)
    assert texts == ["abc", "def"]
    ids = speed.decode_ids(tok, [TEXT[:80]])
    n_tok = len(tok(TEXT[:80], add_special_tokens=False)["input_ids"])
    assert len(ids[0]) == n_tok + 1  # the <|endoftext|> prefix, then the text's tokens
    res = speed.compare(model, tok, model, tok, [TEXT[:30]], repeats=1)
    assert res["chars_per_s"]["value"] > 0 and res["reference_chars_per_s"]["value"] > 0


def test_decode_seconds_runs_every_step(chat, monkeypatch):
    model, _ = chat
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    speed.decode_seconds(model, [[0, 5, 6, 7], [0, 9]])
    assert len(calls) == 6
