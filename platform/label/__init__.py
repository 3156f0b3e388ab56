"""Concurrent API labeling on Ray Data, behind ``python -m platform.label posts.csv``.

Modules: ``cli`` (the plan of a run, ``main``), ``options`` (its arguments and their checks), ``task`` (what a labeling task
declares: prompt, reply schema, columns), ``prompt`` (messages, reply parsing, token estimates,
cache key parameters), ``inputs`` (posts.csv, image checks, cache keys), ``answers`` (the label
cache: durable JSONL results), ``gate`` (the one Ray actor that holds the job's rate, token and
concurrency limits, budget and counters, with ``leases``: slots a dead actor's process gives back,
and ``tokens``: the tokens-per-minute bucket), ``labeler`` (the async Ray Data UDF that calls the
API), ``batch`` and ``batch_files`` (the Batch API), ``secret`` (how the API key reaches the
actors without passing through Ray), ``ledger`` (ledger.json: the last run and the totals over
every run into a folder), ``lock`` (one run at a time into an output folder) and ``report``
(labels.csv, quarantine.csv and the printed lines).
"""


def main(argv: list[str] | None = None) -> int:
    """``python -m platform.label``; imported here only when called (a task's module imports
    ``platform.label.task`` without the command's pandas and Ray)."""
    from platform.label.cli import main as cli_main

    return cli_main(argv)
