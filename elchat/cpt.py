"""Stage 02: continual pre-training (CPT) of an expanded model on unlabeled target-language text.

Objective: causal-LM next-token loss on packed blocks (see `elchat.packing`),

    L(theta) = - 1/(N*B) * sum_blocks sum_i log p_theta(x_i | x_<i),

minimized with AdamW (decoupled weight decay on matrices only, as HF `Trainer`), a cosine schedule
with linear warmup, gradient clipping at 1.0. Only a subset of parameters is trained (strategy;
the names, the transition layers and the learning rates are published in `elchat.method`):

    2x2ls       transition layers (method.TRANSITION_LAYERS: 0, 1, -2, -1) + input embeddings +
                lm_head + final norm (ElChat default, Yamaguchi et al. 2025: first/last 2
                layers hold most language-specific work)
    embeddings  input embeddings + lm_head only                                  (LEP donor, Tikhomirov
                & Chernyshev 2024)
    full        every parameter
    lora        LoRA (Hu et al. 2022) on attention/MLP projections, embeddings + lm_head fully
                trained (peft `modules_to_save`, tying kept), merged into the weights when saved.

With tied embeddings (SmolLM2) the shared matrix is one trainable parameter.

`train` is a short recipe over named steps: `_setup_data` (tokenize and pack), `_setup_model`
(load, freeze, compile), `_setup_optimizer` (AdamW + schedule), `_resume_or_start`, then per step
`_train_step`, `_log_row`, `_validation_row`, `_checkpoint`, and `_finalize` (merge LoRA, dtype,
summary, atomic write).

Reliability (`elchat.checkpoint`): every `save_every` steps the trainable tensors, optimizer,
scheduler and RNG states and the step go to `out_dir/checkpoints/last/` atomically; `resume=True`
continues from it bit-exactly on CPU. At the end the model (+ tokenizer) is written atomically as a
Hugging Face directory at `out_dir` with `log.csv`, `log.json`, `cpt_summary.json`; the checkpoints
are dropped then (the final model is the result; rerunning with `resume=True` returns it at once).
While training, `out_dir` holds only logs and checkpoints (no `config.json`), so a later stage
cannot load a half-trained model.

Scale: the loop is written against `accelerate.Accelerator`, so one script runs on a CPU, one GPU,
or several GPUs (DDP, or FSDP via `accelerate config`):

    accelerate launch --num_processes 8 -m elchat.cli cpt --model runs/x/01_vocab/chat_ve \\
        --lang am --strategy 2x2ls --max-tokens 500_000_000 --out runs/x/02_cpt/chat_cpt --resume

Each process reads its own disjoint blocks; the global batch is batch_size * grad_accum * processes.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from tqdm.auto import tqdm
from transformers import (AutoConfig, get_cosine_schedule_with_warmup,
                          get_cosine_with_min_lr_schedule_with_warmup)

from . import checkpoint, data, method, runs
from .atomic import atomic_dir, atomic_write_json, atomic_write_text
from .chunked_loss import loss_module
from .device import pick_device, pick_dtype
from .model_files import check_model_dir, load_model, load_tokenizer  # strict; not via .models (cycle)
from .evaluation.bpc import bits_per_char
from .packing import pack_blocks, token_stream

try:  # regional compilation exists since accelerate 1.7; only compile=True needs it
    from accelerate.utils import compile_regions
except ImportError:  # pragma: no cover - older accelerate
    compile_regions = None

SNAPSHOTS = "snapshots"  # sub-directory of a run's output directory with its kept models
TRACKER = "tracker"      # sub-directory with the experiment tracker's offline logs
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Changing these between a run and its resume does not change the trained weights.
_RESUME_FREE = {"save_every", "compile", "cache_dir", "device", "log_with"}
TRACKERS = ("none", "tensorboard", "trackio")  # accelerate log_with backends (offline)
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)  # engines that split the weights
LOG_COLUMNS = ["step", "tokens", "epoch", "lr", "train_loss", "valid_loss", "valid_bpc",
               "tokens_per_s", "elapsed_s"]
# cpt_summary.json key -> column of the stage's summary.csv
SUMMARY_COLUMNS = {"strategy": "strategy", "steps": "steps", "tokens": "tokens",
                   "trainable_params": "trainable params", "final_train_loss": "train loss",
                   "final_valid_loss": "valid loss", "final_valid_bpc": "valid BPC",
                   "train_tokens_per_s": "tokens/s"}


def check_strategy(value, name: str = "strategy") -> str:
    """`value` if it is a CPT strategy of `elchat.method`, else an error naming `name`.

    Example: `check_strategy("2x2ls") == "2x2ls"`; `check_strategy("x", "base_strategy_lep")` raises.
    """
    if value not in method.CPT_STRATEGIES:
        raise ValueError(f"{name}={value!r}: unknown CPT strategy; choose one of "
                         f"{', '.join(method.CPT_STRATEGIES)}")
    return value


@dataclass
class CPTConfig:
    """Every CPT setting with its default (source in brackets).

    The strategies, the transition layers and the published learning rates are defined once in
    `elchat.method` (`CPT_STRATEGIES`, `TRANSITION_LAYERS`, `default_lr`):

    | strategy     | trains                                              | lr when None                    |
    |--------------|-----------------------------------------------------|---------------------------------|
    | `2x2ls`      | `layers` + input embeddings + lm_head + final norm  | method.CPT_DEFAULT_LR           |
    | `embeddings` | input embeddings + lm_head                          | method.CPT_LR["embeddings"]     |
    | `full`       | every parameter                                     | method.CPT_DEFAULT_LR           |
    | `lora`       | LoRA adapters + input embeddings + lm_head          | method.CPT_DEFAULT_LR           |

    Example: `CPTConfig(strategy="embeddings", max_steps=200)` (lr resolves to 1e-4).
    """

    strategy: str = "2x2ls"              # trainable subset: one of method.CPT_STRATEGIES [ElChat]
    layers: tuple = method.TRANSITION_LAYERS  # transformer layers trained by 2x2ls [ElChat]
    lr: float | None = None              # peak lr; None: method.default_lr(strategy) [ElChat, LEP]
    weight_decay: float = 0.01           # AdamW decoupled decay on matrices [ElChat]
    warmup_ratio: float = 0.05           # linear warmup share of the steps, then cosine [ElChat]
    max_grad_norm: float = 1.0           # gradient clipping (HF Trainer default) [ElChat]
    max_steps: int = 1000                # optimizer steps budget
    max_tokens: int = 0                  # token budget; > 0 overrides max_steps (rounded up)
    block_size: int = 512                # tokens per packed block [ElChat]
    batch_size: int = 8                  # blocks per micro-batch per process
    grad_accum: int = 1                  # micro-batches per optimizer step
    log_every: int = 10                  # steps between train-loss rows
    eval_every: int = 100                # steps between validation rows (0: only at the end)
    save_every: int = 100                # steps between checkpoints (0: none)
    eval_max_docs: int = 200             # validation documents used for loss and BPC
    seed: int = 0                        # data order, LoRA init, dropout
    device: str = "auto"                 # auto | cpu | cuda | mps  (elchat.device.pick_device)
    dtype: str = "auto"                  # auto: bf16 autocast where native (Ampere+ GPUs, CPUs
                                         # with AVX512-BF16/AMX), fp16 + loss scaling on older
                                         # GPUs, else fp32; master weights always fp32
    loss_chunk: int = 1024               # positions per chunk of the loss: never the full logits
                                         # (elchat.chunked_loss); 0: Hugging Face's loss
    log_with: str = "none"               # experiment tracker via accelerate: none, tensorboard,
                                         # trackio (offline files under out_dir/tracker)
    gradient_checkpointing: bool = False  # trade ~30% compute for activation memory
    compile: bool = False                # torch.compile each decoder layer (regional; ~1.2x on CPU
                                         # after a compile of minutes, see benchmarks/)
    lora_r: int = 16                     # LoRA rank [Hu et al. 2022]
    lora_alpha: int = 32                 # LoRA scale alpha/r
    lora_dropout: float = 0.05           # LoRA dropout
    cache_dir: str | None = None         # tokenized corpora; None: $ELCHAT_CACHE/tokens
    snapshots: tuple = ()                # fractions of the run (0 < f < 1) at which a full HF model
                                         # is kept in out_dir/snapshots/step-N (forgetting curves)

    def __post_init__(self):
        check_strategy(self.strategy)
        try:
            self.layers = tuple(int(i) for i in self.layers)
        except (TypeError, ValueError):
            raise ValueError(f"layers={self.layers!r}: expected layer indices such as "
                             f"{list(method.TRANSITION_LAYERS)}") from None
        if self.strategy == "2x2ls" and not self.layers:
            raise ValueError("layers=(): 2x2ls needs at least one layer index, e.g. "
                             f"{method.TRANSITION_LAYERS}")
        if self.lr is None:
            self.lr = method.default_lr(self.strategy)
        if self.log_with not in TRACKERS:
            raise ValueError(f"log_with={self.log_with!r}: expected one of {', '.join(TRACKERS)}")
        for name in ("max_steps", "max_tokens", "log_every", "eval_every", "save_every", "seed",
                     "loss_chunk"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 0")
        for name in ("block_size", "batch_size", "grad_accum", "eval_max_docs", "lora_r"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 1")
        if self.block_size < 2:
            raise ValueError(f"block_size={self.block_size}: must be at least 2")
        if self.max_steps == 0 and self.max_tokens == 0:
            raise ValueError("no budget: give max_steps > 0 or max_tokens > 0")
        if not (self.lr > 0) or not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0:
            raise ValueError(f"lr={self.lr}, warmup_ratio={self.warmup_ratio}, weight_decay="
                             f"{self.weight_decay}: need lr > 0, 0 <= warmup_ratio < 1, decay >= 0")
        self.snapshots = _check_snapshots(self.snapshots)
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"dtype={self.dtype!r}: expected auto, bf16, fp16 or fp32")

    def total_steps(self, tokens_per_step: int) -> int:
        """Optimizer steps of the run. Example: `CPTConfig(max_tokens=4096).total_steps(2048) == 2`."""
        return math.ceil(self.max_tokens / tokens_per_step) if self.max_tokens else self.max_steps

    def snapshot_steps(self, total: int) -> list[int]:
        """The steps whose model is kept: round(f * total) per fraction, in 1..total-1, distinct.

        Example: `CPTConfig(snapshots=(0.25, 0.5)).snapshot_steps(8) == [2, 4]`.
        """
        return sorted({s for s in (round(f * total) for f in self.snapshots) if 0 < s < total})


def _check_snapshots(value) -> tuple:
    """`value` as a sorted tuple of fractions in (0, 1), else an error naming `snapshots`."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"snapshots={value!r}: expected a list of fractions of the run, "
                         "e.g. [0.25, 0.5]")
    fractions = []
    for f in value:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise ValueError(f"snapshots={list(value)!r}: each entry must be a fraction "
                             "0 < f < 1 of the run's steps (the final model is the run's result)")
        fractions.append(float(f))
    return tuple(sorted(set(fractions)))


