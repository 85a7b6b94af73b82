"""CPT training throughput and model FLOPs utilization: `elchat.cpt.train` vs a plain HF `Trainer`.

Both sides train the same model (SmolLM2-135M-Instruct by default) with the same strategy
(`2x2ls`: layers 0, 1, -2, -1 + embeddings + lm_head + final norm, frozen by
`elchat.cpt.apply_strategy`), the same packed blocks (block 512), batch, AdamW settings, cosine
schedule and precision (fp32 on CPU, bf16 autocast on a GPU) — the ElChat reference recipe, which
is `Trainer` with those arguments. Each side runs in its own subprocess (fresh memory and
allocator), one after the other, in the same invocation; the first `--warmup` steps are dropped.

MFU = achieved training FLOP/s / the device's matmul peak, measured here with a large square
matmul (fp32 on CPU, bf16 on GPU). Training FLOPs per token (T = block size), summed over the
model's matmuls, with P_l the matmul weights of layer l and V*d the lm_head:

    forward           sum_l (2 P_l + A)  +  2 V d           A = 2 T d_attn  (QK^T and AV, causal:
                                                                             keys average T/2)
    input gradients   sum_l (2 P_l + 2 A) + 2 V d           needed down to the lowest trainable
                                                             parameter (embeddings: all layers)
    weight gradients  2 * (trainable matmul weights)         frozen weights get none

i.e. a frozen layer costs 4 P per token and a trained one 6 P (the classic 6N only when all is
trained); the embedding lookup's gradient is a scatter, counted as 0.

    python benchmarks/cpt_throughput.py                    # CPU, SmolLM2-135M, 3+1 steps each
    python benchmarks/cpt_throughput.py --device cuda --batch 16 --steps 20
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback,
                          TrainingArguments, default_data_collator)

from elchat.cpt import CPTConfig, apply_strategy, train
from elchat.data import load_texts
from elchat.models import fetch
from elchat.packing import pack_blocks, token_stream


def matmul_peak(device: str, seconds: float = 3.0) -> float:
    """FLOP/s of a large square matmul (fp32 on CPU, bf16 on CUDA): the device's practical peak."""
    dev = torch.device(device)
    dtype, n = (torch.bfloat16, 8192) if dev.type == "cuda" else (torch.float32, 2048)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def train_flops_per_token(model, block_size: int) -> float:
    """Training FLOPs per token by the formula in the module docstring (uses requires_grad)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = 2 * block_size * cfg.num_attention_heads * head_dim
    layers = next(m for m in model.modules()
                  if isinstance(m, torch.nn.ModuleList) and len(m) == cfg.num_hidden_layers)
    fwd = bwd_in = bwd_w = 0.0
    for layer in layers:
        mats = [m.weight for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        p = sum(w.numel() for w in mats)
        fwd += 2 * p + attn
        bwd_in += 2 * p + 2 * attn
        bwd_w += 2 * sum(w.numel() for w in mats if w.requires_grad)
    head = model.get_output_embeddings().weight
    fwd += 2 * head.numel()
    bwd_in += 2 * head.numel()
    bwd_w += 2 * head.numel() if head.requires_grad else 0
    return fwd + bwd_in + bwd_w


def _corpus(n_tokens_needed: int) -> list[str]:
    try:
        docs = load_texts("en", "train")
    except Exception:  # data not built: deterministic synthetic prose is as good for throughput
        rng = random.Random(0)
        words = "the of and to in language model text new token chat vector merge layer".split()
        docs = [" ".join(rng.choice(words) for _ in range(200)) for _ in range(500)]
    out, chars = [], 0
    while chars < n_tokens_needed * 4:  # > 1 token per 4 chars for English BPE
        out.extend(docs)
        chars += sum(map(len, docs))
    return out


def _worker(args) -> dict:
    steps = args.warmup + args.steps
    texts = _corpus(steps * args.batch * args.block)
    config = CPTConfig(strategy="2x2ls", max_steps=steps, block_size=args.block,
                       batch_size=args.batch, log_every=1, eval_every=0, save_every=0,
                       device=args.device, compile=args.compile, seed=0)
    probe = apply_strategy(AutoModelForCausalLM.from_pretrained(args.model), config)
    flops_tok = train_flops_per_token(probe, args.block)
    del probe
    with tempfile.TemporaryDirectory() as tmp:
        if args.which == "elchat":
            train(args.model, texts, None, Path(tmp) / "out", config, progress=False)
            rows = json.loads((Path(tmp) / "out" / "log.json").read_text())
            times = [args.batch * args.block / r["tokens_per_s"] for r in rows]
        else:
            from datasets import Dataset  # optional, slow import: only the Trainer side needs it
            tok = AutoTokenizer.from_pretrained(args.model)
            blocks = pack_blocks(token_stream(tok, texts), args.block)[: steps * args.batch]
            data = Dataset.from_dict({"input_ids": np.asarray(blocks, dtype=np.int64).tolist(),
                                      "labels": np.asarray(blocks, dtype=np.int64).tolist()})
            model = apply_strategy(AutoModelForCausalLM.from_pretrained(
                args.model, dtype=torch.float32, attn_implementation="sdpa"), config)
            times, t0 = [], [0.0]

            class Timer(TrainerCallback):
                def on_step_begin(self, *a, **k):
                    t0[0] = time.perf_counter()

                def on_step_end(self, *a, **k):
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0[0])
            targs = TrainingArguments(
                output_dir=tmp, per_device_train_batch_size=args.batch, max_steps=steps,
                learning_rate=config.lr, weight_decay=config.weight_decay,
                lr_scheduler_type="cosine", logging_steps=1,
                warmup_steps=math.ceil(config.warmup_ratio * steps),
                save_strategy="no", report_to=[], seed=0, use_cpu=args.device == "cpu",
                bf16=args.device.startswith("cuda"), torch_compile=args.compile_trainer,
                disable_tqdm=True)
            Trainer(model=model, args=targs, train_dataset=data,
                    data_collator=default_data_collator, callbacks=[Timer()]).train()
    measured = times[args.warmup:]
    tps = len(measured) * args.batch * args.block / sum(measured)
    return {"which": args.which, "tokens_per_s": tps, "flops_per_token": flops_tok,
            "step_s": [round(t, 3) for t in times]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF dir (default: the smollm2-135m preset)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="measured steps per side")
    p.add_argument("--warmup", type=int, default=1, help="steps dropped per side")
    p.add_argument("--compile", action="store_true",
                   help="elchat side: CPTConfig(compile=True), regional torch.compile")
    p.add_argument("--compile-trainer", action="store_true",
                   help="Trainer side: torch_compile=True (not in the ElChat reference)")
    p.add_argument("--which", choices=["elchat", "trainer"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        args.model = str(fetch("smollm2-135m")["chat"])
    if args.which:  # subprocess: one side only
        print("RESULT " + json.dumps(_worker(args)))
        return 0
    peak = matmul_peak(args.device)
    results = {}
    for which in ("elchat", "trainer"):
        cmd = [sys.executable, __file__, "--which", which] + [
            f"--{k}={v}" for k, v in vars(args).items()
            if k not in ("which", "compile", "compile_trainer")] + (
            ["--compile"] if args.compile else []) + (
            ["--compile-trainer"] if args.compile_trainer else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results[which] = json.loads(line[-1][7:])
    print(f"device {args.device} ({torch.get_num_threads()} threads), model {args.model}")
    print(f"block {args.block}, batch {args.batch}, strategy 2x2ls, {args.steps} measured steps "
          f"after {args.warmup} warm-up, compile: elchat={args.compile}, "
          f"Trainer={args.compile_trainer}")
    print(f"measured matmul peak: {peak / 1e9:.1f} GFLOP/s; training FLOPs/token: "
          f"{results['elchat']['flops_per_token'] / 1e6:.1f} M")
    print(f"{'run':<10}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}   step times (s)")
    for which, r in results.items():
        achieved = r["tokens_per_s"] * r["flops_per_token"]
        r["mfu"] = achieved / peak
        print(f"{which:<10}{r['tokens_per_s']:>12.1f}{achieved / 1e12:>10.3f}{r['mfu']:>8.1%}   "
              f"{r['step_s']}")
    ratio = results["elchat"]["tokens_per_s"] / results["trainer"]["tokens_per_s"]
    print(f"elchat / Trainer tokens/s: {ratio:.2f}x  (target >= 1.3x; MFU target: >= 45% CPU, "
          ">= 35% GPU bf16)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
