from elchat.chat_tokens import chat_special_token_ids, chat_special_tokens
from elchat.params import check_common
from elchat.runs import run_dir
from elchat.presets import PRESETS, get_preset

import pytest


def test_chatml_tokens_found_from_template(tiny_tokenizer):
    toks = chat_special_tokens(tiny_tokenizer)
    assert toks == sorted(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    ids = chat_special_token_ids(tiny_tokenizer)
    assert ids == sorted(tiny_tokenizer.convert_tokens_to_ids(toks))


def test_presets_and_params():
    assert get_preset("micro").base and get_preset("smollm2-135m").offline
    with pytest.raises(ValueError, match="known presets"):
        get_preset("nope")
    assert run_dir("runs", "micro", "am").as_posix() == "runs/micro/am"
    with pytest.raises(ValueError, match="seed"):
        check_common("micro", "am", seed=-1)
    with pytest.raises(ValueError, match="preset"):
        check_common("not-a-preset", "am")
    assert set(PRESETS) >= {"micro", "smollm2-135m", "qwen2.5-0.5b", "qwen2.5-7b", "llama-3.1-8b"}


def _with_added(tokenizer, tokens, template):
    """A copy of `tokenizer` with `tokens` added as ordinary (not special) added tokens."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.add_tokens(list(tokens))  # special=False, as Gemma's "\n" and Qwen3's "<think>"
    tok.chat_template = template
    return tok


def test_ordinary_text_is_not_a_chat_token(tiny_tokenizer):
    """Gemma's "\\n" and "\\n\\n" are added (not special) tokens its template writes: not chat tokens."""
    from conftest import CHATML_TEMPLATE

    tok = _with_added(tiny_tokenizer, ["\n", "\n\n"], CHATML_TEMPLATE)
    text = tok.apply_chat_template([{"role": "user", "content": "U"}], tokenize=False)
    assert "\n" in tok.convert_ids_to_tokens(tok(text, add_special_tokens=False).input_ids)
    assert chat_special_tokens(tok) == ["<|endoftext|>", "<|im_end|>", "<|im_start|>"]


def test_think_markup_is_a_chat_token(tiny_tokenizer):
    """Qwen3's template writes <think></think> (added, not special) after the last user turn."""
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
                "{% if m['role'] == 'assistant' and loop.last %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
                "{{ m['content'] + '<|im_end|>\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tok = _with_added(tiny_tokenizer, ["<think>", "</think>", "\n\n"], template)
    assert chat_special_tokens(tok) == ["</think>", "<think>", "<|endoftext|>", "<|im_end|>", "<|im_start|>"]
