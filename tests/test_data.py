"""Shipped corpora: disjoint splits, manifest integrity, scripts, leakage, loaders and errors.

Everything here is checked independently of elchat.data where it can be: hashes with hashlib,
file contents with gzip, scripts with unicodedata character names.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from elchat import data

DATA = Path(data.__file__).resolve().parent.parent / "data"
MANIFEST = json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))

# unicodedata character-name prefix of each language's script (independent of build.py's ranges)
SCRIPT_NAME = {"en": "LATIN", "am": "ETHIOPIC", "bn": "BENGALI", "my": "MYANMAR", "gu": "GUJARATI",
               "si": "SINHALA", "ta": "TAMIL", "te": "TELUGU", "ru": "CYRILLIC", "zh_TW": "CJK"}


def _lines(path: Path) -> list[str]:
    return [line for line in gzip.decompress(path.read_bytes()).decode("utf-8").split("\n") if line]


def _script_share(text: str, lang: str) -> float:
    letters = {c: n for c, n in Counter(text).items() if c.isalpha()}
    ours = sum(n for c, n in letters.items() if unicodedata.name(c, "").startswith(SCRIPT_NAME[lang]))
    return ours / max(1, sum(letters.values()))


def _norm(s: str) -> str:
    return "".join(c for c in s.casefold() if c.isalnum())


def test_language_codes():
    assert set(data.LANGUAGES) == {"en", "am", "bn", "my", "gu", "si", "ta", "te", "ru", "zh_TW"}
    assert set(data.TARGET_LANGUAGES) == set(data.LANGUAGES) - {"en"}


@pytest.mark.parametrize("lang", list(SCRIPT_NAME))
def test_every_language_shipped_in_its_script(lang):
    files = MANIFEST["languages"][lang]["files"]
    for split in ("train", "valid", "test"):
        assert f"{lang}/{split}.txt.gz" in files
        docs = data.load_texts(lang, split)
        assert docs and all(d.strip() == d and "\n" not in d for d in docs)
        text = "".join(docs)
        assert _script_share(text, lang) > 0.8, (lang, split)
    if lang != "en":
        for split in ("train", "test"):
            pairs = data.load_pairs(lang, split)
            assert pairs and all(len(p) == 2 and p[0] and p[1] for p in pairs)
            assert _script_share("".join(t for _, t in pairs), lang) > 0.8
            assert _script_share("".join(e for e, _ in pairs), "en") > 0.9
        assert 300 <= len(data.load_pairs(lang, "test")) <= 1000


@pytest.mark.parametrize("lang", list(SCRIPT_NAME))
def test_splits_pairwise_disjoint(lang):
    splits = {s: {_norm(d) for d in _lines(DATA / lang / f"{s}.txt.gz")} for s in ("train", "valid", "test")}
    assert not splits["train"] & splits["valid"]
    assert not splits["train"] & splits["test"]
    assert not splits["valid"] & splits["test"]


@pytest.mark.parametrize("lang", [c for c in SCRIPT_NAME if c != "en"])
def test_test_pairs_not_in_training_text(lang):
    docs = _lines(DATA / lang / "train.txt.gz") + _lines(DATA / lang / "valid.txt.gz")
    train_text = "\n".join(docs)
    # a document can contain an English string only if it has 3 ASCII letters in a row too:
    # searching those documents alone is exact and much faster on non-Latin languages
    latin_text = "\n".join(d for d in docs if re.search("[A-Za-z]{3}", d))
    test_pairs = [line.split("\t") for line in _lines(DATA / lang / "pairs.test.tsv.gz")]
    assert all(re.search("[A-Za-z]{3}", e) for e, _ in test_pairs)
    leaked = [(e, t) for e, t in test_pairs if e in latin_text or t in train_text]
    assert not leaked, leaked[:3]
    train_pairs = [line.split("\t") for line in _lines(DATA / lang / "pairs.train.tsv.gz")]
    train_keys = {_norm(e) for e, _ in train_pairs} | {_norm(t) for _, t in train_pairs}
    assert not [p for p in test_pairs if _norm(p[0]) in train_keys or _norm(p[1]) in train_keys]


def test_manifest_matches_every_file():
    listed = {}
    for info in MANIFEST["languages"].values():
        listed.update(info["files"])
    on_disk = {p.relative_to(DATA).as_posix() for p in DATA.glob("*/*.gz")}
    assert on_disk == set(listed)
    for rel, entry in listed.items():
        raw = (DATA / rel).read_bytes()
        text = gzip.decompress(raw).decode("utf-8")
        assert hashlib.sha256(raw).hexdigest() == entry["sha256"], rel
        assert len(raw) == entry["bytes"]
        assert text.count("\n") == entry["lines"]
        assert len(text) - text.count("\n") == entry["characters"]
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 40e6
    for info in MANIFEST["languages"].values():
        assert info["kind"] and info["packages"]
        for pkg in info["packages"]:
            assert MANIFEST["packages"][pkg]["version"] and MANIFEST["packages"][pkg]["licence"]


def test_chat_alternates_and_splits():
    train, test = data.load_chat("train"), data.load_chat("test")
    assert train and test and len(test) < len(train) / 4
    for conv in train + test:
        roles = [m["role"] for m in conv["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        assert all(isinstance(m["content"], str) and m["content"] for m in conv["messages"])
        assert isinstance(conv["category"], str)
    prompts = lambda convs: {c["messages"][0]["content"].casefold() for c in convs}  # noqa: E731
    assert not prompts(train) & prompts(test)
    assert len(train) + len(test) == len(_lines(DATA / "en" / "chat.jsonl.gz"))


def test_unknown_code_lists_available():
    with pytest.raises(ValueError, match=r"available: en, am, bn, my, gu, si, ta, te, ru, zh_TW"):
        data.load_texts("xx")
    with pytest.raises(ValueError, match=r"zh_TW"):
        data.load_pairs("en")
    with pytest.raises(ValueError, match="split"):
        data.load_texts("am", "dev")


def test_results_are_copies():
    a = data.load_texts("am", "valid")
    a.append("x")
    a[0] = "changed"
    assert data.load_texts("am", "valid") == _lines(DATA / "am" / "valid.txt.gz")


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    copy = tmp_path / "data"
    copy.mkdir()
    shutil.copy(DATA / "manifest.json", copy)
    shutil.copytree(DATA / "am", copy / "am")
    monkeypatch.setenv("ELCHAT_DATA_DIR", str(copy))
    return copy


def test_missing_file_names_file_and_rebuild(data_copy):
    (data_copy / "am" / "valid.txt.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"am/valid\.txt\.gz.*python data/build.py --lang am"):
        data.load_texts("am", "valid")


def test_corrupt_file_detected(data_copy):
    path = data_copy / "am" / "test.txt.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"am/test\.txt\.gz.*corrupt.*python data/build.py --lang am"):
        data.load_texts("am", "test")
    # without the manifest check the gzip CRC still catches it
    with pytest.raises(ValueError, match=r"test\.txt\.gz.*corrupt"):
        data.load_texts("am", "test", verify=False)


def test_load_from_path(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc\n\n  second doc  \nthird\n", encoding="utf-8")
    assert data.load_texts(path) == ["first doc", "second doc", "third"]
    assert data.load_texts(str(path)) == ["first doc", "second doc", "third"]
    with pytest.raises(ValueError, match="neither a language code"):
        data.load_texts(tmp_path / "nope.txt")


def test_hub_loader_with_local_stand_in(tmp_path):
    # a local directory of jsonl files stands in for a hub dataset (datasets infers the builder)
    rows = [{"text": f"document {i}" if i != 3 else "  ", "id": i} for i in range(25)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    docs = data.load_hub_texts(str(tmp_path), split="train", max_docs=10)
    assert docs == [f"document {i}" for i in range(11) if i != 3]  # capped, blank one skipped
    with pytest.raises(ValueError, match="no field 'content'.*text, id"):
        data.load_hub_texts(str(tmp_path), text_field="content", max_docs=5)
    with pytest.raises(ValueError, match="max_docs"):
        data.load_hub_texts(str(tmp_path), max_docs=0)


def test_cli_list(capsys):
    from elchat.cli import main

    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for code in data.LANGUAGES:
        assert code in out


@functools.lru_cache(maxsize=1)
def _build_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("data_build", DATA / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_writes_deterministic_gzip(tmp_path):
    build = _build_module()
    build.write_gz(tmp_path / "a.gz", ["ሰላም", "hello"])
    build.write_gz(tmp_path / "b.gz", ["ሰላም", "hello"])
    raw = (tmp_path / "a.gz").read_bytes()
    assert raw == (tmp_path / "b.gz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert gzip.decompress(raw).decode() == "ሰላም\nhello\n"


@pytest.mark.parametrize("raw, cleaned", [
    ("_Open File", "Open File"), ("Customi_ze salutation", "Customize salutation"),
    ("&Save", "Save"), ("~Insert", "Insert"), ("檔案(_F)", "檔案"), ("<b>Bold</b> text", "Bold text"),
    ("Delete %s?", "Delete?"), ("$(ARG1) already exists.", "already exists."),
    ("Save &amp; Close", "Save & Close"), ("{ $count } tabs", "tabs"),
])
def test_build_cleans_ui_strings(raw, cleaned):
    assert _build_module().clean(raw) == cleaned


def test_missing_data_dir_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ELCHAT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="ELCHAT_DATA_DIR"):
        data.load_texts("en")


@pytest.mark.parametrize("text, lang, kept", [
    ("ሰላም ok", "am", True),        # 3 of 5 letters Ethiopic: share 0.6 is enough
    ("ሰላ okk", "am", False),        # 2 of 5: share 0.4
    ("ሰ", "am", False),             # one letter: fewer than min_letters=2
    ("Привет, мир", "ru", True),
    ("\ua640\ua641", "ru", True),   # Cyrillic Extended-B: Cyrillic by its Unicode name
    ("繁體ㄅ", "zh_TW", True),       # ideographs and Bopomofo
    ("Open File", "en", True),
    ("Open 檔案", "en", True),       # 4 of 6 letters Latin
])
def test_build_keeps_strings_in_their_script(text, lang, kept):
    assert _build_module().keep(text, lang) is kept


def test_build_uses_the_one_script_table():
    from elchat import scripts

    build = _build_module()
    assert build.script_letters is scripts.script_letters
    assert not hasattr(build, "SCRIPTS") and not hasattr(build, "in_script")
    assert set(build.LANGS) == set(scripts.LANGUAGE_SCRIPTS)


def test_holdout_sources_hold_out_whole_small_ui_packages():
    """Synthetic sources: the big package and running text are never held out; the held-out pool
    stops once its exclusive text and sentence-like pairs reach twice the test needs; a string
    shared with a training package is not exclusive to the pool."""
    import random

    build = _build_module()
    doc_src = {f"big document {i:04d} " * 3: {"libreoffice-l10n-xx"} for i in range(400)}
    doc_src.update({f"help paragraph {i}": {"gnome-user-docs"} for i in range(5)})
    for p in range(12):
        doc_src.update({f"pkg{p} string {i} ": {f"pkg{p}"} for i in range(10)})
    doc_src["shared by pkg0 and pkg1 and big"] = {"pkg0", "pkg1", "libreoffice-l10n-xx"}
    pair = ("Open the file you chose", "ፋይሉን ክፈት እባክህ")  # sentence-like by hand: >= 3 words, >= 10 chars
    pair_src = {pair: {f"pkg{p}"} for p in range(12)} | {
        (f"Save file number {p} now", f"ፋይል {p} አስቀምጥ አሁን"): {f"pkg{p}"} for p in range(12)}
    budget = 2 * sum(len(f"pkg0 string {i} ") for i in range(10))  # two packages' text
    held = build.holdout_sources(doc_src, pair_src, budget, n_pairs=1, rng=random.Random(0))
    total = sum(map(len, doc_src))
    assert "libreoffice-l10n-xx" not in held and "gnome-user-docs" not in held  # > 5% / running text
    assert held <= {f"pkg{p}" for p in range(12)}
    exclusive = sum(len(d) for d, pk in doc_src.items() if pk <= held)
    assert exclusive >= 2 * budget and len(held) == 4  # 4 packages of equal text reach 2 x (2 packages)
    assert all(len(d) <= 0.05 * total for d in doc_src if doc_src[d] <= held)
    docs, origin, src = build.dedup_sources([("a", "Hello, World"), ("b", "hello world!"), ("b", "Other")])
    assert docs == ["Hello, World", "Other"] and origin == {"Hello, World": "a", "Other": "b"}
    assert src == {"Hello, World": {"a", "b"}, "Other": {"b"}}


@pytest.mark.parametrize("lang", sorted(MANIFEST["languages"]))
def test_test_split_says_how_it_differs_from_train(lang):
    """Rebuilt languages record their held-out packages; their test text is none of train's."""
    note = MANIFEST["languages"][lang].get("test_split")
    if note is None:
        pytest.skip(f"{lang}: built before held-out sources (data/README.md says so)")
    assert note["how"]
    if lang == "am":  # the default language is rebuilt with held-out sources
        assert len(note["held_out_sources"]) >= 2
    if note["held_out_sources"]:
        assert set(note["test_documents_per_source"]) <= set(note["held_out_sources"])
        assert not set(note["held_out_sources"]) & {"libreoffice-l10n-" + lang, "gnome-user-docs"}


