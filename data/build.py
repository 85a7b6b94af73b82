#!/usr/bin/env python3
"""Build the shipped corpora in data/ from Debian packages (and one PyPI wheel).

    python data/build.py                  # every language
    python data/build.py --lang am --lang en

Pipeline, per language:
1. `apt-get download` the source packages into the git-ignored cache `.cache/debs/` and extract
   only the files we read (gettext catalogs, docs, copyright files) with `dpkg-deb --fsys-tarfile`.
2. Read the text: gettext `.mo` catalogs (msgid -> msgstr, read with the stdlib
   `gettext.GNUTranslations`, so no extra dependency), Firefox language packs (.ftl/.properties
   values), GNOME help pages (Mallard XML paragraphs), man pages (rendered with groff), fortunes,
   the King James Bible (dumped with the `bible` program of the bible-kjv package).
3. Clean every string (accelerator markers `_ & ~`, markup, format specifiers, entities), keep it
   only if it is mostly in the language's script (`elchat.scripts`, the kit's one script table:
   the first word of each letter's Unicode name), and deduplicate on a normalized key
   (case/punctuation/whitespace folded) so near-identical strings cannot land in two splits.
4. Hold out whole packages for the test split (`holdout_sources`), choose test pairs (english,
   target) from their catalogs, drop every text document that contains a test pair's English or
   target string, and drop their texts from the training pairs.
5. Split the documents with a fixed seed (test, valid by a character budget, the rest train) and
   write gzip files with mtime=0, so a rebuild from the same package versions is byte-identical.
6. Record sha256/bytes/characters/lines per file and the packages (exact versions, licences) in
   data/manifest.json.

The list of packages carrying catalogs (data/mo_packages.txt) was chosen once with apt-file
(packages under 1.5 MB with a catalog for am/bn/my/gu/si/ta/te, plus those under 3 MB for am/my/si);
`--refresh-packages` regenerates it (needs `apt-get install apt-file && apt-file update`).
Needs: Debian/Ubuntu with apt, dpkg-deb, groff; Python 3.10+ with pyyaml (chat corpus).
"""
from __future__ import annotations

import argparse
import gettext
import gzip
import hashlib
import html
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import time
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run as `python data/build.py` from a checkout: the script table is the kit's own (elchat.scripts).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from elchat.scripts import LANGUAGE_SCRIPTS, script_letters  # noqa: E402

DATA = Path(__file__).resolve().parent
ROOT = DATA.parent
CACHE = ROOT / ".cache"
DEBS = CACHE / "debs"
EXTRACT = CACHE / "extract"
SEED = 0

# code -> (name, locale dirs in packages, gnome-help dir, firefox/libreoffice suffix); each
# language's script is elchat.scripts.LANGUAGE_SCRIPTS[code]
LANGS = {
    "en": dict(name="English", locales=[], help="C", l10n=None),
    "am": dict(name="Amharic", locales=["am"], help=None, l10n="am"),
    "bn": dict(name="Bengali", locales=["bn", "bn_BD", "bn_IN"], help=None, l10n="bn"),
    "my": dict(name="Burmese", locales=["my"], help=None, l10n="my"),
    "gu": dict(name="Gujarati", locales=["gu"], help="gu", l10n="gu"),
    "si": dict(name="Sinhala", locales=["si"], help=None, l10n="si"),
    "ta": dict(name="Tamil", locales=["ta"], help="ta", l10n="ta"),
    "te": dict(name="Telugu", locales=["te"], help="te", l10n="te"),
    "ru": dict(name="Russian", locales=["ru"], help="ru", l10n="ru"),
    "zh_TW": dict(name="Traditional Chinese", locales=["zh_TW", "zh_Hant"], help=None,
                  l10n="zh-tw"),
}
L10N_NAMES = {"gu": ["gu-in"]}  # firefox uses gu-in, libreoffice gu
EN_PACKAGES = ["bible-kjv-text", "bible-kjv", "fortunes", "fortunes-min", "manpages", "gnome-user-docs"]
RU_PACKAGES = ["manpages-ru", "fortunes-ru", "gnome-user-docs"]
# larger catalog packages worth their size for every language (GTK, GNOME settings, VLC, GIMP, KDE)
EXTRA_MO = ["libgtk-3-common", "gnome-control-center-data", "vlc-l10n", "gimp-data", "kate5-data",
            "konqueror", "kio", "dolphin"]
# Battle for Wesnoth campaigns: translated story dialogue (narrative text) for ru and zh_TW
WESNOTH = [f"wesnoth-1.16-{c}" for c in "did dm dw ei httt l low nr sof sota sotbe thot trow tsg ttb "
           "utbs".split()]
RUNNING = re.compile(r"gnome-user-docs|manpages|fortunes|bible-kjv|wesnoth")  # not UI strings
CHAT_WHEEL = ("chatterbot-corpus", "1.3.3")
# character budgets: test/valid drawn first from documents long enough to be meaningful
BUDGET = {"en": dict(test=150_000, valid=60_000, train=4_000_000),
          "target": dict(test=50_000, valid=20_000, train=4_000_000)}
N_TEST_PAIRS = 600
MAX_TRAIN_PAIRS = 60_000  # a seeded sample beyond this: Russian alone has 190k (15 MB of text)
HOLDOUT_SHARE = 0.05  # a package giving more of a language's text is never held out for test


