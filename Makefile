# `make demo` and `make test` set everything up on a fresh machine (Python 3.11) and run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: setup demo test clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

setup: $(INSTALLED)

# The main job on its built-in default: ASL on a synthetic landmark set (fast tier).
demo: setup
	$(VENV)/bin/python -m platform.run asl

# `python -m pytest`, not `pytest`: the console script imports the standard `platform` first.
test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
