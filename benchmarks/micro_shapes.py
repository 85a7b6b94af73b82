"""Cost of one training step of candidate `micro` shapes, fp32 vs bf16 autocast, relative to the
4-layer fp32 step of recipe 3 (the basis of `elchat.micro.SIZES["micro"]`, recipe 4).

    .venv/bin/python benchmarks/micro_shapes.py

CPU seconds (`time.process_time`) on one thread, median of the repeats after a warm-up: a ratio
that holds on a loaded machine, where wall-clock times do not. Batch 16 x 256 tokens, vocab 4096
(the micro pre-training batch).
"""
from __future__ import annotations

import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {"4x128 (recipe 3)": (128, 384, 4), "8x128": (128, 384, 8), "10x128 (recipe 4)": (128, 384, 10),
          "12x96": (96, 288, 12)}


def _model(hidden: int, inter: int, layers: int):
    return LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=inter,
                                        num_hidden_layers=layers, num_attention_heads=4,
                                        num_key_value_heads=2, tie_word_embeddings=False))


def main(repeats: int = 6) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    models = {k: _model(*v) for k, v in SHAPES.items()}
    optim = {k: torch.optim.AdamW(m.parameters(), 1e-3) for k, m in models.items()}
    ids = torch.randint(0, 4096, (16, 256))
    times = {(k, bf16): [] for k in models for bf16 in (False, True)}
    for _ in range(repeats):  # interleaved, so load changes hit every variant alike
        for (k, bf16), seconds in times.items():
            start = time.process_time()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                loss = models[k](input_ids=ids, labels=ids).loss
            loss.backward()
            optim[k].step()
            optim[k].zero_grad()
            seconds.append(time.process_time() - start)
    ref = statistics.median(times[(next(iter(SHAPES)), False)][1:])
    for (k, bf16), seconds in times.items():
        print(f"{k:18s} {'bf16' if bf16 else 'fp32'}  {statistics.median(seconds[1:]) / ref:.2f}x")


if __name__ == "__main__":
    main()
