"""Training: optimisation, the per-worker loop and the Ray launcher."""
