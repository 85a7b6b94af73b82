"""Which steps are bitwise reproducible on one machine: the whole chain on the nano pair (build,
CPT with 2x2LS, ElChat merge, target bits/char, greedy replies) run twice in this process and once
in a fresh Python process, with the same seed and thread count, gives identical bytes.

What this does NOT promise (and why numbers differ between machines of "the same kind"): float
addition is not associative, and torch's CPU kernels (oneDNN/MKL GEMMs, fused attention) choose
their blocking and vector width from the CPU's instruction set (AVX2, AVX-512, AMX) and from the
thread count, so another CPU model or thread count sums in another order and rounds differently;
bf16 autocast is used only where the CPU has native bf16 (`device.cpu_has_native_bf16`), so the
same recipe runs in another precision there. Those last-bit differences grow through training and
flip greedy-decoding choices, so a 20-item generation score moves by whole items. The intervals and
paired comparisons are what survive such a rerun, not the point values.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i % 7} times." for i in range(40)]
THREADS = 1


def _digest(path: Path) -> str:
    return hashlib.sha256((Path(path) / "model.safetensors").read_bytes()).hexdigest()


def chain(out: Path, pair: dict | None = None) -> dict:
    """Every stage's output fingerprint for one seed: weights' sha256, bpc, greedy token ids.

    `pair`: an already built nano pair (else it is built here, seed 0)."""
    from elchat import cpt, merge, micro
    from elchat.evaluation import bpc
    from elchat.evaluation.generate import load

    torch.set_num_threads(THREADS)
    out = Path(out)
    pair = pair or micro.build("nano", seed=0, out=out / "pair")
    config = cpt.CPTConfig(max_steps=3, block_size=32, batch_size=2, eval_every=0, save_every=0, lr=1e-2,
                           cache_dir=str(out / "tokens"))
    cpt.train(pair["chat"], DOCS, DOCS[:2], out / "cpt", config, progress=False)
    merge.elchat_merge(pair["chat"], out / "cpt", out / "elchat")
    model, tok = load(out / "elchat", "cpu")
    nll = bpc.text_nlls(model, tok, DOCS[:4], max_length=64)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hello there"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        reply = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)[0].tolist()
    return {"base": _digest(pair["base"]), "chat": _digest(pair["chat"]), "cpt": _digest(out / "cpt"),
            "elchat": _digest(out / "elchat"), "nll": [float(x[0]).hex() for x in nll], "reply": reply}


def test_chain_is_bitwise_reproducible_in_and_across_processes(tiny_pair, tmp_path):
    """The session's nano pair (built in this process) and the chain on it, twice here, once in a
    fresh process that builds its own pair."""
    first, second = chain(tmp_path / "a", tiny_pair), chain(tmp_path / "b", tiny_pair)
    assert first == second                                  # same process, same seed: same bytes
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "c")], env=env, capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh == first                                   # a new process: same bytes
    assert len(set(first[k] for k in ("base", "chat", "cpt", "elchat"))) == 4  # every stage changed the weights


if __name__ == "__main__":
    print(json.dumps(chain(Path(sys.argv[1]))))
