"""The `micro` preset: a base/chat pair of one family that the kit trains itself, offline.

Chat Vector and LEP need a base model and its chat model; no such pair installs offline, so the
kit builds one from shipped English data (SmolLM2/Qwen shapes at toy scale):

1. Tokenizer: byte-level BPE trained on English running text, with the ChatML specials
   `<|endoftext|>`=0 (pad, document separator), `<|im_start|>`=1, `<|im_end|>`=2 (eos) and a
   ChatML chat template without a default system prompt.
2. Base: a Llama causal LM with untied embeddings, pre-trained from scratch with next-token
   cross-entropy on blocks packed by `elchat.packing` (documents each followed by `<|endoftext|>`),
   one epoch of distinct blocks.
3. Chat: the base fine-tuned (all weights) on ChatML conversations — chatterbot-corpus English
   plus `elchat.instructions` data — with the loss only on assistant tokens (the template marks
   them with `{% generation %}`, so `return_assistant_tokens_mask` gives the mask; labels are -100
   elsewhere), each assistant turn ending in `<|im_end|>`.

Both trainings use continual pre-training's optimizer and schedule (`elchat.cpt.make_optimizer`,
`make_scheduler`): AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warm-up over the
first tenth of the steps, cosine decay to a tenth of the peak rate, gradients clipped at norm 1.

`size="nano"` is the same recipe at test scale (seconds). Outputs go to
`<cache_dir>/models/micro-<size>-seed<seed>/{base,chat}` (atomically), each with a
`build_manifest.json` (seed, data hashes, steps, losses, wall times, config). Seeds, data order and
deterministic kernels make two CPU builds with the same seed bit-identical. The quality checks of
the pair (end of turn, bits per character) are in `elchat.evaluation.turns`.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tokenizer_models
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from . import cpt, instructions
from .atomic import atomic_dir, atomic_write_json
from .data import load_chat, load_texts, take_chars
from .device import cpu_has_native_bf16
from .errors import is_count
from .packing import pack_blocks, token_stream
from .paths import models_cache, tokens_cache

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
RECIPE = 4  # bump when the data or training code changes, so cached pairs are rebuilt
# vocab, model shape, pre-training (steps, batch, block), chat tuning (steps, batch, max len),
# and data budgets: characters for the tokenizer, number of generated instruction examples.
# nano has 2 more steps of each kind than under recipe 2: cpt's schedule (Hugging Face's) takes its
# first step at lr 0, and 14/10 steps bring the losses back to recipe 2's (5.38/5.22 vs 5.39/5.20).
# micro has 10 layers (recipe 4; 4 before): ElChat's transition layers 0, 1, -2, -1 are 4 of 10,
# so under 2x2LS the middle six stay frozen and the merge leaves them alone, as in the paper's
# 24-32-layer models. `bf16`: train under bf16 autocast where the CPU has native bf16
# (`device.cpu_has_native_bf16`), which pays for most of the extra depth: relative step costs in
# `benchmarks/micro_shapes.py` (CPU seconds per step, one thread, so load does not skew them).
SIZES = {
    "micro": dict(vocab=4096, hidden=128, inter=384, layers=10, heads=4, kv_heads=2,
                  pre_steps=150, pre_batch=16, block=256, pre_lr=3e-3,
                  chat_steps=200, chat_batch=16, chat_len=160, chat_lr=1.5e-3,
                  tok_chars=2_000_000, n_instructions=2400, bf16=True),
    "nano": dict(vocab=320, hidden=32, inter=64, layers=4, heads=4, kv_heads=2,
                 pre_steps=14, pre_batch=8, block=64, pre_lr=3e-3,
                 chat_steps=10, chat_batch=8, chat_len=96, chat_lr=1e-3,
                 tok_chars=60_000, n_instructions=64, threads=1),
}
BETAS, WEIGHT_DECAY, MIN_LR_RATIO = (0.9, 0.95), 0.1, 0.1  # the usual small-LM pre-training values


def default_out(size: str = "micro", seed: int = 0) -> Path:
    """Where `build(size, seed)` caches the pair. Example: `default_out("nano").name == "micro-nano-seed0"`."""
    return models_cache() / f"micro-{size}-seed{seed}"


def config_for(size: str = "micro", steps: int | None = None) -> dict:
    """The build recipe for a size; `steps` overrides pre-training steps (chat gets 2/3, >= 1).

    Example: `config_for("nano")["layers"] == 4`.
    """
    if size not in SIZES:
        raise ValueError(f"size={size!r}: expected one of {', '.join(SIZES)}")
    cfg = dict(SIZES[size], size=size, recipe=RECIPE)
    # the precision is part of the recipe: a pair built in fp32 is not the one built in bf16
    cfg["precision"] = "bf16" if cfg.pop("bf16", False) and cpu_has_native_bf16() else "fp32"
    if steps is not None and steps != 0:
        if not is_count(steps, 1):
            raise ValueError(f"steps={steps!r}: expected a positive integer (or 0/None for the default)")
        cfg.update(pre_steps=steps, chat_steps=max(1, 2 * steps // 3))
    return cfg


def check_seed(seed) -> int:
    """`seed` if it is a non-negative integer, else a ValueError naming it. Example: `check_seed(0) == 0`."""
    if not is_count(seed):
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    return seed


@contextlib.contextmanager
def _deterministic(seed: int, threads: int | None = None):
    """Seed every RNG, force deterministic kernels (and optionally a thread count); restore after.

    nano runs on one thread: its matrices are so small that a second thread only adds
    synchronization, which costs 10x on a loaded machine (measured: 1.6 s vs 0.14 s per step).
    """
    previous, prev_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(prev_threads)


@contextlib.contextmanager
def _timed(times: dict, key: str):
    """Add the wall time of the block to `times[key]` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = time.perf_counter() - start


