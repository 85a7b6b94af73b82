"""Stage 02: continual pre-training (CPT) of an expanded model on unlabeled target-language text.

Objective: causal-LM next-token loss on packed blocks (see `elchat.packing`),

    L(theta) = - 1/(N*B) * sum_blocks sum_i log p_theta(x_i | x_<i),

minimized with AdamW (decoupled weight decay on matrices only, as HF `Trainer`), a cosine schedule
with linear warmup, gradient clipping at 1.0. Only a subset of parameters is trained (strategy):

    2x2ls       layers (0, 1, -2, -1) + input embeddings + lm_head + final norm   (ElChat default,
                Yamaguchi et al. 2024/2025: first/last 2 layers hold most language-specific work)
    embeddings  input embeddings + lm_head only                                  (LEP donor, Tikhomirov
                & Chernyshev 2024)
    full        every parameter
    lora        LoRA (Hu et al. 2022) on attention/MLP projections, embeddings + lm_head fully
                trained (peft `modules_to_save`, tying kept), merged into the weights when saved.

With tied embeddings (SmolLM2) the shared matrix is one trainable parameter.

Reliability: every `save_every` steps the trainable tensors (safetensors), the optimizer state, the
scheduler state, the RNG states (python, numpy, torch) and the step (which fixes the data position:
block order is a pure function of seed, epoch and step) go to `out_dir/checkpoints/last/` through
`elchat.atomic.atomic_dir`, so a run killed mid-write keeps the previous checkpoint. `resume=True`
continues from it bit-exactly on CPU. At the end the model (+ tokenizer) is written atomically as a
Hugging Face directory at `out_dir` with `log.csv`, `log.json`, `cpt_summary.json`; the checkpoints
are dropped then (the final model is the result; rerunning with `resume=True` returns it at once). While training, `out_dir` holds only logs and checkpoints
(no `config.json`), so a later stage cannot load a half-trained model.

Scale: the loop is written against `accelerate.Accelerator`, so one script runs on a CPU, one GPU,
or several GPUs (DDP, or FSDP via `accelerate config`):

    accelerate launch --num_processes 8 -m elchat.cli cpt --model runs/x/01_vocab/chat_ve \\
        --lang am --strategy 2x2ls --max-tokens 500_000_000 --out runs/x/02_cpt/chat_cpt --resume

Each process reads its own disjoint blocks; the global batch is batch_size * grad_accum * processes.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup

from .atomic import atomic_dir, atomic_write_json, atomic_write_text
from .packing import pack_blocks, token_stream

STRATEGIES = ("2x2ls", "embeddings", "full", "lora")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Changing these between a run and its resume does not change the trained weights.
_RESUME_FREE = {"save_every", "compile", "cache_dir", "device"}


@dataclass
class CPTConfig:
    """Every CPT setting with its default (source in brackets).

    Example: `CPTConfig(strategy="embeddings", max_steps=200)` (lr resolves to 1e-4).
    """

    strategy: str = "2x2ls"              # trainable subset, see module docstring [ElChat]
    layers: tuple = (0, 1, -2, -1)       # transformer layers trained by 2x2ls [ElChat]
    lr: float | None = None              # peak lr; None: 5e-5, 1e-4 for embeddings [ElChat, LEP]
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
    dtype: str = "auto"                  # auto: bf16 autocast on capable GPUs, fp32 on CPU
    gradient_checkpointing: bool = False  # trade ~30% compute for activation memory
    compile: bool = False                # torch.compile each decoder layer (regional; ~1.2x on CPU
                                         # after a compile of minutes, see benchmarks/)
    lora_r: int = 16                     # LoRA rank [Hu et al. 2022]
    lora_alpha: int = 32                 # LoRA scale alpha/r
    lora_dropout: float = 0.05           # LoRA dropout
    cache_dir: str | None = None         # tokenized corpora; None: $ELCHAT_CACHE/tokens

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: unknown; choose one of {', '.join(STRATEGIES)}")
        self.layers = tuple(int(i) for i in self.layers)
        if self.strategy == "2x2ls" and not self.layers:
            raise ValueError("layers=(): 2x2ls needs at least one layer index, e.g. (0, 1, -2, -1)")
        if self.lr is None:
            self.lr = 1e-4 if self.strategy == "embeddings" else 5e-5
        for name in ("max_steps", "max_tokens", "log_every", "eval_every", "save_every", "seed"):
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
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"dtype={self.dtype!r}: expected auto, bf16, fp16 or fp32")

    def total_steps(self, tokens_per_step: int) -> int:
        """Optimizer steps of the run. Example: `CPTConfig(max_tokens=4096).total_steps(2048) == 2`."""
        return math.ceil(self.max_tokens / tokens_per_step) if self.max_tokens else self.max_steps


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


def resolve_layers(layers, num_layers: int) -> list[int]:
    """Normalize layer indices (negative from the end); error when out of range.

    Example: `resolve_layers((0, 1, -2, -1), 30) == [0, 1, 28, 29]`.
    """
    bad = [i for i in layers if not -num_layers <= i < num_layers]
    if bad:
        raise ValueError(f"layers={tuple(layers)}: index {bad[0]} out of range for a model with "
                         f"{num_layers} layers (valid: {-num_layers} .. {num_layers - 1})")
    return sorted({i % num_layers for i in layers})


def apply_strategy(model, config: CPTConfig):
    """Freeze `model` per `config.strategy`; returns the model to train (a peft model for lora).

    Example: `m = apply_strategy(model, CPTConfig(strategy="embeddings"))`.
    """
    for p in model.parameters():
        p.requires_grad_(config.strategy == "full")
    if config.strategy == "full":
        return model
    trainable = [model.get_input_embeddings(), model.get_output_embeddings()]
    if config.strategy == "2x2ls":
        blocks = _decoder_layers(model)
        trainable += [blocks[i] for i in resolve_layers(config.layers, len(blocks))]
        trainable.append(_final_norm(model))
    if config.strategy == "lora":
        from peft import LoraConfig, get_peft_model

        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        emb = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
               if m is model.get_input_embeddings() or m is model.get_output_embeddings()}
        lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
                          target_modules=[t for t in LORA_TARGETS if t in names],
                          modules_to_save=sorted(emb),
                          ensure_weight_tying=bool(model.config.tie_word_embeddings))
        return get_peft_model(model, lcfg)
    for module in trainable:
        if module is not None:
            module.requires_grad_(True)
    return model


def _mixed_precision(config: CPTConfig) -> tuple[bool, str]:
    from .device import pick_device, pick_dtype

    device = pick_device(config.device)
    dtype = pick_dtype(device, config.dtype)
    mp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    return device.type == "cpu", mp


def _check_inputs(model_dir: Path, train_texts, config: CPTConfig):
    """Everything checkable from config.json + tokenizer, before loading weights or writing."""
    from transformers import AutoConfig, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    mcfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if mcfg.vocab_size < len(tok):
        raise ValueError(f"{model_dir}: model vocab size {mcfg.vocab_size} < tokenizer length "
                         f"{len(tok)}; the embeddings were not resized for the expanded tokenizer "
                         "(run stage 01, elchat.embeddings.resize_and_initialize, first)")
    max_pos = getattr(mcfg, "max_position_embeddings", None)
    if max_pos is not None and config.block_size > max_pos:
        raise ValueError(f"block_size={config.block_size} exceeds the model's "
                         f"max_position_embeddings={max_pos}; use block_size <= {max_pos}")
    if config.strategy == "2x2ls":
        resolve_layers(config.layers, mcfg.num_hidden_layers)
    if isinstance(train_texts, str):
        raise ValueError("train_texts must be a list of documents, not one string")
    texts = [t for t in train_texts if t and t.strip()]
    if not texts:
        raise ValueError("the training corpus is empty (no non-blank documents)")
    return mcfg, tok, texts


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


def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    np_state = np.random.get_state()
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *[int(x) if i < 2 else float(x)
                                                            for i, x in enumerate(np_state[2:])]]}
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict):
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def _save_checkpoint(path: Path, named_trainable, optimizer, scheduler, state: dict):
    from safetensors.torch import save_file

    with atomic_dir(path) as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in named_trainable},
                  str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng_tensors, rng_meta = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "scheduler": scheduler.state_dict(),
                                               "rng": rng_meta})
        atomic_write_text(tmp / "complete", "ok\n")  # written last: marks a usable checkpoint


def find_checkpoint(out_dir) -> Path | None:
    """The last complete checkpoint under `out_dir/checkpoints` (recovers an interrupted rename).

    Example: `find_checkpoint("runs/micro/am/02_cpt/chat_cpt")` -> `.../checkpoints/last` or None.
    """
    root = Path(out_dir) / "checkpoints"
    last, old = root / "last", root / ".tmp-last-old"
    if (last / "complete").is_file():
        return last
    if (old / "complete").is_file():  # killed between the two renames of atomic_dir
        if last.exists():
            import shutil
            shutil.rmtree(last)
        old.rename(last)
        return last
    return None


def _write_logs(out_dir: Path, rows: list[dict]):
    cols = ["step", "tokens", "epoch", "lr", "train_loss", "valid_loss", "valid_bpc",
            "tokens_per_s", "elapsed_s"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in cols} for r in rows])
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


def _make_optimizer(named, config: CPTConfig):
    return make_optimizer(named, config.lr, config.weight_decay)


def _evaluate(model, tokenizer, vblocks, valid_docs, config: CPTConfig, accelerator) -> dict:
    """Validation loss on packed valid blocks and BPC (elchat.evaluation.bpc) on valid documents."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(vblocks), config.batch_size):
            ids = torch.from_numpy(np.asarray(vblocks[i:i + config.batch_size]).astype(np.int64))
            ids = ids.to(accelerator.device)
            total += model(input_ids=ids, labels=ids).loss.float().item() * len(ids)
    out = {"valid_loss": total / len(vblocks)}
    from .evaluation.bpc import bits_per_char

    out["valid_bpc"] = bits_per_char(accelerator.unwrap_model(model), tokenizer, valid_docs,
                                     max_length=config.block_size,
                                     batch_size=config.batch_size)["bpc"]
    model.train()
    return out


