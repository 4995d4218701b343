"""Evaluation of frozen encoders: features, probes (linear, kNN), geometry, plots."""
