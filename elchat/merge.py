"""Merging chat and adapted models (Hugging Face directories): SLERP, Chat Vector, ElChat — exact,
streamed tensor by tensor. The tensor math lives in `elchat.merge_math`; this module reads the
inputs, checks they can merge, and writes the result.

SLERP merge: every tensor of model A interpolated towards model B with t = weight of B (t = 0 gives
A, t = 1 gives B), a per-layer t list spread over depth and per-module filters as in mergekit.

Chat Vector (Huang et al. 2024): out = target + Σ_i ratio_i·(chat_i − base_i) for every parameter.
When the target's vocabulary was expanded, only the old rows of the embeddings/lm_head get the
vector; the new rows stay as the target has them (or `skip_embed` leaves the matrices alone). The
rows of the chat-template special tokens are taken from the *chat* model (the original code takes
them from the base, whose rows for those tokens were never trained).

ElChat (Yamaguchi, Morishita, Villavicencio & Aletras 2025, arXiv 2412.11704): from the source chat
model C and the adapted chat model A (vocabulary expansion + continual pre-training): (1) A's
embeddings/lm_head (new vocabulary) and A's tokenizer with C's chat template; (2) SLERP of the
`.weight` tensors of the transition layers from A towards C, t = the weight of C (t = 0 keeps A,
t = 1 gives C) — the published layers and t are `elchat.method.TRANSITION_LAYERS` and `ELCHAT_T`;
(3) every other tensor at `other_t`, by default `elchat.method.ELCHAT_OTHER_T` = 1: C's (the final
norm; the middle layers are equal in A and C after 2x2LS training); (4) the rows of every
chat-template special token copied from C (one shared matrix when tied). Biases inside the
transition layers (Qwen2's q/k/v) stay C's by default (`ELCHAT_INTERPOLATE_BIASES` = False);
`interpolate_biases=True` (`--interpolate-biases`) SLERPs them with their layer's t as well.

Against the authors' released merge script (github.com/gucci-j/chat-cve, `merging/`, run with
`--pipeline add_transition copy_emb --consider_special_tokens`): (2)-(3) are what it does — it
starts from C, overwrites only `.weight` of the listed modules of the transition layers with
slerp(t; A, C), so C's final norm and biases stay. Deliberate differences: it copies back the rows
of the tokenizer's `all_special_tokens`, the kit the rows of the chat template's special tokens
(`elchat.chat_tokens`: what a conversation actually feeds the model); its per-architecture module
lists (llama, qwen2, gemma2) leave any other layer weight (Qwen3/Gemma-3 `q_norm`/`k_norm`) at C's,
the kit interpolates every `.weight` of a transition layer, for every architecture. The inputs it
merges differ as documented in `elchat.vocab` and `elchat.embeddings` (English tokenization kept,
mean init over the true byte-level pieces).

Each input is a `Checkpoint` (lazy tensor reader, config, role in messages). Shapes that differ only
in the vocabulary dimension (dim 0 equal to each model's `vocab_size`) are handled explicitly as
above — never truncated to the common rows; any other mismatch, a different architecture or layer
count, is an error before a byte is written. Non-finite inputs abort the merge as soon as they are
read; outputs go through `elchat.atomic.atomic_dir`, so a failed merge leaves nothing at `out_dir`.

Engine decision — mergekit 0.1.5 is the test/benchmark *reference*, not the engine: the math is ~40
lines, while the ElChat-specific steps (A's rows for the new vocabulary, row-level copy of special
tokens into a tied matrix, the Chat-Vector old-row rule) are exactly where mergekit's tokenizer
handling would permute or truncate vocabulary axes; its plan/task graph, pydantic configs and extra
dependencies (scipy, sentencepiece, protobuf, immutables; LGPL-3.0) would sit around three small
functions; and its lazy loader memory-maps inputs (2.0 GB peak RSS on a 538 MB model), whereas
`elchat.shards` keeps peak memory at a few tensors. `benchmarks/merge_speed.py` and the optional
test check our SLERP against mergekit's on the same inputs.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import runs
from .atomic import atomic_dir, atomic_write_json, atomic_write_text
from .chat_tokens import chat_special_tokens
from .errors import UserError
from .merge_math import CHUNK, angle, chat_vector, layer_index, lerp, module_name, slerp, tensor_t
from .method import (CV_RATIO, ELCHAT_INTERPOLATE_BIASES, ELCHAT_OTHER_T, ELCHAT_T, LEP_DEFAULT_MODE,
                     LEP_MODES, TRANSITION_LAYERS, check_t, resolve_layers)
from .model_files import TOKENIZER_FILES, check_model_dir, load_tokenizer, local_model_dir
from .shards import ShardedReader, ShardWriter

_STRUCTURE = ("architectures", "model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
              "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")
_SHARD_BYTES = 2 * 1024**3
_INTERPOLATIONS = {"slerp": slerp, "linear": lerp}


# ----------------------------------------------------------------------------- checkpoints
def _finite(x: torch.Tensor, name: str, role: str) -> torch.Tensor:
    # A plain sum propagates NaN/inf and is ~20x faster than torch.isfinite (which also allocates
    # two tensor-sized temporaries); only a non-finite sum is confirmed element-wise, in chunks.
    if not x.is_floating_point() or math.isfinite(x.sum().item()):
        return x
    flat = x.reshape(-1)
    if not all(torch.isfinite(flat[i:i + CHUNK]).all() for i in range(0, flat.numel(), CHUNK)):
        raise ValueError(f"{role} model: tensor {name} holds NaN/inf values; a merge would spread "
                         "them — re-train or re-export that checkpoint")
    return x


def _is_vocab(shape, config) -> bool:
    return len(shape) >= 1 and shape[0] == config.get("vocab_size")


@dataclass(frozen=True)
class Checkpoint:
    """One input of a merge: its tensors (read lazily), its config.json, its role (for messages).

    Example: `Checkpoint.open("runs/micro/am/02_cpt/chat_cpt", "adapted").shape("lm_head.weight")`.
    """
    reader: ShardedReader
    config: dict
    role: str

    @classmethod
    def open(cls, path, role: str) -> Checkpoint:
        """The checkpoint in a Hugging Face model directory or hub id (downloaded), with a clear
        error when it is none, holds pickled weights only, or its tensors do not cover its
        architecture (`elchat.model_files`)."""
        path = local_model_dir(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{role} model {path}: no config.json — expected a Hugging Face "
                                    "model directory (save_pretrained output)")
        try:  # strict as every loader: safetensors covering the architecture, before any work
            check_model_dir(path)
        except UserError as e:
            raise UserError(f"{role} model: {e}") from e
        config = json.loads((path / "config.json").read_text())
        if "vocab_size" not in config and isinstance(config.get("text_config"), dict):
            config = {**config["text_config"], **{k: config[k] for k in ("architectures",) if k in config}}
        return cls(ShardedReader(path), config, role)

    @property
    def path(self) -> Path:
        return self.reader.dir

    @property
    def names(self) -> list[str]:
        return self.reader.names

    @property
    def num_layers(self) -> int:
        return self.config["num_hidden_layers"]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.reader.meta(name)[1]

    def is_vocab(self, name: str) -> bool:
        """True for a matrix with one row per token (embeddings, lm_head)."""
        return _is_vocab(self.shape(name), self.config)

    def read(self, name: str) -> torch.Tensor:
        """One tensor, read fresh from disk; NaN/inf abort the merge naming this checkpoint."""
        return _finite(self.reader.get(name), name, self.role)

    def plan(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, shape) of every tensor: the layout of a merge written in this one's image."""
        return [(name, *self.reader.meta(name)) for name in self.names]


