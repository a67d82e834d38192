"""Swin UNETR (Hatamizadeh et al. 2022): a Swin transformer encoder with a convolutional U-Net decoder.

MONAI 1.6's ``SwinUNETR`` no longer takes ``img_size``: any input whose sides
are multiples of 32 (``patch_size ** 5`` with the default token size 2) works,
and it defaults to ``feature_size=24``; here it defaults to 48, the size of the
BraTS 2021 model of the paper. ``feature_size`` must be a multiple of 12.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.networks.nets import SwinUNETR
from torch import nn

DIVISOR = 32
"""Each side of the input must be a multiple of this (five 2x downsamplings)."""


def _check_patch(patch_size: Sequence[int]) -> None:
    sides = [int(s) for s in patch_size]
    if any(s % DIVISOR for s in sides) or all(s == DIVISOR for s in sides):
        # At 32 on every side the 1/32 bottleneck is one voxel, which instance norm refuses in training.
        raise ValueError(f"swin_unetr needs a patch whose sides are multiples of {DIVISOR}, at least one of them "
                         f"{2 * DIVISOR} or more, not {sides}")


def build_swin_unetr(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                     patch_size: Sequence[int] | None = None) -> nn.Module:
    if patch_size is not None:
        _check_patch(patch_size)
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=params.get("feature_size", 48),
        depths=tuple(params.get("depths", (2, 2, 2, 2))),
        num_heads=tuple(params.get("num_heads", (3, 6, 12, 24))),
        drop_rate=params.get("drop_rate", 0.0),
        attn_drop_rate=params.get("attn_drop_rate", 0.0),
        dropout_path_rate=params.get("dropout_path_rate", 0.0),
        use_checkpoint=params.get("use_checkpoint", False),
        spatial_dims=spatial_dims,
    )