# --- corpora through `datasets` (issue 15) ---------------------------------------------------

def test_every_shipped_split_loads_as_a_dataset():
    """Every shipped text split, every pair split and both chat splits as `datasets.Dataset`,
    row for row what the plain loaders read (checked against the files with gzip)."""
    import datasets

    for code in data.LANGUAGES:
        for split in data.TEXT_SPLITS:
            ds = data.as_dataset(code, split)
            assert isinstance(ds, datasets.Dataset) and ds.column_names == ["text"]
            assert ds.to_dict()["text"] == [ln for ln in _lines(DATA / code / f"{split}.txt.gz") if ln.strip()]
        if code in data.TARGET_LANGUAGES:
            for split in data.PAIR_SPLITS:
                ds = data.pairs_dataset(code, split)
                rows = [ln.split("\t", 1) for ln in _lines(DATA / code / f"pairs.{split}.tsv.gz") if ln.strip()]
                cols = ds.to_dict()
                assert cols["english"] == [r[0] for r in rows] and cols["target"] == [r[1] for r in rows]
    chats = sum(len(data.chat_dataset(s)) for s in data.CHAT_SPLITS)
    assert chats == len([ln for ln in _lines(DATA / "en" / "chat.jsonl.gz") if ln.strip()])


def test_pack_dataset_by_batched_map_equals_hand_packed_stream(tiny_tokenizer):
    texts = data.load_texts("am", "valid")[:40]
    blocks = data.pack_dataset(data.as_dataset("am", "valid").select(range(40)), tiny_tokenizer, 16)
    sep = tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")  # the nano tokenizer adds no BOS
    stream = []
    for t in texts:  # by hand: doc tokens then the document separator, one stream
        stream += tiny_tokenizer(t, add_special_tokens=False)["input_ids"] + [sep]
    expected = [stream[i:i + 16] for i in range(0, len(stream) - 15, 16)]
    assert blocks.to_dict()["input_ids"] == expected


