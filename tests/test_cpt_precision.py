"""CPT precision (dtype="auto"): bf16 autocast over fp32 master weights where the CPU has native
bf16 (as torch reports it), fp32 where not; deterministic; BPC close to fp32."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from elchat import device
from elchat.cpt import CPTConfig, train

from conftest import CPT_DOCS as DOCS, CPT_VALID as VALID  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_own_cache")


def small(**kw) -> CPTConfig:
    return CPTConfig(**{**dict(max_steps=4, block_size=32, batch_size=2, log_every=1, eval_every=2,
                               save_every=0, layers=(0, -1)), **kw})


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "no")])
def test_auto_follows_the_cpu(native, expected, tiny_pair, tmp_path, monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    summary = train(tiny_pair["chat"], DOCS, VALID, tmp_path / "run", small(), progress=False)
    assert summary["precision"] == expected
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in saved.values())  # the source's dtype (fp32)


def test_bf16_is_deterministic_and_close_to_fp32(tiny_pair, tmp_path):
    runs = {name: train(tiny_pair["chat"], DOCS, VALID, tmp_path / name, small(dtype=dtype),
                        progress=False)
            for name, dtype in [("bf16_a", "bf16"), ("bf16_b", "bf16"), ("fp32", "fp32")]}
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("bf16_a", "bf16_b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = {n: json.loads((tmp_path / n / "log.json").read_text()) for n in runs}
    bpc = {n: [r["valid_bpc"] for r in rows[n] if r.get("valid_bpc") is not None] for n in runs}
    for x, y in zip(bpc["bf16_a"], bpc["fp32"]):
        assert abs(x - y) < 0.01 * y  # < 1% relative (the bound for SmolLM2, here tiny)