# ----------------------------------------------------------------------------- packages
def sh(cmd, **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def mo_packages() -> list[str]:
    return [p for p in (DATA / "mo_packages.txt").read_text().split() if p]


def ensure_apt_lists() -> None:
    """`apt-get update` once, only when this machine has no package lists yet (needs root)."""
    if not list(Path("/var/lib/apt/lists").glob("*Packages*")):
        subprocess.run(["apt-get", "update", "-qq"], check=True)


def packages_for(lang: str) -> list[str]:
    spec = LANGS[lang]
    if lang == "en":
        return list(EN_PACKAGES)
    pkgs = list(mo_packages()) + EXTRA_MO
    if lang in ("ru", "zh_TW"):
        pkgs += WESNOTH
    for suf in [spec["l10n"], *L10N_NAMES.get(lang, [])]:
        for prefix in ("libreoffice-l10n-", "firefox-esr-l10n-"):
            pkgs.append(prefix + suf)
    if lang == "ru":
        pkgs += RU_PACKAGES
    if spec["help"]:
        pkgs.append("gnome-user-docs")
    available = set(sh(["apt-cache", "pkgnames"]).split())
    return sorted({p for p in pkgs if p in available})


def download(pkgs: list[str]) -> dict[str, Path]:
    """apt-get download what is missing from the cache; return package -> .deb path."""
    DEBS.mkdir(parents=True, exist_ok=True)
    have = {f.name.split("_")[0]: f for f in DEBS.glob("*.deb")}
    missing = [p for p in pkgs if p not in have]
    if missing:
        for i in range(0, len(missing), 100):
            subprocess.run(["apt-get", "download", "-qq", *missing[i:i + 100]], cwd=DEBS, check=True)
        have = {f.name.split("_")[0]: f for f in DEBS.glob("*.deb")}
    return {p: have[p] for p in pkgs if p in have}


WANTED = re.compile(r"(LC_MESSAGES/.*\.mo$|/copyright$|\.xpi$|/share/help/.*\.page$|/share/man/"
                    r"|/games/fortunes/|/usr/lib/bible|/usr/bin/bible$)")


def extract(deb: Path) -> Path:
    """Extract only the files we read from a .deb into the cache (once)."""
    out = EXTRACT / deb.stem
    if (out / ".done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            if (m.isfile() or m.issym()) and WANTED.search(m.name):
                tar.extract(m, out, filter="data") if sys.version_info >= (3, 12) else tar.extract(m, out)
    proc.wait()
    (out / ".done").write_text("")
    return out


def deb_info(deb: Path) -> dict:
    fields = sh(["dpkg-deb", "-f", str(deb), "Package", "Version"]).splitlines()
    kv = dict(line.split(": ", 1) for line in fields if ": " in line)
    return {"version": kv.get("Version", "?")}


LICENCE_PATTERNS = [("LGPL", r"Lesser General Public|\bLGPL"), ("GPL", r"GNU General Public|\bGPL"),
                    ("MPL-2.0", r"Mozilla Public License|\bMPL\b"), ("CC-BY-SA", r"CC-BY-SA|Attribution-Share"),
                    ("BSD", r"\bBSD\b"), ("MIT/Expat", r"\bMIT\b|\bExpat\b"), ("Apache-2.0", r"Apache License"),
                    ("public-domain", r"[Pp]ublic [Dd]omain|public-domain")]
# where the copyright file's licence is that of the program, not of the text we take
LICENCE_NOTES = {
    "bible-kjv-text": "KJV text: public domain (copyright expired, 1611); packaging GPL-2+",
    "bible-kjv": "GPL-2+ (program only used to dump the text)",
    "fortunes": "BSD (fortune-mod); quotations attributed to their authors",
    "fortunes-min": "BSD (fortune-mod); quotations attributed to their authors",
}


def licence_of(pkg: str, root: Path) -> str:
    """Short licence names from the package's copyright file (DEP-5 `License:` fields first)."""
    if pkg in LICENCE_NOTES:
        return LICENCE_NOTES[pkg]
    files = list(root.glob("usr/share/doc/*/copyright"))
    if not files:
        return "see /usr/share/doc/<package>/copyright"
    text = files[0].read_text(errors="replace")
    names = sorted({m.strip() for m in re.findall(r"^License:[ \t]*(\S.{0,60})$", text, re.M)
                    if not re.search(r"[;.]$|\bthis\b|\bfree\b", m, re.I)})
    if names:
        return ", ".join(names)[:300]
    found = [n for n, pat in LICENCE_PATTERNS if re.search(pat, text)]
    return ", ".join(found) or "see copyright file"


# ----------------------------------------------------------------------------- cleaning
FORMAT = re.compile(r"%(\([^)]*\))?[-+ #0']*\d*(\.\d+)?(hh|h|ll|l|L|q|j|z|t|I)?[sdiufFeEgGxXocpnS%@]"
                    r"|%\d+\$?[sdS]?|\$\{[^}]*\}|\{[^{}]{0,40}\}|\$\(\w+\)|\$[A-Za-z_]+\$?"
                    r"|%[A-Z][A-Z0-9_]+%?|@\w+@")
MARKUP = re.compile(r"<[^<>]{0,200}>")
# accelerator markers: GTK `_File`, Qt/KDE `&File`, LibreOffice `~File`, also mid-word (`Customi_ze`),
# and the CJK/Indic style "(_F)" suffix
ACCEL = re.compile(r"\([_&~][A-Za-z]\)|(?<=[^\x00-\x7f])\([A-Z]\)|[_&~](?=\w)")


def clean(s: str, ui: bool = True) -> str:
    """Strip markup and (UI strings only) format specifiers and accelerators; collapse spaces."""
    s = MARKUP.sub(" ", s)
    s = html.unescape(s)
    if ui:
        s = FORMAT.sub(" ", s)
        s = ACCEL.sub("", s)
        s = s.replace("\\n", " ").replace("\\t", " ")
    s = re.sub(r"\s+", " ", s).strip(" \t\"'|:;,-")
    s = re.sub(r" ([,.!?:;])", r"\1", s)
    return unicodedata.normalize("NFC", s)


def keep(s: str, lang: str, min_letters: int = 2, share: float = 0.6) -> bool:
    """At least `min_letters` letters of `s` in `lang`'s script, and at least `share` of its letters."""
    n, frac = script_letters(s, lang)
    return n >= min_letters and frac >= share


def norm_key(s: str) -> str:
    return "".join(c for c in s.casefold() if c.isalnum())


# ----------------------------------------------------------------------------- readers
def read_mo(path: Path):
    """Yield (msgid, msgstr) from a gettext catalog: singular forms, context stripped."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except Exception:  # e.g. a Plural-Forms header the stdlib cannot parse: read the table directly
        catalog = read_mo_table(path.read_bytes())
    for key, value in catalog.items():
        if isinstance(key, tuple):
            if key[1] != 0:
                continue
            key = key[0]
        if not key or not value:
            continue
        yield key.split("\x04", 1)[-1], value


def read_mo_table(raw: bytes) -> dict:
    """Minimal .mo reader (header: magic, revision, N, msgid table offset, msgstr table offset).

    Fallback only: GNUTranslations refuses catalogs whose plural-forms expression it cannot parse,
    but their strings are fine. Plural forms are NUL-joined; the first (singular) is kept."""
    import struct
    try:
        end = "<" if raw[:4] == b"\xde\x12\x04\x95" else ">"
        n, o_id, o_str = struct.unpack(end + "3I", raw[8:20])
        out = {}
        for i in range(n):
            lid, pid = struct.unpack(end + "2I", raw[o_id + 8 * i:o_id + 8 * i + 8])
            lst, pst = struct.unpack(end + "2I", raw[o_str + 8 * i:o_str + 8 * i + 8])
            k = raw[pid:pid + lid].split(b"\0")[0].decode("utf-8", "replace")
            out[k] = raw[pst:pst + lst].split(b"\0")[0].decode("utf-8", "replace")
        return out
    except (struct.error, IndexError) as e:
        print(f"  skip a catalog: {e}", file=sys.stderr)
        return {}


def mo_files(root: Path, locales: list[str]) -> list[Path]:
    out = []
    for loc in locales:
        out += root.glob(f"usr/share/locale/{loc}/LC_MESSAGES/*.mo")
        out += root.glob(f"usr/share/games/*/*/locale/{loc}/LC_MESSAGES/*.mo")
        out += root.glob(f"usr/lib/libreoffice/program/resource/{loc}/LC_MESSAGES/*.mo")
    return sorted(out)


FTL_LINE = re.compile(r"^\s*\.?[\w.-]+\s*=\s*(.*)$")


def read_xpi(path: Path):
    """Values of a Firefox language pack (.ftl and .properties files)."""
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if not name.endswith((".ftl", ".properties")):
                continue
            text = z.read(name).decode("utf-8", errors="replace")
            for line in text.splitlines():
                if line.lstrip().startswith("#"):
                    continue
                m = FTL_LINE.match(line)
                if m and m.group(1).strip():
                    v = m.group(1)
                    if name.endswith(".properties") and "\\u" in v:
                        v = re.sub(r"\\u([0-9a-fA-F]{4})", lambda g: chr(int(g.group(1), 16)), v)
                    yield v


def read_page(path: Path):
    """Paragraph and title texts of a Mallard (GNOME help) page, skipping the <info> block."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return
    def walk(el):
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in ("info", "code", "screen", "media", "comment"):
            return
        if tag in ("p", "title", "desc"):
            yield "".join(el.itertext())
            return
        for child in el:
            yield from walk(child)
    yield from walk(root)


def render_man(path: Path) -> list[str]:
    """Paragraphs of a man page rendered to plain UTF-8 text by groff (no hyphenation)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw.lstrip().startswith(b".so ") or not raw.strip():
        return []
    p = subprocess.run("preconv -e utf-8 | groff -man -Tutf8 -P-cbou -rHY=0 -rLL=300n",
                       shell=True, input=raw, capture_output=True)
    lines = p.stdout.decode("utf-8", errors="replace").splitlines()[1:-1]
    paras, cur = [], []
    for line in lines + [""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    return paras


def read_fortunes(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("koi8-r", errors="replace")
    return [" ".join(part.split()) for part in re.split(r"^%\s*$", text, flags=re.M)]


def read_bible(root_text: Path, root_bin: Path) -> list[str]:
    """One document per chapter, dumped with the `bible` program of the bible-kjv package."""
    out = subprocess.run([str(root_bin / "usr/bin/bible"), "-p", str(root_text / "usr/lib"),
                          "gen1:1-rev22:21"], capture_output=True, stdin=subprocess.DEVNULL)
    docs, cur = [], []
    for line in out.stdout.decode("utf-8", errors="replace").splitlines():
        if re.match(r"^\S.* \d+$", line) and not line.startswith(" "):  # "Genesis 1"
            if cur:
                docs.append(" ".join(cur))
            cur = []
        elif line.strip():
            cur.append(re.sub(r"^\s*\d+\s+", "", line.strip()) if re.match(r"^\s+\d+ ", line) else line.strip())
    if cur:
        docs.append(" ".join(cur))
    return docs


def read_chat() -> list[dict]:
    """chatterbot-corpus English YAML -> conversations with alternating user/assistant turns."""
    import yaml
    name, version = CHAT_WHEEL
    wheel_dir = CACHE / "pip"
    wheels = sorted(wheel_dir.glob(f"chatterbot_corpus-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"{name}=={version}", "-d", str(wheel_dir)], check=True)
        wheels = sorted(wheel_dir.glob(f"chatterbot_corpus-{version}-*.whl"))
    convs, seen = [], set()
    with zipfile.ZipFile(wheels[0]) as z:
        for f in sorted(n for n in z.namelist() if "/data/english/" in n and n.endswith(".yml")):
            data = yaml.safe_load(z.read(f))
            category = (data.get("categories") or [Path(f).stem])[0]
            for conv in data.get("conversations") or []:
                # keep inner newlines (code blocks in coding.yml); only trim the ends
                turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
                turns = turns[: len(turns) // 2 * 2]  # end on an assistant turn
                if not turns or tuple(turns) in seen:
                    continue
                seen.add(tuple(turns))
                convs.append({"messages": [{"role": "user" if i % 2 == 0 else "assistant",
                                            "content": t} for i, t in enumerate(turns)],
                              "category": str(category)})
    return convs


# ----------------------------------------------------------------------------- assembly
def collect(lang: str, roots: dict[str, Path]) -> tuple[list[tuple[str, str]], list, Counter, str]:
    """Return (docs as (source, text)), pairs as (source, english, target), per-package counts, kind."""
    spec = LANGS[lang]
    docs: list[tuple[str, str]] = []  # (package, text)
    pairs: list[tuple[str, str, str]] = []  # (package, english, target)
    used: Counter = Counter()
    running = False

    def add(pkg, text, min_letters=2, ui=True):
        t = clean(text, ui)
        if keep(t, lang, min_letters):
            docs.append((pkg, t))
            used[pkg] += 1
            return t
        return None

    if lang == "en":
        docs += [("bible-kjv-text", d) for d in read_bible(roots["bible-kjv-text"], roots["bible-kjv"])]
        used["bible-kjv-text"] += len(docs)
        used["bible-kjv"] += 1
        for pkg in ("fortunes", "fortunes-min"):
            for f in sorted((roots[pkg] / "usr/share/games/fortunes").glob("*")):
                if f.suffix in (".dat", ".u8") or f.is_dir() or f.name == "ascii-art":
                    continue
                for d in read_fortunes(f):
                    add(pkg, d, 20, ui=False)
    for pkg, root in sorted(roots.items()):
        # running text: man pages, fortunes (ru), GNOME help
        man_dir = root / ("usr/share/man/ru" if lang == "ru" else "usr/share/man")
        if pkg in ("manpages", "manpages-ru"):
            pages = sorted(p for p in man_dir.glob("man*/*") if p.is_file())
            with ThreadPoolExecutor(2) as ex:
                for paras in ex.map(render_man, pages):
                    for para in paras:
                        if len(para) >= 40:
                            add(pkg, para, 10, ui=False)
            running = True
        if pkg == "fortunes-ru":
            for f in sorted((root / "usr/share/games/fortunes/ru").glob("*")):
                if not f.suffix and f.is_file():
                    for d in read_fortunes(f):
                        add(pkg, d, 10, ui=False)
        if pkg == "gnome-user-docs" and spec["help"]:
            for page in sorted((root / "usr/share/help" / spec["help"]).rglob("*.page")):
                for para in read_page(page):
                    add(pkg, para, 10, ui=False)
            running = True
        # UI strings: gettext catalogs and Firefox language packs
        for mo in mo_files(root, spec["locales"]):
            for msgid, msgstr in read_mo(mo):
                t = add(pkg, msgstr)
                e = clean(msgid)
                if t and t != e and keep(e, "en", 2, 0.8):
                    pairs.append((pkg, e, t))
        for xpi in sorted(root.glob("usr/lib/firefox-esr/browser/extensions/*.xpi")):
            for v in read_xpi(xpi):
                add(pkg, v)
    game = any(p.startswith("wesnoth") for p in used)
    kind = "running text" if lang == "en" else (
        "running text + UI strings" if running else
        "UI strings + game dialogue" if game else "UI strings")
    return docs, sorted(set(pairs)), used, kind


def containing(strings: list[str], docs: list[str], k: int = 8) -> dict[str, set[int]]:
    """Which documents contain each string (all strings >= k chars): k-gram index + `in` check.

    Hand-written because the stdlib has no multi-pattern search; k-gram lookups keep it linear."""
    index: dict[str, list[str]] = {}
    for s in strings:
        index.setdefault(s[:k], []).append(s)
    hits: dict[str, set[int]] = {s: set() for s in strings}
    for i, d in enumerate(docs):
        for j in range(len(d) - k + 1):
            for s in index.get(d[j:j + k], ()):
                if d.startswith(s, j):
                    hits[s].add(i)
    return hits


def sentence_like(e: str, t: str) -> bool:
    """A test-pair candidate: sentence-like English, no keyword lists ("a, b, c" / "a;b;"), no leftovers."""
    return (len(e.split()) >= 3 and 20 <= len(e) <= 160 and len(t) >= 10 and ";" not in e
            and e.count(",") < 3 and not re.search(r"[%$\\{}<>]", e + t))


def choose_test_pairs(pairs, docs, rng, candidates=None):
    """Test pairs: one translation per English sentence-like string, rarely contained in texts.

    `candidates` (default `pairs`) are the pairs a test pair may come from (those of the held-out
    sources); the training pairs are `pairs` minus every pair sharing a side with a test pair."""
    by_en: dict[str, Counter] = {}
    for e, t in (pairs if candidates is None else candidates):
        by_en.setdefault(e, Counter())[t] += 1
    cands = []
    for e in sorted(by_en):
        t = sorted(by_en[e].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        if sentence_like(e, t):
            cands.append((e, t))
    rng.shuffle(cands)
    cands = cands[: N_TEST_PAIRS * 4]
    hits = containing(sorted({s for c in cands for s in c}), docs)
    test, seen, drop = [], set(), set()
    for e, t in cands:
        ke, kt = norm_key(e), norm_key(t)
        ids = hits[e] | hits[t]
        if ke in seen or kt in seen or len(ids) > 3:
            continue
        seen |= {ke, kt}
        test.append((e, t))
        drop |= ids
        if len(test) >= N_TEST_PAIRS:
            break
    test_e = {norm_key(e) for e, _ in test}
    test_t = {norm_key(t) for _, t in test}
    train = [(e, t) for e, t in pairs if norm_key(e) not in test_e and norm_key(t) not in test_t]
    return sorted(test), train, drop


def holdout_sources(doc_src: dict[str, set], pair_src: dict[tuple, set], budget: int, n_pairs: int,
                    rng) -> set[str]:
    """Whole packages held out for the test split, so test text comes from catalogs never trained on.

    Candidates are the UI-string packages that give at most `HOLDOUT_SHARE` of the language's
    characters (the few big ones, LibreOffice say, are the bulk of training text and stay there);
    in a seeded order they are held out until the text found only in held-out packages reaches
    twice the test budget and their sentence-like pairs twice the test pairs (the test split then
    draws from that pool after dropping near-duplicates of training text).
    """
    chars = Counter()
    for d, pkgs in doc_src.items():
        chars.update(dict.fromkeys(pkgs, len(d)))
    total = sum(map(len, doc_src))
    cands = sorted(p for p in chars if not RUNNING.match(p) and chars[p] <= HOLDOUT_SHARE * total)
    rng.shuffle(cands)
    docs_of, pairs_of = {}, {}
    for d, pkgs in doc_src.items():
        for pkg in pkgs:
            docs_of.setdefault(pkg, []).append(d)
    for pair, pkgs in pair_src.items():
        for pkg in pkgs:
            pairs_of.setdefault(pkg, []).append(pair)
    held: set[str] = set()
    text = pairs = 0
    for pkg in cands:
        if text >= 2 * budget and pairs >= 2 * n_pairs:
            break
        held.add(pkg)  # a string counts once all of its packages are held out
        text += sum(len(d) for d in docs_of.get(pkg, ()) if doc_src[d] <= held)
        pairs += sum(sentence_like(*pr) for pr in pairs_of.get(pkg, ()) if pair_src[pr] <= held)
    return held


def dedup_sources(docs_src: list[tuple[str, str]]) -> tuple[list[str], dict, dict[str, set]]:
    """Documents deduplicated on the normalized key (first occurrence wins), the first package of
    each and the set of every package that gave the same key (for held-out sources)."""
    first: dict[str, str] = {}
    sources: dict[str, set] = {}
    docs, origin = [], {}
    for pkg, d in docs_src:
        k = norm_key(d)
        if not k:
            continue
        if k not in first:
            first[k] = d
            docs.append(d)
            origin[d] = pkg
        sources.setdefault(k, set()).add(pkg)
    return docs, origin, {d: sources[norm_key(d)] for d in docs}


def test_split_note(lang: str, held: set[str], test_docs: list[str], doc_src: dict) -> dict:
    """How this language's test split differs from its training split (recorded in the manifest)."""
    if not held:
        return {"held_out_sources": [], "how": "documents of the same sources as train (English: "
                "Bible chapters, fortunes, man pages, help paragraphs; no document in two splits)"}
    counts = Counter(p for d in test_docs for p in doc_src[d])
    return {"held_out_sources": sorted(held), "test_documents_per_source": dict(sorted(counts.items())),
            "how": f"test text and test pairs come only from {len(held)} whole packages that give no "
                   "string to train/valid (a string also found in a training package is not test); "
                   "valid is drawn from the training packages"}


def split_docs(docs: list[str], budget: dict, min_len: int, rng) -> dict[str, list[str]]:
    order = list(docs)
    rng.shuffle(order)
    out = {"test": [], "valid": [], "train": []}
    size = dict.fromkeys(out, 0)
    for d in order:
        for name in ("test", "valid", "train"):
            if name != "train" and len(d) < min_len:
                continue
            if size[name] < budget[name]:
                out[name].append(d)
                size[name] += len(d)
                break
    return out


def write_gz(path: Path, lines: list[str]) -> None:
    """gzip -9 with mtime=0 and no file name: byte-identical rebuilds; written atomically."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write("".join(line + "\n" for line in lines).encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def file_entry(path: Path) -> dict:
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode("utf-8")
    return {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
            "characters": len(text) - text.count("\n"), "lines": text.count("\n")}


def build_lang(lang: str, manifest: dict) -> None:
    t0 = time.time()
    pkgs = packages_for(lang)
    print(f"[{lang}] {len(pkgs)} packages", flush=True)
    debs = download(pkgs)
    with ThreadPoolExecutor(2) as ex:
        roots = dict(zip(debs, ex.map(extract, debs.values())))
    docs_src, pair_rows, used, kind = collect(lang, roots)
    docs, origin, doc_src = dedup_sources(docs_src)
    pair_src: dict[tuple, set] = {}
    for pkg, e, t in pair_rows:
        pair_src.setdefault((e, t), set()).add(pkg)
    pairs = sorted(pair_src)
    rng = random.Random(f"{SEED}-{lang}")
    files, held = {}, set()
    out = DATA / lang
    if lang == "en":
        splits = split_docs(docs, BUDGET["en"], 200, rng)
        chat = read_chat()
        write_gz(out / "chat.jsonl.gz", [json.dumps(c, ensure_ascii=False, sort_keys=True) for c in chat])
        files["chat.jsonl.gz"] = file_entry(out / "chat.jsonl.gz")
        used["chatterbot-corpus"] = len(chat)
    else:
        held = holdout_sources(doc_src, pair_src, BUDGET["target"]["test"], N_TEST_PAIRS, rng)
        in_held = [(e, t) for e, t in pairs if pair_src[(e, t)] <= held]
        out_held = [(e, t) for e, t in pairs if not pair_src[(e, t)] <= held]
        test_pairs, train_pairs, drop = choose_test_pairs(out_held, docs, rng, candidates=in_held)
        if len(train_pairs) > MAX_TRAIN_PAIRS:
            train_pairs = sorted(rng.sample(train_pairs, MAX_TRAIN_PAIRS))
        kept = [d for i, d in enumerate(docs) if i not in drop]
        budget = BUDGET["target"]
        splits = split_docs([d for d in kept if not doc_src[d] <= held], dict(budget, test=0), 20, rng)
        splits["test"] = split_docs([d for d in kept if doc_src[d] <= held],
                                    dict(test=budget["test"], valid=0, train=0), 20, rng)["test"]
        for name, rows in (("train", train_pairs), ("test", test_pairs)):
            write_gz(out / f"pairs.{name}.tsv.gz", [f"{e}\t{t}" for e, t in rows])
            files[f"pairs.{name}.tsv.gz"] = file_entry(out / f"pairs.{name}.tsv.gz")
    for name, rows in splits.items():
        write_gz(out / f"{name}.txt.gz", rows)
        files[f"{name}.txt.gz"] = file_entry(out / f"{name}.txt.gz")
    running = sum(len(d) for d in splits["train"] if RUNNING.match(origin[d]))
    share = running / max(1, sum(len(d) for d in splits["train"]))
    packages = manifest.setdefault("packages", {})
    for pkg in sorted(used):
        if pkg == "chatterbot-corpus":
            packages[pkg] = {"version": CHAT_WHEEL[1], "source": "PyPI wheel",
                             "licence": "BSD-3-Clause (PyPI classifier: BSD License)"}
        else:
            packages[pkg] = {"version": deb_info(debs[pkg])["version"], "source": "Debian bookworm",
                             "licence": licence_of(pkg, roots[pkg])}
    manifest.setdefault("languages", {})[lang] = {
        "name": LANGS[lang]["name"], "script": ", ".join(LANGUAGE_SCRIPTS[lang]), "kind": kind,
        "running_text_share_of_train": round(share, 3),
        "test_split": test_split_note(lang, held, splits["test"], doc_src),
        "packages": {p: used[p] for p in sorted(used)},
        "files": {f"{lang}/{k}": v for k, v in sorted(files.items())},
    }
    print(f"[{lang}] " + ", ".join(f"{k}: {v['lines']} lines/{v['characters']} chars"
                                   for k, v in sorted(files.items())) + f" ({time.time() - t0:.0f}s)")


README_HEAD = """# Shipped data

Unlabeled text, English->target translation pairs and English chat conversations for the study
kit, built from Debian 12 (bookworm) packages and one PyPI wheel by `data/build.py`, committed
compressed so that users need neither apt nor network. Load them with `elchat.data`:

```python
from elchat import data
data.load_texts("am", "train")   # list of documents (one per line in the file)
data.load_pairs("am", "test")    # [(english, amharic), ...]
data.load_chat("train")          # English conversations for the micro chat model
```
`elchat data list` prints the table below from `manifest.json`.

## Files
- `<lang>/{train,valid,test}.txt.gz`: one document per line (UTF-8, gzip -9, mtime 0).
- `<lang>/pairs.{train,test}.tsv.gz` (target languages): `english<TAB>target` from gettext
  catalogs (msgid -> msgstr). The test pairs are sentence-like (>= 3 English words, no
  placeholders, no keyword lists), one translation per English string.
- `en/chat.jsonl.gz`: one conversation per line, `{"messages": [{"role": "user"|"assistant",
  "content": ...}, ...], "category": ...}` from the English YAML files of chatterbot-corpus.
  `load_chat` splits it deterministically (sha256 of the first user turn; one prompt in ten goes
  to `test`, so every answer to one prompt lands in the same split).
- `manifest.json`: per file sha256, bytes, characters (newlines excluded), lines; per language
  the kind of text, the contributing packages (with the number of documents each gave) and, for
  every package, its exact version and licence (short names from its Debian copyright file).
- `mo_packages.txt`: the packages read for gettext catalogs (chosen once with apt-file: every
  package under 1.5 MB carrying a catalog for am/bn/my/gu/si/ta/te, plus those under 3 MB for
  am/my/si; `python data/build.py --refresh-packages` regenerates it).

## Kind of text
- **running text**: English (King James Bible chapters, fortunes, Linux man pages rendered by
  groff, GNOME help paragraphs); Gujarati, Tamil, Telugu, Russian get the translated paragraphs of
  gnome-user-docs; Russian also the Russian man pages (manpages-ru) and fortunes-ru.
- **UI strings**: translations in gettext catalogs (GNOME, Xfce, KDE, Cinnamon, iso-codes,
  LibreOffice, ...) and Firefox ESR language packs. Short (menu items, messages, tooltips), in
  the language's technical register. Amharic, Bengali, Burmese, Sinhala and Traditional Chinese
  have only UI strings; untranslated paragraphs of the help pages are dropped by the script filter.

## How it was cleaned and split
1. UI strings: markup, format specifiers (`%s`, `{0}`, `$(ARG1)`, `%PRODUCTNAME`) and accelerator
   markers (`_File`, `&File`, `~File`, `(_F)`) are removed; whitespace collapsed.
2. A string is kept only if at least 60% of its letters are in the language's script (Ethiopic,
   Bengali, Myanmar, Gujarati, Sinhala, Tamil, Telugu, Cyrillic, Han, Latin for English).
3. Documents are deduplicated on a normalized key (case folded, only letters and digits), so two
   strings differing in punctuation or case never land in two splits.
4. Held-out sources (target languages): whole packages are set aside for the test split, so a
   test string comes from a catalog the model never trained on (strings from one catalog share
   vocabulary, names and phrasing; an in-source split flatters every target-language number).
   In a seeded order, UI-string packages giving at most 5% of the language's text are held out
   until the text found only in them is twice the test budget and their sentence-like pairs twice
   the 600 test pairs. A string that also occurs in a training package is not test text.
   `manifest.json` lists each language's held-out packages (`test_split`); English has no held-out
   source (its sources are four different genres), only no document in two splits.
5. Test pairs are chosen (seeded) from the held-out packages' pairs; every document containing a
   test pair's English or target text is removed, and training pairs sharing either side with a
   test pair are dropped.
6. A seeded shuffle fills `test` from the held-out packages' documents by a character budget, and
   `valid` (same budget rule) then `train` (up to a cap) from the other packages' documents, all of
   at least 20 characters (200 for English) for test and valid.

## Rebuild
```
python data/build.py                 # all languages, or: --lang am --lang en
```
Needs Debian/Ubuntu with apt (`apt-get download` needs no root, `apt-get update` does), dpkg-deb,
groff, Python 3.10+ with pyyaml; downloads about 400 MB of packages into the git-ignored
`.cache/debs/`. Given the same package versions a rebuild is byte-identical (fixed seed, gzip
mtime 0); Debian security updates of firefox-esr/libreoffice change their strings slightly.

## Licences
The corpora inherit the licences of their sources; each package's licence is in `manifest.json`
(`packages`). In short: GNOME help (gnome-user-docs) CC-BY-SA-3.0; gettext catalogs GPL/LGPL
(as their programs), iso-codes LGPL-2.1+; LibreOffice MPL-2.0; Firefox ESR language packs
MPL-2.0; Linux man pages (manpages) the Linux-man-pages-copyleft/BSD/GPL mix listed in the
manifest; manpages-ru GPL-3+; fortunes BSD (quotations attributed to their authors); fortunes-ru
as in its copyright file; KJV Bible text public domain; chatterbot-corpus BSD-3-Clause.
Redistributing a derived model trained on these texts is generally fine; redistributing the text
itself (as this repository does) keeps those licences, including share-alike for CC-BY-SA and
copyleft for GPL/MPL.

"""


LICENCE_FAMILIES = {"GPL": r"(?<!L)GPL|General Public", "LGPL": r"LGPL|Lesser", "MPL": r"MPL",
                    "CC-BY-SA": r"CC-BY-SA", "BSD": r"BSD", "MIT/Expat": r"MIT|Expat",
                    "Apache": r"Apache", "public domain": r"public.domain"}


def write_readme(manifest: dict) -> None:
    """README: fixed text plus the per-language table and licence summary from the manifest."""
    rows = ["| code | language | kind | train chars | valid chars | test chars | documents "
            "(train/valid/test) | pairs (train/test) | MB |", "|" + "---|" * 9]
    lic_rows = []
    for code in [c for c in LANGS if c in manifest["languages"]]:
        info = manifest["languages"][code]
        f = {k.split("/", 1)[1]: v for k, v in info["files"].items()}
        ch = [f[f"{s}.txt.gz"]["characters"] for s in ("train", "valid", "test")]
        docs = "/".join(str(f[f"{s}.txt.gz"]["lines"]) for s in ("train", "valid", "test"))
        pairs = "/".join(str(f[f"pairs.{s}.tsv.gz"]["lines"]) for s in ("train", "test")) \
            if "pairs.test.tsv.gz" in f else "-"
        mb = sum(v["bytes"] for v in f.values()) / 1e6
        share = info.get("running_text_share_of_train", 0)
        kind = info["kind"] + (f" ({share:.0%} of train is running text)" if 0 < share < 1 else "")
        rows.append(f"| {code} | {info['name']} | {kind} | {ch[0]:,} | {ch[1]:,} | {ch[2]:,} | "
                    f"{docs} | {pairs} | {mb:.2f} |")
        top = sorted(info["packages"].items(), key=lambda kv: -kv[1])[:6]
        fams = Counter()
        for pkg in info["packages"]:
            lic = manifest["packages"][pkg]["licence"]
            fams.update(fam for fam, pat in LICENCE_FAMILIES.items() if re.search(pat, lic, re.I))
        lic_rows.append(f"| {code} | {len(info['packages'])} | "
                        + ", ".join(f"{p} ({n})" for p, n in top) + " | "
                        + ", ".join(f"{k} {v}" for k, v in fams.most_common()) + " |")
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file() and ".tmp-" not in p.name)
    rows += ["", "How each test split differs from its training split:", "",
             "| code | test split |", "|---|---|"]
    for code in [c for c in LANGS if c in manifest["languages"]]:
        note = manifest["languages"][code].get("test_split")
        rows.append(f"| {code} | " + (
            "same catalogs as train (built before held-out sources; rebuild with "
            f"`python data/build.py --lang {code}`)" if note is None else
            f"{len(note['held_out_sources'])} held-out packages: {note['how']}" if note["held_out_sources"]
            else note["how"]) + " |")
    text = (README_HEAD + "## Sizes\n\n" + "\n".join(rows) + f"\n\nWhole `data/` directory: "
            f"{total / 1e6:.1f} MB.\n\n## Sources per language\n\nThe largest sources with the number "
            "of strings/paragraphs each gave (kept by the script filter, before deduplication), and "
            "how many contributing packages carry each licence family (a package can carry several).\n\n| code | packages | largest sources (documents) | licence families "
            "(packages) |\n|---|---|---|---|\n" + "\n".join(lic_rows) + "\n")
    (DATA / "README.md").write_text(text, encoding="utf-8")


def refresh_packages() -> None:
    """Regenerate data/mo_packages.txt with apt-file (see the module docstring for the rule)."""
    rows = []
    for lang in ("am", "bn", "my", "gu", "si", "ta", "te"):
        for loc in LANGS[lang]["locales"]:
            found = sh(["apt-file", "search", "--regexp", f"/locale/{loc}/LC_MESSAGES/.*\\.mo$"])
            rows += [(line.split(":", 1)[0], lang) for line in found.splitlines()]
    names = sorted({p for p, _ in rows})
    sizes = {}
    for i in range(0, len(names), 200):
        pkg = None
        for line in sh(["apt-cache", "show", "--no-all-versions", *names[i:i + 200]]).splitlines():
            if line.startswith("Package: "):
                pkg = line.split()[1]
            elif line.startswith("Size: ") and pkg:
                sizes[pkg] = int(line.split()[1])
    keep_ = {p for p, lang in rows if p in sizes and (
        sizes[p] < 1_500_000 or (sizes[p] < 3_000_000 and lang in ("am", "my", "si")))}
    keep_ |= {"iso-codes", "cinnamon-l10n"}
    (DATA / "mo_packages.txt").write_text("\n".join(sorted(keep_)) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", action="append", choices=sorted(LANGS), help="language(s); default all")
    ap.add_argument("--refresh-packages", action="store_true", help="regenerate mo_packages.txt")
    args = ap.parse_args(argv)
    if args.refresh_packages:
        refresh_packages()
    t0 = time.time()
    ensure_apt_lists()
    mpath = DATA / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest.update({"built_by": "python data/build.py", "seed": SEED, "distribution": "Debian 12 bookworm",
                     "characters": "Unicode characters of the decompressed file, newlines excluded",
                     "lines": "documents (one per line); pairs files: english<TAB>target"})
    for lang in args.lang or list(LANGS):
        build_lang(lang, manifest)
        manifest["languages"] = dict(sorted(manifest["languages"].items()))
        manifest["packages"] = dict(sorted(manifest["packages"].items()))
        tmp = mpath.with_name(".tmp-manifest.json")
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, mpath)
    write_readme(manifest)
    print(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
