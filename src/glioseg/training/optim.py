"""Optimiser and learning-rate schedule registries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
              "adagrad": torch.optim.Adagrad}


def build_optimizer(spec: Mapping[str, Any], parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """``sgd`` is nnU-Net's setting (Nesterov, momentum 0.99), so runs compare with that recipe, not with untuned SGD."""
    kwargs = {"lr": spec["lr"], "weight_decay": spec["weight_decay"]}
    if spec["name"] == "sgd":
        kwargs.update(momentum=0.99, nesterov=True)
    return OPTIMIZERS[spec["name"]](parameters, **kwargs)


def build_scheduler(spec: Mapping[str, Any], optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch schedule: ``cosine`` anneals to zero over the run, ``step`` decays by ``gamma`` every ``step_size`` epochs."""
    if spec["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if spec["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.get("step_size", 1), gamma=spec.get("gamma", 0.5))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
