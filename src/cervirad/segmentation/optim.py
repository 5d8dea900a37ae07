"""Optimiser and learning-rate schedule of a training, and the re-plan of a budgeted training's epochs.

``optimizer: adam`` is the paper's; ``sgd`` is nnU-Net's (Nesterov momentum 0.99, weight decay 3e-5,
gradient norm clipped at 12). ``scheduler: cosine`` anneals to 0 over the epochs, ``poly`` is
nnU-Net's lr·(1 - e/epochs)^0.9.
"""
from __future__ import annotations

import math

import torch

# nnU-Net's SGD (nnUNetTrainer): Nesterov momentum 0.99, weight decay 3e-5, gradient norm clipped at 12;
# its poly schedule lr·(1 - epoch/epochs)^0.9
SGD_MOMENTUM, SGD_WEIGHT_DECAY, GRAD_CLIP, POLY_EXPONENT = 0.99, 3e-5, 12.0, 0.9


def make_optimizer(model: torch.nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """``adam`` (the paper's) or ``sgd`` (nnU-Net's, constants above)."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=SGD_MOMENTUM, nesterov=True,
                               weight_decay=SGD_WEIGHT_DECAY)
    return torch.optim.Adam(model.parameters(), lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs):
    """Stepped once per epoch: ``cosine`` (to 0 over the epochs), ``poly`` (nnU-Net), or None (``none``).
    ``epochs``: an int, or a callable returning the current number of epochs (a re-planned training
    changes it after its first epoch; the schedule follows)."""
    total = epochs if callable(epochs) else (lambda: epochs)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, max(1, total())) / max(1, total()))))
    if name == "poly":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: max(0.0, 1.0 - e / max(1, total())) ** POLY_EXPONENT)
    return None


def replanned_epochs(done: int, spent_s: float, epoch_s: float, budget_s: float, ceiling: int) -> int:
    """Epochs of a budgeted training after ``done`` epochs that took ``spent_s`` seconds, the last
    ``epoch_s``: those done plus what the rest of the budget affords at the measured pace, at most
    ``ceiling`` (the config's epochs) and never fewer than are done."""
    more = int(max(0.0, budget_s - spent_s) // max(epoch_s, 1e-9))
    return int(max(done, min(ceiling, done + more)))
