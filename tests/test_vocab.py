"""Vocabulary expansion guarantees: old ids kept, other scripts untouched, round trip, reload."""
from __future__ import annotations

import json

import pytest
import torch

from elchat import vocab

SAMPLES = {  # one line per shipped language: the guard corpora when elchat.data is missing
    "en": "The quick brown fox jumps over the lazy dog. Settings, Help, Quit.",
    "am": "ሰላም ለዓለም። ይህ የአማርኛ ጽሑፍ ነው። ኢትዮጵያ በአፍሪካ ቀንድ ትገኛለች።",
    "bn": "আমি বাংলায় গান গাই। এটি একটি পরীক্ষা।",
    "my": "မြန်မာဘာသာစကား စမ်းသပ်ချက်ဖြစ်သည်။",
    "gu": "ગુજરાતી ભાષા સુંદર છે. આ એક પરીક્ષણ છે.",
    "si": "සිංහල භාෂාව ලස්සනයි. මෙය පරීක්ෂණයකි.",
    "ta": "தமிழ் ஒரு அழகான மொழி. இது ஒரு சோதனை.",
    "te": "తెలుగు ఒక అందమైన భాష. ఇది ఒక పరీక్ష.",
    "ru": "Русский язык — красивый язык. Это проверка ∀x ∈ ℝ.",
    "zh_TW": "繁體中文是一種美麗的文字。這是一個測試。",
}
CODE = '''def f(x: int) -> dict:\n    """∀ x ∈ ℕ → x²"""\n    return {"a": [x ** 2, 0x1F], 'é': None}  # naïve café\n'''
EXTRA = ["😀👍🏽🇪🇹 emoji", "mixed ሰላም hello привет 你好 ∀∂∑ ¼ ½", "  leading\tand trailing  \n",
         "<|im_start|>user\nሰላም<|im_end|>", "ሀ" * 50, "\u1200\u2200\u3200\u0200"]

AMHARIC_WORDS = ("ሰላም ለዓለም ይህ የአማርኛ ጽሑፍ ነው ኢትዮጵያ በአፍሪካ ቀንድ ትገኛለች አዲስ አበባ ዋና ከተማ ናት "
                 "ሀገር ህዝብ ቋንቋ መጽሐፍ ትምህርት ቤት ተማሪ መምህር ውሃ ቡና እንጀራ ጤና ይስጥልኝ አመሰግናለሁ").split()


def guard_texts(target: str) -> dict[str, list[str]]:
    """Test split of every other shipped language (built-in samples when data is missing)."""
    out = {}
    for lang, sample in SAMPLES.items():
        if lang == target:
            continue
        try:
            from elchat.data import load_texts
            out[lang] = load_texts(lang, "test")[:300] + [sample]
        except Exception:  # data module or this language's files not in this checkout yet
            out[lang] = [sample]
    import elchat.atomic
    import elchat.cli

    out["code"] = [CODE] + [open(m.__file__, encoding="utf-8").read() for m in (elchat.atomic, elchat.cli)]
    return out


def amharic_corpus() -> list[str]:
    try:
        from elchat.data import load_texts
        return load_texts("am", "train")[:3000]
    except Exception:
        import random
        rng = random.Random(0)
        return [" ".join(rng.choice(AMHARIC_WORDS) for _ in range(12)) + "።" for _ in range(300)]


