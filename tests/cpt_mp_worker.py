"""Worker of tests/test_cpt_multiprocess.py, started by `accelerate launch` with two CPU processes
(configs/accelerate/cpu_ddp_2proc.yaml: gloo). Not a test module itself.

    python tests/cpt_mp_worker.py <job.json> <step> [<step> ...]

steps: `straight` (a DDP run), `killed` (the same run, every process dies hard right after the
checkpoint of step 3, like a kill -9), `resume` (continues it), `fsdp` (the sharded saving path on
a model split with torch's FSDP2 `fully_shard`, see `fsdp_save_logic`).
"""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import AutoTokenizer

from elchat import checkpoint, cpt
from elchat.chunked_loss import loss_module
from elchat.cpt import CPTConfig, train
from elchat.model_files import load_model


def run_cpt(job: dict, out: str, resume: bool = False) -> None:
    train(job["model"], job["docs"], job["valid"], Path(job["root"]) / out,
          CPTConfig(**job["config"]), resume=resume, progress=False)


def killed(job: dict) -> None:
    real = cpt._checkpoint

    def checkpoint_then_die(run, lr):
        real(run, lr)
        if run.step == job["kill_at"]:
            run.accelerator.wait_for_everyone()  # the main process has finished writing
            os._exit(137)  # no cleanup, no finally: as a SIGKILL
    cpt._checkpoint = checkpoint_then_die
    run_cpt(job, "killed")


def _shard(job: dict):
    """The 2x2ls loss module of the job's model, each decoder layer and the root an FSDP2 unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    config = CPTConfig(**job["config"])
    raw = cpt.apply_strategy(load_model(job["model"], device="cpu", dtype="fp32"), config)
    raw.config.use_cache = False
    model = loss_module(raw, config.loss_chunk)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in raw.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    named = [(n.removeprefix("lm."), p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = cpt.make_optimizer(named, 1e-2, 0.01)
    return raw, model, named, optimizer, cpt.make_scheduler(optimizer, 0, 10)


def _step(model, optimizer, scheduler, seed: int) -> None:
    ids = torch.randint(0, model.lm.config.vocab_size, (2, 16),
                        generator=torch.Generator().manual_seed(seed + dist.get_rank()))
    model(ids).backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _full(model) -> dict:
    """Full tensors gathered parameter by parameter (DTensor.full_tensor), independent of
    checkpoint.full_state_dict."""
    return {n.removeprefix("lm."): (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in model.named_parameters()}


def fsdp_save_logic(job: dict) -> None:
    """FSDP's saving path on CPU: `_write_model` gathers and writes the model once from the main
    process; a sharded checkpoint restores weights and optimizer state exactly."""
    from accelerate import Accelerator

    root = Path(job["root"]) / "fsdp"
    accelerator = Accelerator(cpu=True)  # the gloo process group
    raw, model, named, optimizer, scheduler = _shard(job)
    assert checkpoint.is_sharded(model)
    _step(model, optimizer, scheduler, seed=1)
    run = types.SimpleNamespace(accelerator=accelerator, raw_model=raw, config=CPTConfig(**job["config"]),
                                tokenizer=AutoTokenizer.from_pretrained(job["model"]),
                                source_dtype=torch.float32, model=model)
    before = _full(model)
    cpt._write_model(run, root / "model", raw)
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in before.items()}, str(root / "expected.safetensors"))
    state = {"step": 1, "config": {}, "n_blocks": 1}
    path = root / "checkpoints" / "last"
    checkpoint.save_sharded_checkpoint(path, checkpoint.dcp_writer(model, optimizer), scheduler,
                                       state, accelerator.is_main_process, dist.barrier)
    _step(model, optimizer, scheduler, seed=2)
    once = _full(model)
    checkpoint.restore_sharded_checkpoint(path, checkpoint.dcp_reader(model, optimizer), scheduler,
                                          {}, 1)
    restored = _full(model)
    _step(model, optimizer, scheduler, seed=2)
    again = _full(model)
    if accelerator.is_main_process:
        result = {"restored_equal": all(torch.equal(restored[k], before[k]) for k in before),
                  "replayed_equal": all(torch.equal(again[k], once[k]) for k in once),
                  "step_changed": any(not torch.equal(once[k], before[k]) for k in once),
                  "world": dist.get_world_size()}
        (root / "result.json").write_text(json.dumps(result))
    dist.barrier()


def main(argv) -> None:
    torch.set_num_threads(1)
    job = json.loads(Path(argv[1]).read_text())
    for step in argv[2:]:
        {"straight": lambda: run_cpt(job, "straight"), "killed": lambda: killed(job),
         "resume": lambda: run_cpt(job, "killed", resume=True),
         "fsdp": lambda: fsdp_save_logic(job)}[step]()


if __name__ == "__main__":
    main(sys.argv)
