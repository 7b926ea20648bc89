"""The paper's loss under its public name (`from sdbert.distill import distillation_loss`); the KD
pieces live in `sdbert.training.kd`, the workflow in `sdbert.training.distill`."""

from sdbert.training.kd import distillation_loss

__all__ = ["distillation_loss"]
