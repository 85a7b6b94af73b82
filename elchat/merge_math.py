"""The math of merging, as pure functions over tensors (no files): SLERP, lerp, Chat Vector, angles.

SLERP (spherical linear interpolation) of two same-shape weight tensors v0, v1, each flattened to
one vector:

    cos θ = <v0/|v0|, v1/|v1|>
    slerp(t; v0, v1) = sin((1 - t)·θ)/sin θ · v0  +  sin(t·θ)/sin θ · v1

t is the weight of v1: t = 0 gives v0, t = 1 gives v1 (both exactly, bit for bit). When the
vectors are nearly (anti)parallel, |cos θ| > `DOT_THRESHOLD` = 0.9995, sin θ ≈ 0 and SLERP falls back
to linear interpolation lerp(t; v0, v1) = (1 - t)·v0 + t·v1. The weights apply to the unnormalized
tensors; the interpolation runs in float32 (float64 stays float64), the angle's sums in float64, and
the result takes v0's dtype. These are mergekit's semantics (`mergekit.merge_methods.slerp`).

A t given per layer as a list [y0 .. yn] is a mergekit "gradient": layer i of L sits at depth
x = i/(L-1) (tensors outside the layers at x = 0) and gets the piecewise-linear value at x·n.
Per-module filters (`{"self_attn": [...], "mlp": 0.3}`) pick the first whose key is a substring of
the tensor name, as mergekit's `filter:` entries do.

Chat Vector (Huang et al. 2024): with target T (an adapted base model), chat models C_i and their
base models B_i,

    chat_vector(T) = T + Σ_i r_i · (C_i - B_i)          (computed in float32, cast to T's dtype).

The angle between two tensors (what SLERP walks along), in degrees, is computed stably near 0 as

    angle(a, b) = 2 · atan2(|â - b̂|, |â + b̂|),   â = a/|a|, b̂ = b/|b|.
"""
from __future__ import annotations

import math
import re

import torch

DOT_THRESHOLD = 0.9995
# float32 dot products/norms over tens of millions of elements drift by ~1e-3 (measured on
# SmolLM2's 28M-element embedding), so the angle is accumulated in float64 over 1M-element chunks.
CHUNK = 1 << 20
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = DOT_THRESHOLD,
          eps: float = 1e-8, inplace: bool = False) -> torch.Tensor:
    """Spherical interpolation of two same-shape tensors seen as flat vectors; t = weight of v1.

    `inplace=True` may overwrite v0 (the streaming merges own their freshly read tensors).
    Example: `slerp(0.5, torch.tensor([1., 0.]), torch.tensor([0., 1.]))` -> `[0.7071, 0.7071]`.
    """
    if v0.shape != v1.shape:
        raise ValueError(f"slerp: shapes differ {tuple(v0.shape)} vs {tuple(v1.shape)}")
    t = float(t)
    if t == 0.0:
        return v0 if inplace else v0.clone()
    if t == 1.0:
        return v1.to(v0.dtype, copy=True)
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a, b = v0.reshape(-1).to(dtype), v1.reshape(-1).to(dtype)
    saa = sbb = sab = 0.0
    for i in range(0, a.numel(), CHUNK):  # float64 sums in chunks: exact-ish, small scratch
        x, y = a[i:i + CHUNK].double(), b[i:i + CHUNK].double()
        saa, sbb, sab = saa + torch.dot(x, x).item(), sbb + torch.dot(y, y).item(), sab + torch.dot(x, y).item()
    na, nb = math.sqrt(saa), math.sqrt(sbb)
    na, nb = (na if na > eps else 1.0), (nb if nb > eps else 1.0)  # zero tensor: no division by 0
    dot = min(1.0, max(-1.0, sab / (na * nb)))
    if abs(dot) > dot_threshold:
        ca, cb = 1.0 - t, t
    else:
        theta = math.acos(dot)
        ca, cb = math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    out = a.mul_(ca) if inplace and a.data_ptr() == v0.data_ptr() else a * ca
    return out.add_(b, alpha=cb).reshape(v0.shape).to(v0.dtype)


def lerp(t: float, v0: torch.Tensor, v1: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """(1-t)·v0 + t·v1 in float32, cast to v0's dtype. Example: `lerp(.25, zeros, ones)` -> 0.25."""
    if v0.shape != v1.shape:
        raise ValueError(f"lerp: shapes differ {tuple(v0.shape)} vs {tuple(v1.shape)}")
    t = float(t)
    if t in (0.0, 1.0):
        return (v0 if t == 0.0 else v1).to(v0.dtype, copy=True)
    a = v0.float()
    out = a.mul_(1 - t) if inplace and a.data_ptr() == v0.data_ptr() else a * (1 - t)
    return out.add_(v1.float(), alpha=t).to(v0.dtype)


def gradient(values, x: float) -> float:
    """Value of a mergekit-style gradient (a number or list spread evenly over x in [0, 1]).

    Example: `gradient([0, 1, 0], 0.25) == 0.5`; `gradient(0.3, x) == 0.3`.
    """
    if isinstance(values, (int, float)):
        return float(values)
    values = [float(v) for v in values]
    scaled = x * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    return (1 - (scaled - i0)) * values[i0] + (scaled - i0) * values[i1]


def layer_index(name: str) -> int | None:
    """Transformer layer of a tensor name. Example: `layer_index("model.layers.3.mlp.up_proj.weight") == 3`."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def module_name(name: str) -> str:
    """A tensor's name inside its layer (names outside the layers stay whole).

    Example: `module_name("model.layers.3.mlp.up_proj.weight") == "mlp.up_proj.weight"`.
    """
    m = _LAYER.search(name)
    return name[m.end():] if m else name


def tensor_t(name: str, num_layers: int, t=0.5, filters: dict | None = None) -> float:
    """t for one tensor: the first filter that is a substring of `name`, else `t`, at its depth.

    Example: `tensor_t("model.layers.3.mlp.up_proj.weight", 4, [0, 1]) == 1.0`.
    """
    layer = layer_index(name)
    x = 0.0 if layer is None else (layer / (num_layers - 1) if num_layers > 1 else 1.0)
    for key, value in (filters or {}).items():
        if key in name:
            return gradient(value, x)
    return gradient(t, x)


def chat_vector(target: torch.Tensor, chats, bases, ratios) -> torch.Tensor:
    """target + Σ ratio·(chat − base), in float32, cast to target's dtype.

    Example: `chat_vector(t, [c], [b], [1.0])` == `t + (c - b)`.
    """
    out = target.float()
    out = out.clone() if out is target else out
    for c, b, r in zip(chats, bases, ratios, strict=True):
        out.add_(c.float() - b.float(), alpha=float(r))
    return out.to(target.dtype)


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors as flat vectors (stable near 0 via atan2).

    Example: `angle(torch.tensor([1., 0.]), torch.tensor([0., 2.])) == 90.0`.
    """
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    a, b = a / na, b / nb
    return math.degrees(2 * math.atan2(torch.linalg.vector_norm(a - b).item(),
                                       torch.linalg.vector_norm(a + b).item()))
