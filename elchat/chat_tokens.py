"""Which token ids the chat template writes: the rows ElChat and LEP copy back from the chat model.

Chat-template special tokens (`<|im_start|>`, `<|im_end|>` for ChatML; header and eot tokens for
Llama-3; `<start_of_turn>`/`<end_of_turn>` for Gemma; `[INST]`/`[/INST]` for Mistral) are trained
only during chat tuning. Continual pre-training on unlabeled text barely sees them, and a base
model's rows for them are untrained, so the merged model takes these rows from the source chat
model. They are found by rendering small conversations with the tokenizer's own chat template
(one ending with an assistant turn, so Qwen3's `<think>`/`</think>` show, one with a generation
prompt) and keeping every rendered token that is

- a special token (bos, `<|im_end|>`, `[INST]`, ...), or
- an added token written as markup, `<...>` or `[...]` without spaces (Qwen3 marks `<think>` as
  an added but not special token),

never ordinary text an added token may also hold (Gemma's "\n" and "\n\n" are added tokens). To
those come the tokenizer's bos and eos, and its pad token when that is an end-of-text token
rather than a dedicated padding token (ChatML's `<|endoftext|>`, which ends the base model's
documents; not Llama-3.2's `<|finetune_right_pad_id|>` or Gemma's `<pad>`).
"""
from __future__ import annotations

_PROBES = (
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
     {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}],
    [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
)


def _render(tokenizer, messages, generation_prompt: bool) -> list[int]:
    """Ids of one rendered conversation; a template that rejects a system turn drops it."""
    try:
        ids = tokenizer.apply_chat_template(messages, tokenize=True,
                                            add_generation_prompt=generation_prompt)
    except Exception:  # templates that reject a system turn or an unusual role order
        if messages[0]["role"] != "system":
            return []
        return _render(tokenizer, messages[1:], generation_prompt)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def _is_markup(token: str) -> bool:
    return (len(token) > 2 and not any(ch.isspace() for ch in token)
            and ((token[0], token[-1]) in (("<", ">"), ("[", "]"))))


def _template_tokens(tokenizer) -> set[str]:
    if not getattr(tokenizer, "chat_template", None):
        return set()
    special = set(tokenizer.all_special_tokens)
    added = set(tokenizer.get_added_vocab())
    ids = _render(tokenizer, _PROBES[0], True) + _render(tokenizer, _PROBES[1], False)
    return {t for t in tokenizer.convert_ids_to_tokens(ids)
            if t in special or (t in added and _is_markup(t))}


def chat_special_tokens(tokenizer, extra: tuple[str, ...] = ()) -> list[str]:
    """Special tokens the chat template emits, plus bos/eos (and an end-of-text pad), sorted.

    Example: for a ChatML tokenizer -> `['<|endoftext|>', '<|im_end|>', '<|im_start|>']`.
    """
    found = _template_tokens(tokenizer)
    found |= {t for t in (tokenizer.bos_token, tokenizer.eos_token) if t}
    pad = tokenizer.pad_token
    if pad and "pad" not in pad.lower() and pad != tokenizer.unk_token:
        found.add(pad)
    found |= set(extra)
    vocab = tokenizer.get_vocab()
    return sorted(t for t in found if t in vocab)


def chat_special_token_ids(tokenizer, extra: tuple[str, ...] = ()) -> list[int]:
    """Ids of `chat_special_tokens(tokenizer)`, sorted.

    Example: `chat_special_token_ids(tok) == [0, 1, 2]` for the test ChatML tokenizer.
    """
    return sorted(tokenizer.convert_tokens_to_ids(chat_special_tokens(tokenizer, extra)))
