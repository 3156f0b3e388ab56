"""Sweeps with Ray Tune and Optuna, behind ``python -m platform.tune asl --tiers smoke,fast``.

Modules: ``cli`` (arguments, settings, ``main``), ``plan`` (what is checked before Ray starts and
the dry run's estimate), ``space`` (the search space, objectives, Optuna's define-by-run space
with each tier's own configuration first), ``runner`` (the Tuner, its searcher and scheduler, the
sweep's end), ``trial`` (one trial: its config and its Ray Train run), ``results`` (results.csv,
ASHA's record, the best trial), ``best`` (best.json, the Pareto plot, the saved tier),
``location`` (the sweep's folder, or its URI and this machine's mirror) and ``table`` (the live
trial table).
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m platform.tune``, imported here only when called."""
    from platform.tune.cli import main as cli_main

    return cli_main(argv)
