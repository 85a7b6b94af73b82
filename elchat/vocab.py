"""Vocabulary expansion: append target-language BPE tokens that never change how other text splits.

A byte-level (SmolLM2, Qwen2.5, Llama-3) or SentencePiece-style (Metaspace + byte fallback:
Llama-2, Gemma, Mistral) BPE tokenizer splits a word into symbols and then applies its merges in
rank order, always the lowest-ranked applicable pair first. Expansion here:

1. tokenize the target training text with the SOURCE tokenizer (its own normalizer, pre-tokenizer
   and model); for the Metaspace family, first add the target characters the vocabulary lacks
   (those fell back to bytes);
2. write every old token the target words use as one character and train an auxiliary BPE
   (`tokenizers.trainers.BpeTrainer`) on those strings, so the auxiliary merges continue exactly
   where the source tokenizer stopped (a BPE trained on raw text would learn merges whose parts
   the source glued differently, and those never fire);
3. append the merges (translated back to token strings) AFTER all old merges, each new token getting
   the next id after the whole old vocabulary, until `num_new_tokens` tokens are added.

Strict guarantee, text without target-script characters tokenizes to exactly the source ids.
Why: old merges rank first, so the expanded tokenizer first reaches the source tokenization; a new
merge can then fire only if its pair is adjacent there. A new merge with at least one NEW part can
fire only after another new merge did, so it is enough that every "root" new merge (both parts old
tokens) needs a target-script character: we keep a root merge (a, b) only if the bytes of a+b hold
a UTF-8 lead byte whose continuation bytes present in a+b pin the code point to a range whose
assigned code points all belong to the target scripts (e.g. E1 88 -> U+1200..U+123F, Ethiopic; a
lone continuation pair like 88 80 also occurs in U+2200 "∀" and is rejected). Valid UTF-8 puts
that lead byte only at the start of a character, so such bytes exist only in target-script text.
For the Metaspace family tokens are characters, and a+b must contain a target-script character.
Target scripts are the Unicode scripts (`elchat.scripts`: first word of the character name) of the
corpus's letters, Latin excluded so English and code never change. This is stricter than the
published ElChat code, whose new merges outrank the old ones.

`write_expanded_model` then grows a model to the new tokenizer (`elchat.embeddings`) and writes it.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import AutoTokenizer

from .data import is_corpus_file, load_texts
from .embeddings import METHODS, PAD_MULTIPLE, resize_and_initialize, save_expanded
from .errors import is_count
from .models import fetch, load_model, load_tokenizer
from .scripts import char_script, detect_scripts
from .vocab_check import verify_expansion

# The auxiliary BPE sees each distinct old token of the target words as one character: the k-th
# distinct token becomes chr(_SYMBOL_BASE + k). Code points from U+10000 on are neither whitespace
# (the auxiliary pre-tokenizer splits there) nor surrogates, so a dense index (not the token id,
# which overflows chr() for ids >= 1,048,576 - 65,536 in a private-use plane scheme) works for
# any vocabulary size: it only counts the tokens the corpus actually uses.
_SYMBOL_BASE = 0x10000
_MAX_SYMBOLS = 0x110000 - _SYMBOL_BASE
_ROUND_TRIP_DOCS = 500  # training documents checked for decode(encode(x)) == x without eval_texts
_AUX_ATTEMPTS = 4  # auxiliary BPE trainings at most, each twice as large as the one before


def tokens_per_char(tokenizer, texts) -> float:
    """Tokens per character (no special tokens) over `texts`.

    Example: `tokens_per_char(tok, ["ሰላም ነው"])` -> 2.1 for SmolLM2.
    """
    texts = [t for t in texts if t]
    chars = sum(len(t) for t in texts)
    if chars == 0:
        raise ValueError("tokens_per_char: no text given (all texts empty)")
    enc = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return sum(len(e.ids) for e in enc) / chars


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's byte -> printable-character table that ByteLevel pre-tokenizers use.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


@lru_cache(maxsize=None)
def _range_is_target(lo: int, hi: int, scripts: frozenset) -> bool:
    """All assigned code points in [lo, hi] are in `scripts` (and at least one is)."""
    seen = False
    for cp in range(lo, min(hi, 0x10FFFF) + 1):
        ch = chr(cp)
        if unicodedata.category(ch) == "Cn":
            continue  # unassigned
        if char_script(ch) not in scripts:
            return False
        seen = True
    return seen


def bytes_pin_target(data: bytes, scripts: frozenset) -> bool:
    """True when `data`, inside valid UTF-8, can only come from a target-script character.

    Example: `bytes_pin_target(b"\\xe1\\x88", frozenset({"ETHIOPIC"}))` is True, `b"\\x88\\x80"` False.
    """
    for i, lead in enumerate(data):
        if lead < 0xC2 or lead > 0xF4:
            continue
        length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        conts = []
        for b in data[i + 1:i + length]:
            if 0x80 <= b <= 0xBF:
                conts.append(b)
            else:
                break
        value = lead & (0x1F, 0x0F, 0x07)[length - 2]
        for b in conts:
            value = (value << 6) | (b & 0x3F)
        free = 6 * (length - 1 - len(conts))
        if _range_is_target(value << free, (value << free) | ((1 << free) - 1), scripts):
            return True
    return False


def _components(node):
    """Every component dict of a normalizer/pre-tokenizer/decoder, nested Sequences included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _components(value)
    elif isinstance(node, list):
        for value in node:
            yield from _components(value)


