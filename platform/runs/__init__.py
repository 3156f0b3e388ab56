"""Run directories: what ``python -m platform.run asl`` writes and ``platform.predict`` reads.

Modules: ``opening`` (a new run's folder claimed, or a run to resume read back), ``artifacts``
(config, manifest, history, best model), ``run_files`` (their names and JSON, without torch),
``storage`` (a folder or an object store; claims of run names), ``resume`` (torn files recovered
from checkpoints), ``durable`` (crash-safe writes), ``plots`` and ``baseline`` (the trivial
predictor beside every metric).
"""