def _check_structure(ref: Checkpoint, other: Checkpoint) -> None:
    for key in _STRUCTURE:
        if key in ref.config and key in other.config and ref.config[key] != other.config[key]:
            raise ValueError(f"{ref.role} and {other.role} models differ in config {key!r}: "
                             f"{ref.config[key]!r} vs {other.config[key]!r}; only models of one "
                             "architecture merge")
    missing, extra = set(ref.names) - set(other.names), set(other.names) - set(ref.names)
    if missing or extra:
        raise ValueError(f"{ref.role} and {other.role} models hold different tensors: only in "
                         f"{ref.role}: {sorted(missing)[:4]}, only in {other.role}: {sorted(extra)[:4]}")


def _tensor_kind(name: str, ref: Checkpoint, other: Checkpoint, vocab: str) -> str:
    (dtype, shape), (other_dtype, other_shape) = ref.reader.meta(name), other.reader.meta(name)
    if not (dtype.is_floating_point and other_dtype.is_floating_point):
        raise ValueError(f"tensor {name}: non-float dtype ({dtype}, {other_dtype}) cannot be merged")
    if other_shape == shape:
        return "same"
    if other_shape[1:] == shape[1:] and ref.is_vocab(name) and other.is_vocab(name):
        if vocab == "same" or (vocab == "grow" and other_shape[0] > shape[0]):
            raise ValueError(
                f"tensor {name}: vocabulary {other.role}={other_shape[0]} vs {ref.role}={shape[0]} rows; "
                + ("the vocabulary-expanded model must be the target/adapted one"
                   if vocab == "grow" else "these models must share one vocabulary"))
        return "vocab"
    raise ValueError(f"tensor {name}: shape {tuple(other_shape)} in {other.role} vs {tuple(shape)} in "
                     f"{ref.role} (not a vocabulary-only difference); cannot merge")


