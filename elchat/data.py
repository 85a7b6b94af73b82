"""Shipped corpora: unlabeled text, English->target pairs and English chat, loaded offline.

`data/` (next to this package, or `$ELCHAT_DATA_DIR`) holds, per language code,
`<lang>/{train,valid,test}.txt.gz` (one document per line), for the target languages
`<lang>/pairs.{train,test}.tsv.gz` (english TAB target, from gettext catalogs) and for English
`en/chat.jsonl.gz` (chatterbot-corpus conversations). `data/build.py` builds them from Debian
packages with a fixed seed; `data/manifest.json` records each file's sha256, size and sources.

Splits are disjoint by construction: documents are deduplicated on a normalized key (case,
punctuation and spaces folded) before a seeded split, and every document containing a test pair's
English or target text was removed from train/valid, so translation scores are not inflated by
memorized training text. Files are checked against the manifest's sha256 when read (`verify=True`;
hashing a few MB costs milliseconds), so a corrupt checkout fails loudly instead of training on
garbage.

    texts = load_texts("am", "train")          # list[str]
    pairs = load_pairs("am", "test")           # [(english, amharic), ...]
    chats = load_chat("train")                 # [{"messages": [...], "category": ...}, ...]
    ds = as_dataset("am", "train")             # the same split as a datasets.Dataset ("text")

Beyond the shipped files (only when the user names them): a corpus parameter is a language code, a
text file or a hub dataset `owner/name:config[:split]` (`parse_corpus`, `corpus_train_valid`);
hub corpora stream through `datasets` (`load_hub_texts`; MADLAD-400 reads its `clean` shards of one
language, `hub_source`), and FLORES-200 devtest pairs come from FLORES+ (`load_flores`).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

from tqdm.auto import tqdm

from .errors import is_count
from .packing import document_separator
from .paths import REPO_ROOT, data_dir, is_hub_id

LANGUAGES = {"en": "English", "am": "Amharic", "bn": "Bengali", "my": "Burmese", "gu": "Gujarati",
             "si": "Sinhala", "ta": "Tamil", "te": "Telugu", "ru": "Russian",
             "zh_TW": "Traditional Chinese"}
TARGET_LANGUAGES = tuple(code for code in LANGUAGES if code != "en")
TEXT_SPLITS = ("train", "valid", "test")
PAIR_SPLITS = ("train", "test")
CHAT_SPLITS = ("train", "test")
CHAT_TEST_SHARE = 10  # one conversation prompt in ten goes to the chat test split
HELDOUT_SHARE = 20     # a corpus without a validation split holds out 1/20 of its documents
# FLORES-200 / Belebele language codes (ISO 639-3 + script) of the kit's languages
FLORES_CODES = {"en": "eng_Latn", "am": "amh_Ethi", "bn": "ben_Beng", "my": "mya_Mymr",
                "gu": "guj_Gujr", "si": "sin_Sinh", "ta": "tam_Taml", "te": "tel_Telu",
                "ru": "rus_Cyrl", "zh_TW": "zho_Hant"}


def _rebuild_hint(lang: str) -> str:
    return f"rebuild it with `python data/build.py --lang {lang}` (needs apt) or restore it from git"


def _check_lang(lang: str, allowed=LANGUAGES) -> str:
    if lang not in allowed:
        raise ValueError(f"unknown language code {lang!r}; available: {', '.join(allowed)}")
    return lang


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(allowed)}")


@functools.lru_cache(maxsize=4)
def _manifest(path: str, mtime_ns: int) -> dict:
    files = {}
    for lang in json.loads(Path(path).read_text(encoding="utf-8")).get("languages", {}).values():
        files.update(lang.get("files", {}))
    return files


def manifest() -> dict:
    """The parsed `data/manifest.json` ({} when the data directory has none).

    Example: `manifest()["languages"]["am"]["kind"]`.
    """
    path = data_dir() / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@functools.lru_cache(maxsize=64)
def _read_lines(path: str, mtime_ns: int, size: int, lang: str, verify: bool) -> tuple[str, ...]:
    """Decompressed, checked lines of one shipped file (cached on path+mtime+size)."""
    raw = Path(path).read_bytes()
    if verify:
        mpath = data_dir() / "manifest.json"
        if mpath.is_file():
            rel = Path(path).relative_to(data_dir()).as_posix()
            entry = _manifest(str(mpath), mpath.stat().st_mtime_ns).get(rel)
            if entry is None:
                raise ValueError(f"data file {path} is not listed in {mpath}; {_rebuild_hint(lang)}")
            if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                raise ValueError(f"data file {path} is corrupt (sha256 differs from {mpath}); "
                                 f"{_rebuild_hint(lang)}")
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise ValueError(f"data file {path} is corrupt ({e}); {_rebuild_hint(lang)}") from None
    return tuple(line for line in text.split("\n") if line.strip())


def _shipped(lang: str, name: str, verify: bool) -> tuple[str, ...]:
    path = data_dir() / lang / name
    if not data_dir().is_dir():  # e.g. a wheel install: data/ lives in the git checkout only
        raise FileNotFoundError(f"data directory {data_dir()} does not exist; use a git checkout "
                                f"(git clone + pip install -e .) or set ELCHAT_DATA_DIR to a copy of data/")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} is missing; {_rebuild_hint(lang)}")
    st = path.stat()
    return _read_lines(str(path), st.st_mtime_ns, st.st_size, lang, verify)


def load_texts(lang_or_path: str | os.PathLike, split: str = "train", verify: bool = True) -> list[str]:
    """Unlabeled documents of a shipped language split, or of a UTF-8 text file (one per line).

    A file has no splits: every split of it is the whole file (`train_valid` holds out part of it).
    Example: `load_texts("am", "valid")[:3]`, `load_texts("my_corpus.txt")`.
    """
    _check_split(split, TEXT_SPLITS)
    if str(lang_or_path) in LANGUAGES:
        return list(_shipped(str(lang_or_path), f"{split}.txt.gz", verify))
    return _read_text_file(lang_or_path)


def _read_text_file(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of a UTF-8 (optionally gzipped) text file, stripped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is neither a language code (available: "
                         f"{', '.join(LANGUAGES)}) nor an existing text file")
    raw = path.read_bytes()
    try:
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a UTF-8 text file (one document per line): {e}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def is_corpus_file(lang_or_path: str | os.PathLike) -> bool:
    """True when `lang_or_path` names a text file rather than a shipped language.

    Example: `is_corpus_file("am") is False`.
    """
    return str(lang_or_path) not in LANGUAGES and Path(lang_or_path).is_file()


def split_heldout(docs: list[str], max_heldout: int) -> tuple[list[str], list[str]]:
    """(train, held-out) of a corpus that has no validation split: its first 1/20, at most
    `max_heldout` documents and at least one, is held out.

    Example: `split_heldout([f"d{i}" for i in range(40)], 100)[1] == ["d0", "d1"]`.
    """
    held = min(max_heldout, max(len(docs) // HELDOUT_SHARE, 1))
    return docs[held:], docs[:held]


def take_chars(docs: list[str], n_chars: int) -> list[str]:
    """The first documents of `docs` holding `n_chars` characters in all (the last one cut).

    Example: `take_chars(["abc", "defg"], 5) == ["abc", "de"]`.
    """
    out, used = [], 0
    for doc in docs:
        if used >= n_chars:
            break
        out.append(doc[: n_chars - used])
        used += len(out[-1])
    return out


def train_valid(lang_or_path: str | os.PathLike, max_valid_docs: int = 200) -> tuple[list[str], list[str]]:
    """Training and validation documents: a shipped language's train/valid splits, or a text
    file split by `split_heldout`.

    Example: `train, valid = train_valid("am")`.
    """
    if is_corpus_file(lang_or_path):
        return split_heldout(load_texts(lang_or_path), max_valid_docs)
    return load_texts(lang_or_path, "train"), load_texts(lang_or_path, "valid")


def load_pairs(lang: str, split: str = "test", verify: bool = True) -> list[tuple[str, str]]:
    """(english, target) pairs from gettext catalogs; test pairs never occur in train/valid text.

    Example: `en, am = load_pairs("am", "test")[0]`.
    """
    _check_lang(lang, TARGET_LANGUAGES)
    _check_split(split, PAIR_SPLITS)
    return [tuple(line.split("\t", 1)) for line in _shipped(lang, f"pairs.{split}.tsv.gz", verify)]


def _chat_split(conv: dict) -> str:
    # Split on the first user turn so all answers to one prompt land in the same split.
    first = conv["messages"][0]["content"].strip().casefold()
    digest = int(hashlib.sha256(first.encode("utf-8")).hexdigest()[:8], 16)
    return "test" if digest % CHAT_TEST_SHARE == 0 else "train"


def load_chat(split: str = "train", verify: bool = True) -> list[dict]:
    """English chat conversations ({"messages": [{"role", "content"}...], "category"}).

    Example: `load_chat("train")[0]["messages"][0]["role"] == "user"`.
    """
    _check_split(split, CHAT_SPLITS)
    convs = [json.loads(line) for line in _shipped("en", "chat.jsonl.gz", verify)]
    return [c for c in convs if _chat_split(c) == split]


MADLAD_ID = "allenai/madlad-400"  # compared case-folded: the hub spells it allenai/MADLAD-400
FLORES_ID = "openlanguagedata/flores_plus"  # FLORES-200's maintained successor (gated: log in)


def hub_source(dataset_id: str, config: str | None = None, split: str | None = None) -> tuple[str, dict]:
    """(path, `datasets.load_dataset` keyword arguments) for one hub corpus and language.

    MADLAD-400 ships one folder per language with `clean` and `noisy` JSONL shards and a loading
    script that `datasets` >= 4 no longer runs, so it is read through its data files; its split is
    `clean` (the paper's) unless asked otherwise. Other datasets: `name=config`, `split` (default train).
    Example: `hub_source("allenai/MADLAD-400", "am")[1]["data_files"] == {"train": "data/am/am_clean_*.jsonl.gz"}`.
    """
    if dataset_id.casefold() == MADLAD_ID:
        if not config:
            raise ValueError(f"{dataset_id}: name the language config, e.g. {dataset_id}:am")
        files = f"data/{config}/{config}_{split or 'clean'}_*.jsonl.gz"
        return dataset_id, {"data_files": {"train": files}, "split": "train"}
    return dataset_id, {"name": config, "split": split or "train"}


def load_hub_texts(dataset_id: str, config: str | None = None, split: str | None = None,
                   max_docs: int = 10000, text_field: str = "text") -> list[str]:
    """Stream up to `max_docs` non-empty documents of a `datasets` dataset (hub id or local path).

    Only called when the user names a dataset, e.g. `load_hub_texts("allenai/MADLAD-400", "am",
    max_docs=5000)` (split `clean`, see `hub_source`).
    """
    if not is_count(max_docs, 1):
        raise ValueError(f"max_docs must be a positive integer, got {max_docs!r}")
    import datasets  # imported on use: only a user who names a hub corpus needs it (slow import)

    path, kwargs = hub_source(dataset_id, config, split)
    stream = datasets.load_dataset(path, streaming=True, **kwargs)
    docs: list[str] = []
    with tqdm(total=max_docs, desc=f"{dataset_id} docs", leave=False) as bar:
        for row in stream:
            if text_field not in row:
                raise ValueError(f"{dataset_id} has no field {text_field!r}; its fields are "
                                 f"{', '.join(row)}; pass text_field=")
            text = str(row[text_field] or "").strip()
            if text:
                docs.append(text)
                bar.update(1)
                if len(docs) >= max_docs:
                    break
    return docs


def load_flores(lang: str, split: str = "devtest", dataset_id: str = FLORES_ID) -> list[tuple[str, str]]:
    """(english, target) sentence pairs of FLORES-200 (`dev` or `devtest`), joined on sentence id.

    Needs the hub (FLORES+ is gated: accept its terms and `huggingface-cli login`); one config per
    language, e.g. `amh_Ethi` (`FLORES_CODES`). Example: `en, am = load_flores("am")[0]`.
    """
    _check_lang(lang, TARGET_LANGUAGES)
    _check_split(split, ("dev", "devtest"))
    import datasets  # imported on use: only FLORES users need it (slow import)

    english, target = (datasets.load_dataset(dataset_id, FLORES_CODES[code], split=split)
                       for code in ("en", lang))
    by_id = {row["id"]: row["text"] for row in english}
    pairs = [(by_id[row["id"]], row["text"]) for row in target if row["id"] in by_id]
    if not pairs:
        raise ValueError(f"{dataset_id} {split}: no sentence ids shared by eng_Latn and {FLORES_CODES[lang]}")
    return pairs


def as_dataset(lang_or_path: str | os.PathLike, split: str = "train"):
    """A shipped split (or a text file) as a `datasets.Dataset` with one `text` column.

    Pairs and chat have their own: `pairs_dataset`, `chat_dataset`. Example:
    `as_dataset("am", "valid").map(lambda b: tok(b["text"]), batched=True)`.
    """
    import datasets

    return datasets.Dataset.from_dict({"text": load_texts(lang_or_path, split)})


def pairs_dataset(lang: str, split: str = "test"):
    """Parallel pairs as a `datasets.Dataset` (`english`, `target`). Example: `pairs_dataset("am")[0]`."""
    import datasets

    pairs = load_pairs(lang, split)
    return datasets.Dataset.from_dict({"english": [p[0] for p in pairs], "target": [p[1] for p in pairs]})


def chat_dataset(split: str = "train"):
    """English conversations as a `datasets.Dataset` (`messages`, `category`)."""
    import datasets

    return datasets.Dataset.from_list(load_chat(split))


def parse_corpus(spec: str | os.PathLike) -> tuple[str, ...]:
    """What a corpus parameter names: `("shipped", code)`, `("file", path)` or
    `("hub", dataset_id, config | None, split | None)` for `owner/name[:config[:split]]`.

    Example: `parse_corpus("allenai/MADLAD-400:am") == ("hub", "allenai/MADLAD-400", "am", None)`.
    """
    text = str(spec).strip()
    if text in LANGUAGES:
        return ("shipped", text)
    if Path(text).is_file():
        return ("file", text)
    head, *rest = text.split(":")
    if is_hub_id(head) and len(rest) <= 2:
        return ("hub", head, *(r or None for r in rest), *([None] * (2 - len(rest))))
    raise ValueError(f"corpus {text!r}: not a shipped language ({', '.join(LANGUAGES)}), not an "
                     "existing text file, and not a hub dataset `owner/name[:config[:split]]` "
                     "(e.g. allenai/MADLAD-400:am)")


def corpus_train_valid(spec: str | os.PathLike, max_valid_docs: int = 200,
                       max_docs: int = 100_000) -> tuple[list[str], list[str]]:
    """Training and validation documents of any corpus parameter (see `parse_corpus`): a shipped
    language's splits, or a file / hub stream (`max_docs` documents) with `split_heldout`.

    Example: `train, valid = corpus_train_valid("allenai/MADLAD-400:am", max_docs=5000)`.
    """
    kind, *rest = parse_corpus(spec)
    if kind == "hub":
        return split_heldout(load_hub_texts(rest[0], rest[1], rest[2], max_docs=max_docs), max_valid_docs)
    return train_valid(rest[0], max_valid_docs)


def corpus_summary(name: str, docs: list[str]) -> str:
    """One line a notebook prints about its corpus. Example: `corpus_summary("am train", ["ab", "c"])`
    == "am train: 2 documents, 3 characters"."""
    return f"{name}: {len(docs):,} documents, {sum(map(len, docs)):,} characters"


def pack_dataset(dataset, tokenizer, block_size: int, num_proc: int | None = None):
    """Tokenize a `text` dataset and pack it into `block_size` blocks with two batched `.map`s.

    The stream is the one `packing.token_stream` builds ([BOS when the tokenizer adds one] doc
    <document separator> ...), cut into full blocks, the tail dropped (`group_texts` of Hugging
    Face's run_clm.py, which the ElChat reference uses). Blocks cross batch boundaries as in one
    stream because the second map runs over the whole dataset at once (`batch_size=None`).
    Example: `pack_dataset(as_dataset("am"), tok, 512)["input_ids"][0]` has 512 ids.
    """
    sep = document_separator(tokenizer)
    bos = tokenizer.bos_token_id
    first = tokenizer("a")["input_ids"]
    prefix = [bos] if bos is not None and first and first[0] == bos else []

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"ids": [prefix + list(x) + [sep] for x in ids]}

    def group(batch):
        stream = [t for doc in batch["ids"] for t in doc]
        n = len(stream) // block_size
        return {"input_ids": [stream[i * block_size:(i + 1) * block_size] for i in range(n)]}

    tokens = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, num_proc=num_proc)
    return tokens.map(group, batched=True, batch_size=None, remove_columns=["ids"])


def describe() -> str:
    """A table of the shipped languages: kind of text, characters per split, pairs, size.

    Example: `print(describe())`.
    """
    langs = manifest().get("languages", {})
    head = f"{'code':6} {'language':20} {'kind':26} {'train':>9} {'valid':>8} {'test':>8} {'pairs tr/te':>13} {'MB':>6}"
    rows = [head, "-" * len(head)]
    for code, name in LANGUAGES.items():
        info = langs.get(code)
        if info is None:
            rows.append(f"{code:6} {name:20} (not built: python data/build.py --lang {code})")
            continue
        f = {k.split("/", 1)[1]: v for k, v in info["files"].items()}
        chars = [f.get(f"{s}.txt.gz", {}).get("characters", 0) for s in TEXT_SPLITS]
        pairs = "/".join(str(f.get(f"pairs.{s}.tsv.gz", {}).get("lines", "-")) for s in PAIR_SPLITS)
        mb = sum(v["bytes"] for v in f.values()) / 1e6
        rows.append(f"{code:6} {name:20} {info['kind']:26} {chars[0]:>9} {chars[1]:>8} {chars[2]:>8} "
                    f"{pairs:>13} {mb:>6.2f}")
    return "\n".join(rows)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("data", help="shipped corpora: list them, or rebuild from Debian packages")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="languages, kind of text and sizes").set_defaults(func=_cli_list)
    b = sub.add_parser("build", help="rebuild data/ with data/build.py (needs apt and network)")
    b.add_argument("--lang", action="append", help="language code (repeatable); default all")
    b.set_defaults(func=_cli_build)


def _cli_list(args) -> int:
    print(describe())
    return 0


def _cli_build(args) -> int:
    script = REPO_ROOT / "data" / "build.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: `elchat data build` needs a git checkout")
    for lang in args.lang or []:
        _check_lang(lang)
    cmd = [sys.executable, str(script)] + [a for lang in args.lang or [] for a in ("--lang", lang)]
    return subprocess.run(cmd).returncode
