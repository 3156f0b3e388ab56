"""Benchmarks that run a baseline and the platform side by side and print ratios (see bench/README.md).

Run from the repository root as modules, e.g. ``.venv/bin/python -m bench.train_overhead --small``:
``python -m`` puts the root first on ``sys.path``, so ``platform`` is this repo's package.
"""