def _check(checkpoints: list[Checkpoint], vocab: str = "same") -> dict[str, str]:
    """Validate checkpoints against the first one; return {tensor name: "same"|"vocab"}.

    Tensors whose shapes differ only in dim 0 == each model's vocab_size are "vocab"; `vocab="grow"`
    additionally requires the first model's vocabulary to be the largest (its new rows have no
    counterpart elsewhere), `vocab="same"` forbids any difference, `vocab="any"` allows both ways.
    """
    ref, *others = checkpoints
    for other in others:
        _check_structure(ref, other)
    kinds = {}
    for name in ref.names:
        found = {_tensor_kind(name, ref, other, vocab) for other in others}
        kinds[name] = "vocab" if "vocab" in found else "same"
    return kinds


def _tokenizer(path):
    """The tokenizer saved with a model, or None when the directory has no tokenizer files."""
    path = Path(path)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    return load_tokenizer(path)


def _special_rows(chat_tok, out_tok) -> list[tuple[str, int, int]]:
    """(token, id in the chat tokenizer, id in the output tokenizer) of each chat special token."""
    if chat_tok is None or out_tok is None:
        raise ValueError("copying special-token rows needs tokenizers in both model directories "
                         "(or pass copy_special=False / --no-copy-special)")
    out_vocab = out_tok.get_vocab()
    rows = []
    for token in chat_special_tokens(chat_tok):
        if token not in out_vocab:
            raise ValueError(f"chat special token {token!r} is missing from the output tokenizer")
        rows.append((token, chat_tok.convert_tokens_to_ids(token), out_vocab[token]))
    return rows


def _check_prefix(small_tok, big_tok, what: str) -> None:
    """The old vocabulary must keep its ids in the expanded one, or rows would be misaligned."""
    if small_tok is None or big_tok is None:
        raise ValueError(f"{what}: vocabularies differ in size and a tokenizer is missing, so the "
                         "row alignment cannot be checked")
    big = big_tok.get_vocab()
    moved = [tok for tok, i in small_tok.get_vocab().items() if big.get(tok) != i]
    if moved:
        raise ValueError(f"{what}: {len(moved)} tokens of the smaller vocabulary have other ids in "
                         f"the expanded one (e.g. {moved[:3]}); expansion must append new tokens")