def _sha256(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def english_texts(split: str = "train") -> list[str]:
    """English running text from `elchat.data` (bible-kjv, fortunes, manpages, gnome-user-docs).

    Example: `len(english_texts("test")) > 100`.
    """
    return load_texts("en", split)


def chat_conversations(split: str = "train") -> list[dict]:
    """chatterbot-corpus English conversations (`{"messages": [...]}`) with an assistant turn.

    Example: `chat_conversations("test")[0]["messages"][0]["role"] == "user"`.
    """
    return [c for c in load_chat(split) if any(m["role"] == "assistant" for m in c["messages"])]


def train_tokenizer(texts, vocab_size: int):
    """Byte-level BPE with ChatML specials (ids 0, 1, 2) and the ChatML template.

    Example: `train_tokenizer(["hello world"] * 10, 300).eos_token == "<|im_end|>"`.
    """
    tok = Tokenizer(tokenizer_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=SPECIALS[1:])
    fast.chat_template = CHATML_TEMPLATE
    return fast


def chat_example(tokenizer, messages: list[dict], max_len: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one conversation; labels are -100 outside assistant turns.

    Example: `ids, labels = chat_example(tok, [{"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"}], 64)` -> labels cover "Hello<|im_end|>" only.
    """
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"])[:max_len], list(enc["assistant_masks"])[:max_len]
    return ids, [t if m else -100 for t, m in zip(ids, mask)]


def _batches(n_items: int, batch: int, seed: int):
    """Endless fixed-order stream of index batches: a seeded shuffle per epoch."""
    rng = random.Random(seed)
    while True:
        order = list(range(n_items))
        rng.shuffle(order)
        for i in range(0, n_items - batch + 1 if n_items >= batch else 1, batch):
            yield order[i:i + batch]


def _train(model, make_batch, steps: int, lr: float, desc: str, precision: str = "fp32") -> list[float]:
    """`steps` optimizer steps with cpt's AdamW and schedule; returns the loss of every step.

    `precision="bf16"`: forward and backward under CPU bf16 autocast (matmuls in bf16, weights,
    gradients and optimizer state stay fp32).

    A plain loop rather than `Trainer` or `cpt.train`: at this size their setup and per-step
    overhead would rival the compute, and a short visible loop is exactly reproducible with no
    dataloader workers, accelerator or callbacks in between.
    """
    optimizer = cpt.make_optimizer(model.named_parameters(), lr, WEIGHT_DECAY, betas=BETAS)
    scheduler = cpt.make_scheduler(optimizer, max(1, steps // 10), steps, min_lr_ratio=MIN_LR_RATIO)
    model.train()
    losses = []
    for _ in (bar := tqdm(range(steps), desc=desc, leave=False)):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**make_batch()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def _tokenizer_step(cfg: dict, seed: int) -> dict:
    """Shuffled English documents, the BPE tokenizer trained on their first `tok_chars`, the chats."""
    docs = english_texts("train")
    random.Random(seed).shuffle(docs)
    tok_docs = take_chars(docs, cfg["tok_chars"])
    chats = chat_conversations("train") + instructions.make_examples(cfg["n_instructions"], seed=seed)
    return {"docs": docs, "tok_docs": tok_docs, "tokenizer": train_tokenizer(tok_docs, cfg["vocab"]),
            "chats": chats}


def _new_model(vocab_size: int, cfg: dict):
    """A randomly initialized Llama of the recipe's shape (seeded by the caller)."""
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg["hidden"], intermediate_size=cfg["inter"],
        num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg["kv_heads"], max_position_embeddings=2048,  # RoPE: room for CPT blocks
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=2, pad_token_id=0,
        rope_theta=10000.0))


