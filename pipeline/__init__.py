"""Self-supervised representation learning pipeline: data, nets, methods, training, evaluation.

Importing this package has no side effects; stages pass validated params in.
"""
