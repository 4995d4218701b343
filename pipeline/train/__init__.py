"""Training: distributed helpers, optimisation, the per-worker loop and the Ray launcher."""