def _config_json(config: CPTConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


def _restore(ckpt: Path, named, optimizer, scheduler, config: CPTConfig, n_blocks: int) -> dict:
    from safetensors.torch import load_file

    state = json.loads((ckpt / "state.json").read_text())
    now, then = _config_json(config), state["config"]
    diff = [k for k in now if k not in _RESUME_FREE and then.get(k) != now[k]]
    if state.get("n_blocks") != n_blocks:
        diff.append(f"corpus ({state.get('n_blocks')} blocks then, {n_blocks} now)")
    if diff:
        raise ValueError(f"cannot resume from {ckpt}: settings differ from the checkpoint's "
                         f"({', '.join(diff)}); use the same settings or resume=False to start over")
    weights = load_file(str(ckpt / "trainable.safetensors"))
    if set(weights) != {n for n, _ in named}:
        raise ValueError(f"cannot resume from {ckpt}: its trainable tensors do not match the model")
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n])
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(load_file(str(ckpt / "rng.safetensors")), state["rng"])
    return state


def train(model_dir, train_texts, valid_texts, out_dir, config: CPTConfig | None = None,
          resume: bool = False, progress: bool = True) -> dict:
    """Continually pre-train the HF model at `model_dir`; write the result as an HF dir at `out_dir`.

    Returns a summary dict (also `out_dir/cpt_summary.json`). With `resume=True` a finished run with
    the same settings is returned as is, and an interrupted one continues from its last checkpoint.
    Example: `train("runs/micro/am/01_vocab/chat_ve", load_texts("am"), load_texts("am", "valid"),
    "runs/micro/am/02_cpt/chat_cpt", CPTConfig(max_steps=50))`.
    """
    import shutil

    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

    config = config if config is not None else CPTConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    mcfg, tok, texts = _check_inputs(model_dir, train_texts, config)
    cpu, mixed_precision = _mixed_precision(config)
    summary_path = out_dir / "cpt_summary.json"
    if resume and (out_dir / "config.json").is_file() and summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("config") == _config_json(config) and done.get("model_dir") == str(model_dir):
            return done
    stream = token_stream(tok, texts, config.cache_dir, desc="tokenize train")
    blocks = pack_blocks(stream, config.block_size)
    if len(blocks) == 0:
        raise ValueError(f"the training corpus has {len(stream)} tokens, fewer than one block of "
                         f"{config.block_size}; give more text or a smaller block_size")
    valid_docs = [t for t in (valid_texts or []) if t and t.strip()][:config.eval_max_docs]
    vstream = token_stream(tok, valid_docs, config.cache_dir, desc="tokenize valid")
    vblocks = pack_blocks(vstream, min(config.block_size, len(vstream))) if len(vstream) >= 2 else None

    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    main = accelerator.is_main_process
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="sdpa")
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_strategy(model, config)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = _make_optimizer(named, config)
    world, accum, micro = accelerator.num_processes, config.grad_accum, config.batch_size
    tokens_per_step = micro * accum * world * config.block_size
    total = config.total_steps(tokens_per_step)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total), total)

    ckpt = find_checkpoint(out_dir) if resume else None
    step, rows, window = 0, [], [0.0, 0]
    if ckpt is not None:
        state = _restore(ckpt, named, optimizer, scheduler, config, len(blocks))
        step, rows, window = state["step"], state["rows"], state["window"]
    elif main:  # a fresh start forgets the state of an earlier run in out_dir
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        for name in ("log.csv", "log.json"):
            (out_dir / name).unlink(missing_ok=True)
    resumed_from = step if ckpt is not None else None
    raw = model
    if config.compile:  # regional: one decoder layer is compiled and reused by all (fast start)
        from accelerate.utils import compile_regions
        model = compile_regions(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    forward = model
    sampler = _Blocks(blocks, config.seed)
    trainable = [p for _, p in named]

    bar = tqdm(total=total, initial=step, desc=f"cpt {config.strategy}", unit="step",
               disable=not (progress and main), dynamic_ncols=True)
    elapsed0 = next((r["elapsed_s"] for r in reversed(rows) if r.get("elapsed_s") is not None), 0.0)
    t_start = t_window = time.perf_counter()
    step_window = step
    if step == 0 and vblocks is not None:  # the starting point of the curves (stage 01's init)
        rows.append({"step": 0, "tokens": 0, "lr": scheduler.get_last_lr()[0],
                     **_evaluate(model, tok, vblocks, valid_docs, config, accelerator)})
        t_window = time.perf_counter()
    model.train()
    while step < total:
        loss_sum, lr = 0.0, scheduler.get_last_lr()[0]
        for a in range(accum):
            first = ((step * accum + a) * world + accelerator.process_index) * micro
            ids = sampler.batch(first, micro).to(accelerator.device)
            with contextlib.nullcontext() if a == accum - 1 else accelerator.no_sync(model):
                loss = forward(input_ids=ids, labels=ids).loss
                value = loss.item()
                if not math.isfinite(value):
                    bar.close()
                    kept = f"the last good checkpoint {find_checkpoint(out_dir)} is kept" \
                        if find_checkpoint(out_dir) else "no checkpoint was written yet"
                    raise FloatingPointError(
                        f"training loss is {value} at step {step + 1} (strategy {config.strategy}, "
                        f"lr {lr:.3g}); stopped, {kept}. Lower lr, check the data or use "
                        "dtype='fp32', then rerun (resume=True continues from the checkpoint)")
                accelerator.backward(loss / accum)
            loss_sum += value / accum
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window = [window[0] + loss_sum, window[1] + 1]
        bar.update(1)
        row = None
        if (config.log_every and step % config.log_every == 0) or step == total:
            now = time.perf_counter()
            mean = accelerator.reduce(torch.tensor(window[0] / window[1], device=accelerator.device),
                                      "mean").item()
            tps = (step - step_window) * tokens_per_step / max(now - t_window, 1e-9)
            row = {"step": step, "tokens": step * tokens_per_step, "epoch": round(
                step * tokens_per_step / config.block_size / len(blocks), 6), "lr": lr,
                "train_loss": mean, "tokens_per_s": round(tps, 2),
                "elapsed_s": round(elapsed0 + now - t_start, 3)}
            window, t_window, step_window = [0.0, 0], now, step
            bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{tps:.0f}")
        if vblocks is not None and ((config.eval_every and step % config.eval_every == 0)
                                    or step == total):
            t_eval = time.perf_counter()
            row = row or {"step": step, "tokens": step * tokens_per_step, "lr": lr,
                          "elapsed_s": round(elapsed0 + time.perf_counter() - t_start, 3)}
            row.update(_evaluate(model, tok, vblocks, valid_docs, config, accelerator))
            t_window += time.perf_counter() - t_eval  # tokens/s counts training time only
        if row is not None:
            rows.append(row)
            if main:
                _write_logs(out_dir, rows)
        if config.save_every and step % config.save_every == 0 and step < total and main:
            if not all(bool(torch.isfinite(p).all()) for p in trainable):  # never save a bad state
                bar.close()
                raise FloatingPointError(
                    f"non-finite weights after step {step} (strategy {config.strategy}, lr "
                    f"{lr:.3g}); stopped before checkpointing, the last good checkpoint "
                    f"({find_checkpoint(out_dir) or 'none yet'}) is kept. Lower lr and rerun")
            _save_checkpoint(out_dir / "checkpoints" / "last", named, optimizer, scheduler,
                             {"step": step, "rows": rows, "window": window, "n_blocks": len(blocks),
                              "config": _config_json(config), "model_dir": str(model_dir)})
    bar.close()
    accelerator.wait_for_everyone()
    final = raw.merge_and_unload() if config.strategy == "lora" else raw
    final.config.use_cache = True
    source_dtype = getattr(mcfg, "dtype", None)
    source_dtype = getattr(torch, source_dtype, None) if isinstance(source_dtype, str) else source_dtype
    if source_dtype in (torch.bfloat16, torch.float16):  # fp32 master weights, saved as they came
        final = final.to(source_dtype)
    train_rows = [r for r in rows if r.get("train_loss") is not None]
    eval_rows = [r for r in rows if r.get("valid_loss") is not None]
    summary = {
        "out_dir": str(out_dir), "model_dir": str(model_dir), "strategy": config.strategy,
        "steps": step, "tokens": step * tokens_per_step, "train_blocks": len(blocks),
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in final.parameters()),
        "final_train_loss": train_rows[-1]["train_loss"] if train_rows else None,
        "final_valid_loss": eval_rows[-1]["valid_loss"] if eval_rows else None,
        "final_valid_bpc": eval_rows[-1].get("valid_bpc") if eval_rows else None,
        "train_tokens_per_s": round(np.mean([r["tokens_per_s"] for r in train_rows]), 2)
        if train_rows else None,
        "elapsed_s": rows[-1].get("elapsed_s") if rows else None,
        "resumed_from_step": resumed_from, "processes": world,
        "config": _config_json(config),
    }
    if main:
        with atomic_dir(out_dir) as tmp:  # replaces logs + checkpoints with the final model
            final.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            _write_logs(tmp, rows)
            atomic_write_json(tmp / "cpt_summary.json", summary)
    accelerator.wait_for_everyone()
    return summary


