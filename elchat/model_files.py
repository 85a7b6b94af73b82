"""What a model directory must hold, checked before any work, and the one strict loader.

Every command reads models through `load_model` / `load_tokenizer` (or, for the streaming merges,
`check_model_dir` on the raw safetensors), so every command refuses the same things, with an error
that names the problem and the tensors, before it trains, evaluates or writes anything:

- weights that are not safetensors (`pytorch_model.bin`, `*.pt`, ...): pickles can run code when
  read, and a directory holding only those would make `from_pretrained` build a randomly
  initialized model from whatever tensors happen to match;
- a checkpoint that does not cover the architecture that `config.json` describes. The tensors a
  model needs are the keys of its `state_dict`, read from an empty model built on the `meta`
  device (no memory, no time); tensors tied to each other (tied embeddings: `lm_head.weight` is
  `model.embed_tokens.weight`) need only one name present. The checkpoint's names and shapes come
  from the safetensors headers (`elchat.shards`), so a 7B check reads a few kilobytes:

      missing    = required tensors (up to ties) with no entry in the checkpoint
      unexpected = checkpoint entries the architecture has no place for
      mismatched = entries whose shape differs from the architecture's

- a directory without tokenizer files (transformers would otherwise fail later with "You need to
  have sentencepiece or tiktoken installed").

`load_model` also asks `from_pretrained` for its own loading report (`output_loading_info`) and
refuses any missing / unexpected / mismatched key there too: that covers hub ids, whose files are
not on disk before the call. Written by hand because transformers only *warns* about missing
keys (and initializes them randomly); there is no strict switch.

This module imports no other stage (it is imported by `elchat.cpt`, which `elchat.micro` and so
`elchat.models` import): name resolution (presets, hub snapshots) is `elchat.models`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .device import pick_device, pick_dtype
from .errors import UserError
from .paths import is_hub_id
from .shards import ShardedReader

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack")
# Any one of these lets AutoTokenizer build a tokenizer (fast JSON, SentencePiece, byte-level BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json")
_SHOWN = 6  # tensor names quoted per kind in an error
# What a hub snapshot needs: weights (safetensors only), configs, tokenizer and chat-template files.
HUB_FILES = ["*.safetensors", "*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _architecture(path: Path, trust_remote_code: bool):
    """The empty (meta-device) model config.json describes: its state_dict names, shapes and ties."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    groups: dict[int, list[str]] = {}
    shapes = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)  # tied tensors are one object, several names
        shapes[name] = tuple(tensor.shape)
    ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    optional = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    return list(groups.values()), shapes, ignore, optional


def weight_coverage(path, trust_remote_code: bool = False) -> dict[str, list[str]]:
    """{"missing", "unexpected", "mismatched"}: a checkpoint's tensors against its architecture
    (sorted names; a mismatch reads "name [checkpoint shape] (architecture: [shape])").

    Example: `weight_coverage("runs/micro/am/01_vocab/chat_ve") == {"missing": [], ...}`.
    """
    path = Path(path)
    reader = ShardedReader(path)
    groups, shapes, ignore, optional = _architecture(path, trust_remote_code)
    have = {name: tuple(reader.meta(name)[1]) for name in reader.names}
    missing = [names[0] for names in groups
               if not any(n in have for n in names)
               and not any(p.search(n) for p in optional for n in names)]
    unexpected = [n for n in have if n not in shapes and not any(p.search(n) for p in ignore)]
    mismatched = [f"{n} {list(have[n])} (architecture: {list(shapes[n])})"
                  for n in have if n in shapes and have[n] != shapes[n]]
    return {"missing": sorted(missing), "unexpected": sorted(unexpected), "mismatched": sorted(mismatched)}


def _raise_uncovered(where, report: dict) -> None:
    problems = [f"{len(v)} {k} ({_names(v)})" for k, v in report.items() if v]
    if problems:
        raise UserError(f"{where}: the weights do not match the architecture in config.json — "
                        + "; ".join(problems) + ". Refusing to use a partly random model: re-save "
                        "the complete model (model.save_pretrained) or point at the right directory")