def make_metaspace_tokenizer():
    """SentencePiece-shaped fast tokenizer (Metaspace, byte fallback; Llama-2/Gemma shape)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from conftest import _ENGLISH

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(_ENGLISH * 4, trainer)
    state = json.loads(tok.to_str())
    voc = state["model"]["vocab"]
    for b in range(256):  # SentencePiece keeps the 256 byte pieces as ordinary vocabulary
        voc.setdefault(f"<0x{b:02X}>", len(voc))
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def expanded(tiny_tokenizer):
    return vocab.expand_vocabulary(tiny_tokenizer, amharic_corpus(), 120, eval_texts=amharic_corpus()[:50])


def test_old_ids_kept_new_ids_after(tiny_tokenizer, expanded):
    new, info = expanded
    old_vocab, new_vocab = tiny_tokenizer.get_vocab(), new.get_vocab()
    assert all(new_vocab[t] == i for t, i in old_vocab.items())
    assert info["num_added"] == 120 == len(new) - len(tiny_tokenizer)
    added = sorted(i for t, i in new_vocab.items() if t not in old_vocab)
    assert added == list(range(len(tiny_tokenizer), len(new)))
    assert new.all_special_tokens == tiny_tokenizer.all_special_tokens
    assert new.get_added_vocab() == tiny_tokenizer.get_added_vocab()
    assert new.chat_template == tiny_tokenizer.chat_template
    assert info["tokens_per_char_after"] < 0.5 * info["tokens_per_char_before"]
    assert info["scripts"] == ["ETHIOPIC"]


def test_other_scripts_english_code_unchanged(tiny_tokenizer, expanded):
    new, _ = expanded
    for name, texts in guard_texts("am").items():
        for t in texts:
            assert new.encode(t, add_special_tokens=False) == tiny_tokenizer.encode(t, add_special_tokens=False), name


def test_amharic_uses_new_tokens(tiny_tokenizer, expanded):
    new, _ = expanded
    ids = new.encode(SAMPLES["am"], add_special_tokens=False)
    assert max(ids) >= len(tiny_tokenizer)
    assert len(ids) < len(tiny_tokenizer.encode(SAMPLES["am"], add_special_tokens=False))


@pytest.mark.parametrize("text", list(SAMPLES.values()) + [CODE] + EXTRA)
def test_round_trip(expanded, text):
    new, _ = expanded
    assert new.decode(new.encode(text, add_special_tokens=False)) == text


def test_save_reload(tmp_path, tiny_tokenizer, expanded):
    from transformers import AutoTokenizer

    new, _ = expanded
    new.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(new) and again.get_vocab() == new.get_vocab()
    assert again.chat_template == tiny_tokenizer.chat_template
    assert again.all_special_tokens == tiny_tokenizer.all_special_tokens
    msgs = [{"role": "user", "content": SAMPLES["am"]}]
    assert again.apply_chat_template(msgs, tokenize=False) == tiny_tokenizer.apply_chat_template(msgs, tokenize=False)
    for t in SAMPLES.values():
        assert again.encode(t) == new.encode(t)


def test_root_merge_rule():
    eth, cyr = frozenset({"ETHIOPIC"}), frozenset({"CYRILLIC"})
    assert vocab.bytes_pin_target("ሀ".encode()[:2], eth)          # E1 88 -> U+1200..U+123F
    assert not vocab.bytes_pin_target("ሀ".encode()[1:], eth)      # 88 80 also ends U+2200 '∀'
    assert not vocab.bytes_pin_target("ሀ".encode()[:1], eth)      # E1 alone: Myanmar, Georgian...
    assert vocab.bytes_pin_target(" ж".encode()[:2], cyr)         # D0 -> U+0400..U+043F
    assert not vocab.bytes_pin_target("hello".encode(), cyr)


def test_metaspace_family(tmp_path):
    from transformers import AutoTokenizer

    src = make_metaspace_tokenizer()
    new, info = vocab.expand_vocabulary(src, amharic_corpus(), 500)
    assert info["kind"] == "metaspace" and info["num_added"] == 500
    assert any(len(t) == 1 for t in info["new_tokens"]) and any(len(t) > 2 for t in info["new_tokens"])
    for name, texts in guard_texts("am").items():
        for t in texts:
            assert new.encode(t, add_special_tokens=False) == src.encode(t, add_special_tokens=False), name
    for t in list(SAMPLES.values()) + [CODE] + EXTRA[:-2]:
        assert new.decode(new.encode(t, add_special_tokens=False)) == src.decode(src.encode(t, add_special_tokens=False))
    am = SAMPLES["am"]
    assert len(new.encode(am)) < len(src.encode(am)) / 2 and new.decode(new.encode(am, add_special_tokens=False)) == am
    new.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).encode(am) == new.encode(am)


def test_covered_corpus_returns_source(tiny_tokenizer):
    from conftest import _ENGLISH

    new, info = vocab.expand_vocabulary(tiny_tokenizer, _ENGLISH, 10)
    assert new is tiny_tokenizer and info["num_added"] == 0 and "already covered" in info["message"]


def test_bad_input(tiny_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

    for n in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="num_new_tokens"):
            vocab.expand_vocabulary(tiny_tokenizer, ["ሰላም"], n)
    for corpus in ([], ["", "   \n\t"], "  "):
        with pytest.raises(ValueError, match="empty or whitespace"):
            vocab.expand_vocabulary(tiny_tokenizer, corpus, 10)
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="WordPiece"):
        vocab.expand_vocabulary(PreTrainedTokenizerFast(tokenizer_object=wp), ["ሰላም ሰላም"], 10)

    class CharTok(PreTrainedTokenizer):  # a slow-only (pure Python) tokenizer
        def get_vocab(self):
            return {"a": 0}

        @property
        def vocab_size(self):
            return 1

        def _tokenize(self, text):
            return list(text)

        def _convert_token_to_id(self, token):
            return 0

        def _convert_id_to_token(self, index):
            return "a"

    with pytest.raises(ValueError, match="slow-only"):
        vocab.expand_vocabulary(CharTok(), ["ሰላም ሰላም"], 10)


def test_tokens_per_char(tiny_tokenizer):
    texts = ["hello world", "ሰላም"]
    n = sum(len(tiny_tokenizer.encode(t, add_special_tokens=False)) for t in texts)
    assert vocab.tokens_per_char(tiny_tokenizer, texts) == pytest.approx(n / sum(map(len, texts)))
    with pytest.raises(ValueError):
        vocab.tokens_per_char(tiny_tokenizer, ["", ""])


def test_cli_expand(tmp_path, tiny_pair, capsys):
    pytest.importorskip("elchat.data")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elchat.cli import main

    out = tmp_path / "chat_ve"
    assert main(["vocab", "expand", "--model", str(tiny_pair["chat"]), "--lang", "am",
                 "--new-tokens", "30", "--init", "mean", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokens/char on am test" in printed and "tokens/char on en test" in printed
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == model.config.vocab_size == -(-len(tok) // 64) * 64  # padded by default
    assert json.loads((out / "vocab_expansion.json").read_text())["num_added"] == 30
    assert main(["vocab", "expand", "--model", str(tiny_pair["chat"]), "--lang", "am",
                 "--new-tokens", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_round_trip_test_splits(expanded):
    new, _ = expanded
    texts = [t for ts in guard_texts("en").values() for t in ts]  # every language incl. Amharic
    assert all(new.decode(new.encode(t, add_special_tokens=False)) == t for t in texts)


def test_write_expanded_model(tmp_path, tiny_pair, tiny_tokenizer, expanded):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from elchat import embeddings

    new, info = expanded
    out = vocab.write_expanded_model(tiny_pair["base"], tiny_tokenizer, new, tmp_path / "base_ve",
                                     method="wmean", seed=1, info=info, device="cpu", dtype="float32")
    assert out == tmp_path / "base_ve" and not list(tmp_path.glob(".tmp-*"))
    record = json.loads((out / "vocab_expansion.json").read_text(encoding="utf-8"))
    assert record == json.loads(json.dumps({**info, "init": "wmean", "source": str(tiny_pair["base"])}))
    again = AutoTokenizer.from_pretrained(out)
    assert again.get_vocab() == new.get_vocab() and again.chat_template == tiny_tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(tiny_pair["base"])
    embeddings.resize_and_initialize(reference, tiny_tokenizer, new, method="wmean", seed=1)
    for got, want in ((model.get_input_embeddings(), reference.get_input_embeddings()),
                      (model.get_output_embeddings(), reference.get_output_embeddings())):
        assert got.weight.shape[0] == -(-len(new) // 64) * 64 and torch.equal(got.weight, want.weight)


def test_write_expanded_model_refuses_another_tokenizer(tmp_path, tiny_pair):
    src = make_metaspace_tokenizer()  # not the tokenizer of tiny_pair's models
    new, _ = vocab.expand_vocabulary(src, amharic_corpus()[:200], 20)
    with pytest.raises(ValueError, match="base/chat pair of one family"):
        vocab.write_expanded_model(tiny_pair["chat"], src, new, tmp_path / "bad", device="cpu")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name, args", [
    ("num_new_tokens", (0, "mean", [10], ["mean"], 100)),
    ("num_new_tokens", (True, "mean", [10], ["mean"], 100)),
    ("init_method", (10, "focus", [10], ["mean"], 100)),
    ("compare_sizes", (10, "mean", 1000, ["mean"], 100)),
    ("compare_sizes", (10, "mean", [10, -1], ["mean"], 100)),
    ("compare_methods", (10, "mean", [10], "mean", 100)),
    ("compare_methods", (10, "mean", [10], ["mean", "focus"], 100)),
    ("eval_chars", (10, "mean", [10], ["mean"], 0)),
    ("eval_chars", (10, "mean", [10], ["mean"], 2.5)),
])
def test_check_vocab_params_names_the_parameter(name, args):
    from elchat.params import check_vocab_params

    with pytest.raises(ValueError, match=f"parameter {name}"):
        check_vocab_params(*args)


def test_check_vocab_params_accepts_defaults():
    from elchat.embeddings import METHODS
    from elchat.params import check_vocab_params

    assert check_vocab_params(5000, "mean", [1000, 5000, 10000], list(METHODS), 2000) is None


# --- defects found on the real families (issue #12); each test fails on the code before the fix ---

def _shifted_tokenizer(offset: int):
    """A ChatML byte-level tokenizer whose ids start at `offset` (as large as Qwen3's and beyond)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from conftest import _ENGLISH, make_chatml_tokenizer

    src = make_chatml_tokenizer(_ENGLISH * 4 + amharic_corpus()[:50], 600)
    state = json.loads(src.backend_tokenizer.to_str())
    state["model"]["vocab"] = {t: i + offset for t, i in state["model"]["vocab"].items()}
    for added in state["added_tokens"]:
        added["id"] += offset
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = src.chat_template
    return tok


def test_large_ids_expand():
    """Ids >= 131,072 (Qwen3: 151,643 + specials) overflowed chr() in the private-use trick."""
    src = _shifted_tokenizer(200_000)
    new, info = vocab.expand_vocabulary(src, amharic_corpus(), 40)
    assert info["num_added"] == 40 and info["first_new_id"] == 200_600
    added = sorted(i for t, i in new.get_vocab().items() if t not in src.get_vocab())
    assert added == list(range(200_600, 200_640))
    am = SAMPLES["am"]
    assert len(new.encode(am)) < len(src.encode(am)) and new.decode(new.encode(am)) == am


def _specials_after_vocab():
    """Llama-3 layout: the special tokens live only in `added_tokens`, with ids after the vocabulary."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from conftest import _ENGLISH, make_chatml_tokenizer

    src = make_chatml_tokenizer(_ENGLISH * 4, 400)
    state = json.loads(src.backend_tokenizer.to_str())
    specials = [a["content"] for a in state["added_tokens"]]
    voc = {t: i for t, i in state["model"]["vocab"].items() if t not in specials}
    order = sorted(voc, key=voc.get)
    state["model"]["vocab"] = {t: k for k, t in enumerate(order)}
    for k, added in enumerate(state["added_tokens"]):
        added["id"] = len(order) + k
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = src.chat_template
    return tok, len(order)


def test_added_tokens_keep_ids_after_reload(tmp_path):
    """Llama-3: the reload renumbered added tokens after the enlarged vocabulary (<|eot_id|> moved)."""
    from transformers import AutoTokenizer

    src, n_model = _specials_after_vocab()
    im_end = src.convert_tokens_to_ids("<|im_end|>")
    assert im_end == n_model + 2  # the layout under test: the special sits after the vocabulary
    new, info = vocab.expand_vocabulary(src, amharic_corpus(), 30)
    new.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for tok in (new, again):
        assert tok.convert_tokens_to_ids("<|im_end|>") == im_end
        assert {t: tok.get_vocab()[t] for t in src.get_vocab()} == src.get_vocab()
        added = sorted(i for t, i in tok.get_vocab().items() if t not in src.get_vocab())
        assert added == list(range(n_model + 3, n_model + 33))  # after the highest id, no gap
    msgs = [{"role": "user", "content": SAMPLES["am"]}]
    assert again.apply_chat_template(msgs, tokenize=False) == src.apply_chat_template(msgs, tokenize=False)
    assert again.decode(again.encode(SAMPLES["am"])) == SAMPLES["am"]


def _sentencepiece_normalizer_style(style: str):
    """Metaspace test tokenizer rewritten the way Gemma ("gemma": Replace normalizer + Split " ") or
    legacy Llama-2/Mistral files ("legacy": Prepend + Replace normalizer, no pre-tokenizer) are."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(make_metaspace_tokenizer().backend_tokenizer.to_str())
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    if style == "gemma":
        state["normalizer"] = replace
        state["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "},
                                  "behavior": "MergedWithPrevious", "invert": False}
    else:
        state["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"}, replace]}
        state["pre_tokenizer"] = None
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("style", ["gemma", "legacy"])
def test_sentencepiece_normalizer_family_accepted(style):
    """The family check searched a JSON dump, where "▁" is escaped: these were rejected."""
    src = _sentencepiece_normalizer_style(style)
    new, info = vocab.expand_vocabulary(src, amharic_corpus(), 60)
    assert info["kind"] == "metaspace" and info["num_added"] == 60
    am = SAMPLES["am"]
    assert len(new.encode(am)) < len(src.encode(am))
    for name, texts in guard_texts("am").items():
        for t in texts[:50]:
            assert new.encode(t) == src.encode(t), name


def test_broken_promise_raises_before_writing(monkeypatch, tmp_path, tiny_tokenizer):
    """expand_vocabulary checks the reloaded tokenizer; before, a broken one went out silently."""
    from conftest import make_chatml_tokenizer

    from elchat.errors import UserError

    write = vocab._write_tokenizer
    other = make_chatml_tokenizer(amharic_corpus()[:200], 500)  # different ids for old tokens
    monkeypatch.setattr(vocab, "_write_tokenizer", lambda *args: other)
    with pytest.raises(UserError, match="old tokens changed id"):
        vocab.expand_vocabulary(tiny_tokenizer, amharic_corpus(), 20)

    def lose_template(*args):
        tok = write(*args)
        tok.chat_template = "{{ messages[0]['content'] }}"
        return tok

    monkeypatch.setattr(vocab, "_write_tokenizer", lose_template)
    with pytest.raises(UserError, match="chat template"):
        vocab.expand_vocabulary(tiny_tokenizer, amharic_corpus(), 20)
