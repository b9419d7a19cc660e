"""Evaluation: metrics (pure functions) and ``evaluate()`` over a test split. Submodules import torch lazily."""
