"""Where a stage runs and in which precision: one helper every notebook and module calls.

`pick_device("auto")` prefers CUDA, then Apple MPS, then the CPU. `pick_dtype` picks the precision
that is both fast and safe there: bfloat16 on a CUDA GPU that runs it natively (Ampere, sm >= 8.0;
same exponent range as fp32, so no loss scaling), float16 on older CUDA GPUs such as Colab's T4,
where bf16 is only emulated (training then needs a loss scaler: accelerate's fp16 mixed precision
has one), float32 on MPS (patchy bf16 support).

On the CPU two answers exist. Weights that are *stored or merged* stay float32 (`pick_dtype`),
but *compute* (`pick_dtype(..., compute=True)`: CPT's autocast, evaluation forwards) uses bfloat16
when the CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16, as torch reports them in
`torch.cpu.get_capabilities()`; never guessed from a CPU name): there a bf16 matmul runs ~6x the
fp32 rate (2048^2, 2 threads: 1,014 vs 152 GFLOP/s), while plain AVX-512 only emulates bf16 and
gains nothing. Both functions accept an explicit choice that overrides the automatic one, and fail
with a clear message when the requested device is not there.
"""
from __future__ import annotations

import torch

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve `device` ("auto", "cpu", "cuda", "cuda:N", "mps") to an available torch.device.

    Example: `pick_device("cpu") == torch.device("cpu")`; "auto" gives cuda > mps > cpu.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"device={device!r}: expected auto, cpu, cuda, cuda:N or mps")
    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ValueError("device='mps' requested but Apple MPS is not available here; "
                             "use device='auto' or 'cpu'")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"device={device!r}: expected cuda or cuda:N with N a GPU index")
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but no CUDA GPU is available "
                             f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda}); "
                             "use device='auto' or 'cpu'")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA GPU(s) "
                             f"here (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return torch.device(name)
    raise ValueError(f"device={device!r}: expected auto, cpu, cuda, cuda:N or mps")


def cpu_has_native_bf16() -> bool:
    """True when torch reports bf16 dot-product instructions (AVX512-BF16 or AMX-BF16) here.

    Example: on a Xeon with AMX or a Zen 4 EPYC `cpu_has_native_bf16() is True`.
    """
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:  # torch < 2.6: no capability table, stay with fp32
        return False
    caps = get()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def cuda_has_native_bf16() -> bool:
    """True on CUDA GPUs that run bf16 natively (not the emulation torch also counts by default)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation and never counted emulation
        return bool(torch.cuda.is_bf16_supported())


def pick_dtype(device: str | torch.device, dtype: str | torch.dtype = "auto",
               compute: bool = False) -> torch.dtype:
    """The precision for `device`: bf16 on native-bf16 CUDA, else fp16 on CUDA; fp32 on MPS; on
    the CPU fp32, or with `compute=True` (autocast, evaluation) bf16 where the CPU has it natively.

    Example: `pick_dtype(torch.device("cpu")) == torch.float32`; `pick_dtype(d, "bf16")` forces it.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str):
        raise ValueError(f"dtype={dtype!r}: expected auto, bf16, fp16 or fp32")
    name = dtype.strip().lower()
    if name != "auto":
        if name not in _DTYPES:
            raise ValueError(f"dtype={dtype!r}: expected auto, bf16, fp16 or fp32")
        return _DTYPES[name]
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16() else torch.float16
    if kind == "cpu" and compute and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def describe(device: str | torch.device, dtype: torch.dtype | str = "auto") -> str:
    """One line saying what a stage runs on; every notebook prints it.

    Example: `describe(torch.device("cpu"), torch.float32)` -> "cpu (2 threads), float32".
    """
    device = torch.device(device)
    dtype = pick_dtype(device, dtype)
    precision = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return (f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB), {precision}")
    if device.type == "mps":
        return f"mps (Apple GPU), {precision}"
    return f"{device.type} ({torch.get_num_threads()} threads), {precision}"