def test_madlad_streams_clean_split_per_language(monkeypatch):
    """MADLAD-400: the language's `clean` shards (the CLI used to ask for split="train" by name)."""
    import datasets

    seen = {}

    def fake_load(path, **kwargs):
        seen.update(path=path, **kwargs)
        return iter([{"text": "ሰላም"}, {"text": "ዓለም"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert data.load_hub_texts("allenai/MADLAD-400", "am", max_docs=5) == ["ሰላም", "ዓለም"]
    assert seen["data_files"] == {"train": "data/am/am_clean_*.jsonl.gz"} and seen["streaming"]
    assert data.hub_source("allenai/MADLAD-400", "am", "noisy")[1]["data_files"]["train"].endswith(
        "am_noisy_*.jsonl.gz")
    assert data.hub_source("owner/other", "cfg")[1] == {"name": "cfg", "split": "train"}
    with pytest.raises(ValueError, match="language config"):
        data.hub_source("allenai/MADLAD-400")


def test_flores_pairs_joined_on_sentence_id(monkeypatch):
    import datasets

    rows = {"eng_Latn": [{"id": 1, "text": "one"}, {"id": 2, "text": "two"}],
            "amh_Ethi": [{"id": 2, "text": "ሁለት"}, {"id": 1, "text": "አንድ"}]}
    calls = []

    def fake_load(path, name, split):
        calls.append((path, name, split))
        return rows[name]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert data.load_flores("am") == [("two", "ሁለት"), ("one", "አንድ")]
    assert calls == [(data.FLORES_ID, "eng_Latn", "devtest"), (data.FLORES_ID, "amh_Ethi", "devtest")]


def test_corpus_parameter_kinds(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(f"doc {i}" for i in range(40)), encoding="utf-8")
    assert data.parse_corpus("am") == ("shipped", "am")
    assert data.parse_corpus(str(path)) == ("file", str(path))
    assert data.parse_corpus("allenai/MADLAD-400:am:clean") == ("hub", "allenai/MADLAD-400", "am", "clean")
    with pytest.raises(ValueError, match="owner/name"):
        data.parse_corpus("no_such_file.txt")
    monkeypatch.setattr(data, "load_hub_texts", lambda *a, **k: [f"hub {i}" for i in range(40)])
    train, valid = data.corpus_train_valid("allenai/MADLAD-400:am", max_valid_docs=5)
    assert valid == ["hub 0", "hub 1"] and len(train) == 38  # 1/20 held out
    assert data.corpus_summary("x", ["ab", "c"]) == "x: 2 documents, 3 characters"
