"""Trainables: one package per model family; the package name is the registry.

``python -m platform.run asl`` imports ``trainables.asl`` (and ``search_spaces.asl`` for its
tiers). A trainable is *what* to train: a model, its data and its loss. *How* to train (the loop,
devices, mixed precision, checkpoints, Ray Data, Ray Train, Tune, Optuna) lives in ``platform/``
only, so a trainable is a plain PyTorch package that never imports Ray, and its unit tests run
without a cluster.

Every ``trainables/<stem>/`` defines the same small interface, which ``platform/contract.py``
checks when a command loads the stem (a missing hook, or one a typo away from an optional one, is
an error naming both). ``Config``, ``METRIC`` and ``PREPROCESS_KEYS`` live in its ``config.py``,
which imports no torch and nothing else of its package: ``--help`` and ``--print-config`` read that
file alone, in half a second (``platform/registry.py``, ``load_config``); ``__init__.py`` imports
them from there, beside the hooks. A trainable without a ``config.py`` works too, only its
``--help`` waits for torch.

``METRIC = ("val/acc", "max")``
    The validation metric that picks the best checkpoint and drives early stopping.

``Config``
    A dataclass subclassing ``platform.config.TrainConfig``: every hyperparameter with its
    default and one docstring line under it (the lines are ``--help``). A number's range goes beside
    it, ``dim: int = limited(192, low=2)`` (``platform.config.limited``; ``synthetic=True`` marks a
    key that only shapes the synthetic set, listed apart in ``--help``). Re-declare a platform field
    to change its default (its limits stay). Rules between fields (a width divisible by the heads) go
    in a ``validate(self)`` method raising ``UserError``: both run before Ray starts.

``build_datasets(cfg) -> (dict[str, list[dict]], meta)``
    Reads ``cfg.data_dir`` in the dataset's real on-disk format; with no ``data_dir`` it writes
    (once, cached) a synthetic set in that same format, with a signal the model can learn, and reads
    that. Returns the raw rows by split (``"train"``, ``"val"``, optionally ``"test"``): small
    records (paths, texts, labels), which the platform turns into Ray datasets to preprocess; and
    ``meta``: JSON-serialisable facts learnt from the data that the model and ``predict`` need
    (``"classes"``...), plus ``"data_path"`` and ``"content_hash"`` for the run's lineage (and the
    store's key: ``platform.data.content_hash.content_hash`` of the index files and the files the rows
    name, by content). Read the folder through ``platform.data.locations.Folder`` and decode files
    through ``platform.data.locations.opened``, and an ``s3://`` ``--data`` works as a folder does.
    Cheap checks (missing folder, missing columns) raise ``UserError`` here.

``preprocess(batch, cfg) -> batch``
    The per-batch transform (numpy dicts) that the platform runs once, in Ray Data tasks that
    write the preprocessed store (``platform/data/store.py``); its output columns reach ``loss`` and
    ``evaluate`` as tensors on the training device. Store what the model needs in the narrowest
    dtype that is faithful enough: uint8 images, float16 features (widened to float32 in the
    batches). A column returned as a *list* of arrays is stored unpadded (variable-length rows);
    its batches are padded to their longest row and come with a ``<name>_mask`` of real rows. A
    bad row raises ``UserError`` naming its file.

``build_model(cfg, meta) -> torch.nn.Module``

``loss(model, batch, cfg) -> (loss, metrics)``
    The training loss of one batch and a dict of float metrics (the platform averages them over
    the epoch and prefixes them with ``train/``). ``model`` is the model as it trains: with several
    workers, its DistributedDataParallel wrapper, so call it; its attributes are on ``model.module``.
    Every other hook (``evaluate``, ``on_epoch_start``, ``predict``) receives the model itself.

``evaluate(model, batches, cfg) -> metrics``
    Validation metrics over an iterable of batches; the platform has already put the model in
    eval mode under ``torch.no_grad()``. Scalars are keyed ``"val/..."``; arrays are plotted for
    the best epoch: ``"confusion_matrix"`` (rows true, columns predicted) and
    ``"predicted_vs_true"`` (one ``[true, predicted]`` row a sample, for regression) and
    ``"predictions"`` (a list of JSON-serialisable dicts, one a sample, such as ``{"id": ...,
    "reference": ..., "prediction": ...}``), written to ``val_predictions.jsonl``. A ``"test"``
    split is scored once after training by the best model: ``test/...`` metrics in the manifest,
    ``test_confusion_matrix.png``, ``test_predictions.jsonl``.

``predict(model, inputs, cfg, meta, **options) -> list[dict]``
    What ``python -m platform.predict <run dir> <arg ...>`` prints. ``inputs`` are the command's
    arguments, all in one call (a trainable may read several as one input, an image and its
    caption). One dict a prediction, with ``"input"`` and, for classifiers, ``"top"``:
    ``[{"label": ..., "prob": ...}, ...]``; other keys are printed as they are. ``options`` are
    the values of the options ``add_predict_arguments`` declared.

Optional, each for the trainables that need it; all must depend on ``epoch`` and ``cfg`` only, so
a resumed run is exact:

``on_epoch_start(model, epoch, cfg)``
    Schedules that live in the model (adaptive dropout).
``epoch_schedule(epoch, cfg) -> dict[str, float]``
    Values that change by epoch (a curriculum stage): recorded as ``schedule/<key>`` in the
    history, the checkpoints and the progress line, and handed to ``train_filter``.
``train_filter(batch, schedule, cfg) -> bool tensor``
    Which training rows this epoch trains on (the unlocked curriculum stages), given the scalar
    columns of a shuffle window of rows; the platform drops the rest before it forms batches, so
    the order stays a function of (seed, epoch).
``PREPROCESS_KEYS = ("image_size", ...)``
    The config keys ``preprocess`` depends on. Every split is preprocessed once into the store
    and read back by every later run and sweep trial with the same raw rows, data files and values
    of these keys (``platform.data.ingest.identity``); without the list every key counts, which is always
    right but rarely reused.
``add_predict_arguments(parser)``
    Options of ``python -m platform.predict`` for this trainable (``--beam K``), passed to
    ``predict`` as keyword arguments.
``baseline(read, cfg, meta) -> platform.runs.baseline.Trivial``
    The trivial predictor beside the metric (the majority class, the training mean, the best
    single training caption), fitted on the training split only; see ``platform/runs/baseline.py``.
``run_warnings(manifest) -> list[str]``
    Checks of a finished run that only the trainable knows to make (captions that collapsed to
    one for every image); ``python -m platform.run`` prints each as a ``warning:`` line after its
    summary. ``manifest`` is the finished ``manifest.json`` (best and test metrics, data meta).
"""