def _config_json(config: CPTConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def _decoder_layers(model):
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer layers of {type(model).__name__}")


def _final_norm(model):
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    for name in ("norm", "final_layernorm", "ln_f"):
        if hasattr(decoder, name):
            return getattr(decoder, name)
    raise ValueError(f"cannot find the final norm of {type(model).__name__} (for 2x2ls)")


def _lora_model(model, config: CPTConfig):
    from peft import LoraConfig, get_peft_model  # optional, slow import: only the lora strategy

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    embeddings = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                  if m is model.get_input_embeddings() or m is model.get_output_embeddings()}
    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                             lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
                             target_modules=[t for t in LORA_TARGETS if t in names],
                             modules_to_save=sorted(embeddings),
                             ensure_weight_tying=bool(model.config.tie_word_embeddings))
    return get_peft_model(model, lora_config)


def apply_strategy(model, config: CPTConfig):
    """Freeze `model` per `config.strategy`; returns the model to train (a peft model for lora).

    Example: `m = apply_strategy(model, CPTConfig(strategy="embeddings"))`.
    """
    for p in model.parameters():
        p.requires_grad_(config.strategy == "full")
    if config.strategy == "full":
        return model
    if config.strategy == "lora":
        return _lora_model(model, config)
    trainable = [model.get_input_embeddings(), model.get_output_embeddings()]
    if config.strategy == "2x2ls":
        blocks = _decoder_layers(model)
        trainable += [blocks[i] for i in method.resolve_layers(config.layers, len(blocks))]
        trainable.append(_final_norm(model))
    for module in trainable:
        if module is not None:
            module.requires_grad_(True)
    return model


