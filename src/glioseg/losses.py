"""Loss registry for region (sigmoid, multi-label) segmentation.

MONAI's ``DiceCELoss`` applies softmax cross-entropy whenever there is more
than one channel, which is wrong for overlapping regions; ``dice_bce`` pairs
MONAI's sigmoid Dice with per-channel binary cross-entropy instead. Every loss
takes logits and a same-shaped binary target (B, C, *spatial), 2D or 3D; the
class-weighted loss is ``bce`` with ``pos_weight``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss
from torch import nn

from glioseg.errors import GliosegError

SMOOTH = 1e-5


def _per_region(weights: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """Shape (C,) weights as (C, 1, …): a bare (C,) vector would broadcast along the last spatial axis, not the regions."""
    if weights is None:
        return None
    if weights.numel() != logits.shape[1]:
        raise GliosegError(
            f"the loss's pos_weight has {weights.numel()} values but the model outputs {logits.shape[1]} regions",
            hint="give one pos_weight per region, in the dataset's region order (TC, WT, ET for BraTS).",
        )
    return weights.to(logits.device, logits.dtype).view(-1, *[1] * (logits.ndim - 2))


def _as_tensor(values: Sequence[float] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32)


class DiceBCELoss(nn.Module):
    """Soft Dice on sigmoid probabilities plus BCE on logits; the weights trade region overlap against per-voxel fit."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0, batch: bool = False) -> None:
        super().__init__()
        self.dice = soft_dice(batch)
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * bce


class BCELoss(nn.Module):
    """BCE on logits; with ``pos_weight`` (one number per region) it is the class-weighted loss.

    A region's weight multiplies the loss of its foreground voxels, so a small
    region outnumbered by background (ET) is not learnt as "always absent".
    """

    def __init__(self, pos_weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.pos_weight = _as_tensor(pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype),
                                                  pos_weight=_per_region(self.pos_weight, logits))


def _power(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """``x ** gamma`` for x ≥ 0: with gamma < 1 the gradient at 0 is infinite, so x is floored where the gradient is 0."""
    return x.clamp_min(torch.finfo(x.dtype).tiny).pow(gamma)


class ExpLogLoss(nn.Module):
    """Exponential-logarithmic loss (Wong et al., MICCAI 2018) for sigmoid regions.

    ``w_dice · mean[(−ln Dice)^gamma_dice] + w_ce · mean[w · (−ln p)^gamma_ce]``: Dice is one
    region's soft Dice in one sample, p the probability a voxel gives its true label
    (binary cross-entropy per region), w the region's ``pos_weight`` on foreground
    voxels and 1 elsewhere. Exponents below 1 flatten the loss of well-segmented
    regions and steepen it for poor ones, so small regions keep their pull. The
    defaults are the paper's; its label weights are training-set frequencies, which
    a loss cannot see, hence ``pos_weight`` (default 1). Study 3's "exp-log loss 0.2"
    is read as ``w_ce: 0.2`` with ``w_dice: 0.8`` (these defaults); its "0.7" variant
    as ``w_ce: 0.7, w_dice: 0.3`` (docs/decisions.md).
    """

    def __init__(self, w_dice: float = 0.8, w_ce: float = 0.2, gamma_dice: float = 0.3, gamma_ce: float = 0.3,
                 pos_weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.w_dice, self.w_ce, self.gamma_dice, self.gamma_ce = w_dice, w_ce, gamma_dice, gamma_ce
        self.pos_weight = _as_tensor(pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        axes = tuple(range(2, logits.ndim))
        prob = torch.sigmoid(logits)
        dice = (2 * (prob * target).sum(axes) + SMOOTH) / (prob.sum(axes) + target.sum(axes) + SMOOTH)
        dice_term = _power(-torch.log(dice.clamp_min(torch.finfo(dice.dtype).tiny)), self.gamma_dice).mean()
        ce = _power(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), self.gamma_ce)
        pos_weight = _per_region(self.pos_weight, logits)
        if pos_weight is not None:
            ce = ce * (1 + (pos_weight - 1) * target)
        return self.w_dice * dice_term + self.w_ce * ce.mean()


def soft_dice(batch: bool = False) -> DiceLoss:
    """MONAI's soft Dice on sigmoid probabilities.

    ``batch`` pools the whole batch into one Dice per region (Buda et al.'s
    formulation) instead of one per sample: with 2D slices, most of which hold
    no tumour, a per-sample Dice scores every empty slice near 1 unless its
    prediction is exactly empty, and that pull drowns the tumour slices.
    """
    return DiceLoss(sigmoid=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH, batch=batch)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice_bce": DiceBCELoss,
    "dice": soft_dice,
    "bce": BCELoss,
    "focal": lambda gamma=2.0, alpha=None: FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False),
    "exp_log": ExpLogLoss,
}


def build_loss(spec: Mapping[str, Any]) -> nn.Module:
    """The loss ``spec["name"]``, built with the spec's other keys as its options (the schema checks them)."""
    if spec["name"] not in LOSSES:
        raise KeyError(f"unknown loss '{spec['name']}'; known losses: {sorted(LOSSES)}")
    return LOSSES[spec["name"]](**{key: value for key, value in spec.items() if key != "name"})
