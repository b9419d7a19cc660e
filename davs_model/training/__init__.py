"""Training: stage 1 (association pretraining) and stage 2 (adversarial disentanglement + generation)."""