def _write(out_dir, plan, produce, meta_dir, tok=None, template_tok=None, gen_dir=None,
           recipe=None, desc="merge", max_shard_bytes=_SHARD_BYTES, copy_files=False) -> Path:
    """Stream `produce(name)` for each planned tensor into `out_dir` (atomic) plus config/tokenizer.

    `copy_files` copies meta_dir's other small files (tokenizer, template) instead of saving `tok`.
    """
    with atomic_dir(out_dir) as tmp:
        with ShardWriter(tmp, plan, max_shard_bytes) as writer:
            for name, _, _ in tqdm(plan, desc=desc, unit="tensor", leave=False):
                writer.write(name, produce(name))
        if copy_files:
            for f in Path(meta_dir).iterdir():
                if f.is_file() and not f.name.endswith((".safetensors", ".index.json", "merge_recipe.json")):
                    shutil.copy2(f, tmp / f.name)
        shutil.copy2(Path(meta_dir) / "config.json", tmp / "config.json")
        for d in (gen_dir, meta_dir):
            if d is not None and (Path(d) / "generation_config.json").is_file():
                shutil.copy2(Path(d) / "generation_config.json", tmp / "generation_config.json")
                break
        if tok is not None:
            if template_tok is not None and getattr(template_tok, "chat_template", None):
                tok.chat_template = template_tok.chat_template
            tok.save_pretrained(tmp)
        if recipe is not None:
            atomic_write_json(tmp / "merge_recipe.json", recipe)
    return Path(out_dir)


# ----------------------------------------------------------------------------- merges
def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _interpolation(method: str):
    if method not in _INTERPOLATIONS:
        raise ValueError(f"method={method!r}: expected 'slerp' or 'linear'")
    return _INTERPOLATIONS[method]


def slerp_merge(model_a, model_b, out_dir, t=0.5, filters: dict | None = None, method="slerp",
                max_shard_bytes=_SHARD_BYTES) -> Path:
    """SLERP (or lerp) of two models, t = weight of B, per-layer lists and filters as in mergekit.

    Example: `slerp_merge("chat", "adapted", "out", t=[0, 0.5, 0])`. If A's vocabulary is an
    expansion of B's, A's extra embedding rows are kept and the shared rows interpolated.
    """
    check_t("t", t)
    for key, value in (filters or {}).items():
        check_t(f"filters[{key!r}]", value)
    interpolate = _interpolation(method)
    a, b = Checkpoint.open(model_a, "model-a"), Checkpoint.open(model_b, "model-b")
    kinds = _check([a, b], vocab="grow")
    if "vocab" in kinds.values():
        _check_prefix(_tokenizer(b.path), _tokenizer(a.path), "slerp")

    def produce(name):
        x, y = a.read(name), b.read(name)
        t_name = tensor_t(name, a.num_layers, t, filters)
        if kinds[name] == "vocab":
            x = x.clone()
            x[: y.shape[0]] = interpolate(t_name, x[: y.shape[0]], y)
            return x
        return interpolate(t_name, x, y, inplace=True)

    recipe = {"method": method, "model_a": str(model_a), "model_b": str(model_b), "t": t, "filters": filters}
    return _write(out_dir, a.plan(), produce, a.path, copy_files=True, recipe=recipe, desc="slerp",
                  max_shard_bytes=max_shard_bytes)


def _copy_rows(out, src, rows, changes, name):
    before = out[[i for _, _, i in rows]].float()
    for token, i_src, i_out in rows:
        out[i_out] = src[i_src].to(out.dtype)
    for (token, _, i_out), old in zip(rows, before):
        delta = torch.linalg.vector_norm(out[i_out].float() - old).item()
        changes.setdefault(token, {})[name] = {
            "l2_change": delta, "relative": delta / max(torch.linalg.vector_norm(old).item(), 1e-12)}


def _chat_vector_inputs(base, chat, target, ratio):
    """(target, chat checkpoints, base checkpoints, ratios), checked to merge."""
    bases, chats = _as_list(base), _as_list(chat)
    ratios = _as_list(ratio) if isinstance(ratio, (list, tuple)) else [ratio] * len(chats)
    if not (len(bases) == len(chats) == len(ratios)) or not chats:
        raise ValueError(f"chat vector: {len(chats)} chat, {len(bases)} base models and "
                         f"{len(ratios)} ratios; give one base and one ratio per chat model")
    target = Checkpoint.open(target, "target")
    chats = [Checkpoint.open(c, f"chat[{i}]") for i, c in enumerate(chats)]
    bases = [Checkpoint.open(b, f"base[{i}]") for i, b in enumerate(bases)]
    _check([target, *chats, *bases], vocab="grow")
    for c, b in zip(chats, bases):
        _check([c, b], vocab="same")
    return target, chats, bases, ratios


