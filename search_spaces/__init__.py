"""Search spaces: one module per trainable (same stem), holding its TIERS and SPACE, optionally
ALIASES (other names of tiers) and EPOCH_SECONDS (a tier's seconds an epoch, for the sweep's dry
run); ``platform/contract.py`` checks them when a command loads the stem. SPACE's distributions
come from ``platform/tune/distributions.py`` (``ray.tune``'s own work too), so that ``--help`` reads
the tiers without importing Ray."""