def _kind(state: dict) -> str:
    """'byte' (ByteLevel BPE) or 'metaspace' (SentencePiece-style BPE with byte fallback).

    Read from the parsed tokenizer.json (a search in a JSON dump would miss "▁", which the dump
    escapes): SentencePiece style is a Metaspace pre-tokenizer (Llama-2, Mistral) or a normalizer
    that replaces " " with "▁" (Gemma, legacy Llama-2/Mistral files with Prepend + Replace).
    """
    model = state["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"vocabulary expansion supports BPE tokenizers only; this one's model is "
                         f"{model.get('type')!r} (WordPiece/Unigram cannot take appended merges)")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ValueError("BPE with continuing_subword_prefix/end_of_word_suffix is not supported")
    if any(c.get("type") == "ByteLevel" for c in _components(state.get("pre_tokenizer"))):
        return "byte"
    parts = [c for key in ("pre_tokenizer", "normalizer") for c in _components(state.get(key))]
    metaspace = any(c.get("type") == "Metaspace" for c in parts) or any(
        c.get("type") == "Replace" and c.get("content") == "\u2581" for c in parts)
    if model.get("byte_fallback") and metaspace:
        return "metaspace"
    raise ValueError("unsupported BPE tokenizer: expected a ByteLevel pre-tokenizer (GPT-2/Llama-3 "
                     "style) or Metaspace/'▁' with byte_fallback (SentencePiece style)")


def _load_state(tokenizer) -> dict:
    if isinstance(tokenizer, (str, Path)):
        raise TypeError("pass a loaded tokenizer (elchat.models.load_tokenizer(path)), not a path")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is a slow-only tokenizer; vocabulary expansion "
                         "needs a fast tokenizer with a tokenizer.json (tokenizers library)")
    return json.loads(backend.to_str())


def _split_merge(merge) -> tuple[str, str]:
    # tokenizer.json stores a merge as "a b" (older files) or as ["a", "b"]
    return tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)


