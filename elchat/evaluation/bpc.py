"""Bits per character: a language-model score comparable across tokenizers.

Vocabulary expansion changes how many tokens a text takes, so per-token perplexity of two models
with different tokenizers cannot be compared. Per character it can: the total negative
log-likelihood a model assigns to a text does not depend on how the text is cut into tokens
(the model has to pay for every character either way).

    BPC = sum over texts, over tokens t_i of  -ln p(t_i | t_<i)   /  ln 2  /  total characters

Each text is scored on its own. Its first token is conditioned on a prefix token so that every
character is predicted: the BOS token when the tokenizer adds one (Llama-3), otherwise the
end-of-text document separator `<|endoftext|>` when the vocabulary has it (GPT-2, SmolLM, Qwen:
the token that precedes every document in pre-training), otherwise the EOS token — the same
separator continual pre-training packs documents with (`elchat.packing.document_separator`). The
prefix itself is never scored.

Texts longer than `max_length` tokens are scored with the standard sliding window (the Hugging Face
perplexity recipe): windows of `max_length` tokens start every `stride` tokens and only the tokens
not scored by an earlier window are scored, each with at least `max_length - stride` tokens of
context. Windows of all texts are batched (sorted by length, right-padded) under `torch.no_grad`.

As a stage-04 task (`run`), texts are scored one by one and the interval resamples texts: each
resample's BPC is its summed bits over its summed characters.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..packing import document_separator
from .results import item_metric


def prefix_token_id(tokenizer, add_bos: bool | None = None) -> int | None:
    """The token each text is conditioned on (see the module docstring); None if there is none.

    Example: `prefix_token_id(smollm2_tokenizer) == tokenizer.convert_tokens_to_ids("<|endoftext|>")`.
    """
    bos = tokenizer.bos_token_id
    if add_bos is None:  # does the tokenizer itself put BOS in front of a text?
        ids = tokenizer("a")["input_ids"]
        add_bos = bos is not None and len(ids) > 0 and ids[0] == bos
    if add_bos and bos is not None:
        return bos
    try:
        return document_separator(tokenizer)
    except ValueError:  # neither a document token nor EOS
        return bos


def make_windows(ids: list[int], max_length: int, stride: int) -> list[tuple[list[int], int]]:
    """Cut one token sequence (prefix included) into (window, number of scored tail tokens).

    Example: `make_windows([9, 1, 2, 3], 3, 2) == [([9, 1, 2], 2), ([2, 3], 1)]`.
    """
    windows, scored_until = [], 1  # position 0 (the prefix) is context only
    for begin in range(0, max(len(ids) - 1, 1), stride):
        end = min(begin + max_length, len(ids))
        n_new = end - max(scored_until, begin + 1)
        if n_new > 0:
            windows.append((ids[begin:end], n_new))
        scored_until = end
        if end == len(ids):
            break
    return windows


def score_windows(model, windows, batch_size: int = 8, pad_id: int = 0, desc: str | None = None):
    """Sum of next-token NLL (nats) over the last `n` tokens of each (tokens, n) window.

    Returns a list of floats in the order of `windows`. Example:
    `score_windows(model, [([5, 6, 7], 2)])` -> `[-log p(6|5) - log p(7|5,6)]`.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
    out = [0.0] * len(windows)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for batch in tqdm(batches, desc=desc or "scoring", disable=desc is False, leave=False):
            width = len(windows[batch[0]][0])
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                toks = windows[i][0]
                ids[row, :len(toks)] = torch.tensor(toks)
                mask[row, :len(toks)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, i in enumerate(batch):  # per row: keeps the float64 log-softmax small
                toks, n = windows[i]
                pred = logits[row, len(toks) - n - 1:len(toks) - 1].double()
                target = ids[row, len(toks) - n:len(toks)].to(device)
                nll = torch.nn.functional.cross_entropy(pred, target, reduction="sum")
                out[i] = float(nll.double())
    return out


def text_nlls(model, tokenizer, texts, max_length: int = 512, stride: int | None = None,
              batch_size: int = 8, add_bos: bool | None = None) -> list[tuple[float, int, int]]:
    """Per text: (NLL in nats, characters, tokens scored); empty texts give (0.0, 0, 0).

    Example: `text_nlls(model, tok, ["Selam!", ""])` -> `[(23.1, 6, 4), (0.0, 0, 0)]`.
    """
    if isinstance(texts, str):
        raise ValueError("bits_per_char: texts must be a list of strings, not one string")
    stride = max_length // 2 if stride is None else stride
    if max_length < 2 or not 1 <= stride <= max_length - 1:
        raise ValueError(f"bits_per_char: need max_length >= 2 and 1 <= stride < max_length "
                         f"(got max_length={max_length}, stride={stride})")
    prefix = prefix_token_id(tokenizer, add_bos)
    windows, owner, stats = [], [], []
    for k, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        if prefix is not None and ids:
            ids = [prefix] + ids
        stats.append([0.0, len(text) if ids else 0, max(len(ids) - 1, 0)])
        for w in make_windows(ids, max_length, stride) if ids else []:
            windows.append(w)
            owner.append(k)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for k, nll in zip(owner, score_windows(model, windows, batch_size, pad, desc="bpc")):
        stats[k][0] += nll
    return [tuple(s) for s in stats]


def bits_per_char(model, tokenizer, texts, max_length: int = 512, stride: int | None = None,
                  batch_size: int = 8, add_bos: bool | None = None) -> dict:
    """Bits per character of `model` on `texts` (each scored independently, every char predicted).

    `stride` defaults to `max_length // 2`. Returns
    `{"bpc": float, "nll_nats": float, "chars": int, "tokens": int}` (tokens scored, prefix not
    counted). Example: `bits_per_char(model, tok, ["Selam!"])["bpc"]`.
    """
    stats = text_nlls(model, tokenizer, texts, max_length, stride, batch_size, add_bos)
    nll = math.fsum(s[0] for s in stats)
    chars, tokens = sum(s[1] for s in stats), sum(s[2] for s in stats)
    if chars == 0:
        raise ValueError("bits_per_char: no characters to score (all texts empty)")
    return {"bpc": nll / math.log(2) / chars, "nll_nats": nll, "chars": chars, "tokens": tokens}


def run(ctx, texts, en_texts=None) -> dict:
    """The `bpc` task: `bpc` on target `texts` and `bpc_en` on `en_texts` (when given), each with
    a bootstrap interval over texts (the ratio of summed bits to summed characters per resample).

    Example: `run(ctx, load_texts("am", "test"), load_texts("en", "test"))["bpc"]["value"]`.
    """
    out = {}
    for name, group in [("bpc", texts), ("bpc_en", en_texts)]:
        if group is None:
            continue
        stats = text_nlls(ctx.model, ctx.tokenizer, ctx.take([t for t in group if t]),
                          batch_size=ctx.batch_size)
        kept = [(k, nll / math.log(2), chars) for k, (nll, chars, _) in enumerate(stats) if chars]
        if not kept:
            raise ValueError(f"bpc: no text to score for {name}")
        ids, bits, chars = zip(*kept)
        out[name] = item_metric(bits, chars, ids, ctx.seed)
    return out