def _mixed_precision(config: CPTConfig) -> tuple[bool, str]:
    """(run on the CPU?, accelerate mixed_precision): the autocast precision over fp32 weights;
    fp16 gets accelerate's loss scaler (GradScaler)."""
    device = pick_device(config.device)
    dtype = pick_dtype(device, config.dtype, compute=True)
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("dtype='fp16' on the CPU: fp16 autocast there is slow and needs loss "
                         "scaling; use dtype='bf16' (or 'auto') or 'fp32'")
    mp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    return device.type == "cpu", mp


def _check_inputs(model_dir: Path, train_texts, config: CPTConfig):
    """Everything checkable from config.json + tokenizer, before loading weights or writing."""
    check_model_dir(model_dir, tokenizer=True)  # safetensors covering the architecture, tokenizer files
    model_config = AutoConfig.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    if model_config.vocab_size < len(tokenizer):
        raise ValueError(f"{model_dir}: model vocab size {model_config.vocab_size} < tokenizer "
                         f"length {len(tokenizer)}; the embeddings were not resized for the expanded "
                         "tokenizer (run stage 01, elchat.embeddings.resize_and_initialize, first)")
    max_pos = getattr(model_config, "max_position_embeddings", None)
    if max_pos is not None and config.block_size > max_pos:
        raise ValueError(f"block_size={config.block_size} exceeds the model's "
                         f"max_position_embeddings={max_pos}; use block_size <= {max_pos}")
    if config.strategy == "2x2ls":
        method.resolve_layers(config.layers, model_config.num_hidden_layers)
    if isinstance(train_texts, str):
        raise ValueError("train_texts must be a list of documents, not one string")
    texts = [t for t in train_texts if t and t.strip()]
    if not texts:
        raise ValueError("the training corpus is empty (no non-blank documents)")
    return model_config, tokenizer, texts


def _block_order(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_blocks)


class _Blocks:
    """Deterministic block sampler: sample k of the run is a pure function of (seed, k)."""

    def __init__(self, blocks: np.ndarray, seed: int):
        self.blocks, self.seed, self._orders = blocks, seed, {}

    def batch(self, first: int, size: int) -> torch.Tensor:
        n, rows = len(self.blocks), []
        for k in range(first, first + size):
            epoch = k // n
            if epoch not in self._orders:
                self._orders = {epoch: _block_order(n, self.seed, epoch)}
            rows.append(self.blocks[self._orders[epoch][k % n]])
        return torch.from_numpy(np.stack(rows).astype(np.int64))


def _write_logs(out_dir: Path, rows: list[dict]):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in LOG_COLUMNS} for r in rows])
    atomic_write_text(out_dir / "log.csv", buf.getvalue())
    atomic_write_json(out_dir / "log.json", rows)


def make_optimizer(named_params, lr: float, weight_decay: float, betas=(0.9, 0.999)):
    """AdamW with decoupled weight decay on matrices only (norms and biases get none, as HF Trainer).

    `named_params`: (name, parameter) pairs of the trainable parameters. The fused kernel is used
    where torch has it for the device/dtype. Example: `make_optimizer(model.named_parameters(), 1e-4, 0.01)`.
    """
    named = list(named_params)
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)
    except (RuntimeError, ValueError):  # fused kernel not built for this device/dtype
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