@dataclass(frozen=True)
class _Source:
    """What expansion reads from the source tokenizer.json."""

    state: dict             # the whole tokenizer.json, parsed
    kind: str               # "byte" or "metaspace" (see `_kind`)
    vocab: dict             # old token -> id
    merges: frozenset       # old merges as (a, b)
    added: frozenset        # contents of special/added tokens, never made into BPE tokens
    first_id: int           # id of the first new token: after the whole old vocabulary

    def vocab_with(self, new_tokens) -> dict:
        """Old vocabulary plus `new_tokens` at consecutive ids from `first_id`."""
        return {**self.vocab, **{t: self.first_id + k for k, t in enumerate(new_tokens)}}


def _read_source(tokenizer) -> _Source:
    state = _load_state(tokenizer)
    kind = _kind(state)
    model, added = state["model"], state.get("added_tokens", [])
    return _Source(state=state, kind=kind, vocab=dict(model["vocab"]),
                   merges=frozenset(_split_merge(m) for m in model["merges"]),
                   added=frozenset(t["content"] for t in added),
                   first_id=max(list(model["vocab"].values()) + [t["id"] for t in added]) + 1)


def _check_inputs(target_texts, num_new_tokens) -> list[str]:
    """The non-blank target texts; bad `num_new_tokens` or an empty corpus raise ValueError."""
    if not is_count(num_new_tokens, 1):
        raise ValueError(f"num_new_tokens={num_new_tokens!r}: expected a positive integer")
    if isinstance(target_texts, str):
        target_texts = [target_texts]
    texts = [t for t in target_texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("the target corpus is empty or whitespace-only; give target-language text")
    return texts


def _root_characters(source: _Source, texts, scripts: frozenset, min_frequency: int,
                     limit: int) -> list[str]:
    """Metaspace family: target-script characters the vocabulary lacks, most frequent first.

    They fell back to bytes in the source; they become single-character tokens (root tokens
    without a merge). Example: `_root_characters(src, ["ሰላም ሰላም"], {"ETHIOPIC"}, 2, 10)`.
    """
    chars = collections.Counter(ch for t in texts for ch in t if char_script(ch) in scripts)
    out = []
    for ch, n in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if n >= min_frequency and ch not in source.vocab and ch not in source.added \
                and len(out) < limit:
            out.append(ch)
    return out


def _decode_bytes(token: str) -> bytes:
    return bytes(_UNICODE_TO_BYTE.get(ch, 0) for ch in token)


def _words(backend, texts, kind: str, scripts: frozenset):
    """Pre-tokenized words of `texts` holding a target-script character, with counts."""
    counts = collections.Counter()
    for text in texts:
        s = backend.normalizer.normalize_str(text) if backend.normalizer else text
        words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(s)] if backend.pre_tokenizer else [s]
        for w in words:
            # Metaspace with split=False (or no pre-tokenizer) leaves whole lines; SentencePiece
            # itself learns pieces within "▁word" units, so the auxiliary BPE does the same.
            for piece in (re.split("(?=\u2581)", w) if kind == "metaspace" else [w]):
                if piece:
                    counts[piece] += 1
    if kind == "byte":
        keep = lambda w: any(char_script(ch) in scripts for ch in _decode_bytes(w).decode("utf-8", "replace"))
    else:
        keep = lambda w: any(char_script(ch) in scripts for ch in w)
    return {w: n for w, n in counts.items() if keep(w)}


def _allowed_root(kind: str, token: str, scripts: frozenset) -> bool:
    if kind == "byte":
        if any(ch not in _UNICODE_TO_BYTE for ch in token):
            return False
        return bytes_pin_target(_decode_bytes(token), scripts)
    return any(char_script(ch) in scripts for ch in token)


