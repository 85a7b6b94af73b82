"""Loading a model to evaluate, building prompts, batched greedy generation and log-likelihoods.

Generation: prompts are left-padded (so every row's last prompt token sits at the same position
and the KV cache of one batch is reused step by step by `model.generate`), decoded greedily, and
stopped at the end-of-turn / end-of-text tokens (and optionally at a newline). Each result says
whether the model ended its turn itself before the token limit — the signal `chat_format` uses.

Precision: decoding is discrete (the greedy token is all that matters), so on a CPU with native bf16
dot products (`elchat.device.cpu_has_native_bf16`) a float32 model decodes through a bf16 copy
(`decoding_model`): measured on SmolLM2-135M, 2 cores, 48 new tokens, batch 8: 83 vs 166 ms per
step; batch 32: 185 vs 315 ms. Scores (bits per character, reply bits, multiple choice) stay in the
model's own precision: the same bf16 shift moved SmolLM2's Amharic BPC by 1.6% and the English-BPC
difference ElChat - Chat+VE from -0.0017 to -0.0004, i.e. it would decide the comparisons the
study makes. `DECODE_IN_BF16 = False` turns the copy off.

Log-likelihood of a continuation c given a context x is sum_i log p(c_i | x, c_<i) over the tokens
of c, computed with the batched window scorer of `bpc` (the same code path as bits per character).
"""
from __future__ import annotations

import copy
import time
import weakref
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, StoppingCriteriaList

from .. import models
from ..device import cpu_has_native_bf16
from ..presets import PRESETS
from .bpc import prefix_token_id, score_windows

DECODE_IN_BF16 = True  # decode a float32 CPU model through a bf16 copy where the CPU has native bf16
_DECODERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its bf16 copy

# Tokens that end a turn or a document in the families the kit supports (ChatML, Llama-3, GPT-2).
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>")


def resolve_model(model) -> Path | str:
    """A local HF directory, or a preset name materialized by `elchat.models.fetch`.

    Example: `resolve_model("runs/micro/am/03_merge/elchat")` -> that Path.
    """
    path = Path(str(model))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model directory {path} has no config.json (not a Hugging Face "
                                    "model directory)")
        return path
    if str(model) in PRESETS:
        return models.fetch(str(model))["chat"]
    raise FileNotFoundError(f"model {model!r} not found: not a model directory (with config.json) "
                            f"nor a preset ({', '.join(PRESETS)})")


def load(model, device: str = "auto"):
    """(model, tokenizer) ready for evaluation (eval mode, left padding, a pad token).

    Example: `model, tok = load("runs/micro/am/03_merge/elchat")`.
    """
    path = resolve_model(model)
    mdl, tok = models.load_model(path, device=device), models.load_tokenizer(path)
    mdl.eval()
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return mdl, tok


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(tokenizer, user: str, chat: bool, plain: str | None = None) -> str:
    """The text fed to the model: the chat template with a generation prompt, or `plain`.

    Example: `build_prompt(tok, "Hi", chat=True)` -> `"<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"`.
    """
    if chat:
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    return plain if plain is not None else user


def stop_token_ids(tokenizer, tokens: tuple[str, ...] | None = None) -> list[int]:
    """Ids of `tokens` in the vocabulary; by default STOP_TOKENS and the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in (STOP_TOKENS if tokens is None else tokens) if t in vocab}
    if tokens is None and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


_NEWLINE_CACHE: dict = {}


def newline_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens whose text contains a newline (cached per vocabulary).

    Hand-written because transformers' `stop_strings` precomputes a table over the whole
    vocabulary that costs seconds per call on CPU; a newline only needs this set.
    """
    key = (tokenizer.name_or_path, len(tokenizer))
    if key not in _NEWLINE_CACHE:
        special = set(tokenizer.all_special_ids)
        _NEWLINE_CACHE[key] = [i for i in range(len(tokenizer))
                               if i not in special and "\n" in tokenizer.decode([i])]
    return _NEWLINE_CACHE[key]


def decoding_model(model):
    """The model `generate` decodes with: a bf16 copy of a float32 model on a CPU with native bf16
    (made once per model and kept while the model lives), otherwise the model itself.

    Example: `decoding_model(fp32_cpu_model).dtype == torch.bfloat16` on an AVX512-BF16 CPU.
    """
    param = next(model.parameters())
    if not (DECODE_IN_BF16 and param.device.type == "cpu" and param.dtype == torch.float32
            and cpu_has_native_bf16()):
        return model
    if model not in _DECODERS:
        _DECODERS[model] = copy.deepcopy(model).to(torch.bfloat16).eval()
    return _DECODERS[model]


