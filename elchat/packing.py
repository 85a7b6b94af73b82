"""Tokenize a corpus once, pack it into fixed blocks without padding, cache it memory-mapped.

Continual pre-training sees the corpus as one long token stream (as in Hugging Face's
`run_clm.py` `group_texts`, which the ElChat reference uses):

    stream = [bos?] doc_1 <eot> [bos?] doc_2 <eot> ... ;   block_i = stream[i*B : (i+1)*B]

The tail shorter than one block is dropped, so every position of every block is a real token and
no compute is spent on padding (labels = inputs; the model shifts them). Attention crosses
document boundaries inside a block, exactly as in the reference; the `<eot>` token between
documents tells the model a new text begins.

Which end-of-text token: ChatML chat models (SmolLM2-Instruct, Qwen2.5-Instruct) set
`eos_token = "<|im_end|>"`, the end of a *chat turn*. Raw documents are not chat turns, and
teaching the model that `<|im_end|>` follows arbitrary prose would blur the template token whose
rows ElChat later copies back. Pretraining of these families separates documents with the
document token (`<|endoftext|>`; Llama-3: `<|end_of_text|>`), so `document_separator` prefers that
one when the vocabulary has it and falls back to `eos_token`.

The token stream is stored as a flat `uint32` `.npy` under the cache directory (default
`elchat.paths.tokens_cache()`), keyed by a SHA-256 of the tokenizer (its `tokenizer.json`), the
separator/BOS ids and the texts, and written atomically (temporary file + `os.replace`); any block
size reuses it through `np.load(mmap_mode="r")`, so a 10 GB corpus costs no RAM.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from .paths import tokens_cache

DOCUMENT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>")


def document_separator(tokenizer) -> int:
    """Id of the token placed after every document (the document token, else `eos_token`).

    Example: for SmolLM2-Instruct `document_separator(tok) == tok.convert_tokens_to_ids("<|endoftext|>")`.
    """
    vocab = tokenizer.get_vocab()
    for token in DOCUMENT_TOKENS:
        if token in vocab:
            return int(vocab[token])
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError("the tokenizer has no end-of-text token (<|endoftext|>, <|end_of_text|>, </s>) "
                     "and no eos_token; set tokenizer.eos_token before continual pre-training")


def _bos_id(tokenizer) -> int | None:
    """The BOS id when the tokenizer itself adds one (Llama-3), so documents look as in pretraining."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    ids = tokenizer("a")["input_ids"]
    return int(bos) if ids and ids[0] == bos else None


def _tokenizer_fingerprint(tokenizer) -> bytes:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str().encode("utf-8")
    return repr(sorted(tokenizer.get_vocab().items())).encode("utf-8")


def token_stream(tokenizer, texts: Iterable[str], cache_dir: str | os.PathLike | None = None,
                 chunk_docs: int = 1000, desc: str = "tokenize") -> np.ndarray:
    """Tokenize `texts` into one flat uint32 stream (cached, memory-mapped); see module docstring.

    Example: `s = token_stream(tok, ["hello", "world"])`; `s[-1] == document_separator(tok)`.
    """
    texts = list(texts)  # hub corpora arrive as bounded lists (`load_hub_texts(max_docs=...)`)
    sep, bos = document_separator(tokenizer), _bos_id(tokenizer)
    h = hashlib.sha256(_tokenizer_fingerprint(tokenizer))
    h.update(f"|sep={sep}|bos={bos}|n={len(texts)}|".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    cache = Path(cache_dir) if cache_dir is not None else tokens_cache()
    path = cache / f"{h.hexdigest()[:32]}.npy"
    if path.is_file():
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError):  # a corrupt cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    parts: list[np.ndarray] = []
    for i in tqdm(range(0, len(texts), chunk_docs), desc=desc, unit="chunk", leave=False,
                  disable=len(texts) <= chunk_docs):
        enc = tokenizer(texts[i:i + chunk_docs], add_special_tokens=False)["input_ids"]
        for ids in enc:
            doc = ([bos] if bos is not None else []) + list(ids) + [sep]
            parts.append(np.asarray(doc, dtype=np.uint32))
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=cache)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, stream)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return np.load(path, mmap_mode="r")


def pack_blocks(stream: np.ndarray, block_size: int) -> np.ndarray:
    """View a flat stream as `(n_blocks, block_size)` blocks, dropping the incomplete tail.

    Example: `pack_blocks(np.arange(10), 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]`.
    """
    if block_size < 2:
        raise ValueError(f"block_size={block_size}: must be at least 2 tokens")
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size)
