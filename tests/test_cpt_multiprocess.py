"""Multi-process CPT on accelerate with two CPU processes (gloo), launched the way a user launches
it: `accelerate launch --config_file configs/accelerate/cpu_ddp_2proc.yaml`.

- DDP with batch 1 per process gives the loss trajectory of one process with batch 2 (the same
  global batch: the sampler hands process r of w the blocks a single process would read at rows
  r*micro..), to 1e-5 relative per logged loss and 1e-5 absolute on the weights (fp32: the only
  difference is the order of the gradient sum, mean of two halves vs one mean).
- The model is written once, by the main process, and loads with from_pretrained.
- A run whose processes die hard (os._exit, as kill -9) after the checkpoint of step 3 resumes
  in a new launch to exactly the uninterrupted DDP run's weights and log.
- FSDP: accelerate enables FSDP only for GPU-type distributed setups (on a CPU it falls back to
  DDP: AcceleratorState sets FSDP only inside its MULTI_GPU/NPU/XPU branch), so the sharded path
  is tested on a model split with torch's own FSDP2 `fully_shard` over the same two gloo
  processes: the model writer gathers the shards (the written model equals the parameters
  gathered one by one), and a sharded checkpoint restores weights and optimizer state exactly.

Two launches of two processes each (~20-40 s on a loaded 2-core machine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from elchat.cpt import CPTConfig, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "accelerate" / "cpu_ddp_2proc.yaml"
DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i % 7} times, then rests."
        for i in range(60)]
VALID = ["The weather today is sunny with a light wind.", "Hello! How are you today?"]
SETTINGS = dict(max_steps=6, block_size=32, log_every=1, eval_every=3, save_every=3,
                layers=(0, -1), dtype="fp32")


def launch(job_file: Path, *steps: str, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(CONFIG),
           "--main_process_port", str(port), str(ROOT / "tests" / "cpt_mp_worker.py"),
           str(job_file), *steps]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tiny_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    cache = root / "cache"
    os.environ["ELCHAT_CACHE"] = str(cache)
    job = {"model": str(tiny_pair["chat"]), "docs": DOCS, "valid": VALID, "root": str(root),
           "config": {**SETTINGS, "batch_size": 1, "layers": list(SETTINGS["layers"])}, "kill_at": 3}
    job_file = root / "job.json"
    job_file.write_text(json.dumps(job))
    first = launch(job_file, "straight", "killed", port=29531)
    assert first.returncode != 0, "the killed run should have died"
    assert (root / "straight" / "config.json").is_file(), first.stderr[-3000:]
    killed_state = json.loads((root / "killed" / "checkpoints" / "last" / "state.json").read_text())
    second = launch(job_file, "resume", "fsdp", port=29532)
    assert second.returncode == 0, second.stderr[-3000:]
    torch.set_num_threads(1)
    single = train(tiny_pair["chat"], DOCS, VALID, root / "single",
                   CPTConfig(**SETTINGS, batch_size=2), progress=False)
    return {"root": root, "single": single, "killed_state": killed_state}


def rows(path: Path) -> list[dict]:
    return json.loads((path / "log.json").read_text())


def test_ddp_matches_one_process_with_the_same_global_batch(runs):
    root = runs["root"]
    ddp, one = rows(root / "straight"), rows(root / "single")
    assert [r["step"] for r in ddp] == [r["step"] for r in one]
    for a, b in zip(ddp, one):
        for key in ("train_loss", "valid_loss"):
            if b.get(key) is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    summary = json.loads((root / "straight" / "cpt_summary.json").read_text())
    assert summary["processes"] == 2 and summary["tokens"] == runs["single"]["tokens"]
    got, ref = load_file(str(root / "straight" / "model.safetensors")), load_file(
        str(root / "single" / "model.safetensors"))
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-5)


def test_ddp_writes_one_loadable_model(runs):
    out = runs["root"] / "straight"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache is True
    assert not (out / "checkpoints").exists()
    assert not list(out.parent.glob(".tmp-*"))  # nothing half-written left by either process


def test_resume_after_a_kill_continues_exactly(runs):
    root = runs["root"]
    assert runs["killed_state"]["step"] == 3 and runs["killed_state"]["processes"] == 2
    resumed = json.loads((root / "killed" / "cpt_summary.json").read_text())
    assert resumed["resumed_from_step"] == 3
    a, b = load_file(str(root / "killed" / "model.safetensors")), load_file(
        str(root / "straight" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
    strip = [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")}
             for r in rows(root / "killed")]
    assert strip == [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")}
                     for r in rows(root / "straight")]


def test_fsdp_sharded_saving_logic(runs):
    root = runs["root"] / "fsdp"
    result = json.loads((root / "result.json").read_text())
    assert result == {"restored_equal": True, "replayed_equal": True, "step_changed": True,
                      "world": 2}
    written = load_file(str(root / "model" / "model.safetensors"))
    expected = load_file(str(root / "expected.safetensors"))
    assert set(written) <= set(expected)
    for k, v in written.items():
        assert torch.equal(v, expected[k]), k
    AutoModelForCausalLM.from_pretrained(root / "model")


@pytest.mark.parametrize("name,engine,processes", [
    ("cpu_ddp_2proc", "MULTI_GPU", 2), ("single_gpu", "NO", 1), ("ddp_8gpu", "MULTI_GPU", 8),
    ("fsdp_8gpu", "FSDP", 8), ("deepspeed_zero2", "DEEPSPEED", 8), ("deepspeed_zero3", "DEEPSPEED", 8),
])
def test_shipped_accelerate_configs_load(name, engine, processes):
    from accelerate.commands.config.config_args import load_config_from_file
    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == engine and config.num_processes == processes
    assert config.use_cpu == name.startswith("cpu")
    if engine == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if engine == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


def test_fsdp_auto_wrap_finds_the_decoder_layer(tiny_pair):
    from elchat.chunked_loss import loss_module
    model = AutoModelForCausalLM.from_pretrained(tiny_pair["chat"])
    assert set(loss_module(model)._no_split_modules) == {"LlamaDecoderLayer"}
