"""elchat.chunked_loss: the chunked linear + cross-entropy equals the unchunked loss (torch's
F.cross_entropy on full fp32 logits) and its gradients, within fp32 rounding, on its own and inside
the tiny models of every CPT strategy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from elchat import cpt
from elchat.chunked_loss import ChunkedLossLM, linear_cross_entropy, supports_chunked_loss
from elchat.cpt import CPTConfig


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_equals_unchunked_loss_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=g, dtype=torch.float64).float().requires_grad_()
    w = (torch.randn(300, 16, generator=g) * 0.5).requires_grad_()
    y = torch.randint(0, 300, (50,), generator=g)
    ref = F.cross_entropy(h @ w.t(), y)
    ref_h, ref_w = torch.autograd.grad(ref, (h, w))
    got = linear_cross_entropy(h, w, y, chunk=chunk)
    got_h, got_w = torch.autograd.grad(got * 1.0, (h, w))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_w, ref_w, rtol=1e-5, atol=1e-7)


def test_frozen_head_gets_no_gradient_work():
    h = torch.randn(8, 4, requires_grad=True)
    w = torch.randn(10, 4)  # frozen
    loss = linear_cross_entropy(h, w, torch.arange(8), chunk=3)
    loss.backward()
    assert w.grad is None and h.grad is not None


def test_bf16_autocast_stays_close_to_fp32():
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(40, 32, generator=g), torch.randn(500, 32, generator=g) * 0.2
    y = torch.randint(0, 500, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, y, chunk=16)
    assert got.dtype == torch.float32
    assert abs(got.item() - F.cross_entropy(h @ w.t(), y).item()) < 0.02 * got.item()


@pytest.mark.parametrize("strategy", ["2x2ls", "full", "lora"])
def test_model_loss_and_gradients_equal_hugging_face(strategy, tiny_pair):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"], dtype=torch.float32)
    model = cpt.apply_strategy(model, CPTConfig(strategy=strategy, layers=(0, -1)))
    assert supports_chunked_loss(model)
    model.eval()  # no LoRA dropout: both losses see the same network
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    params = [p for p in model.parameters() if p.requires_grad]
    ref = model(input_ids=ids, labels=ids).loss
    ref_grads = torch.autograd.grad(ref, params)
    got = ChunkedLossLM(model, chunk=10)(ids)
    got_grads = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_soft_capped_heads_keep_hugging_faces_loss(tiny_pair):
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"])
    model.config.final_logit_softcapping = 30.0
    assert not supports_chunked_loss(model)
