"""Loss registry for region (sigmoid, multi-label) segmentation.

MONAI's ``DiceCELoss`` applies softmax cross-entropy whenever there is more
than one channel, which is wrong for overlapping regions; ``dice_bce`` pairs
MONAI's sigmoid Dice with per-channel binary cross-entropy instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.losses import DiceLoss
from torch import nn


class DiceBCELoss(nn.Module):
    """Soft Dice on sigmoid probabilities plus BCE on logits, equally weighted."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.bce(logits, target.float())


class _BCE(nn.BCEWithLogitsLoss):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits, target.float())


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "dice_bce": DiceBCELoss,
    "dice": lambda: DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5),
    "bce": _BCE,
}


def build_loss(spec: Mapping[str, Any]) -> nn.Module:
    try:
        return LOSSES[spec["name"]]()
    except KeyError:
        raise KeyError(f"unknown loss '{spec['name']}'; known losses: {sorted(LOSSES)}") from None
