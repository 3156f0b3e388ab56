"""Training on Ray Train, behind ``python -m platform.run asl`` and every sweep trial.

Modules: ``launch`` (a run assembled from its trainable, config and launch options), ``trainer``
(the TorchTrainer), ``worker`` (what each Train worker runs), ``loop`` (the epoch, free of Ray),
``averaging`` (the weights' moving average), ``exact`` (the rules that make a run exact),
``policy`` (when a checkpoint is taken, what it reports, which are kept), ``checkpoints`` (which
exist, which load), ``preempt`` (a SIGTERM becomes a checkpoint) and ``local`` (local mode,
``--workers 0``: the function in this process, with a one-worker run's checkpoints).
"""
