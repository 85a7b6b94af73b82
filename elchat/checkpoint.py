"""Training checkpoints: save, find and restore a run so that a killed run continues bit-exactly.

The reliability contract of `elchat.cpt.train` rests on three rules:

1. **What is saved.** Everything the next step depends on, and nothing that can be rebuilt:

       trainable.safetensors   the trainable tensors only (the frozen rest is the source model)
       optimizer.pt            the optimizer state (AdamW moments, step counts)
       rng.safetensors         torch CPU (+ every CUDA device) generator states
       state.json              step, log rows, the caller's state (corpus size, settings), the
                               scheduler state and the python/numpy RNG states
       complete                written last: only a directory holding it is a checkpoint

   The data position needs no saving: the order of training blocks is a pure function of the
   seed, the epoch and the step (`elchat.cpt`'s block sampler).
2. **Atomic.** A checkpoint is written into a temporary sibling directory and renamed into place by
   `elchat.atomic.atomic_dir`, so a run killed mid-write keeps the previous checkpoint. A kill
   between atomic_dir's two renames (old out of the way, new in) leaves the previous one as
   `.tmp-last-old`; `find_checkpoint` renames it back.
3. **Compatible or refused.** `restore_checkpoint` continues a run only with the settings it was
   started with (the caller names the settings that do not change the weights, e.g. how often it
   saves) and the same corpus size; otherwise it raises rather than silently mixing two runs.

On CPU a resumed run gives bitwise the weights of an uninterrupted one (tested in
tests/test_cpt.py); on a GPU, nondeterministic kernels may differ in the last bits.

**Several processes.** Under DDP every process holds the whole model, so the main process writes
the checkpoint above alone. Under FSDP (or DeepSpeed ZeRO) each process holds a shard of the
weights and of the optimizer state: `save_sharded_checkpoint` has every process write its shards
(torch.distributed.checkpoint, trainable tensors only) into one temporary directory with a name all
processes agree on, then the main process adds state.json + `complete` and renames it into place
(same recovery as above). `full_state_dict` gathers the full weights for saving a model (a
collective: every process calls it).

    save_checkpoint(out / "checkpoints" / "last", named, optimizer, scheduler, {"step": 3, ...})
    state = restore_checkpoint(find_checkpoint(out), named, optimizer, scheduler, config, n_blocks)
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_state_dict, set_state_dict)
from torch.distributed.tensor import DTensor

from .atomic import atomic_dir, atomic_write_json, atomic_write_text

CHECKPOINTS = "checkpoints"   # sub-directory of a run's output directory
LAST = "last"                 # the one checkpoint kept (each save replaces it)


def rng_state() -> tuple[dict, dict]:
    """(tensors, JSON-able meta) of every random generator: torch CPU and CUDA, python, numpy.

    Example: `tensors, meta = rng_state(); ...; set_rng_state(tensors, meta)` replays the draws.
    """
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


def set_rng_state(tensors: dict, meta: dict) -> None:
    """Restore what `rng_state` returned. Example: `set_rng_state(*rng_state())` changes nothing."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(path, named_trainable, optimizer, scheduler, state: dict) -> None:
    """Write one checkpoint atomically to `path` (see the module docstring for its files).

    `state` is the caller's JSON-able state (it must hold "step"); the scheduler and RNG states
    are added to it. Example: `save_checkpoint(out / "checkpoints/last", named, opt, sched, {"step": 3})`.
    """
    with atomic_dir(path) as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in named_trainable},
                  str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng_tensors, rng_meta = rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "scheduler": scheduler.state_dict(),
                                               "rng": rng_meta})
        atomic_write_text(tmp / "complete", "ok\n")  # written last: marks a usable checkpoint


def find_checkpoint(out_dir) -> Path | None:
    """The last complete checkpoint under `out_dir/checkpoints` (recovers an interrupted rename).

    Example: `find_checkpoint("runs/micro/am/02_cpt/chat_cpt")` -> `.../checkpoints/last` or None.
    """
    root = Path(out_dir) / CHECKPOINTS
    last, old = root / LAST, root / f".tmp-{LAST}-old"
    if (last / "complete").is_file():
        return last
    if (old / "complete").is_file():  # killed between the two renames of atomic_dir
        if last.exists():
            shutil.rmtree(last)
        old.rename(last)
        return last
    return None