def _symbol_words(source: _Source, vocab: dict, texts, scripts: frozenset):
    """(target words as strings of one symbol character per source token, with counts; the
    symbol -> token string table; number of target words). Words the source keeps as one token
    have nothing to merge. Example: "ሰላም" -> "\U00010000\U00010001" for two source tokens.
    """
    work = json.loads(json.dumps(source.state))
    work["model"]["vocab"] = vocab
    backend = Tokenizer.from_str(json.dumps(work))
    words = _words(backend, texts, source.kind, scripts)
    symbol_of: dict[str, str] = {}
    counts = collections.Counter()
    for w, n in words.items():
        pieces = [t.value for t in backend.model.tokenize(w)]
        if len(pieces) > 1:
            for p in pieces:
                if p not in symbol_of:
                    if len(symbol_of) >= _MAX_SYMBOLS:
                        raise ValueError(f"the target words use more than {_MAX_SYMBOLS} distinct "
                                         "source tokens; expand on a smaller corpus")
                    symbol_of[p] = chr(_SYMBOL_BASE + len(symbol_of))
            counts["".join(symbol_of[p] for p in pieces)] += n
    return counts, {c: t for t, c in symbol_of.items()}, len(words)


def _train_aux(symbol_counts: dict, size: int, min_frequency: int) -> list[tuple[str, str]]:
    aux = Tokenizer(BPE())
    aux.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    alphabet = {ch for w in symbol_counts for ch in w}
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + size, min_frequency=min_frequency,
                                  show_progress=False, special_tokens=[])

    def batches(chunk=2000):
        items = list(symbol_counts.items())
        for i in range(0, len(items), chunk):
            yield [" ".join([w] * n) for w, n in items[i:i + chunk]]

    aux.train_from_iterator(batches(), trainer)
    return [_split_merge(m) for m in json.loads(aux.to_str())["model"]["merges"]]


def _accept_merges(source: _Source, aux_merges, roots: list[str], scripts: frozenset,
                   num_new_tokens: int):
    """(new tokens, new merges, rejected root merges) from the translated auxiliary merges.

    A merge is skipped when a part is unknown, it already exists, it would rebuild a special
    token or (Metaspace) glue fallback bytes; a root merge (both parts old) is rejected unless
    `_allowed_root`; a merge of two known parts into a known token adds only the merge.
    """
    vocab, tokens, pairs = source.vocab_with(roots), list(roots), set(source.merges)
    merges, rejected = [], 0
    for a, b in aux_merges:
        c = a + b
        if a not in vocab or b not in vocab or (a, b) in pairs or c in source.added:
            continue
        if source.kind == "metaspace" and (a.startswith("<0x") or b.startswith("<0x")):
            continue  # a merge of fallback bytes would make a token no decoder can read
        if a in source.vocab and b in source.vocab and not _allowed_root(source.kind, c, scripts):
            rejected += 1
            continue
        if c not in vocab:
            if len(tokens) >= num_new_tokens:
                break
            vocab[c] = source.first_id + len(tokens)
            tokens.append(c)
        pairs.add((a, b))
        merges.append((a, b))
    return tokens, merges, rejected


def _auxiliary_merges(source: _Source, texts, scripts: frozenset, roots: list[str],
                      num_new_tokens: int, min_frequency: int):
    """(new tokens, new merges, rejected root merges, target words) from an auxiliary BPE.

    The auxiliary BPE is trained larger than the budget, and retrained twice as large while
    rejected or already-known merges left the budget unfilled and the corpus had more to give.
    """
    vocab = source.vocab_with(roots)
    symbol_counts, token_of, n_words = _symbol_words(source, vocab, texts, scripts)

    def to_str(symbols: str) -> str:
        return "".join(token_of[ch] for ch in symbols)

    budget = num_new_tokens - len(roots)
    size = budget + budget // 2 + 16
    for _attempt in range(_AUX_ATTEMPTS):
        aux = _train_aux(symbol_counts, size, min_frequency) if symbol_counts else []
        tokens, merges, rejected = _accept_merges(
            source, [(to_str(x), to_str(y)) for x, y in aux], roots, scripts, num_new_tokens)
        if len(tokens) >= num_new_tokens or len(aux) < size:
            break  # enough tokens, or the corpus has no more merges to give
        size *= 2
    return tokens, merges, rejected, n_words