def chat_vector_merge(base, chat, target, out_dir, ratio=CV_RATIO, skip_embed=False, copy_special=True,
                      max_shard_bytes=_SHARD_BYTES) -> dict:
    """target + Σ ratio·(chat − base); several vectors when base/chat/ratio are lists.

    Example: `chat_vector_merge("base", "chat", "base_cpt", "cv")` -> summary dict.
    """
    tgt, chats, bases, ratios = _chat_vector_inputs(base, chat, target, ratio)
    tok_t, tok_c = _tokenizer(tgt.path), _tokenizer(chats[0].path)
    vocab_names = [n for n in tgt.names if tgt.is_vocab(n)]
    if any(tgt.shape(n)[0] != chats[0].shape(n)[0] for n in vocab_names):
        _check_prefix(tok_c, tok_t, "chat vector")
    rows = _special_rows(tok_c, tok_t) if copy_special else []
    changes: dict = {}

    def produce(name):
        x = tgt.read(name)
        if name in vocab_names and skip_embed and not rows:
            return x
        chat_tensors = [c.read(name) for c in chats]
        if name not in vocab_names:
            return chat_vector(x, chat_tensors, [b.read(name) for b in bases], ratios)
        out = x.clone()
        if not skip_embed:
            n = chat_tensors[0].shape[0]  # old rows get the vector, new rows stay as the target has them
            out[:n] = chat_vector(x[:n], chat_tensors, [b.read(name) for b in bases], ratios)
        if rows:
            _copy_rows(out, chat_tensors[0], rows, changes, name)
        return out

    recipe = {"method": "chat_vector", "target": str(target), "chat": [str(c) for c in _as_list(chat)],
              "base": [str(b) for b in _as_list(base)], "ratio": ratios, "skip_embed": skip_embed,
              "copy_special": copy_special, "special_rows": changes}
    out = _write(out_dir, tgt.plan(), produce, tgt.path, tok_t, tok_c, gen_dir=chats[0].path,
                 recipe=recipe, desc="chat vector", max_shard_bytes=max_shard_bytes)
    return {**recipe, "out": str(out)}


def _elchat_t(layers, t, other_t, num_layers, interpolate_biases):
    """`t_for(name)`: the t of one non-vocabulary tensor of an ElChat merge (checked settings)."""
    layers, t_per_layer = _as_list(layers), check_t("t", t)
    if len(layers) != len(t_per_layer):
        raise ValueError(f"layers {layers} and t {t_per_layer}: give one t per layer")
    check_t("other_t", other_t)
    resolve_layers(layers, num_layers)  # raises on an index out of range or a layer listed twice
    t_by_layer = dict(sorted((layer % num_layers, value) for layer, value in zip(layers, t_per_layer)))

    def t_for(name: str) -> float:
        layer = layer_index(name)
        if layer not in t_by_layer:
            return float(other_t)
        # the released code interpolates `.weight` only: a transition layer's biases stay C's
        return t_by_layer[layer] if interpolate_biases or not name.endswith(".bias") else 1.0
    return t_by_layer, t_for