class _TokenSetStop:
    """Stopping criterion: a row is done once its last token is in `ids` (per-row, batched)."""

    def __init__(self, ids):
        self.ids = torch.tensor(sorted(ids), dtype=torch.long)

    def __call__(self, input_ids, scores, **kwargs):
        return torch.isin(input_ids[:, -1], self.ids.to(input_ids.device))


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 8,
             stop_at_newline: bool = False, ignore_stop: bool = False, desc: str = "generate",
             stop_tokens: tuple[str, ...] | None = None):
    """Greedy continuations of `prompts`, batched with left padding (prompts of similar length
    together; results in the order of `prompts`).

    Returns one dict per prompt: `text` (special tokens removed, stripped), `raw` (decoded with
    special tokens), `ended` (a stop token, or a newline when asked, came before the limit),
    `new_tokens`, `seconds` (the batch's wall time shared equally). Decodes with
    `decoding_model(model)` (bf16 on a native-bf16 CPU). `stop_tokens` replaces the
    default stop set (STOP_TOKENS and EOS). Chat prompts already hold their
    special tokens, so nothing is added; plain prompts get BOS when the tokenizer adds one.
    Example: `generate(model, tok, ["Hello"], max_new_tokens=8)[0]["text"]`.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:  # Mistral, Llama-3.0 ship no pad token (as `load` does)
        tokenizer.pad_token = tokenizer.eos_token
    stops = stop_token_ids(tokenizer, stop_tokens)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=None if ignore_stop else stops,
                              min_new_tokens=max_new_tokens if ignore_stop else 0,
                              # a fixed-length run (speed) must decode text at every step: a model
                              # that would end its turn or emit template tokens gets its next best
                              suppress_tokens=sorted(set(tokenizer.all_special_ids)) if ignore_stop else None,
                              )
    criteria = None
    if stop_at_newline and not ignore_stop:
        criteria = StoppingCriteriaList([_TokenSetStop(newline_token_ids(tokenizer))])
    model = decoding_model(model)
    device = next(model.parameters()).device
    # batches of similar length (longest first), results back in the prompts' order: a batch is
    # padded to its longest prompt, so one long prompt among short ones multiplies the work
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [None] * len(prompts)
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        rows = order[start:start + batch_size]
        chunk = [prompts[i] for i in rows]
        # a rendered chat template already starts with its special tokens (BOS included)
        special = not all(p.startswith(tuple(tokenizer.all_special_tokens) or ("\0",)) for p in chunk)
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=special)
        t0 = time.perf_counter()
        with torch.no_grad():
            seqs = model.generate(input_ids=enc["input_ids"].to(device),
                                  attention_mask=enc["attention_mask"].to(device),
                                  generation_config=config, stopping_criteria=criteria)
        dt = time.perf_counter() - t0
        for i, row in zip(rows, seqs[:, enc["input_ids"].shape[1]:].tolist()):
            cut = None if ignore_stop else next((k for k, t in enumerate(row) if t in stops), None)
            kept = row if cut is None else row[:cut]
            raw = tokenizer.decode(kept, skip_special_tokens=False)
            text = tokenizer.decode(kept, skip_special_tokens=True)
            ended = cut is not None
            if stop_at_newline and "\n" in text:  # rows stopped by the stop string, pads after it
                ended, text, raw = True, text.split("\n")[0], raw.split("\n")[0]
            out[i] = {"text": text.strip(), "raw": raw, "ended": ended and not ignore_stop,
                      "new_tokens": len(kept), "seconds": dt / len(chunk)}
    return out


def loglikelihoods(model, tokenizer, contexts: list[str], continuations: list[str],
                   batch_size: int = 8, max_length: int = 1024) -> list[float]:
    """log p(continuation | context) summed over the continuation's tokens, batched.

    The pair is tokenized as context + continuation separately (so the continuation's tokens are
    exactly its own); contexts are cut from the left to fit `max_length`.
    Example: `loglikelihoods(model, tok, ["2+2="], ["4"])` -> `[-0.7]`.
    """
    prefix = prefix_token_id(tokenizer)
    windows = []
    for ctx, cont in zip(contexts, continuations, strict=True):
        c = list(tokenizer(ctx, add_special_tokens=False)["input_ids"])
        x = list(tokenizer(cont, add_special_tokens=False)["input_ids"])
        if not x:
            raise ValueError(f"loglikelihoods: empty continuation for context {ctx[:40]!r}")
        ids = ([prefix] if prefix is not None else []) + c + x
        ids = ids[-max_length:]
        windows.append((ids, min(len(x), len(ids) - 1)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [-v for v in score_windows(model, windows, batch_size, pad, desc="loglik")]


class Context:
    """What every task needs: the loaded model and tokenizer plus the run's settings.

    `chat` is True when the tokenizer has a chat template (chat tasks use it) and False for
    base models (plain prompts; the fallback is recorded in `notes`).
    Example: `Context(model, tok, lang="am", limit=20).prompt("Hi", plain="Q: Hi\\nA:")`.
    """

    def __init__(self, model, tokenizer, lang=None, lang_name=None, text_path=None, limit=None,
                 batch_size=8, seed=0, max_new_tokens=64, reference=None, device="auto",
                 decode_batch_size=None):
        self.model, self.tokenizer = model, tokenizer
        self.lang, self.lang_name, self.text_path = lang, lang_name, text_path
        self.limit, self.batch_size, self.seed = limit, batch_size, seed
        # prompts per generation batch: decoding one token for 32 rows costs little more than for 8
        # (SmolLM2, bf16, 2 cores: 185 vs 83 ms per step), while scoring windows are best in 8s
        self.decode_batch_size = decode_batch_size or batch_size
        self.max_new_tokens, self.reference, self.device = max_new_tokens, reference, device
        self.chat = has_chat_template(tokenizer)
        # set by `stage.evaluate`: the model's directory, the run's source chat model (whose replies
        # the `reply` task scores) and where those replies are cached
        self.model_path = self.source = self.cache_dir = None
        self.notes: list[str] = []
        self.samples: dict = {}  # a few generations per task, kept in the results for reading

    def take(self, items):
        return list(items) if self.limit is None else list(items)[:self.limit]

    def prompt(self, user: str, plain: str | None = None) -> str:
        return build_prompt(self.tokenizer, user, self.chat, plain)

    @property
    def prompt_format(self) -> str:
        return "chat_template" if self.chat else "plain"

    def generate(self, prompts, **kw):
        kw.setdefault("max_new_tokens", self.max_new_tokens)
        kw.setdefault("batch_size", self.decode_batch_size)
        return generate(self.model, self.tokenizer, prompts, **kw)