def _write_tokenizer(source_tokenizer, source: _Source, new_tokens: list[str], new_merges) -> object:
    """The source tokenizer with `new_tokens` and `new_merges` appended to its tokenizer.json.

    Hand-edited tokenizer.json: `tokenizer.add_tokens` would make added tokens, matched as whole
    strings before BPE; they would split old words mid-way and carry no merges.
    """
    model = source.state["model"]
    string_merges = bool(model["merges"]) and isinstance(model["merges"][0], str)
    merges = list(model["merges"]) + [f"{a} {b}" if string_merges else [a, b] for a, b in new_merges]
    vocab = source.vocab_with(new_tokens)
    # Special/added tokens that live only in `added_tokens` (Llama-3, Qwen) are entered in the
    # model's vocabulary at their own ids: with a hole there, the reload would renumber them after
    # the enlarged vocabulary (<|eot_id|> 128009 -> 133009) and new ids would collide with them.
    # BPE never produces them (no merge builds them; the pre-tokenizer splits "<|...|>").
    for added in source.state.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    state = {**source.state, "model": {**model, "vocab": vocab, "merges": merges}}
    with tempfile.TemporaryDirectory() as tmp:
        source_tokenizer.save_pretrained(tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)


def expand_vocabulary(source_tokenizer, target_texts, num_new_tokens: int, *, min_frequency: int = 2,
                      eval_texts=None, scripts=None, guard_texts: dict | None = None):
    """Append up to `num_new_tokens` target-language BPE tokens (with merges) to a fast BPE tokenizer.

    Returns `(new_tokenizer, info)`; old ids, special/added tokens and the chat template are kept,
    new ids follow the highest old id (specials included), and text without target-script
    characters tokenizes as before (see the module docstring). All of it is verified on the
    tokenizer reloaded from disk (`elchat.vocab_check`; round trip on `eval_texts`, else on the
    first training texts; `guard_texts` {name: texts} overrides English/code/shipped languages),
    and a broken promise raises `UserError`. `scripts` overrides the detected target scripts.
    Example: `tok2, info = expand_vocabulary(tok, load_texts("am"), 5000)`.
    """
    texts = _check_inputs(target_texts, num_new_tokens)
    source = _read_source(source_tokenizer)
    scripts = frozenset(scripts) if scripts else frozenset(detect_scripts(texts))
    tokens, merges, rejected, n_words = [], [], 0, 0
    if source.kind == "metaspace" and scripts:
        tokens = _root_characters(source, texts, scripts, min_frequency, num_new_tokens)
    if scripts and len(tokens) < num_new_tokens:
        tokens, merges, rejected, n_words = _auxiliary_merges(source, texts, scripts, tokens,
                                                               num_new_tokens, min_frequency)
    info = {"kind": source.kind, "scripts": sorted(scripts), "num_requested": num_new_tokens,
            "num_added": len(tokens), "num_new_merges": len(merges),
            "rejected_root_merges": rejected, "source_vocab_size": len(source_tokenizer),
            "first_new_id": source.first_id, "target_words": n_words}
    if not tokens:
        new_tok = source_tokenizer
        info.update(new_vocab_size=len(source_tokenizer), new_tokens=[], message=(
            "the target corpus is already covered by the source tokenizer (no new token found"
            + (f" for scripts {sorted(scripts)}" if scripts else "; no non-Latin script detected")
            + "); returning the source tokenizer unchanged"))
    else:
        new_tok = verify_expansion(
            source_tokenizer, _write_tokenizer(source_tokenizer, source, tokens, merges),
            first_id=source.first_id, num_added=len(tokens), scripts=scripts,
            target_texts=eval_texts or texts[:_ROUND_TRIP_DOCS], guards=guard_texts)
        info.update(new_vocab_size=len(new_tok), new_tokens=tokens,
                    message=f"added {len(tokens)} tokens ({len(merges)} merges) for {sorted(scripts)}")
    if eval_texts:
        info["tokens_per_char_before"] = tokens_per_char(source_tokenizer, eval_texts)
        info["tokens_per_char_after"] = tokens_per_char(new_tok, eval_texts)
    return new_tok, info


