"""SegResNet and SegResNetVAE (Myronenko 2018, the BraTS 2018 winner).

Both default to MONAI's BraTS tutorial settings (``init_filters=16``,
``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)``, ``dropout_prob=0.2``).
MONAI's ``SegResNetVAE`` returns ``(logits, vae_loss)`` in training and
``(logits, None)`` in evaluation; :class:`SegResNetVAEModel` returns plain
logits in evaluation, so sliding-window inference works unchanged, and
combines the two losses in :meth:`SegResNetVAEModel.training_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import SegResNet, SegResNetVAE
from torch import nn

from glioseg.models.base import LossFn, check_patch_multiple, require_patch_size

GROUPS = 8
"""MONAI's default GroupNorm groups: ``init_filters`` must be a multiple of this."""


def _common(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int) -> dict[str, Any]:
    blocks_down = tuple(params.get("blocks_down", (1, 2, 2, 4)))
    blocks_up = tuple(params.get("blocks_up", (1,) * (len(blocks_down) - 1)))
    if len(blocks_up) != len(blocks_down) - 1:
        # MONAI zips the two silently: fewer up blocks would give logits below the input resolution.
        raise ValueError(f"blocks_up needs one entry per level below the top ({len(blocks_down) - 1}), got {list(blocks_up)}")
    init_filters = params.get("init_filters", 16)
    if init_filters % GROUPS:
        raise ValueError(f"init_filters must be a multiple of {GROUPS} (GroupNorm groups), got {init_filters}")
    return {
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "init_filters": init_filters,
        "blocks_down": blocks_down,
        "blocks_up": blocks_up,
        "dropout_prob": params.get("dropout_prob", 0.2),
    }


def build_segresnet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                    patch_size: Sequence[int] | None = None) -> nn.Module:
    common = _common(params, in_channels, out_channels, spatial_dims)
    check_patch_multiple("segresnet", patch_size, 2 ** (len(common["blocks_down"]) - 1))
    return SegResNet(**common)


class SegResNetVAEModel(SegResNetVAE):
    """MONAI's SegResNetVAE with plain logits in evaluation and the VAE loss weighted in training."""

    def __init__(self, *, vae_weight: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vae_weight = float(vae_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if not self.training:
            return super().forward(x)[0]
        if tuple(x.shape[2:]) != tuple(self.input_image_size):
            # MONAI reshapes with view(-1, ...): another size fails deep inside, or mixes up the batch.
            raise ValueError(f"segresnet_vae was built for {list(self.input_image_size)} training patches, "
                             f"got {list(x.shape[2:])}")
        return super().forward(x)

    def training_loss(self, output: Any, target: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """``loss_fn(logits, target) + vae_weight * vae_loss``; plain ``loss_fn`` for logits alone."""
        if isinstance(output, tuple):
            logits, vae_loss = output
            return loss_fn(logits, target) + self.vae_weight * vae_loss
        return loss_fn(output, target)


def build_segresnet_vae(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                        patch_size: Sequence[int] | None = None) -> nn.Module:
    common = _common(params, in_channels, out_channels, spatial_dims)
    size = params.get("input_image_size") or require_patch_size("segresnet_vae", patch_size, "input_image_size")
    size = [int(s) for s in size]
    if patch_size is not None and size != [int(s) for s in patch_size]:
        raise ValueError(f"segresnet_vae's input_image_size {size} differs from the training patch {list(patch_size)}")
    multiple = 2 ** len(common["blocks_down"])
    if len(size) != spatial_dims or any(s % multiple for s in size):
        raise ValueError(f"segresnet_vae needs {spatial_dims} patch sides that are multiples of {multiple}, got {size}")
    return SegResNetVAEModel(
        input_image_size=size,
        vae_weight=params.get("vae_weight", 0.1),
        vae_estimate_std=params.get("vae_estimate_std", False),
        vae_default_std=params.get("vae_default_std", 0.3),
        vae_nz=params.get("vae_nz", 256),
        **common,
    )
