"""Causal-LM loss without the full logits: a linear + cross-entropy computed chunk by chunk.

The plain loss builds logits z = h W^T for every position (N = batch x (block - 1) rows, V
columns) and keeps them (and their gradient) for the backward pass. In fp32 at 32 x 512 that is
N x V x 4 bytes: 10 GB for Qwen's 151,936 rows, 17 GB for Gemma's 262,144 -- before the backward.

Here the rows are processed in chunks of `chunk` positions. For a chunk with targets y:

    z = h_c W^T (compute dtype),  lse = log sum_j exp z_j (fp32),  loss_c = sum_i (lse_i - z_{i,y_i})
    dL/dz = (softmax(z) - onehot(y)) / N,   dL/dh_c = dL/dz W,   dL/dW += (dL/dz)^T h_c

The gradients are formed in the forward pass (the chunk's logits are needed for them and are then
dropped), stored, and handed out by `backward`: the FLOPs equal the unchunked loss (no recompute)
and the peak extra memory is one chunk of logits (fp32 and compute dtype) instead of N x V. The
default chunk, 1024 positions, measured fastest on the 2-core CPU (SmolLM2-135M, 8 x 512, bf16:
9.1 s per 2x2LS step vs 11.3 s at 4096 and 10.0 s at 256): a chunk's logits then stay near the
cache, and they still make large matmuls on a GPU. This is the idea of fused
linear cross-entropy kernels (Liger-Kernel, Apple's cut-cross-entropy); written in torch here so it
runs on any device, and exact to the unchunked loss up to fp32 summation order (tested).

`ChunkedLossLM(model)` wraps a Hugging Face decoder-only model (`model.model` the decoder,
`model.get_output_embeddings()` a bias-free Linear) so `wrapper(ids)` returns the mean next-token
loss; models with another head (logit soft-capping, biases, scaled logits) keep Hugging Face's own
loss (`supports_chunked_loss` says which).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, y_i) with gradients formed chunk by chunk in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, dtype: torch.dtype):
        n = hidden.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(dtype)
        # One set of chunk buffers, reused: a fresh (chunk x V) tensor per op is a page-faulted
        # allocation on the CPU (no caching allocator there), which cost more than the matmuls
        # (measured: 1.8 vs 2.9 s for the loss of 8 x 512 positions at V = 49k).
        rows = min(chunk, n)
        z_c = torch.empty(rows, w.shape[0], dtype=dtype, device=w.device)   # logits, compute dtype
        z = torch.empty(rows, w.shape[0], dtype=torch.float32, device=w.device) if dtype != torch.float32 else z_c
        gw_c = torch.empty_like(w) if need_w and dtype != torch.float32 else None
        log_n = math.log(n)
        with torch.autocast(hidden.device.type, enabled=False):  # precision is chosen here
            for start in range(0, n, chunk):
                h = hidden[start:start + chunk].to(dtype)
                y = targets[start:start + chunk]
                k = len(y)
                zk, zk_c = z[:k], z_c[:k]
                torch.mm(h, w.t(), out=zk_c)
                if zk is not zk_c:
                    zk.copy_(zk_c)
                lse = torch.logsumexp(zk, dim=-1)
                total += (lse - zk.gather(1, y[:, None]).squeeze(1)).sum()
                if need_h or need_w:
                    # dL/dz = (softmax(z) - onehot(y)) / n, formed in place: exp(z - lse - log n)
                    zk.sub_((lse + log_n)[:, None]).exp_()
                    zk[torch.arange(k, device=y.device), y] -= 1.0 / n
                    if zk is not zk_c:
                        zk_c.copy_(zk)
                    if need_h:
                        grad_h[start:start + chunk] = zk_c @ w
                    if need_w:
                        if gw_c is None:
                            grad_w.addmm_(zk_c.t(), h)
                        else:
                            torch.mm(zk_c.t(), h, out=gw_c)
                            grad_w += gw_c
        ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
        ctx.has = (need_h, need_w)
        ctx.weight_dtype = weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_h = saved.pop(0) * grad_out if ctx.has[0] else None
        grad_w = (saved.pop(0) * grad_out).to(ctx.weight_dtype) if ctx.has[1] else None
        return grad_h, grad_w, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = 1024) -> torch.Tensor:
    """Mean cross-entropy of logits `hidden @ weight.T` against `targets`, never all at once.

    `hidden` (N, H), `weight` (V, H), `targets` (N,). The matmuls run in the autocast dtype when
    autocast is on (bf16 training), else in `hidden`'s dtype; softmax and sums in fp32.
    Example: `linear_cross_entropy(h, lm_head.weight, y)` == `F.cross_entropy(h @ lm_head.weight.T, y)`.
    """
    kind = hidden.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype
    return _LinearCrossEntropy.apply(hidden, weight, targets, int(chunk), dtype)


def _base(model):
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_chunked_loss(model) -> bool:
    """True when `model`'s logits are exactly `decoder(x) @ lm_head.weight.T` (no bias, scaling or
    soft-capping), so `ChunkedLossLM` computes the same loss. Example: True for Llama/Qwen2/SmolLM2.
    """
    base = _base(model)
    head = base.get_output_embeddings()
    head = getattr(head, "original_module", head)  # peft modules_to_save wrapper
    config = base.config
    plain = all(getattr(config, k, None) in (None, 1.0) for k in
                ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    return (isinstance(head, nn.Linear) and head.bias is None and plain
            and isinstance(getattr(base, "model", None), nn.Module))


class ChunkedLossLM(nn.Module):
    """`model` whose forward(input_ids) returns the mean next-token loss via `linear_cross_entropy`.

    Wrap before `accelerator.prepare` so DDP/FSDP see one module whose forward does all the work.
    Example: `loss = ChunkedLossLM(model)(ids)`; equals `model(input_ids=ids, labels=ids).loss`.
    """

    def __init__(self, model, chunk: int = 1024):
        super().__init__()
        self.lm, self.chunk = model, chunk
        # FSDP auto-wrap reads the shard units (decoder layer classes) from the wrapped model
        self._no_split_modules = getattr(_base(model), "_no_split_modules", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        base = _base(self.lm)
        hidden = base.model(input_ids=input_ids).last_hidden_state[:, :-1]
        head = base.get_output_embeddings()
        weight = head.weight
        targets = input_ids[:, 1:].reshape(-1)
        return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, targets, self.chunk)


class HuggingFaceLossLM(nn.Module):
    """`model` whose forward(input_ids) returns Hugging Face's own mean next-token loss (full logits).

    Example: `HuggingFaceLossLM(model)(ids) == model(input_ids=ids, labels=ids).loss`.
    """

    def __init__(self, model):
        super().__init__()
        self.lm = model
        self._no_split_modules = getattr(_base(model), "_no_split_modules", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, labels=input_ids).loss


def loss_module(model, chunk: int = 1024) -> nn.Module:
    """The module CPT trains: `ChunkedLossLM` where the head allows it and `chunk` > 0, else
    `HuggingFaceLossLM`. Both keep `model`'s parameters under the prefix `lm.`.

    Example: `loss = loss_module(model)(ids)`.
    """
    if chunk and supports_chunked_loss(model):
        return ChunkedLossLM(model, chunk)
    return HuggingFaceLossLM(model)
