"""MONAI's residual U-Net (the default study's model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.networks.nets import UNet
from torch import nn


def build_unet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
               patch_size: Sequence[int] | None = None) -> nn.Module:
    """MONAI's residual U-Net; strides default to 2 between every pair of levels."""
    channels = tuple(params.get("channels", (16, 32, 64, 128, 256)))
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=tuple(params.get("strides", (2,) * (len(channels) - 1))),
        num_res_units=params.get("num_res_units", 2),
        dropout=params.get("dropout", 0.0),
        norm=params.get("norm", "instance"),
    )