def elchat_merge(chat_dir, adapted_dir, out_dir, layers=TRANSITION_LAYERS, t=ELCHAT_T,
                 other_t=ELCHAT_OTHER_T, copy_special=True, method="slerp",
                 interpolate_biases=ELCHAT_INTERPOLATE_BIASES, max_shard_bytes=_SHARD_BYTES) -> dict:
    """ElChat: A's embeddings + C's chat template, SLERP of A's `layers` towards C, C's special rows.

    `t` holds one SLERP weight per layer in `layers`: the weight of the source chat model C
    (t = 0 keeps the adapted model A's layer, t = 1 gives C's). `other_t` is the t of every tensor
    outside those layers and the vocabulary matrices (1: C's, as the released code; 0: A's).
    Biases of the transition layers stay C's unless `interpolate_biases`. Defaults: the published
    `elchat.method` settings. Example:
    `elchat_merge("chat", "chat_cpt", "elchat")["t"] == {0: .3, 1: .5, 22: .5, 23: .3}`.
    """
    interpolate = _interpolation(method)
    adapted, chat = Checkpoint.open(adapted_dir, "adapted"), Checkpoint.open(chat_dir, "chat")
    _check([adapted, chat], vocab="grow")
    t_by_layer, t_for = _elchat_t(layers, t, other_t, adapted.num_layers, interpolate_biases)
    tok_a, tok_c = _tokenizer(adapted.path), _tokenizer(chat.path)
    rows = _special_rows(tok_c, tok_a) if copy_special else []
    changes: dict = {}

    def produce(name):
        x = adapted.read(name)
        if adapted.is_vocab(name):  # A's rows for the (new) vocabulary, C's special-token rows
            if rows:
                x = x.clone()
                _copy_rows(x, chat.read(name), rows, changes, name)
            return x
        t_name = t_for(name)
        return x if t_name == 0 else interpolate(t_name, x, chat.read(name), inplace=True)

    recipe = {"method": f"elchat ({method})", "chat": str(chat_dir), "adapted": str(adapted_dir),
              "t": {str(k): v for k, v in t_by_layer.items()}, "other_t": other_t,
              "interpolate_biases": interpolate_biases, "copy_special": copy_special,
              "special_rows": changes}
    out = _write(out_dir, adapted.plan(), produce, adapted.path, tok_a, tok_c, gen_dir=chat.path,
                 recipe=recipe, desc="elchat", max_shard_bytes=max_shard_bytes)
    return {**recipe, "t": t_by_layer, "out": str(out)}


def elchat_sweep(chat_dir, adapted_dir, out_root, sweep_t, layers=TRANSITION_LAYERS) -> dict[float, Path]:
    """One ElChat merge per t of `sweep_t`, every layer of `layers` at that t: `{t: out_root/t0.25}`.

    Example: `elchat_sweep("chat", "chat_cpt", "03_merge/sweep", [0, 0.5, 1])[0.5]`.
    """
    sweep = {}
    for t in check_t("sweep_t", sweep_t):
        out = Path(out_root) / f"t{t:.2f}"
        elchat_merge(chat_dir, adapted_dir, out, layers=layers, t=[t] * len(_as_list(layers)))
        sweep[t] = out
    return sweep


# ----------------------------------------------------------------------------- analysis
def layer_angles(a_dir, b_dir) -> list[dict]:
    """Per-tensor angle (degrees) between two models: rows {layer, module, name, angle}.

    Example: `layer_angles("chat", "chat_cpt")[0]` -> `{"layer": None, "module": "model.embed_tokens.weight", ...}`.
    Embedding matrices of different vocabulary sizes are compared on the shared (old) rows.
    """
    a, b = Checkpoint.open(a_dir, "a"), Checkpoint.open(b_dir, "b")
    kinds = _check([a, b], vocab="any")
    rows = []
    for name in a.names:
        x, y = a.reader.get(name), b.reader.get(name)
        if kinds[name] == "vocab":
            n = min(x.shape[0], y.shape[0])
            x, y = x[:n], y[:n]
        rows.append({"layer": layer_index(name), "module": module_name(name), "name": name,
                     "angle": angle(x, y)})
    return rows


