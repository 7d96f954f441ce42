"""Optimisers and learning-rate schedules, named and stepped as in ``torch.optim``."""