def _pretrain_blocks(tokenizer, docs: list[str], n_blocks: int, block: int) -> torch.Tensor:
    """`n_blocks` packed blocks (fewer if the corpus runs out) from the shortest document prefix.

    Tokenizing the whole corpus would cost seconds the nano build does not have, so a prefix of
    4 characters per needed token is tried first (English BPE needs fewer) and doubled if short.
    """
    n_chars, total_chars = 4 * n_blocks * block, sum(map(len, docs))
    while True:
        prefix = take_chars(docs, n_chars)
        blocks = pack_blocks(token_stream(tokenizer, prefix, tokens_cache(), desc="tokenize en"), block)
        if len(blocks) >= n_blocks or n_chars >= total_chars:
            return torch.from_numpy(np.asarray(blocks[:n_blocks], dtype=np.int64))
        n_chars *= 2


def _pretrain(model, tokenizer, docs: list[str], cfg: dict, seed: int) -> tuple[torch.Tensor, list[float]]:
    """Next-token pre-training on packed English blocks; returns (blocks, losses)."""
    blocks = _pretrain_blocks(tokenizer, docs, cfg["pre_steps"] * cfg["pre_batch"], cfg["block"])
    order = _batches(len(blocks), cfg["pre_batch"], seed)

    def batch():
        ids = blocks[next(order)]
        return {"input_ids": ids, "labels": ids}
    return blocks, _train(model, batch, cfg["pre_steps"], cfg["pre_lr"], f"pre-train {cfg['size']}",
                          cfg["precision"])


def _chat_tune(model, tokenizer, chats: list[dict], cfg: dict, seed: int) -> tuple[list, list[float]]:
    """Fine-tuning on ChatML conversations, loss on assistant tokens; returns (examples, losses).

    Conversations longer than chat_len are dropped, not cut: a cut answer would teach the model to
    go on past where <|im_end|> belongs.
    """
    examples = [e for e in (chat_example(tokenizer, c["messages"]) for c in chats)
                if len(e[0]) <= cfg["chat_len"] and any(lab != -100 for lab in e[1])]
    order = _batches(len(examples), cfg["chat_batch"], seed + 1)

    def batch():
        rows = [examples[i] for i in next(order)]
        width = max(len(ids) for ids, _ in rows)
        pad = lambda seq, v: seq + [v] * (width - len(seq))  # noqa: E731  right padding
        return {"input_ids": torch.tensor([pad(i, 0) for i, _ in rows]),
                "attention_mask": torch.tensor([pad([1] * len(i), 0) for i, _ in rows]),
                "labels": torch.tensor([pad(lab, -100) for _, lab in rows])}
    return examples, _train(model, batch, cfg["chat_steps"], cfg["chat_lr"], f"chat-tune {cfg['size']}",
                            cfg["precision"])


