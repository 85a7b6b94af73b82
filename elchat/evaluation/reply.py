"""Chat retention by forward passes: how well a model predicts the source chat model's own replies.

Generating and checking replies (IFEval, chat format) costs a decoding loop per item, so on a CPU
budget those tasks get tens of items and their intervals are wide. Scoring a fixed reply
teacher-forced costs one forward pass, so hundreds of items fit. The fixed replies are the
**source chat model's own greedy replies** to held-out prompts: a model that kept the chat
model's behaviour predicts them well; one that forgot it (continual pre-training) predicts them
worse. Per prompt i with reply r (characters c_1..c_m), each model, under its OWN tokenizer and
chat template (prompt rendered with the generation prompt, then the reply's tokens):

    reply bits/char_i = - sum_j log2 p(r_j | prompt_i, r_<j)  /  m          (per character, so it
                                                                             compares tokenizers)
    end-of-turn_i     = p(<end-of-turn> | prompt_i, r)     (only for replies the source model ended
                                                            itself before its token limit)

Prompts (`reply_prompts`): English = the shipped IFEval-style prompts and the chat-format
questions; target = held-out target-language texts as the user's message. The replies are
generated once per run (`source_replies`) and cached as JSON (atomic write) keyed by the source
model's files, the prompts and the token limit, so every model of a run scores the same replies.
Metrics (task `reply`): `bpc_en`, `bpc_target` (lower = closer to the chat model) and `eot_en`,
`eot_target` (higher = ends its turn where the chat model did), each with per-item scores stored
for paired comparisons (`elchat.evaluation.paired`).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_json
from . import chat_format, ifeval
from .bpc import prefix_token_id
from .generate import build_prompt, generate, has_chat_template, load
from .results import item_metric

DEFAULT_REPLY_TOKENS = 64   # tokens of each source reply (the Facts bullet of DESIGN.md: 64)
_MEMORY_CACHE: dict = {}    # replies per key when no cache directory is given (one process)


def reply_prompts(target_texts=(), max_target_chars: int = 300) -> list[dict]:
    """Held-out prompts: `{"id", "group": "en"|"target", "user"}`, English first, then target.

    English: every IFEval-style prompt and every chat-format question; target: each non-empty
    target text (cut to `max_target_chars`) as the user message.
    Example: `reply_prompts(["ሰላም"])[-1] == {"id": "target-0", "group": "target", "user": "ሰላም"}`.
    """
    out = [{"id": f"ifeval-{p['key']}", "group": "en", "user": p["prompt"]} for p in ifeval.load_prompts()]
    out += [{"id": f"question-{i}", "group": "en", "user": q} for i, q in enumerate(chat_format.QUESTIONS)]
    texts = [t.strip()[:max_target_chars] for t in target_texts if t and t.strip()]
    out += [{"id": f"target-{i}", "group": "target", "user": t} for i, t in enumerate(texts)]
    return out


def take_per_group(prompts: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` prompts of each group (all when None). Example: `take_per_group(p, 100)`."""
    if limit is None:
        return list(prompts)
    seen: dict = {}
    out = []
    for p in prompts:
        seen[p["group"]] = seen.get(p["group"], 0) + 1
        if seen[p["group"]] <= limit:
            out.append(p)
    return out