def check_compatible(path, state: dict, config: dict, n_blocks: int, free=()) -> None:
    """Raise unless a checkpoint's `state` was saved with `config` (keys in `free` excepted) on a
    corpus of `n_blocks` blocks. Example: `check_compatible(p, state, {"lr": 1e-4}, 120)`.
    """
    then = state["config"]
    diff = [k for k in config if k not in free and then.get(k) != config[k]]
    if state.get("n_blocks") != n_blocks:
        diff.append(f"corpus ({state.get('n_blocks')} blocks then, {n_blocks} now)")
    if diff:
        raise ValueError(f"cannot resume from {path}: settings differ from the checkpoint's "
                         f"({', '.join(diff)}); use the same settings or resume=False to start over")


def restore_checkpoint(path, named_trainable, optimizer, scheduler, config: dict, n_blocks: int,
                       free=()) -> dict:
    """Load a checkpoint into the trainable tensors, optimizer, scheduler and RNGs; return its state.

    Refused (ValueError) when the settings or corpus differ (`check_compatible`) or the trainable
    tensors do not match. Example: `state = restore_checkpoint(find_checkpoint(out), named, opt,
    sched, config_dict, len(blocks), free={"save_every"})`; then continue at `state["step"]`.
    """
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    check_compatible(path, state, config, n_blocks, free)
    if state.get("sharded"):
        raise ValueError(f"cannot resume from {path}: it holds FSDP/DeepSpeed shards; resume "
                         "with the same accelerate config and number of processes")
    weights = load_file(str(path / "trainable.safetensors"))
    if set(weights) != {n for n, _ in named_trainable}:
        raise ValueError(f"cannot resume from {path}: its trainable tensors do not match the model")
    with torch.no_grad():
        for n, p in named_trainable:
            p.copy_(weights[n])
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state


def is_sharded(model) -> bool:
    """True when `model`'s weights are split over processes (FSDP2 DTensors, or an FSDP1 wrapper).

    Example: `is_sharded(torch.nn.Linear(2, 2)) is False`.
    """
    return (type(model).__name__ == "FullyShardedDataParallel"
            or any(isinstance(p, DTensor) for p in model.parameters()))


def full_state_dict(model) -> dict:
    """The full, unsharded state dict of `model` on the CPU (every process calls it under FSDP).

    Example: `state = full_state_dict(model)`; the main process then saves it.
    """
    if not is_sharded(model):
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


_TRAINABLE = StateDictOptions(ignore_frozen_params=True)


def dcp_writer(model, optimizer):
    """`write(directory)` for save_sharded_checkpoint: this process's shards of the trainable
    tensors and optimizer state via torch.distributed.checkpoint."""
    def write(directory: Path) -> None:
        msd, osd = get_state_dict(model, optimizer, options=_TRAINABLE)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=directory)
    return write


def dcp_reader(model, optimizer):
    """`read(directory)` for restore_sharded_checkpoint (the inverse of `dcp_writer`)."""
    def read(directory: Path) -> None:
        msd, osd = get_state_dict(model, optimizer, options=_TRAINABLE)
        dcp.load({"model": msd, "optim": osd}, checkpoint_id=directory)
        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd,
                       options=StateDictOptions(ignore_frozen_params=True, strict=False))
    return read


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` as atomic_dir does (the old one aside first; find_checkpoint
    recovers a kill between the two renames)."""
    old = path.parent / f".tmp-{path.name}-old"
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def save_sharded_checkpoint(path, write, scheduler, state: dict, is_main: bool, barrier) -> None:
    """Every process calls this: `write(directory)` stores its shards, the main process adds the
    scheduler/RNG state and `complete`, then renames the directory to `path` (atomic).

    Example: `save_sharded_checkpoint(out / "checkpoints/last", dcp_writer(model, opt), sched,
    {"step": 3}, accelerator.is_main_process, accelerator.wait_for_everyone)`.
    """
    path = Path(path)
    tmp = path.parent / f".tmp-{path.name}-step{state['step']}"  # the same name on every process
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    write(tmp)
    barrier()
    if is_main:
        rng_tensors, rng_meta = rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "scheduler": scheduler.state_dict(),
                                               "rng": rng_meta, "sharded": True})
        atomic_write_text(tmp / "complete", "ok\n")
        _swap_in(tmp, path)
    barrier()


def restore_sharded_checkpoint(path, read, scheduler, config: dict, n_blocks: int,
                               free=()) -> dict:
    """Every process calls this: check the settings, `read(path)` its shards, restore the scheduler
    and RNGs; returns the state. Example: `restore_sharded_checkpoint(p, dcp_reader(m, o), s, c, n)`.
    """
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    check_compatible(path, state, config, n_blocks, free)
    if not state.get("sharded"):
        raise ValueError(f"cannot resume from {path}: it was written by a single-model run "
                         "(DDP or one process); resume it the same way or resume=False")
    read(path)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state