def _manifest(cfg: dict, seed: int, model, data: dict, blocks, examples, losses: dict, times: dict,
              threads: int) -> dict:
    """What `build_manifest.json` records: recipe, data hashes, losses, wall times, environment."""
    return {
        "size": cfg["size"], "seed": seed, "config": cfg,
        "steps": {"pretrain": cfg["pre_steps"], "chat": cfg["chat_steps"]},
        "final_loss": {k: sum(v[-10:]) / len(v[-10:]) for k, v in losses.items()},
        "wall_time_s": {k: round(v, 2) for k, v in times.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"en_train": {"docs_used_for_tokenizer": len(data["tok_docs"]),
                              "sha256": _sha256(data["docs"]), "pretrain_tokens": blocks.numel()},
                 "chat": {"examples": len(examples),
                          "sha256": _sha256(json.dumps(c["messages"]) for c in data["chats"])}},
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "threads": threads, "machine": platform.machine()},
        "log": losses,
    }


def _write_pair(root: Path, model, base_state: dict, tokenizer, manifest: dict) -> None:
    """Save base (the pre-trained weights) and chat (the current ones) under `root`, atomically."""
    chat_state = copy.deepcopy(model.state_dict())
    with atomic_dir(root) as tmp:
        for role, state in (("base", base_state), ("chat", chat_state)):
            model.load_state_dict(state)
            model.save_pretrained(tmp / role, safe_serialization=True)
            tokenizer.save_pretrained(tmp / role)
            atomic_write_json(tmp / role / "build_manifest.json", dict(manifest, role=role))


def _complete(root: Path, cfg: dict, seed: int) -> bool:
    try:
        manifests = [json.loads((root / r / "build_manifest.json").read_text()) for r in ("base", "chat")]
    except (OSError, ValueError):
        return False
    return all(m.get("seed") == seed and m.get("config") == cfg for m in manifests)


def build(size: str = "micro", seed: int = 0, out=None, rebuild: bool = False,
          steps: int | None = None) -> dict:
    """Build (or reuse from cache) the micro base/chat pair; returns `{"base": Path, "chat": Path}`.

    Example: `pair = build("nano")` -> `AutoModelForCausalLM.from_pretrained(pair["chat"])`.
    """
    cfg = config_for(size, steps)
    check_seed(seed)
    root = Path(out) if out is not None else default_out(size, seed)
    pair = {"base": root / "base", "chat": root / "chat"}
    if not rebuild and _complete(root, cfg, seed):
        return pair
    times = {}
    with _timed(times, "total_s"), _deterministic(seed, cfg.get("threads")):
        with _timed(times, "data_tokenizer_s"):
            data = _tokenizer_step(cfg, seed)
        tokenizer = data["tokenizer"]
        with _timed(times, "pretrain_s"):
            model = _new_model(len(tokenizer), cfg)
            blocks, pre_losses = _pretrain(model, tokenizer, data["docs"], cfg, seed)
            base_state = copy.deepcopy(model.state_dict())
        with _timed(times, "chat_s"):
            examples, chat_losses = _chat_tune(model, tokenizer, data["chats"], cfg, seed)
        threads = torch.get_num_threads()
    manifest = _manifest(cfg, seed, model, data, blocks, examples,
                         {"pretrain": pre_losses, "chat": chat_losses}, times, threads)
    _write_pair(root, model, base_state, tokenizer, manifest)
    return pair
