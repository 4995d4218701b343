"""Backbones (the encoders being learned) and heads (projector, predictor)."""
