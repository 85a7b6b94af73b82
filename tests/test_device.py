"""Device and precision choice, with CUDA/MPS availability monkeypatched (runs on any CPU box)."""
from __future__ import annotations

import types

import pytest
import torch

from elchat import device as dev


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has the accelerators we say: machine(cuda=1, bf16=True, mps=False).

    bf16="emulated" is a pre-Ampere GPU (T4): torch's is_bf16_supported() says True by default
    (including_emulation=True) and False when emulation is excluded.
    """
    def set_(cuda: int = 0, bf16=False, mps: bool = False, cpu_bf16: bool = False):
        def is_bf16_supported(including_emulation: bool = True):
            return including_emulation if bf16 == "emulated" else bf16
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        monkeypatch.setattr(torch.cpu, "get_capabilities",
                            lambda: {"avx512_bf16": cpu_bf16, "amx_bf16": False, "avx512_f": True})
        monkeypatch.setattr(torch.backends, "mps", types.SimpleNamespace(is_available=lambda: mps))
    return set_


@pytest.mark.parametrize("cuda,mps,expected", [
    (1, True, "cuda"), (1, False, "cuda"), (0, True, "mps"), (0, False, "cpu"),
])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert dev.pick_device("auto").type == expected
    assert dev.pick_device().type == expected


def test_explicit_devices_are_honoured(machine):
    machine(cuda=2, mps=True)
    assert dev.pick_device("cpu") == torch.device("cpu")
    assert dev.pick_device("mps") == torch.device("mps")
    assert dev.pick_device("cuda:1") == torch.device("cuda", 1)
    assert dev.pick_device(torch.device("cpu")) == torch.device("cpu")
    assert dev.pick_device(" CUDA ") == torch.device("cuda")


@pytest.mark.parametrize("request_,match", [
    ("cuda", "no CUDA GPU"), ("cuda:0", "no CUDA GPU"), ("mps", "MPS is not available"),
    ("tpu", "expected auto, cpu"), ("cuda:x", "GPU index"), (3, "expected auto"),
])
def test_unavailable_or_bad_devices_fail_clearly(machine, request_, match):
    machine(cuda=0, mps=False)
    with pytest.raises(ValueError, match=match):
        dev.pick_device(request_)


def test_cuda_index_out_of_range(machine):
    machine(cuda=1)
    with pytest.raises(ValueError, match=r"only 1 CUDA GPU"):
        dev.pick_device("cuda:1")


@pytest.mark.parametrize("device,bf16,expected", [
    ("cuda", True, torch.bfloat16), ("cuda", False, torch.float16),
    ("cuda", "emulated", torch.float16),  # Colab's T4: bf16 only emulated -> fp16 (+ loss scaler)
    ("cuda:0", True, torch.bfloat16), ("cpu", True, torch.float32), ("mps", True, torch.float32),
])
def test_auto_dtype(machine, device, bf16, expected):
    machine(cuda=1, bf16=bf16, mps=True, cpu_bf16=True)
    assert dev.pick_dtype(torch.device(device)) == expected
    assert dev.pick_dtype(device, "auto") == expected


@pytest.mark.parametrize("cpu_bf16,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_compute_dtype_follows_what_torch_reports(machine, cpu_bf16, expected):
    machine(cpu_bf16=cpu_bf16)
    assert dev.pick_dtype("cpu", compute=True) == expected
    assert dev.pick_dtype("cpu") == torch.float32  # stored/merged weights stay fp32
    assert dev.pick_dtype("cpu", "fp32", compute=True) == torch.float32


def test_cpu_bf16_check_agrees_with_torch_here():
    caps = torch.cpu.get_capabilities()
    assert dev.cpu_has_native_bf16() == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


@pytest.mark.parametrize("name,expected", [
    ("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32),
    ("float32", torch.float32), (torch.float16, torch.float16),
])
def test_explicit_dtype_is_honoured(name, expected):
    assert dev.pick_dtype("cpu", name) == expected


def test_bad_dtype_fails_clearly():
    with pytest.raises(ValueError, match="dtype='int8'"):
        dev.pick_dtype("cpu", "int8")


def test_describe_cpu():
    text = dev.describe(torch.device("cpu"), torch.float32)
    assert text == f"cpu ({torch.get_num_threads()} threads), float32"
    assert dev.describe("cpu", "bf16").endswith("bfloat16")


def test_describe_cuda(machine, monkeypatch):
    machine(cuda=1, bf16=True)
    props = types.SimpleNamespace(name="FakeGPU 80GB", total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    assert dev.describe(torch.device("cuda")) == "cuda:0 (FakeGPU 80GB, 80.0 GiB), bfloat16"
