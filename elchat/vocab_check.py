"""Check an expanded tokenizer's promise on the tokenizer as it will be read back from disk.

`elchat.vocab.expand_vocabulary` promises, and this module verifies after `save_pretrained` +
`AutoTokenizer.from_pretrained` (the only tokenizer a later stage ever sees):

1. every old token, special and `added_tokens` included, keeps its id; the new tokens take the ids
   first_id, first_id + 1, ... with no gap and no collision;
2. the special tokens (bos/eos/pad/unk and the additional ones) and the chat template are the same;
3. text without a target-script character (English, code, every other shipped language)
   tokenizes to exactly the source ids;
4. decode(encode(x)) == x on the target texts (or equals the source's own round trip where the
   source does not reproduce x itself, e.g. Qwen's NFC normalizer or a stripped leading space).

A broken promise raises `UserError` naming what broke and for which tokens or texts, so nothing
is written (the checks run before any model is grown or saved).
"""
from __future__ import annotations

import tempfile

from transformers import AutoTokenizer

from .data import LANGUAGES, load_texts
from .errors import UserError
from .scripts import char_script

GUARD_DOCS = 40  # test documents per shipped language checked for identical ids (bounded time)
CODE_SAMPLE = ('def f(x: int) -> dict:\n    """Return {x: x ** 2}."""\n    return {"a": [x ** 2, 0x1F]}'
               "  # naïve café ∀x ∈ ℝ\n")


def reload(tokenizer):
    """`tokenizer` after `save_pretrained` + `AutoTokenizer.from_pretrained` (what disk gives back).

    Example: `reload(tok).get_vocab() == tok.get_vocab()` for a well-formed tokenizer.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp)


def guard_texts() -> dict[str, list[str]]:
    """English, a code sample and the head of every shipped language's test split, by name.

    Example: `guard_texts()["en"][:1]`. Languages whose files are missing are left out.
    """
    out = {"code": [CODE_SAMPLE]}
    for lang in LANGUAGES:
        try:
            out[lang] = load_texts(lang, "test")[:GUARD_DOCS]
        except (OSError, ValueError):
            continue  # a checkout without this language's data: nothing to guard
    return out


def _fail(what: str, examples) -> None:
    examples = list(examples)
    if examples:
        raise UserError(f"vocabulary expansion broke its promise: {what} ({len(examples)} cases, "
                        f"e.g. {examples[:3]}); nothing was written — please report this tokenizer")


def _check_ids(old, new, first_id: int, num_added: int) -> None:
    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    _fail("old tokens changed id after reload",
          [(t, i, new_vocab.get(t)) for t, i in old_vocab.items() if new_vocab.get(t) != i])
    added = sorted(i for t, i in new_vocab.items() if t not in old_vocab)
    want = list(range(first_id, first_id + num_added))
    _fail(f"new ids are not {first_id}..{first_id + num_added - 1} without gaps",
          [] if added == want else [("got", added[:3], added[-3:], len(added))])
    _fail("two tokens share an id", [] if len(set(new_vocab.values())) == len(new_vocab) else
          [len(new_vocab) - len(set(new_vocab.values()))])


def _check_specials(old, new) -> None:
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        _fail(f"{attr} changed", [] if getattr(old, attr) == getattr(new, attr) else
              [(getattr(old, attr), getattr(new, attr))])
    old_special = dict(zip(old.all_special_tokens, old.all_special_ids))
    new_special = dict(zip(new.all_special_tokens, new.all_special_ids))
    _fail("special tokens changed", [(t, i, new_special.get(t)) for t, i in old_special.items()
                                     if new_special.get(t) != i])
    _fail("the chat template changed", [] if old.chat_template == new.chat_template else ["template"])


def _has_target(text: str, scripts: frozenset) -> bool:
    return any(char_script(ch) in scripts for ch in text)


def _check_texts(old, new, scripts: frozenset, target_texts, guards: dict) -> None:
    others = [(name, t) for name, texts in guards.items() for t in texts
              if t and not _has_target(t, scripts)]
    if others:
        old_ids = old.backend_tokenizer.encode_batch([t for _, t in others], add_special_tokens=False)
        new_ids = new.backend_tokenizer.encode_batch([t for _, t in others], add_special_tokens=False)
        _fail("text without target-script characters tokenizes differently",
              [(name, t[:40]) for (name, t), a, b in zip(others, old_ids, new_ids) if a.ids != b.ids])
    texts = [t for t in target_texts or [] if t]
    if texts:
        new_enc = new.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        old_enc = old.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        bad = []
        for t, a, b in zip(texts, new_enc, old_enc):
            got = new.backend_tokenizer.decode(a.ids, skip_special_tokens=False)
            if got != t and got != old.backend_tokenizer.decode(b.ids, skip_special_tokens=False):
                bad.append(t[:40])
        _fail("decode(encode(x)) != x on target text", bad)


def verify_expansion(old, new, *, first_id: int, num_added: int, scripts, target_texts=None,
                     guards: dict | None = None):
    """Reload `new` from disk, check the promise (module docstring); return the reloaded tokenizer.

    Example: `tok2 = verify_expansion(tok, tok2, first_id=49152, num_added=500, scripts={"ETHIOPIC"})`.
    """
    again = reload(new)
    _check_ids(old, again, first_id, num_added)
    _check_specials(old, again)
    _check_texts(old, again, frozenset(scripts), target_texts,
                 guard_texts() if guards is None else guards)
    return again
