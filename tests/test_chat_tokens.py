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