def write_layer_angles(a_dir, b_dir, path, pair: str) -> list[dict]:
    """`layer_angles` with a `pair` label, written atomically as CSV (stage 05 plots it).

    Example: `write_layer_angles(chat, chat_cpt, run / "03_merge/layer_angles.csv", "Chat vs Chat+VE")`.
    """
    rows = [{**row, "pair": pair} for row in layer_angles(a_dir, b_dir)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["layer", "module", "name", "angle", "pair"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return rows


# ----------------------------------------------------------------------------- stage 03's inputs
@dataclass(frozen=True)
class StageInputs:
    """What stage 03 merges: the run's models and the checked merge settings.

    `base_cpt`/`base_emb` are None when the run has no base model or stage 02 did not train them
    (then Chat Vector / LEP are skipped).
    """
    run: Path
    out_dir: Path                   # 03_merge/
    chat: Path | str                # source chat model C
    base: Path | str | None         # its base model B (None for chat-only presets)
    chat_cpt: Path                  # adapted chat model A = Chat+VE (02_cpt/chat_cpt)
    base_cpt: Path | None           # adapted base model (Chat Vector's target)
    base_emb: Path | None           # base with trained new embeddings (LEP's donor)
    layers: list[int]               # transition layers, as stage 02 trained them
    t: list[float]                  # SLERP t per layer: the weight of C
    sweep_t: list[float]
    cv_ratio: float
    lep_mode: str


def _check_settings(elchat_t, sweep_t, cv_ratio, lep_mode) -> tuple[list[float], list[float]]:
    if not isinstance(elchat_t, (list, tuple)) or not elchat_t:
        raise ValueError(f"parameter elchat_t={elchat_t!r}: expected a non-empty list")
    if not isinstance(sweep_t, (list, tuple)):
        raise ValueError(f"parameter sweep_t={sweep_t!r}: expected a list ([] for no sweep)")
    t = check_t("parameter elchat_t", elchat_t)
    sweep = check_t("parameter sweep_t", sweep_t) if sweep_t else []
    if isinstance(cv_ratio, bool) or not isinstance(cv_ratio, (int, float)):
        raise ValueError(f"parameter cv_ratio={cv_ratio!r}: expected a number")
    if lep_mode not in LEP_MODES:
        raise ValueError(f"parameter lep_mode={lep_mode!r}: expected one of {', '.join(LEP_MODES)}")
    return t, sweep


def stage_inputs(run, *, elchat_t=ELCHAT_T, sweep_t, cv_ratio=CV_RATIO,
                 lep_mode=LEP_DEFAULT_MODE) -> StageInputs:
    """Stage 03's parameters checked (each error names its parameter) and its inputs gathered.

    The transition layers are the ones stage 02 recorded in `02_cpt/chat_cpt/cpt_summary.json`, so
    ElChat merges exactly the layers CPT trained; `elchat_t` must give one t per such layer.
    Example: `inputs = stage_inputs(run, elchat_t=list(ELCHAT_T), sweep_t=[0, 0.5, 1])`.
    """
    run = Path(run)
    t, sweep = _check_settings(elchat_t, sweep_t, cv_ratio, lep_mode)
    sources = runs.read_sources(run)
    cpt_dir = runs.stage_dir(run, "02")
    chat_cpt = runs.require(cpt_dir / "chat_cpt" / "config.json", "02").parent
    layers = list(runs.cpt_config(run, "chat_cpt")["layers"])
    if len(t) != len(layers):
        raise ValueError(f"parameter elchat_t={list(elchat_t)!r}: {len(t)} values, but stage 02 trained "
                         f"{len(layers)} transition layers {layers} ({cpt_dir / 'chat_cpt' / 'cpt_summary.json'}); "
                         "give one t per layer")
    base = sources.get("base")
    trained = {name: cpt_dir / name if base is not None and runs.has_model(cpt_dir / name) else None
               for name in ("base_cpt", "base_emb")}
    return StageInputs(run=run, out_dir=runs.stage_dir(run, "03"), chat=sources["chat"], base=base,
                       chat_cpt=chat_cpt, **trained, layers=layers, t=t, sweep_t=sweep,
                       cv_ratio=float(cv_ratio), lep_mode=lep_mode)


# ----------------------------------------------------------------------------- command line
def _parse_filter(text: str):
    key, sep, values = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--filter {text!r}: expected MODULE=T or MODULE=T0,T1,... (e.g. self_attn=0,0.5,1)")
    vals = [float(v) for v in values.split(",")]
    return key, vals[0] if len(vals) == 1 else vals


def _cli(args) -> int:
    interpolation = "linear" if getattr(args, "linear", False) else "slerp"
    if args.merge == "slerp":
        filters = dict(_parse_filter(f) for f in args.filter or [])
        out = slerp_merge(args.model_a, args.model_b, args.out, t=args.t_list or args.t,
                          filters=filters or None, method=interpolation)
    elif args.merge == "chat-vector":
        ratio = args.ratio if len(args.ratio) > 1 else args.ratio[0]
        out = chat_vector_merge(args.base, args.chat, args.target, args.out, ratio=ratio,
                                skip_embed=args.skip_embed, copy_special=not args.no_copy_special)["out"]
    else:
        out = elchat_merge(args.chat, args.adapted, args.out, layers=args.layers, t=args.t,
                           other_t=args.other_t, copy_special=not args.no_copy_special,
                           method=interpolation, interpolate_biases=args.interpolate_biases)["out"]
    print(f"wrote {out}")
    return 0


def _numbers(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def register_cli(subparsers) -> None:
    """`elchat merge slerp|chat-vector|elchat ...` (see each sub-command's --help)."""
    p = subparsers.add_parser("merge", help="merge models: slerp, chat-vector, elchat")
    sub = p.add_subparsers(dest="merge", metavar="METHOD", required=True)
    s = sub.add_parser("slerp", help="SLERP two models (t = weight of model B)")
    s.add_argument("--model-a", required=True, help="model (preset, HF dir or hub id); t=0 gives it")
    s.add_argument("--model-b", required=True, help="model (preset, HF dir or hub id); t=1 gives it")
    s.add_argument("--t", type=float, default=0.5, help="weight of model B (default 0.5)")
    s.add_argument("--t-list", type=float, nargs="+", help="per-layer t, interpolated over depth")
    s.add_argument("--filter", action="append", help="MODULE=T[,T...] for tensors whose name has MODULE")
    s.add_argument("--linear", action="store_true", help="linear interpolation instead of SLERP")
    c = sub.add_parser("chat-vector", help="target + ratio * (chat - base)")
    c.add_argument("--base", required=True, nargs="+", help="base model(s): preset, HF dir or hub id")
    c.add_argument("--chat", required=True, nargs="+", help="chat model(s), one per base")
    c.add_argument("--target", required=True, help="adapted (e.g. vocabulary-expanded + CPT) base model")
    c.add_argument("--ratio", type=float, nargs="+", default=[CV_RATIO],
                   help=f"one ratio per vector (default {CV_RATIO:g})")
    c.add_argument("--skip-embed", action="store_true", help="leave embeddings/lm_head as the target has them")
    c.add_argument("--no-copy-special", action="store_true", help="do not copy special-token rows from chat")
    e = sub.add_parser("elchat", help="ElChat: SLERP chat and adapted chat, copy special-token rows")
    e.add_argument("--chat", required=True,
                   help="source chat model C: preset (e.g. smollm2-135m), HF dir or hub id")
    e.add_argument("--adapted", required=True, help="adapted chat model A (VE + CPT): HF dir")
    e.add_argument("--layers", type=int, nargs="+", default=list(TRANSITION_LAYERS),
                   help=f"transition layers, negative from the top (default {_numbers(TRANSITION_LAYERS)})")
    e.add_argument("--t", type=float, nargs="+", default=list(ELCHAT_T),
                   help="SLERP t per layer: the weight of the source chat model C (t=0 keeps A, t=1 "
                        f"gives C; default {_numbers(ELCHAT_T)})")
    e.add_argument("--other-t", type=float, default=ELCHAT_OTHER_T,
                   help="t of every tensor outside the transition layers and the vocabulary matrices "
                        f"(default {ELCHAT_OTHER_T:g}: C's, as the released code; 0: A's)")
    e.add_argument("--interpolate-biases", action="store_true",
                   help="SLERP the transition layers' biases too (default: C's, as the released code)")
    e.add_argument("--linear", action="store_true", help="linear interpolation instead of SLERP")
    e.add_argument("--no-copy-special", action="store_true", help="ablation: keep A's special-token rows")
    for q in (s, c, e):
        q.add_argument("--out", required=True, help="output HF directory (written atomically)")
        q.set_defaults(func=_cli)