def make_scheduler(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Linear warm-up to the peak lr, then cosine decay to `min_lr_ratio` x peak at `total_steps`.

    lr(s) = peak * s / w for s < w, else peak * (m + (1 - m) * (1 + cos(pi * (s - w) / (T - w))) / 2).
    Example: `make_scheduler(opt, 5, 100)` (decays to 0), `make_scheduler(opt, 5, 100, 0.1)`.
    """
    if min_lr_ratio:
        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup_steps, total_steps,
                                                          min_lr_rate=min_lr_ratio)
    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)


@dataclass
class _Data:
    """The packed corpus of a run."""

    blocks: np.ndarray                  # training blocks (block_size tokens each)
    valid_blocks: np.ndarray | None     # packed validation text; None: too little (no validation)
    valid_docs: list[str]               # validation documents for BPC


@dataclass
class _Run:
    """What the steps of one run share. `step`, `rows` and `window` are its position (checkpointed)."""

    config: CPTConfig
    model_dir: Path
    out_dir: Path
    tokenizer: object
    data: _Data
    accelerator: Accelerator
    raw_model: torch.nn.Module          # as loaded and frozen: what is merged and saved at the end
    model: torch.nn.Module              # what is trained: compiled, then wrapped by accelerate
    named: list                         # (name, parameter) of the trainable parameters
    optimizer: torch.optim.Optimizer
    scheduler: object
    total: int                          # optimizer steps of the run
    tokens_per_step: int
    sampler: _Blocks                    # which blocks each step reads
    step: int = 0
    rows: list = field(default_factory=list)      # log rows (log.csv / log.json)
    window: list = field(default_factory=lambda: [0.0, 0])  # [loss sum, steps] since the last row
    resumed_from: int | None = None
    elapsed_before: float = 0.0         # seconds trained before this session (a resumed run)
    started: float = 0.0                # perf_counter at the start of this session's loop
    window_start: float = 0.0           # perf_counter at the last train row (evaluation excluded)
    window_step: int = 0                # step of the last train row
    source_dtype: torch.dtype = torch.float32  # dtype the model is saved in (as it came)
    snapshots: list = field(default_factory=list)  # [{"step", "tokens", "path"}] written so far
    sharded: bool = False               # FSDP/DeepSpeed: weights split over the processes
    seconds: dict = field(default_factory=lambda: dict.fromkeys(
        ("setup", "train", "eval", "checkpoint", "snapshot", "save"), 0.0))  # this session's time


def _finished_summary(out_dir: Path, model_dir: Path, config: CPTConfig) -> dict | None:
    """The summary of a finished run at `out_dir` with the same settings and source, else None."""
    summary_path = out_dir / "cpt_summary.json"
    if runs.has_model(out_dir) and summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("config") == _config_json(config) and done.get("model_dir") == str(model_dir):
            return done
    return None


def validation_docs(valid_texts, max_docs: int) -> list[str]:
    """The documents CPT validates on: the non-empty ones, the first `max_docs` (`eval_max_docs`).

    Example: `validation_docs(["a", " ", "b"], 1) == ["a"]`.
    """
    return [t for t in (valid_texts or []) if t and t.strip()][:max_docs]


def _setup_data(tokenizer, texts: list[str], valid_texts, config: CPTConfig) -> _Data:
    """Tokenize (cached) and pack the training and validation documents."""
    stream = token_stream(tokenizer, texts, config.cache_dir, desc="tokenize train")
    blocks = pack_blocks(stream, config.block_size)
    if len(blocks) == 0:
        raise ValueError(f"the training corpus has {len(stream)} tokens, fewer than one block of "
                         f"{config.block_size}; give more text or a smaller block_size")
    valid_docs = validation_docs(valid_texts, config.eval_max_docs)
    valid_stream = token_stream(tokenizer, valid_docs, config.cache_dir, desc="tokenize valid")
    valid_blocks = (pack_blocks(valid_stream, min(config.block_size, len(valid_stream)))
                    if len(valid_stream) >= 2 else None)
    return _Data(blocks, valid_blocks, valid_docs)


def _setup_model(model_dir: Path, config: CPTConfig):
    """(raw model, model to train, trainable (name, parameter) pairs): seeded fp32 load (the
    master weights), freeze per strategy, optional gradient checkpointing and regional
    compilation, wrapped so that forward(ids) returns the loss (chunked where the head allows)."""
    random.seed(config.seed)  # LoRA init and dropout draw from these generators
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = load_model(model_dir, device="cpu", dtype="fp32")  # accelerate moves it
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_strategy(model, config)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trained = model
    if config.compile:  # regional: one decoder layer is compiled and reused by all (fast start)
        if compile_regions is None:
            raise ValueError("compile=True needs accelerate >= 1.7 (accelerate.utils.compile_regions)")
        trained = compile_regions(model)  # shares the parameters of `model`
    return model, loss_module(trained, config.loss_chunk), named


def _setup_optimizer(named: list, config: CPTConfig, processes: int):
    """(optimizer, scheduler, total steps, tokens per step) of the run."""
    optimizer = make_optimizer(named, config.lr, config.weight_decay)
    tokens_per_step = config.batch_size * config.grad_accum * processes * config.block_size
    total = config.total_steps(tokens_per_step)
    scheduler = make_scheduler(optimizer, math.ceil(config.warmup_ratio * total), total)
    return optimizer, scheduler, total, tokens_per_step


def _resume_or_start(run: _Run, resume: bool) -> None:
    """Continue from the last checkpoint, or forget what an earlier run left in `out_dir`.
    Called after `accelerator.prepare` (sharded engines restore into the prepared model)."""
    accelerator = run.accelerator
    if resume and accelerator.is_main_process:
        checkpoint.find_checkpoint(run.out_dir)  # recover an interrupted rename, once
    accelerator.wait_for_everyone()
    found = checkpoint.find_checkpoint(run.out_dir) if resume else None
    args = (_config_json(run.config), len(run.data.blocks))
    if found is not None and run.sharded:
        state = checkpoint.restore_sharded_checkpoint(
            found, _shard_io(run, checkpoint.dcp_reader, accelerator.load_state), run.scheduler,
            *args, free=_RESUME_FREE)
    elif found is not None:
        state = checkpoint.restore_checkpoint(found, run.named, run.optimizer, run.scheduler,
                                              *args, free=_RESUME_FREE)
    if found is not None:
        run.step, run.rows, run.window = state["step"], state["rows"], state["window"]
        run.snapshots = state.get("snapshots", [])
        run.resumed_from = run.step
    elif run.accelerator.is_main_process:
        shutil.rmtree(run.out_dir / checkpoint.CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(run.out_dir / SNAPSHOTS, ignore_errors=True)
        for name in ("log.csv", "log.json"):
            (run.out_dir / name).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def _shard_io(run: _Run, dcp_io, accelerate_io):
    """The shard writer/reader of a sharded engine: torch.distributed.checkpoint for FSDP,
    accelerate's save_state/load_state for DeepSpeed (its engine saves its own ZeRO shards)."""
    if run.accelerator.distributed_type == DistributedType.DEEPSPEED:
        return lambda directory: accelerate_io(str(directory))
    return dcp_io(run.model, run.optimizer)


def _evaluate(run: _Run) -> dict:
    """Validation BPC (elchat.evaluation.bpc) on the valid documents and the validation loss
    (nats per scored token) from the same pass: one forward over the documents, in the training
    precision (bf16 autocast where training uses it). Every process computes the same numbers
    (under FSDP the forward is a collective, so all must take part)."""
    model, config, accelerator = run.model, run.config, run.accelerator
    start = time.perf_counter()
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        scored = bits_per_char(accelerator.unwrap_model(model).lm, run.tokenizer,
                               run.data.valid_docs, max_length=config.block_size,
                               batch_size=config.batch_size)
    model.train()
    run.seconds["eval"] += time.perf_counter() - start
    return {"valid_loss": scored["nll_nats"] / max(scored["tokens"], 1), "valid_bpc": scored["bpc"]}


def _non_finite_loss(run: _Run, value: float, lr: float) -> FloatingPointError:
    last = checkpoint.find_checkpoint(run.out_dir)
    kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written yet"
    return FloatingPointError(
        f"training loss is {value} at step {run.step} (strategy {run.config.strategy}, "
        f"lr {lr:.3g}); stopped, {kept}. Lower lr, check the data or use "
        "dtype='fp32', then rerun (resume=True continues from the checkpoint)")


def _train_step(run: _Run, lr: float) -> float:
    """One optimizer step over `grad_accum` micro-batches; returns its mean loss as a tensor.

    No host sync: the loss stays on the device until the next log row (which checks it is
    finite); a checkpoint is never written from non-finite weights (`_checkpoint`).
    """
    config, accelerator = run.config, run.accelerator
    accum, micro, world = config.grad_accum, config.batch_size, accelerator.num_processes
    loss_sum = torch.zeros((), device=accelerator.device)
    for a in range(accum):
        # process r of w reads samples [(k * w + r) * micro, ...): the global batch of step k is
        # the same blocks for any number of processes with the same batch * processes
        first = ((run.step * accum + a) * world + accelerator.process_index) * micro
        ids = run.sampler.batch(first, micro).to(accelerator.device, non_blocking=True)
        # gradients are all-reduced across processes once, on the last micro-batch
        with contextlib.nullcontext() if a == accum - 1 else accelerator.no_sync(run.model):
            loss = run.model(ids)
            accelerator.backward(loss / accum)
        loss_sum += loss.detach().float() / accum
    if config.max_grad_norm:
        accelerator.clip_grad_norm_([p for _, p in run.named], config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum


def _due(every: int, run: _Run) -> bool:
    return bool(every and run.step % every == 0) or run.step == run.total


def _log_row(run: _Run, lr: float, bar) -> dict | None:
    """The train-loss row of this step (every `log_every` steps and the last), else None."""
    if not _due(run.config.log_every, run):
        return None
    device = run.accelerator.device
    local = torch.as_tensor(run.window[0], dtype=torch.float32, device=device) / run.window[1]
    mean = run.accelerator.reduce(local, "mean").item()  # the one host sync per log row
    now = time.perf_counter()
    if not math.isfinite(mean):
        raise _non_finite_loss(run, mean, lr)
    tokens = run.step * run.tokens_per_step
    tps = (run.step - run.window_step) * run.tokens_per_step / max(now - run.window_start, 1e-9)
    row = {"step": run.step, "tokens": tokens,
           "epoch": round(tokens / run.config.block_size / len(run.data.blocks), 6), "lr": lr,
           "train_loss": mean, "tokens_per_s": round(tps, 2),
           "elapsed_s": round(run.elapsed_before + now - run.started, 3)}
    run.window, run.window_start, run.window_step = [0.0, 0], now, run.step
    bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{tps:.0f}")
    return row


def _validation_row(run: _Run, row: dict | None, lr: float) -> dict | None:
    """`row` with the validation loss and BPC added when an evaluation is due."""
    if run.data.valid_blocks is None or not _due(run.config.eval_every, run):
        return row
    eval_start = time.perf_counter()
    row = row or {"step": run.step, "tokens": run.step * run.tokens_per_step, "lr": lr,
                  "elapsed_s": round(run.elapsed_before + time.perf_counter() - run.started, 3)}
    row.update(_evaluate(run))
    run.window_start += time.perf_counter() - eval_start  # tokens/s counts training time only
    return row


def _checkpoint(run: _Run, lr: float) -> None:
    """Save a checkpoint every `save_every` steps (never the last: the final model follows).

    Every process takes part: the finiteness check is agreed by all (one all-reduce), then the
    main process writes a single-model checkpoint, or all write their shards (FSDP/DeepSpeed).
    """
    config, accelerator = run.config, run.accelerator
    if not (config.save_every and run.step % config.save_every == 0 and run.step < run.total):
        return
    local = [p.to_local() if hasattr(p, "to_local") else p for _, p in run.named]
    finite = torch.stack([torch.isfinite(p).all() for p in local]).all().float()
    if accelerator.reduce(finite, "sum").item() < accelerator.num_processes:  # never save a bad state
        raise FloatingPointError(
            f"non-finite weights after step {run.step} (strategy {config.strategy}, lr "
            f"{lr:.3g}); stopped before checkpointing, the last good checkpoint "
            f"({checkpoint.find_checkpoint(run.out_dir) or 'none yet'}) is kept. Lower lr and rerun")
    path = run.out_dir / checkpoint.CHECKPOINTS / checkpoint.LAST
    state = {"step": run.step, "rows": run.rows, "window": [float(run.window[0]), run.window[1]],
             "n_blocks": len(run.data.blocks), "config": _config_json(config),
             "snapshots": run.snapshots, "model_dir": str(run.model_dir),
             "processes": accelerator.num_processes}
    if run.sharded:
        checkpoint.save_sharded_checkpoint(
            path, _shard_io(run, checkpoint.dcp_writer, accelerator.save_state), run.scheduler,
            state, accelerator.is_main_process, accelerator.wait_for_everyone)
    elif accelerator.is_main_process:
        checkpoint.save_checkpoint(path, run.named, run.optimizer, run.scheduler, state)


def _train_loop(run: _Run, bar) -> None:
    """Train from `run.step` to `run.total`, logging, validating and checkpointing on the way."""
    run.elapsed_before = next((r["elapsed_s"] for r in reversed(run.rows)
                               if r.get("elapsed_s") is not None), 0.0)
    run.started = run.window_start = time.perf_counter()
    run.window_step = run.step
    if run.step == 0 and run.data.valid_blocks is not None:  # the curves' start: stage 01's init
        run.rows.append({"step": 0, "tokens": 0, "lr": run.scheduler.get_last_lr()[0],
                         **_evaluate(run)})
        run.window_start = time.perf_counter()
    run.model.train()
    while run.step < run.total:
        lr = run.scheduler.get_last_lr()[0]
        loss = _train_step(run, lr)
        run.step += 1
        run.window = [run.window[0] + loss, run.window[1] + 1]
        bar.update(1)
        row = _validation_row(run, _log_row(run, lr, bar), lr)
        if row is not None:
            run.rows.append(row)
            if run.accelerator.is_main_process:
                _write_logs(run.out_dir, run.rows)
            if run.config.log_with != "none":
                run.accelerator.log({k: v for k, v in row.items() if v is not None}, step=run.step)
        tick = time.perf_counter()
        _snapshot(run)  # before the checkpoint, whose state lists the snapshots written
        run.seconds["snapshot"] += time.perf_counter() - tick
        _checkpoint(run, lr)
        run.seconds["checkpoint"] += time.perf_counter() - tick
    run.seconds["checkpoint"] -= run.seconds["snapshot"]
    run.seconds["train"] = (time.perf_counter() - run.started - run.seconds["eval"]
                            - run.seconds["checkpoint"] - run.seconds["snapshot"])


def _saved_model(run: _Run, final: bool):
    """The model as saved: LoRA merged (into a copy while training goes on), else the raw model."""
    if run.config.strategy != "lora":
        return run.raw_model
    return (run.raw_model if final else copy.deepcopy(run.raw_model)).merge_and_unload()


def _write_model(run: _Run, path: Path, model, extra=None) -> None:
    """Write `model`'s current weights (in the source dtype) + tokenizer as an HF directory at
    `path`, atomically, from the main process, then `extra(tmp)` (more files inside); the training
    weights stay fp32. Under FSDP/DeepSpeed the shards are gathered first (every process calls
    this; only the main process writes)."""
    accelerator = run.accelerator
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        state = accelerator.get_state_dict(run.model)  # ZeRO-3 gathers to the main process
        state = {k.removeprefix("lm."): v for k, v in state.items()}
    else:
        state = checkpoint.full_state_dict(model)
    if accelerator.is_main_process:
        state = {k: v.to(run.source_dtype) if v.is_floating_point() else v for k, v in state.items()}
        with atomic_dir(path) as tmp:
            model.save_pretrained(tmp, state_dict=state)
            run.tokenizer.save_pretrained(tmp)
            _fix_config(tmp, run.source_dtype)
            if extra is not None:
                extra(tmp)
    accelerator.wait_for_everyone()


def _fix_config(model_dir: Path, dtype: torch.dtype) -> None:
    """config.json as the final model's: dtype of the saved tensors (save_pretrained records the
    live model's fp32 master weights, not the state dict it was given) and the KV cache on."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["use_cache"] = True
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    cfg.pop("torch_dtype", None)
    atomic_write_json(path, cfg)


def _snapshot(run: _Run) -> None:
    """Keep the model of this step in `out_dir/snapshots/step-N` when the config asks for it."""
    if run.step not in run.config.snapshot_steps(run.total):
        return
    rel = f"{SNAPSHOTS}/step-{run.step}"
    _write_model(run, run.out_dir / rel, _saved_model(run, final=False))
    run.snapshots = [s for s in run.snapshots if s["step"] != run.step] + [
        {"step": run.step, "tokens": run.step * run.tokens_per_step, "path": rel}]


def _keep_dirs(run: _Run, tmp: Path) -> None:
    """Hard-link the snapshots and tracker logs into the final directory (no copy; the old tree
    keeps them until the final rename, so a kill here loses nothing)."""
    for name in (SNAPSHOTS, TRACKER):
        src = run.out_dir / name
        if src.is_dir() and (name != SNAPSHOTS or run.snapshots):
            shutil.copytree(src, tmp / name, copy_function=_link_or_copy)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # filesystems without hard links
        shutil.copy2(src, dst)


def _summary(run: _Run, final) -> dict:
    rows = run.rows
    train_rows = [r for r in rows if r.get("train_loss") is not None]
    eval_rows = [r for r in rows if r.get("valid_loss") is not None]
    return {
        "out_dir": str(run.out_dir), "model_dir": str(run.model_dir),
        "strategy": run.config.strategy, "steps": run.step,
        "tokens": run.step * run.tokens_per_step, "train_blocks": len(run.data.blocks),
        "trainable_params": sum(p.numel() for _, p in run.named),
        "total_params": sum(p.numel() for p in final.parameters()),
        "final_train_loss": train_rows[-1]["train_loss"] if train_rows else None,
        "final_valid_loss": eval_rows[-1]["valid_loss"] if eval_rows else None,
        "final_valid_bpc": eval_rows[-1].get("valid_bpc") if eval_rows else None,
        "train_tokens_per_s": round(np.mean([r["tokens_per_s"] for r in train_rows]), 2)
        if train_rows else None,
        "elapsed_s": rows[-1].get("elapsed_s") if rows else None,
        "resumed_from_step": run.resumed_from, "processes": run.accelerator.num_processes,
        "precision": run.accelerator.mixed_precision,  # "bf16"/"fp16" autocast, "no": fp32
        "seconds": {k: round(v, 2) for k, v in run.seconds.items() if k != "save"},  # this session
        "snapshots": sorted(run.snapshots, key=lambda s: s["step"]),
        "config": _config_json(run.config),
    }


def _source_dtype(model_config) -> torch.dtype:
    """The dtype the source model was stored in (bf16/fp16 kept, anything else fp32)."""
    dtype = getattr(model_config, "dtype", None)
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def _finalize(run: _Run) -> dict:
    """Merge LoRA, write the model (source dtype, fp32 master weights cast once) + logs + summary
    atomically at `out_dir`, replacing the logs and checkpoints there: once, by the main process."""
    final = _saved_model(run, final=True)
    summary = _summary(run, final)

    def logs_and_summary(tmp: Path) -> None:
        _keep_dirs(run, tmp)
        _write_logs(tmp, run.rows)
        atomic_write_json(tmp / "cpt_summary.json", summary)
    _write_model(run, run.out_dir, final, logs_and_summary)
    return summary


def train(model_dir, train_texts, valid_texts, out_dir, config: CPTConfig | None = None,
          resume: bool = False, progress: bool = True) -> dict:
    """Continually pre-train the HF model at `model_dir`; write the result as an HF dir at `out_dir`.

    Returns a summary dict (also `out_dir/cpt_summary.json`). With `resume=True` a finished run with
    the same settings is returned as is, and an interrupted one continues from its last checkpoint.
    Example: `train("runs/micro/am/01_vocab/chat_ve", *data.train_valid("am"),
    "runs/micro/am/02_cpt/chat_cpt", CPTConfig(max_steps=50))`.
    """
    began = time.perf_counter()
    config = config if config is not None else CPTConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model_config, tokenizer, texts = _check_inputs(model_dir, train_texts, config)
    cpu, mixed_precision = _mixed_precision(config)
    finished = _finished_summary(out_dir, model_dir, config) if resume else None
    if finished is not None:
        return finished
    accelerator = _accelerator(config, cpu, mixed_precision, out_dir)
    with accelerator.main_process_first():  # one process tokenizes, the others read the cache
        corpus = _setup_data(tokenizer, texts, valid_texts, config)
    raw_model, model, named = _setup_model(model_dir, config)
    optimizer, scheduler, total, tokens_per_step = _setup_optimizer(
        named, config, accelerator.num_processes)
    run = _Run(config, model_dir, out_dir, tokenizer, corpus, accelerator, raw_model, model, named,
               optimizer, scheduler, total, tokens_per_step, _Blocks(corpus.blocks, config.seed))
    run.source_dtype = _source_dtype(model_config)
    _prepare(run)
    _resume_or_start(run, resume)
    _start_tracker(run)
    run.seconds["setup"] = time.perf_counter() - began
    with tqdm(total=total, initial=run.step, desc=f"cpt {config.strategy}", unit="step",
              disable=not (progress and accelerator.is_main_process), dynamic_ncols=True) as bar:
        _train_loop(run, bar)
    accelerator.wait_for_everyone()
    tick = time.perf_counter()
    for tracker in accelerator.trackers:  # flush before the final directory is written; not
        tracker.finish()                  # end_training(), which ends the process group too
    summary = _finalize(run)
    summary["seconds"]["save"] = round(time.perf_counter() - tick, 2)  # after cpt_summary.json
    return summary


def _accelerator(config: CPTConfig, cpu: bool, mixed_precision: str, out_dir: Path) -> Accelerator:
    """The accelerate engine: `accelerate launch --config_file configs/accelerate/<x>.yaml` picks
    DDP/FSDP/DeepSpeed and the process count; `config.dtype` picks the precision."""
    tracker = None if config.log_with == "none" else config.log_with
    # accelerate keeps one process-wide state that refuses a second precision; each run picks its
    # own (a notebook or a test may train fp32 after bf16). The process group (PartialState) stays.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision, log_with=tracker,
                              project_dir=str(out_dir / TRACKER) if tracker else None)
    if config.strategy == "lora" and accelerator.distributed_type in SHARDED:
        raise ValueError("strategy='lora' under FSDP/DeepSpeed is not supported (LoRA merges need "
                         "the whole model); use a DDP or single-GPU accelerate config")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        if config.grad_accum != 1:  # DeepSpeed divides the loss by its own accumulation count
            raise ValueError(f"grad_accum={config.grad_accum} under DeepSpeed: use grad_accum=1 and "
                             "a larger batch_size, or the FSDP config")
        # no dataloader goes through prepare, so DeepSpeed learns the micro batch from here
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = \
            config.batch_size
    return accelerator


def _prepare(run: _Run) -> None:
    """Wrap model and optimizer for the engine; under FSDP the trained tensors become shards, so
    the trainable list is taken again from the wrapped model."""
    accelerator = run.accelerator
    run.model, run.optimizer = accelerator.prepare(run.model, run.optimizer)
    inner = accelerator.unwrap_model(run.model)
    run.sharded = (accelerator.distributed_type in SHARDED or checkpoint.is_sharded(inner))
    if run.sharded:
        run.named = [(n.removeprefix("lm."), p) for n, p in inner.named_parameters()
                     if p.requires_grad]


def _start_tracker(run: _Run) -> None:
    """Open the tracker run (opt-in `log_with`; offline files under out_dir/tracker)."""
    if run.config.log_with != "none":
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                for k, v in _config_json(run.config).items()}
        run.accelerator.init_trackers("elchat-cpt", config=flat)


def stage_plan(run, strategy: str = "2x2ls", base_strategy_lep: str = "embeddings",
               lr: float | None = None, snapshots=(), **settings) -> dict[str, tuple[Path, CPTConfig]]:
    """Notebook 02's runs, `{name: (source model dir, CPTConfig)}`, its parameters validated.

    `chat_cpt` (ElChat) trains stage 01's `chat_ve` with `strategy`; when the preset has a base
    model (`01_vocab/base_ve`), `base_cpt` (Chat Vector) trains it with `strategy` and `base_emb`
    (the LEP donor) with `base_strategy_lep` at 2 x lr. `snapshots` (fractions of the run) keep
    intermediate models of chat_cpt and base_cpt (not base_emb). `settings`: other CPTConfig
    fields (layers, max_steps, batch_size, ...). Example: `stage_plan("runs/micro/am", max_steps=40)`.
    """
    check_strategy(strategy, "strategy")
    check_strategy(base_strategy_lep, "base_strategy_lep")
    lr = lr if lr is not None else method.default_lr(strategy)
    vocab = runs.stage_dir(run, "01")
    snapshots = _check_snapshots(snapshots)
    plan = {"chat_cpt": (vocab / "chat_ve", CPTConfig(strategy=strategy, lr=lr,
                                                      snapshots=snapshots, **settings))}
    if runs.has_model(vocab / "base_ve"):  # presets with a base model
        plan["base_cpt"] = (vocab / "base_ve", CPTConfig(strategy=strategy, lr=lr,
                                                         snapshots=snapshots, **settings))
        plan["base_emb"] = (vocab / "base_ve",
                            CPTConfig(strategy=base_strategy_lep, lr=2 * lr, **settings))
    runs.require(vocab / "chat_ve" / "config.json", "01")
    return plan


def write_stage_summary(out_dir, summaries: dict) -> pd.DataFrame:
    """One row per run of `{name: train() summary}`, written to `out_dir/summary.csv`; returned.

    Also `out_dir/snapshots.json`: `{name: [{"step", "tokens", "path"}]}` with each snapshot's
    path relative to `out_dir` (e.g. "chat_cpt/snapshots/step-10"); runs without snapshots: [].
    Example: `write_stage_summary(run / "02_cpt", {"chat_cpt": summary})["valid BPC"]`.
    """
    table = pd.DataFrame([{"run": name, **{label: s[key] for key, label in SUMMARY_COLUMNS.items()}}
                          for name, s in summaries.items()])
    atomic_write_text(Path(out_dir) / "summary.csv", table.to_csv(index=False))
    atomic_write_json(Path(out_dir) / "snapshots.json", {
        name: [{**snap, "path": f"{name}/{snap['path']}"} for snap in s.get("snapshots", [])]
        for name, s in summaries.items()})
    return table


def _texts_for_cli(args) -> tuple[list[str], list[str]]:
    if args.hub_dataset:  # hub corpora (MADLAD) have no valid split: hold part out
        docs = data.load_hub_texts(args.hub_dataset, args.hub_config,
                                   max_docs=args.max_docs)
        return data.split_heldout(docs, args.eval_max_docs)
    if not args.lang:
        raise ValueError("give --lang (a shipped language code or a text file) or --hub-dataset")
    return data.train_valid(args.lang, args.eval_max_docs)


def _cli_main(args) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(CPTConfig)}
    values["layers"] = tuple(int(x) for x in str(values["layers"]).split(",") if x.strip())
    values["snapshots"] = tuple(float(x) for x in str(values["snapshots"]).split(",") if x.strip())
    config = CPTConfig(**values)
    train_texts, valid_texts = _texts_for_cli(args)
    summary = train(args.model, train_texts, valid_texts, args.out, config, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


def register_cli(subparsers):
    """Add `elchat cpt` (see the module docstring for the multi-GPU `accelerate launch` form)."""
    p = subparsers.add_parser("cpt", help="continual pre-training of an (expanded) model",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="preset name, HF model directory (stage 01 output) or hub id")
    p.add_argument("--lang", help="shipped language code or a UTF-8 text file (one doc per line)")
    p.add_argument("--hub-dataset", help="hub dataset id, streamed (e.g. allenai/MADLAD-400)")
    p.add_argument("--hub-config", help="hub dataset config (e.g. am)")
    p.add_argument("--max-docs", type=int, default=100_000, help="documents read from the hub")
    p.add_argument("--out", required=True, help="output HF directory (logs + checkpoints inside)")
    p.add_argument("--resume", action="store_true", help="continue from out's last checkpoint")
    defaults = CPTConfig()
    for f in fields(CPTConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        if f.name == "strategy":
            p.add_argument(flag, choices=method.CPT_STRATEGIES, default=default)
        elif f.name == "layers":
            p.add_argument(flag, default=",".join(map(str, default)),
                           help="layer indices, negative from the end: --layers=0,1,-2,-1")
        elif f.name == "snapshots":
            p.add_argument(flag, default="", help="fractions of the run whose model is kept in "
                           "out/snapshots/step-N: --snapshots=0.25,0.5")
        elif f.name == "lr":
            p.add_argument(flag, type=float, default=None,
                           help="default: the strategy's published lr (elchat.method.default_lr)")
        elif isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default) if default is not None else str, default=default)
    p.set_defaults(func=_cli_main)
