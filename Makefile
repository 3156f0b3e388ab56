# `make demo` and `make test` set everything up on a fresh machine (Python 3.11) and run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed
# The tests' MLflow tracking server: the full `mlflow` pins an older pyarrow than Ray Data's, so it
# has a venv of its own; the project's venv has the client only (the [mlflow] extra, mlflow-skinny).
MLFLOW_SERVER := .venv-mlflow/bin/mlflow

.PHONY: setup demo test clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,mlflow]'
	touch $(INSTALLED)

setup: $(INSTALLED)

$(MLFLOW_SERVER):
	$(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet --upgrade pip
	.venv-mlflow/bin/python -m pip install --quiet 'mlflow>=3.0'

# The main job on its built-in default: ASL on a synthetic landmark set (fast tier).
demo: setup
	$(VENV)/bin/python -m platform.run asl

# `python -m pytest`, not `pytest`: the console script imports the standard `platform` first.
test: setup $(MLFLOW_SERVER)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-mlflow .pytest_cache
