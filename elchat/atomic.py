"""Atomic writes: a stage never leaves a half-written output where a later stage would read it.

Every writer in the kit produces its output in a temporary sibling directory (same filesystem,
so the final `os.replace` is atomic) and renames it into place only when the body finished.
A crash or a Ctrl-C leaves either the previous complete output or nothing, plus a `.tmp-*`
directory that is removed on the next attempt.

    with atomic_dir("runs/micro/am/02_cpt/chat_cpt") as tmp:
        model.save_pretrained(tmp)          # written into runs/.../.tmp-chat_cpt-XXXX
    # now runs/micro/am/02_cpt/chat_cpt exists and is complete
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` when the block exits without error.

    Example: `with atomic_dir(out) as tmp: (tmp / "x.txt").write_text("ok")`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".tmp-{path.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs follow the umask like mkdir
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".tmp-{path.name}-old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[str]:
    """A temporary file next to `path` (same suffix) that replaces `path` when the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask like open()
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file through a temporary file and `os.replace`.

    Example: `atomic_write_text("runs/x/results.json", json.dumps(r))`.
    """
    path = Path(path)
    with _temporary_sibling(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """`atomic_write_text` for JSON (indented, UTF-8 kept readable).

    Example: `atomic_write_json(out / "manifest.json", {"seed": 0})`.
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG through a temporary file and `os.replace`.

    Example: `atomic_save_figure(fig, out_dir / "cpt_curves.png")`.
    """
    path = Path(path)
    with _temporary_sibling(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path
