"""Search spaces: one module per trainable (same stem), holding its TIERS, ALIASES and SPACE."""
