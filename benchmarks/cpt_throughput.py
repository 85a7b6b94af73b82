"""CPT training throughput and model FLOPs utilization: `elchat.cpt.train` vs a plain HF `Trainer`.

Both sides train the same model (SmolLM2-135M-Instruct by default, or a random-weight model of a
published shape, `--random-shape qwen2.5-0.5b`) with the same strategy (`2x2ls`: layers 0, 1, -2,
-1 + embeddings + lm_head + final norm, frozen by `elchat.cpt.apply_strategy`), the same packed
blocks (block 512), batch, AdamW settings, cosine schedule and precision (each of `--precision`:
fp32, or bf16 autocast over fp32 weights) — the ElChat reference recipe, which is `Trainer` with
those arguments. Each side runs in its own subprocess (fresh memory and allocator); the sides
alternate (elchat, Trainer, elchat, ... `--repeats` times) so that both see the same machine load,
and each side's best repeat is kept: the printed *ratio* is the result on a shared machine, the
absolute tokens/s only on a quiet one. The first `--warmup` steps of each run are dropped.

MFU = achieved training FLOP/s / the device's matmul peak *in the precision in use*, measured here
with a large square matmul (fp32 or bf16). Peak memory: the process's max RSS on CPU,
`torch.cuda.max_memory_allocated` on a GPU. Training FLOPs per token (T = block size), summed over
the model's matmuls, with P_l the matmul weights of layer l and V*d the lm_head:

    forward           sum_l (2 P_l + A)  +  2 V d           A = 2 T d_attn  (QK^T and AV, causal:
                                                                             keys average T/2)
    input gradients   sum_l (2 P_l + 2 A) + 2 V d           needed down to the lowest trainable
                                                             parameter (embeddings: all layers)
    weight gradients  2 * (trainable matmul weights)         frozen weights get none

i.e. a frozen layer costs 4 P per token and a trained one 6 P (the classic 6N only when all is
trained); the embedding lookup's gradient is a scatter, counted as 0.

    python benchmarks/cpt_throughput.py                    # CPU, SmolLM2-135M, fp32 and bf16
    python benchmarks/cpt_throughput.py --device cuda --batch 32 --steps 20 --precision bf16 \
        --random-shape qwen2.5-0.5b                        # what benchmarks/gpu_check.sh runs
    python benchmarks/cpt_throughput.py --random-shape qwen2.5-0.5b --layers 2 --batch 4 \
        --precision fp32 --loss-chunk 0,512 --skip-trainer    # peak memory, 152k vocabulary (a chunk
                                                             # smaller than batch x block, or it is one)
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


SHAPES = {  # published configs (config.json of the hub models), weights random
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=32768),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                       tie_word_embeddings=False, rope_theta=1e6, max_position_embeddings=32768),
}


def random_model(shape: str, out: Path, layers: int = 0) -> str:
    """A random-weight Qwen2 model of a published shape (bf16 safetensors) with a tokenizer that
    fits its vocabulary (SmolLM2's when cached, else a small BPE trained on shipped text)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if (out / "config.json").is_file():
        return str(out)
    dims = dict(SHAPES[shape], **({"num_hidden_layers": layers} if layers else {}))
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(Qwen2Config(**dims, torch_dtype="bfloat16")).to(torch.bfloat16)
    model.save_pretrained(out)
    _tokenizer().save_pretrained(out)
    return str(out)


def _tokenizer():
    try:
        return AutoTokenizer.from_pretrained(fetch("smollm2-135m")["chat"])
    except Exception:  # no SmolLM2 in the cache (offline GPU box): any byte-level BPE will do
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(), decoders.ByteLevel()
        tok.train_from_iterator(_corpus(200_000)[:2000], trainers.BpeTrainer(
            vocab_size=8000, special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def peak_memory(device: str) -> float:
    """Peak memory of this process in GiB (CUDA: allocated by torch; CPU: max resident set)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def matmul_peak(device: str, precision: str = "fp32", seconds: float = 3.0) -> float:
    """FLOP/s of a large square matmul in `precision`: the device's practical peak for it."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 8192 if dev.type == "cuda" else 2048
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
                       device=args.device, compile=args.compile, seed=0, dtype=args.precision,
                       loss_chunk=args.chunk, gradient_checkpointing=args.gradient_checkpointing)
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
                bf16=args.precision == "bf16", torch_compile=args.compile_trainer,
                gradient_checkpointing=args.gradient_checkpointing, disable_tqdm=True)
            Trainer(model=model, args=targs, train_dataset=data,
                    data_collator=default_data_collator, callbacks=[Timer()]).train()
    measured = times[args.warmup:]
    tps = len(measured) * args.batch * args.block / sum(measured)
    return {"which": args.which, "tokens_per_s": tps, "flops_per_token": flops_tok,
            "step_s": [round(t, 3) for t in times], "peak_gib": peak_memory(args.device)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="HF dir (default: the smollm2-135m preset)")
    p.add_argument("--random-shape", choices=sorted(SHAPES), help="random-weight model of a "
                   "published shape instead of --model (built once under $TMPDIR)")
    p.add_argument("--layers", type=int, default=0, help="with --random-shape: fewer layers")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="measured steps per side")
    p.add_argument("--warmup", type=int, default=1, help="steps dropped per side")
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per side (best kept)")
    p.add_argument("--loss-chunk", default="1024", help="elchat side: comma list of loss chunks "
                   "(0: Hugging Face's full-logits loss), one row each")
    p.add_argument("--gradient-checkpointing", action="store_true", help="both sides")
    p.add_argument("--skip-trainer", action="store_true", help="elchat rows only")
    p.add_argument("--compile", action="store_true",
                   help="elchat side: CPTConfig(compile=True), regional torch.compile")
    p.add_argument("--compile-trainer", action="store_true",
                   help="Trainer side: torch_compile=True (not in the ElChat reference)")
    for hidden in ("--which", "--chunk"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    return p


def _side(args, which: str, precision: str, chunk: int) -> dict | None:
    """One side in a fresh subprocess; its RESULT dict (None: it failed, stderr printed)."""
    flags = {k: v for k, v in vars(args).items() if k not in (
        "which", "chunk", "precision", "compile", "compile_trainer", "gradient_checkpointing",
        "skip_trainer", "random_shape", "layers", "loss_chunk")}
    cmd = [sys.executable, __file__, "--which", which, "--precision", precision,
           "--chunk", str(chunk)] + [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    cmd += [f"--{k.replace('_', '-')}" for k in ("compile", "compile_trainer",
                                                "gradient_checkpointing") if getattr(args, k)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        print(f"{which} {precision}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[-1][7:])


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.random_shape:
        tag = f"{args.random_shape}-{args.layers or 'all'}"
        args.model = random_model(args.random_shape, Path(tempfile.gettempdir()) / f"elchat-{tag}",
                                  args.layers)
    if args.model is None:
        args.model = str(fetch("smollm2-135m")["chat"])
    if args.which:  # subprocess: one side only
        args.chunk = int(args.chunk)
        print("RESULT " + json.dumps(_worker(args)))
        return 0
    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    chunks = [int(x) for x in args.loss_chunk.split(",")]
    sides = [("elchat", c) for c in chunks] + ([] if args.skip_trainer else [("trainer", 0)])
    print(f"device {args.device} ({torch.get_num_threads()} threads), model {args.model}")
    print(f"block {args.block}, batch {args.batch}, strategy 2x2ls, {args.steps} measured steps "
          f"after {args.warmup} warm-up, best of {args.repeats} alternating run(s) per side, "
          f"gradient checkpointing {args.gradient_checkpointing}")
    print(f"{'precision':<10}{'run':<18}{'tokens/s':>10}{'TFLOP/s':>9}{'MFU':>7}{'peak GiB':>10}"
          f"{'vs Trainer':>11}")
    for precision in precisions:
        peak = matmul_peak(args.device, precision)
        best = {}
        for _ in range(args.repeats):
            for which, chunk in sides:
                r = _side(args, which, precision, chunk)
                key = f"{which}" + (f" chunk={chunk}" if which == "elchat" else "")
                if r and (key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]):
                    best[key] = r
        ref = best.get("trainer")
        for key, r in best.items():
            achieved = r["tokens_per_s"] * r["flops_per_token"]
            ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
            print(f"{precision:<10}{key:<18}{r['tokens_per_s']:>10.1f}{achieved / 1e12:>9.3f}"
                  f"{achieved / peak:>7.1%}{r['peak_gib']:>10.2f}{ratio:>11}")
        print(f"{precision:<10}matmul peak {peak / 1e9:.1f} GFLOP/s; training FLOPs/token "
              f"{next(iter(best.values()))['flops_per_token'] / 1e6:.1f} M" if best else "")
    print("targets: elchat >= 1.3x Trainer in each precision, MFU >= 60% of the measured peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
