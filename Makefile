# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install the pinned dependencies, run the default study
#   make test   the same set-up, then the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg

.PHONY: run test lint report clean help

help:
	@echo "make run     the default study (config.yaml) on the embedded synthetic sample"
	@echo "make test    the test suite (unit + workflow)"
	@echo "make report  results/report.html from the last run"
	@echo "make lint    ruff (style rules in pyproject.toml) and snakemake --lint"
	@echo "make clean   remove results/ and .snakemake/ (keeps .venv)"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "glioseg needs Python >= 3.11 (snakemake 9); set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local

report: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --report results/report.html

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf results .snakemake