def _fingerprint(source) -> str:
    """Changes when the source model's files change (config, weights, tokenizer)."""
    path = Path(str(source))
    parts = [str(path.resolve())]
    for f in sorted(path.glob("*")) if path.is_dir() else []:
        if f.suffix in (".json", ".safetensors") and f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def cache_key(source, prompts, max_new_tokens: int) -> str:
    """Hash of (source model files, prompts, token limit): the replies' cache file name."""
    blob = json.dumps([_fingerprint(source), [p["user"] for p in prompts], max_new_tokens])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_replies(source, prompts, cache_dir=None, max_new_tokens: int = DEFAULT_REPLY_TOKENS,
                   batch_size: int = 8, device: str = "auto") -> list[dict]:
    """Greedy replies of the source chat model, generated once and cached under `cache_dir`.

    Returns the prompts with `reply` (text) and `ended` (the model ended its turn before the limit).
    Example: `source_replies("runs/smollm2-135m/am/00_models/chat", reply_prompts(), run / "replies")`.
    """
    key = cache_key(source, prompts, max_new_tokens)
    path = None if cache_dir is None else Path(cache_dir) / f"replies-{key}.json"
    if path is not None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["items"]
    if path is None and key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    model, tok = load(source, device)
    chat = has_chat_template(tok)
    texts = [build_prompt(tok, p["user"], chat, f"Question: {p['user']}\nAnswer:") for p in prompts]
    gen = generate(model, tok, texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   desc="source replies")
    items = [{**p, "reply": g["text"], "ended": bool(g["ended"])} for p, g in zip(prompts, gen)]
    if path is not None:
        atomic_write_json(path, {"source": str(source), "max_new_tokens": max_new_tokens, "items": items})
    else:
        _MEMORY_CACHE[key] = items
    return items


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template writes right after an assistant message (EOS without a template).

    Example: for ChatML `tokenizer.convert_ids_to_tokens(end_of_turn_id(tok)) == "<|im_end|>"`.
    """
    if has_chat_template(tokenizer):
        marker = "XQZreplyXQZ"
        text = tokenizer.apply_chat_template([{"role": "user", "content": "U"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
        rest = text.split(marker, 1)[-1].lstrip(" ")
        specials = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
        found = [t for t in specials if t and rest.startswith(t)]
        if found:
            return tokenizer.convert_tokens_to_ids(max(found, key=len))
    return tokenizer.eos_token_id


def reply_sequence(tokenizer, user: str, reply: str) -> tuple[list[int], int, int | None]:
    """(token ids of prompt + reply [+ end-of-turn], number of reply tokens, end-of-turn id).

    The prompt is the model's chat template with the generation prompt (or "Question: ...\\nAnswer:"
    after the document prefix token for a model without a template); the reply is tokenized on its
    own so its tokens are exactly the reply's. Example: `reply_sequence(tok, "Hi", "Hello!")`.
    """
    if has_chat_template(tokenizer):
        prompt = list(tokenizer(build_prompt(tokenizer, user, True), add_special_tokens=False)["input_ids"])
    else:
        prefix = prefix_token_id(tokenizer)
        prompt = ([prefix] if prefix is not None else []) + list(
            tokenizer(f"Question: {user}\nAnswer:", add_special_tokens=False)["input_ids"])
        reply = " " + reply
    ids = list(tokenizer(reply, add_special_tokens=False)["input_ids"])
    eot = end_of_turn_id(tokenizer)
    return prompt + ids + ([eot] if eot is not None else []), len(ids), eot


def token_logprobs(model, sequences, batch_size: int = 8, pad_id: int = 0) -> list[list[float]]:
    """Per sequence: log p(x_k | x_<k) for k = 1..len-1 (natural log), batched and right-padded.

    Example: `token_logprobs(model, [[5, 6, 7]])` -> `[[log p(6|5), log p(7|5,6)]]`.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: list = [None] * len(sequences)
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="reply scoring", leave=False):
            batch = order[start:start + batch_size]
            width = len(sequences[batch[0]])
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                ids[row, :len(sequences[i])] = torch.tensor(sequences[i])
                mask[row, :len(sequences[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, i in enumerate(batch):  # float64 log-softmax per row keeps memory small
                n = len(sequences[i])
                logp = torch.log_softmax(logits[row, :n - 1].double(), dim=-1)
                out[i] = logp.gather(1, ids[row, 1:n].to(device)[:, None])[:, 0].tolist()
    return out


def score_replies(model, tokenizer, items, batch_size: int = 8) -> list[dict]:
    """Per item with a non-empty reply: `{"id", "group", "bits", "chars", "eot_prob", "ended"}`.

    `bits` = -sum log2 p(reply tokens); `eot_prob` = p(end-of-turn | prompt, reply) (None when the
    model has no end-of-turn token). Example: `score_replies(model, tok, source_replies(...))`.
    """
    items = [it for it in items if it["reply"]]
    seqs = [reply_sequence(tokenizer, it["user"], it["reply"]) for it in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logps = token_logprobs(model, [s[0] for s in seqs], batch_size, pad)
    out = []
    for it, (ids, n_reply, eot), lp in zip(items, seqs, logps):
        tail = lp[len(lp) - n_reply - (eot is not None):]  # the reply's tokens [+ end-of-turn]
        bits = -math.fsum(tail[:n_reply]) / math.log(2)
        out.append({"id": it["id"], "group": it["group"], "bits": bits, "chars": len(it["reply"]),
                    "eot_prob": math.exp(tail[-1]) if eot is not None else None,
                    "ended": bool(it["ended"])})
    return out


def summarize(scores, seed: int = 0) -> dict:
    """The task's metrics from `score_replies`: `bpc_<group>` and `eot_<group>` per prompt group.

    Example: `summarize(score_replies(...))["bpc_en"]["value"]`.
    """
    out = {}
    for group in ("en", "target"):
        rows = [s for s in scores if s["group"] == group]
        if not rows:
            continue
        out[f"bpc_{group}"] = item_metric([s["bits"] for s in rows], [s["chars"] for s in rows],
                                          [s["id"] for s in rows], seed)
        ended = [s for s in rows if s["ended"] and s["eot_prob"] is not None]
        if ended:
            out[f"eot_{group}"] = item_metric([s["eot_prob"] for s in ended], None,
                                              [s["id"] for s in ended], seed)
    return out


def run(ctx, target_texts=()) -> dict:
    """The `reply` task: the source model's replies (cached) scored by `ctx.model`.

    The source is `ctx.source` (the run's chat model; the model itself when unset); replies have up
    to `ctx.max_new_tokens` tokens (the stage's generation limit); the limit applies per prompt
    group (English, target). Example: `run(ctx, load_texts("am", "test"))`.
    """
    source = getattr(ctx, "source", None) or ctx.model_path
    prompts = take_per_group(reply_prompts(target_texts), ctx.limit)
    items = source_replies(source, prompts, getattr(ctx, "cache_dir", None), ctx.max_new_tokens,
                           getattr(ctx, "decode_batch_size", ctx.batch_size), ctx.device)
    ctx.samples["reply"] = [{"prompt": it["user"], "source_reply": it["reply"]} for it in items[:2]]
    scores = score_replies(ctx.model, ctx.tokenizer, items, ctx.batch_size)
    # A source model that ends every turn at once (or a random-weight dry-run model) leaves nothing
    # to score: the task then reports no metric rather than stopping the stage.
    return summarize(scores, ctx.seed)
