"""Concurrent API labeling on Ray Data, behind ``python -m platform.label posts.csv``.

Modules: ``prompt`` (messages, reply parsing, cache key parameters), ``inputs`` (posts.csv, image
checks, cache keys), ``cache`` (durable JSONL results), ``gate`` (the one Ray actor that holds the
job's rate limit, concurrency cap, budget and counters), ``worker`` (the async Ray Data UDF that
calls the API), ``ledger`` (ledger.json: the last run and the totals over every run into a folder)
and ``report`` (labels.csv, quarantine.csv and the printed lines).
"""