def write_expanded_model(source_dir, old_tokenizer, new_tokenizer, out_dir, method: str = "mean",
                         seed: int = 0, info: dict | None = None, device: str = "auto",
                         dtype: str = "auto", pad_to_multiple_of: int | None = PAD_MULTIPLE) -> Path:
    """Load the model in `source_dir`, grow it to `new_tokenizer` with `method`-initialized rows
    and write it to `out_dir` atomically, with `vocab_expansion.json` = {**info, init, source}.

    `source_dir`'s own tokenizer must be `old_tokenizer` (a base model gets the tokenizer expanded
    for its chat model only when both share one vocabulary).
    Example: `write_expanded_model(chat, tok, tok2, "runs/micro/am/01_vocab/chat_ve", "mean", 0, info)`.
    """
    own = load_tokenizer(source_dir)
    if own.get_vocab() != old_tokenizer.get_vocab():
        raise ValueError(f"the tokenizer of {source_dir} ({len(own)} tokens) is not the one that was "
                         f"expanded ({len(old_tokenizer)} tokens); the study needs a base/chat pair "
                         "of one family")
    model = load_model(source_dir, device=device, dtype=dtype)
    resize_and_initialize(model, old_tokenizer, new_tokenizer, method=method, seed=seed,
                          pad_to_multiple_of=pad_to_multiple_of)
    record = {**(info or {}), "init": method, "source": str(source_dir)}
    return save_expanded(model, new_tokenizer, out_dir, record)


def _cmd_expand(args) -> int:
    if args.new_tokens <= 0:
        raise ValueError(f"--new-tokens {args.new_tokens}: expected a positive integer")
    if args.init not in METHODS:
        raise ValueError(f"--init {args.init}: choose one of {', '.join(METHODS)}")
    train = load_texts(args.lang, "train")
    is_file = is_corpus_file(args.lang)
    test = train if is_file else load_texts(args.lang, "test")
    english = load_texts("en", "test")
    chat = fetch(args.model)["chat"]
    tok = load_tokenizer(chat)
    new_tok, info = expand_vocabulary(tok, train, args.new_tokens, min_frequency=args.min_frequency,
                                      eval_texts=test)
    print(info["message"])
    label = "corpus" if is_file else f"{args.lang} test"
    print(f"tokens/char on {label}: {info['tokens_per_char_before']:.3f} -> "
          f"{info['tokens_per_char_after']:.3f}")
    print(f"tokens/char on en test: {tokens_per_char(tok, english):.3f} -> "
          f"{tokens_per_char(new_tok, english):.3f}")
    write_expanded_model(chat, tok, new_tok, args.out, method=args.init, seed=args.seed, info=info,
                         device="cpu", dtype="float32", pad_to_multiple_of=args.pad_to_multiple_of)
    print(f"wrote {args.out}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("vocab", help="vocabulary expansion")
    sub = p.add_subparsers(dest="vocab_command", metavar="SUBCOMMAND", required=True)
    e = sub.add_parser("expand", help="add target-language tokens and initialize their embeddings",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--model", required=True, help="preset name, local HF directory or hub id")
    e.add_argument("--lang", required=True, help="shipped language code or a UTF-8 corpus file")
    e.add_argument("--new-tokens", type=int, default=5000, help="how many tokens to add at most")
    e.add_argument("--init", default="mean", help="embedding init: mean, merge, random, wmean")
    e.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    e.add_argument("--pad-to-multiple-of", type=int, default=PAD_MULTIPLE,
                   help="pad the embedding rows to a multiple of this (GPU kernels, vLLM, llama.cpp)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True, help="output model directory (written atomically)")
    e.set_defaults(func=_cmd_expand)
