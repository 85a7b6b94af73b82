"""Grow a model's embedding matrices to an expanded vocabulary and initialize the new rows.

Old rows are copied bit for bit (every old token keeps its id, see `elchat.vocab`), so text made
only of old tokens gets exactly the old logits over the old vocabulary. A new token t whose source
tokenization is s_1..s_k (old ids) gets, separately for the input matrix E and the output matrix U
(one matrix when tied):

- `mean`    E[t] = (1/k) sum_i E[s_i]  (ElChat: Yamaguchi, Morishita, Villavicencio & Aletras
            2025, arXiv:2412.11704; LEP's default). s_1..s_k are the pieces of the token's true
            text. The released ElChat code (chat-cve `instantiation/src/methods/mean.py`)
            re-tokenizes the token's *string* instead; for byte-level BPE that string spells the
            bytes as stand-in characters (Amharic "ሰ" is "áĪ°"), so it averages the rows of those
            characters' pieces, not of the token's — the kit follows the paper's method;
- `merge`   E[t] = (E[a] + E[b]) / 2 for the BPE merge (a, b) that creates t, a new part resolved
            recursively the same way (so deeper parts weigh less);
- `wmean`   E[t] = sum_i w_i E[s_i] with w_i proportional to p_i / (i + 1): earlier pieces carry
            more of the token's identity, and a piece that is only whitespace ("Ġ", "▁") gets the
            penalty p_i = 0.1 (else 1), so "Ġword" is not pulled toward the space embedding. This is
            our reading of the position-weighted variant of Learned Embedding Propagation
            (Tikhomirov & Chernyshev 2024, arXiv:2412.21140); the weights are a documented choice;
- `random`  transformers' `resize_token_embeddings(mean_resizing=True)`: a normal draw with the
            old rows' mean and covariance (Hewitt 2021), seeded by `seed`.

The matrix is padded to a multiple of `pad_to_multiple_of` rows (default `PAD_MULTIPLE` = 64:
GPU matmul kernels, vLLM and llama.cpp expect it; `config.vocab_size` is the padded row count).
Padding rows get the mean of the old rows: the tokenizer never produces their ids, so they only
enter the softmax's normalizer, where the mean row gives a logit like an average token instead of
an arbitrary one (zeros would give logit 0, possibly far above the typical logits). `save_expanded` writes the grown model, its tokenizer
and the expansion record (`vocab_expansion.json`) as one atomic directory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .atomic import atomic_dir, atomic_write_json
from .method import INIT_METHODS

METHODS = INIT_METHODS  # the one definition lives in elchat.method
WHITESPACE_PENALTY = 0.1
PAD_MULTIPLE = 64  # default row multiple of the grown matrices (None or 1: no padding)


def new_token_sources(old_tokenizer, new_tokenizer) -> dict[int, list[int]]:
    """Map each new token id to the old ids of its source tokenization.

    Example: `new_token_sources(tok, tok2)[49152] == [5, 77]` (the pieces the source used).
    """
    old_vocab, new_vocab = old_tokenizer.get_vocab(), new_tokenizer.get_vocab()
    moved = [t for t, i in old_vocab.items() if new_vocab.get(t) != i]
    if moved:
        raise ValueError(f"the new tokenizer does not extend the old one: {len(moved)} old tokens "
                         f"changed id (e.g. {moved[:3]}); expand with elchat.vocab.expand_vocabulary")
    model = old_tokenizer.backend_tokenizer.model
    out = {}
    for tok, i in sorted(new_vocab.items(), key=lambda kv: kv[1]):
        if tok not in old_vocab:
            ids = [t.id for t in model.tokenize(tok)]
            out[i] = ids if ids else [old_tokenizer.unk_token_id or 0]
    return out


def _merge_parts(new_tokenizer, new_ids) -> dict[int, tuple[int, int]]:
    """The first BPE merge (a, b) that produces each new token id."""
    state = json.loads(new_tokenizer.backend_tokenizer.to_str())["model"]
    vocab = state["vocab"]
    out = {}
    for m in state["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        c = vocab.get(a + b)
        if c in new_ids and c not in out:
            out[c] = (vocab[a], vocab[b])
    return out


def _is_space(token: str) -> bool:
    return token.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\n").isspace()


def new_rows(matrix: torch.Tensor, sources: dict[int, list[int]], method: str = "mean",
             parts: dict | None = None, tokens: dict | None = None) -> torch.Tensor:
    """Rows (float32) for the new ids in `sources` order, computed from the old rows of `matrix`.

    Example: `new_rows(E, {5: [1, 2]})` equals `E[[1, 2]].mean(0, keepdim=True)`.
    """
    old = matrix.detach().float()
    rows: dict[int, torch.Tensor] = {}
    if method in ("mean", "wmean"):
        # one index_add over all (new row, source piece, weight) triples instead of a Python loop
        row_idx, src, weight = [], [], []
        for r, ids in enumerate(sources.values()):
            w = [1.0] * len(ids) if method == "mean" else [
                (WHITESPACE_PENALTY if tokens and _is_space(tokens.get(s, "x")) else 1.0) / (j + 1)
                for j, s in enumerate(ids)]
            total = sum(w)
            row_idx += [r] * len(ids)
            src += ids
            weight += [x / total for x in w]
        out = torch.zeros(len(sources), old.shape[1], dtype=torch.float64, device=old.device)
        w = torch.tensor(weight, dtype=torch.float64, device=old.device)
        out.index_add_(0, torch.tensor(row_idx, dtype=torch.long, device=old.device),
                       old[torch.tensor(src, dtype=torch.long, device=old.device)].double() * w[:, None])
        return out.float()
    elif method == "merge":
        def row(i):
            if i < old.shape[0] and i not in sources:
                return old[i]
            if i not in rows:
                rows[i] = (row(parts[i][0]) + row(parts[i][1])) / 2 if i in parts else old[sources[i]].mean(0)
            return rows[i]
        for i in sources:  # ids ascend, so parts (created earlier) resolve without deep recursion
            row(i)
    else:
        raise ValueError(f"unknown init method {method!r}; choose one of {', '.join(METHODS)}")
    return torch.stack([rows[i] for i in sources]) if sources else old[:0]


def resize_and_initialize(model, old_tokenizer, new_tokenizer, method: str = "mean",
                          pad_to_multiple_of: int | None = PAD_MULTIPLE, seed: int = 0):
    """Grow input/output embeddings to `new_tokenizer` and fill the new rows; returns the model.

    Ties stay tied; old rows are bit-identical; rows are padded to a multiple of
    `pad_to_multiple_of` (None: no padding); `config.vocab_size` follows the new matrix.
    Example: `resize_and_initialize(model, tok, tok2, method="mean", pad_to_multiple_of=64)`.
    """
    if method not in METHODS:
        raise ValueError(f"parameter method={method!r}: choose one of {', '.join(METHODS)}")
    if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of <= 0):
        raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r}: expected a positive integer or None")
    sources = new_token_sources(old_tokenizer, new_tokenizer)
    emb_in = model.get_input_embeddings().weight
    old_n = emb_in.shape[0]
    if len(old_tokenizer) > old_n:
        raise ValueError(f"model has {old_n} embedding rows but the old tokenizer has "
                         f"{len(old_tokenizer)} tokens: model and tokenizer do not match")
    out_layer = model.get_output_embeddings()
    tied = out_layer is not None and out_layer.weight is emb_in
    n = max(old_n, len(new_tokenizer))
    if pad_to_multiple_of:
        n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
    old_in = emb_in.detach().clone()
    old_out = None if tied or out_layer is None else out_layer.weight.detach().clone()
    torch.manual_seed(seed)
    model.resize_token_embeddings(n, mean_resizing=(method == "random"))
    ids = torch.tensor(list(sources), dtype=torch.long)
    parts = _merge_parts(new_tokenizer, set(sources)) if method == "merge" else None
    tokens = {i: t for t, i in old_tokenizer.get_vocab().items()} if method == "wmean" else None
    pad = torch.tensor([i for i in range(old_n, n) if i not in sources], dtype=torch.long)
    pairs = [(model.get_input_embeddings().weight, old_in)]
    if old_out is not None:
        pairs.append((model.get_output_embeddings().weight, old_out))
    with torch.no_grad():
        for weight, old in pairs:
            weight[:old_n] = old  # bit-identical old rows, whatever resizing did
            if method != "random" and len(ids):
                rows = new_rows(old, sources, method, parts, tokens)
                weight[ids.to(weight.device)] = rows.to(weight.device, weight.dtype)
            if len(pad):  # every method: padding rows are the mean row (module docstring)
                weight[pad.to(weight.device)] = old.float().mean(0).to(weight.dtype)
    if tied:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.config.vocab_size = n
    return model


def save_expanded(model, tokenizer, out_dir: str | os.PathLike, info: dict | None = None) -> Path:
    """Write an expanded model, its tokenizer and `vocab_expansion.json` (`info`) atomically.

    A later stage never sees a model without its tokenizer or record (see `elchat.atomic`).
    Example: `save_expanded(model, tok2, "runs/micro/am/01_vocab/chat_ve", {"init": "mean"})`.
    """
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "vocab_expansion.json", info or {})
    return Path(out_dir)
