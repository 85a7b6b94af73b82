"""The `reply` task: bits/char of the source model's replies and end-of-turn probability, checked
against values computed here by hand from one unbatched forward pass."""
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from elchat.evaluation import reply


@pytest.fixture(scope="module")
def chat(tiny_pair):
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"]).eval()
    return model, AutoTokenizer.from_pretrained(tiny_pair["chat"])


def _by_hand(model, tok, user, text):
    """-log2 p(reply) and p(<|im_end|> | prompt, reply), one sequence, no padding."""
    prompt = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                     tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(text, add_special_tokens=False)["input_ids"]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    ids = torch.tensor([p_ids + r_ids + [eot]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    targets = ids[0, 1:]
    lp = logp[:-1].gather(1, targets[:, None])[:, 0]
    n = len(r_ids)
    return -lp[-n - 1:-1].sum().item() / math.log(2), math.exp(lp[-1].item())


def test_end_of_turn_is_the_template_token(chat):
    _, tok = chat
    assert tok.convert_ids_to_tokens(reply.end_of_turn_id(tok)) == "<|im_end|>"


def test_reply_bits_per_char_and_eot_match_hand_computation(chat):
    model, tok = chat
    items = [{"id": "a", "group": "en", "user": "Hello there", "reply": "Hi! How are you?", "ended": True},
             {"id": "b", "group": "target", "user": "ሰላም", "reply": "ሰላም ነው", "ended": False},
             {"id": "c", "group": "en", "user": "Why?", "reply": "Because.", "ended": True}]
    scores = reply.score_replies(model, tok, items, batch_size=2)  # padded batches of unequal length
    for it, s in zip(items, scores):
        bits, eot = _by_hand(model, tok, it["user"], it["reply"])
        assert s["bits"] == pytest.approx(bits, rel=1e-4) and s["chars"] == len(it["reply"])
        assert s["eot_prob"] == pytest.approx(eot, rel=1e-4)
    m = reply.summarize(scores)
    hand = [_by_hand(model, tok, it["user"], it["reply"]) for it in items]
    assert m["bpc_en"]["value"] == pytest.approx((hand[0][0] + hand[2][0]) / (16 + 8), rel=1e-4)
    assert m["bpc_target"]["n"] == 1 and "eot_target" not in m  # the source did not end "b"
    assert m["eot_en"]["value"] == pytest.approx((hand[0][1] + hand[2][1]) / 2, rel=1e-4)
    assert m["bpc_en"]["items"]["id"] == ["a", "c"]


def test_replies_generated_once_and_cached(tiny_pair, tmp_path, monkeypatch):
    prompts = reply.take_per_group(reply.reply_prompts(["ሰላም ለዓለም", "ውሃ"]), 2)
    assert [p["group"] for p in prompts] == ["en", "en", "target", "target"]
    first = reply.source_replies(tiny_pair["chat"], prompts, tmp_path, max_new_tokens=4, device="cpu")
    files = list(tmp_path.glob("replies-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["items"] == first
    monkeypatch.setattr(reply, "load", lambda *a, **k: pytest.fail("regenerated instead of cached"))
    assert reply.source_replies(tiny_pair["chat"], prompts, tmp_path, max_new_tokens=4) == first
    other = reply.cache_key(tiny_pair["chat"], prompts, 5)
    assert other != files[0].stem.split("-", 1)[1]  # another token limit is another cache entry