def check_tokenizer_dir(path) -> Path:
    """`path` if it holds tokenizer files, else a UserError saying what is missing.

    Example: `check_tokenizer_dir("runs/micro/am/01_vocab/chat_ve")`.
    """
    path = Path(path)
    if not any((path / f).is_file() for f in TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        raise UserError(f"{path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); save "
                        "the tokenizer next to the weights (tokenizer.save_pretrained(dir)) — every "
                        "directory the kit writes has one")
    return path


def check_model_dir(path, tokenizer: bool = False, trust_remote_code: bool = False) -> Path:
    """`path`, checked to be a safetensors Hugging Face model whose weights cover its architecture.

    `tokenizer=True` also requires tokenizer files. Example: `check_model_dir(run / "02_cpt/chat_cpt")`.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist; pass a preset, a model "
                                "directory or a hub id owner/name")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        found = sorted({p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)})
        raise UserError(f"{path} has no *.safetensors weights (found: {', '.join(found) or 'no weights'}); "
                        "the kit loads safetensors only (pickled weights can run code and are never "
                        "read) — convert the checkpoint first (model.save_pretrained(dir))")
    try:
        report = weight_coverage(path, trust_remote_code)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UserError(f"{path}: cannot read its safetensors weights or config.json ({e})") from e
    _raise_uncovered(path, report)
    return check_tokenizer_dir(path) if tokenizer else path


def local_model_dir(name_or_path) -> Path:
    """A local directory as itself; a hub id downloaded (safetensors and small files only) into the
    Hugging Face cache — naming a hub id is the user's permission to reach the hub.

    Example: `local_model_dir("Qwen/Qwen2.5-0.5B-Instruct")` -> the snapshot directory.
    """
    name = os.fspath(name_or_path)
    if Path(name).expanduser().exists() or not is_hub_id(name):
        return Path(name).expanduser()
    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repository, gated model: say which and why
        raise UserError(f"hub id {name} could not be downloaded ({type(e).__name__}: {e}); check "
                        "the name and the network, or pass a local model directory") from e


def _source(path) -> str:
    """A local directory (checked) or a hub id, as `from_pretrained` wants it."""
    name = os.fspath(path)
    if Path(name).expanduser().exists() or not is_hub_id(name):
        return str(check_model_dir(Path(name).expanduser()))
    return name


def load_model(path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
               **kwargs):
    """A causal LM from a directory or hub id, strictly: every tensor of the architecture loaded
    from safetensors, nothing left over; on the picked device and dtype, in eval mode.

    `kwargs` go to `from_pretrained` (e.g. `attn_implementation="sdpa"`).
    Example: `model = load_model(fetch("micro")["chat"], device="cpu")`.
    """
    source, dev = _source(path), pick_device(device)
    model, info = AutoModelForCausalLM.from_pretrained(
        source, dtype=pick_dtype(dev, dtype), use_safetensors=True, trust_remote_code=trust_remote_code,
        output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    mismatched = [f"{k[0]} {list(k[1])} (architecture: {list(k[2])})" if isinstance(k, tuple) else str(k)
                  for k in info.get("mismatched_keys") or []]
    _raise_uncovered(source, {"missing": list(info.get("missing_keys") or []),
                              "unexpected": list(info.get("unexpected_keys") or []),
                              "mismatched": mismatched})
    return model.to(dev).eval()


def load_tokenizer(path, trust_remote_code: bool = False):
    """The tokenizer saved with a model (directory or hub id); a clear error when there is none.

    Example: `tok = load_tokenizer("runs/micro/am/01_vocab/chat_ve")`.
    """
    name = os.fspath(path)
    if Path(name).expanduser().exists() or not is_hub_id(name):
        local = Path(name).expanduser()
        if not local.is_dir():
            raise FileNotFoundError(f"tokenizer directory {local} does not exist")
        name = str(check_tokenizer_dir(local))
    return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
