"""The kit's ElChat merge against the authors' released merge script, tensor by tensor.

Runs `merging/src/main.py` of a checkout of github.com/gucci-j/chat-cve (not shipped with the kit;
clone it yourself) with the published pipeline (`add_transition copy_emb --consider_special_tokens`,
layers 0 1 -2 -1, rates 0.3 0.5 0.5 0.3, SLERP) and `elchat.merge.elchat_merge` with its defaults on
the same inputs, and prints the largest difference over all tensors. Inputs: the kit's `nano` chat
model (Llama) and a tiny random Qwen2 with q/k/v biases, each with an adapted model A = C + 3 new
tokens + every weight perturbed (so that layers, norm and biases all differ between A and C).

    python benchmarks/merge_vs_released.py --chat-cve ~/src/chat-cve

Expected: the same tensor names, max |kit - released| at float32 rounding (~2e-7).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from elchat import micro
from elchat.merge import elchat_merge

RELEASED_ARGS = ["--pipeline", "add_transition", "copy_emb", "--consider_special_tokens",
                 "--transition_indices", "0", "1", "-2", "-1",
                 "--transition_rates", "0.3", "0.5", "0.5", "0.3", "--transition_method", "slerp"]


def state(model_dir) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def fake_adapted(chat: Path, out: Path, seed: int) -> Path:
    """C with three Amharic tokens added and every weight moved: a stand-in for VE + CPT."""
    tok = AutoTokenizer.from_pretrained(chat)
    tok.add_tokens(["ሰላም", "ቋንቋ", "ኢትዮጵያ"])
    model = AutoModelForCausalLM.from_pretrained(chat)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_qwen2(tok_dir: Path, out: Path) -> Path:
    """A random 4-layer Qwen2 (hidden 32) with random, non-zero attention biases."""
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(11)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, eos_token_id=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def compare(chat_cve: Path, chat: Path, root: Path, name: str) -> float:
    adapted = fake_adapted(chat, root / f"{name}_adapted", seed=5)
    released = root / f"{name}_released"
    subprocess.run([sys.executable, "main.py", "--model_src_name_or_path", str(adapted),
                    "--model_tgt_name_or_path", str(chat), "--tokenizer_src_name_or_path", str(adapted),
                    *RELEASED_ARGS, "--output_dir", str(released)],
                   check=True, cwd=chat_cve / "merging" / "src", capture_output=True)
    ours = state(elchat_merge(chat, adapted, root / f"{name}_kit")["out"])
    theirs = state(released)
    if set(ours) != set(theirs):
        raise SystemExit(f"{name}: tensor names differ: only kit {sorted(set(ours) - set(theirs))}, "
                         f"only released {sorted(set(theirs) - set(ours))}")
    diffs = {k: (ours[k].double() - theirs[k].double()).abs().max().item() for k in ours}
    worst = max(diffs, key=diffs.get)
    print(f"{name}: {len(ours)} tensors, max |kit - released| = {diffs[worst]:.3g} ({worst})")
    return diffs[worst]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat-cve", type=Path, required=True, help="checkout of gucci-j/chat-cve")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="merge_vs_released_"))
    nano = Path(micro.build("nano", seed=0)["chat"])
    compare(args.chat_cve, nano, root, "nano (llama)")
    compare(args.chat_cve, tiny_qwen2(nano, root / "qwen2_chat"), root, "qwen2 (biases)")


if __name__ == "__main__":
    main()
