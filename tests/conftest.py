"""Shared fixtures: tiny models that every stage's tests run on (CPU, seconds).

`tiny_pair` is the kit's own `nano` base/chat pair (`elchat.micro.build("nano")`, built once per
test session in about 3 s): Llama architecture, hidden size 32, 4 layers, untied embeddings, a
byte-level BPE tokenizer with ChatML special tokens and chat template — the shape of SmolLM2/Qwen,
really pre-trained and chat-tuned, small enough for the whole suite to run on two cores.
`tiny_tied_chat` is a random model of the same shape with tied input/output embeddings (as SmolLM2).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests never touch the network: every hub client is told so before it is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist each worker gets one core: two workers with torch's default two threads each
# oversubscribe a 2-core machine and run up to 10x slower. Notebook kernels inherit the variable.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Please write a short answer in English and keep it polite.",
    "Open the file, read every line and print the number of words.",
    "The weather today is sunny with a light wind from the west.",
    "Language models predict the next token from the previous ones.",
    "Hello! How are you today? I am fine, thank you for asking.",
    "Settings, Preferences, Help, About, Quit, Save as, Open recent.",
]


def make_chatml_tokenizer(texts, vocab_size: int = 400):
    """A byte-level BPE fast tokenizer with ChatML specials and template (test-sized)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny_model(vocab_size: int, tied: bool, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tied, bos_token_id=None, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _save(model, tok, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """{"base": Path, "chat": Path}: the `nano` pair, built into this session's temp dir."""
    from elchat import micro

    pair = micro.build("nano", seed=0, out=tmp_path_factory.mktemp("nano"))
    return {"base": Path(pair["base"]), "chat": Path(pair["chat"])}


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_pair):
    """The nano pair's tokenizer (ChatML: `<|endoftext|>`=0, `<|im_start|>`=1, `<|im_end|>`=2)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_pair["chat"])


@pytest.fixture(scope="session")
def tiny_tied_chat(tmp_path_factory, tiny_tokenizer):
    """HF directory of a tiny chat model with tied input/output embeddings (as SmolLM2)."""
    root = tmp_path_factory.mktemp("tiny_tied")
    return _save(make_tiny_model(len(tiny_tokenizer), tied=True, seed=2), tiny_tokenizer, root / "chat")


# CPT tests (test_cpt*.py) train on this tiny English corpus.
CPT_DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i % 7} times, then rests."
            for i in range(60)]
CPT_VALID = ["The weather today is sunny with a light wind.", "Hello! How are you today?"]


@pytest.fixture
def one_thread_own_cache(monkeypatch, tmp_path_factory):
    """One torch thread (tiny matmuls on two busy shared cores run far faster without OpenMP
    contention) and a cache of the session's own, so packed corpora never leak between runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ELCHAT_CACHE", str(tmp_path_factory.getbasetemp() / "elchat_cache"))
    yield
    torch.set_num_threads(threads)


def plain_bpe(token: str, ranks: dict) -> list[str]:
    """A token's pieces by plain BPE (lowest-ranked merge first) over `ranks` {(a, b): rank}:
    the source tokenization, written here independently of elchat.

    Example: `plain_bpe("abc", {("a", "b"): 0}) == ["ab", "c"]`.
    """
    parts = list(token)
    while len(parts) > 1:
        rank, j = min((ranks.get((a, b), 1 << 60), j) for j, (a, b) in enumerate(zip(parts, parts[1:])))
        if rank == 1 << 60:
            break
        parts[j:j + 2] = [parts[j] + parts[j + 1]]
    return parts
