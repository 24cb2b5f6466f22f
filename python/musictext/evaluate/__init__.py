"""Stage 6, evaluate: held-out retrieval both ways, per-block diagnostics, plots."""
