"""Unicode scripts: the ONE table of which script each shipped language is written in.

The script of a character is the first word of its Unicode name (`unicodedata.name`): "ETHIOPIC
SYLLABLE HA" -> ETHIOPIC, "CYRILLIC SMALL LETTER ZHE" -> CYRILLIC, "CJK UNIFIED IDEOGRAPH-4E00" ->
CJK. Unlike hand-kept code point ranges this covers every block of a script (Cyrillic Supplement,
Ethiopic Extended, CJK compatibility ideographs) and every script Unicode names, so vocabulary
expansion works for a corpus in any language, not only the shipped ones.

Used by vocabulary expansion (which scripts a corpus is in; which byte sequences pin a target
character), the chat-format check (does a reply use the requested language's script) and the data
build (keep a string only if it is mostly in its language's script).
"""
from __future__ import annotations

import collections
import unicodedata

# Language code -> the script names (first words of Unicode names) its letters use.
# Traditional Chinese text also uses Bopomofo (zhuyin) letters beside the ideographs.
LANGUAGE_SCRIPTS = {
    "en": ("LATIN",), "am": ("ETHIOPIC",), "bn": ("BENGALI",), "my": ("MYANMAR",),
    "gu": ("GUJARATI",), "si": ("SINHALA",), "ta": ("TAMIL",), "te": ("TELUGU",),
    "ru": ("CYRILLIC",), "zh_TW": ("CJK", "BOPOMOFO"),
}


def char_script(ch: str) -> str:
    """The script of a character: the first word of its Unicode name ('' if unnamed).

    Example: `char_script("ሀ") == "ETHIOPIC"`, `char_script("ж") == "CYRILLIC"`.
    """
    return unicodedata.name(ch, "").split(" ", 1)[0]


def scripts_of(lang_or_scripts) -> tuple[str, ...]:
    """A language code's scripts, or the given script names as they are.

    Example: `scripts_of("ru") == ("CYRILLIC",)`; `scripts_of(["TAMIL"]) == ("TAMIL",)`.
    """
    if isinstance(lang_or_scripts, str):
        if lang_or_scripts not in LANGUAGE_SCRIPTS:
            raise ValueError(f"no script known for language {lang_or_scripts!r}; known: "
                             f"{', '.join(LANGUAGE_SCRIPTS)}")
        return LANGUAGE_SCRIPTS[lang_or_scripts]
    return tuple(lang_or_scripts)


def script_letters(text: str, lang_or_scripts) -> tuple[int, float]:
    """(letters in the scripts, their share of all letters) of `text`.

    Example: `script_letters("ሰላም ok", "am") == (3, 0.6)`.
    """
    scripts = scripts_of(lang_or_scripts)
    letters = [c for c in text if c.isalpha()]
    n = sum(char_script(c) in scripts for c in letters)
    return n, n / max(1, len(letters))


def script_share(text: str, lang_or_scripts) -> float:
    """Share of the letters of `text` in a language's script(s) (0 when it has no letters).

    Example: `script_share("ሰላም ok", "am") == 0.6`.
    """
    return script_letters(text, lang_or_scripts)[1]


def detect_scripts(texts, min_share: float = 0.01) -> list[str]:
    """Scripts holding at least `min_share` of the non-Latin letters and marks of `texts`.

    Example: `detect_scripts(["ሰላም hello"]) == ["ETHIOPIC"]`.
    """
    counts = collections.Counter()
    for t in texts:
        for ch in t:
            if ord(ch) > 0x7F and unicodedata.category(ch)[0] in "LM":
                counts[char_script(ch)] += 1
    counts.pop("LATIN", None)
    counts.pop("", None)
    total = sum(counts.values())
    return sorted(s for s, n in counts.items() if n >= min_share * total) if total else []