def _texts_for_cli(args) -> tuple[list[str], list[str]]:
    if args.hub_dataset:
        from . import data

        docs = data.load_hub_texts(args.hub_dataset, args.hub_config, split="train",
                                   max_docs=args.max_docs)
        held = min(args.eval_max_docs, max(len(docs) // 20, 1))
        return docs[held:], docs[:held]  # hub corpora (MADLAD) have no valid split: hold out
    if not args.lang:
        raise ValueError("give --lang (a shipped language code or a text file) or --hub-dataset")
    if Path(args.lang).is_file():  # one document per line, blank lines skipped (as load_texts)
        lines = Path(args.lang).read_text(encoding="utf-8").splitlines()
        docs = [line for line in lines if line.strip()]
        held = min(args.eval_max_docs, max(len(docs) // 20, 1))
        return docs[held:], docs[:held]
    from . import data

    return data.load_texts(args.lang, "train"), data.load_texts(args.lang, "valid")


def _cli_main(args) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(CPTConfig)}
    values["layers"] = tuple(int(x) for x in str(values["layers"]).split(",") if x.strip())
    config = CPTConfig(**values)
    train_texts, valid_texts = _texts_for_cli(args)
    summary = train(args.model, train_texts, valid_texts, args.out, config, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


def register_cli(subparsers):
    """Add `elchat cpt` (see the module docstring for the multi-GPU `accelerate launch` form)."""
    p = subparsers.add_parser("cpt", help="continual pre-training of an (expanded) model",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF model directory (stage 01 output)")
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
            p.add_argument(flag, choices=STRATEGIES, default=default)
        elif f.name == "layers":
            p.add_argument(flag, default=",".join(map(str, default)),
                           help="layer indices, negative from the end: --layers=0,1,-2,-1")
        elif f.name == "lr":
            p.add_argument(flag, type=float, default=None, help="default 5e-5 (1e-4 embeddings)")
        elif isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default) if default is not None else str, default=default)
    p.set_defaults(func=_cli_main)
