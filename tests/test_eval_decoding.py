"""Decoding precision: a float32 CPU model decodes through a bf16 copy where the CPU has native bf16."""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from elchat.evaluation import generate as gen


def test_decoding_model_is_a_cached_bf16_copy_on_native_bf16(tiny_pair, monkeypatch):
    monkeypatch.setattr(gen, "cpu_has_native_bf16", lambda: True)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"]).eval()
    dec = gen.decoding_model(model)
    assert dec is not model and dec.dtype == torch.bfloat16 and model.dtype == torch.float32
    assert gen.decoding_model(model) is dec  # made once per model
    name = "model.embed_tokens.weight"
    assert torch.equal(dec.state_dict()[name], model.state_dict()[name].to(torch.bfloat16))
    # generate() decodes with the copy: its greedy tokens are the bf16 model's own greedy tokens
    tok = AutoTokenizer.from_pretrained(tiny_pair["chat"])
    prompt = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    out = gen.generate(model, tok, [prompt], max_new_tokens=6, ignore_stop=True)[0]
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    ref = dec.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                       suppress_tokens=sorted(set(tok.all_special_ids)), pad_token_id=tok.pad_token_id)
    assert out["raw"] == tok.decode(ref[0, ids.shape[1]:])


def test_decoding_model_is_the_model_itself_elsewhere(tiny_pair, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"]).eval()
    monkeypatch.setattr(gen, "cpu_has_native_bf16", lambda: False)
    assert gen.decoding_model(model) is model
    monkeypatch.setattr(gen, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(gen, "DECODE_IN_BF16", False)
    assert gen.decoding_model(model) is model
    assert gen.decoding_model(model.to(torch.bfloat16)) is model  # already bf16: no copy
