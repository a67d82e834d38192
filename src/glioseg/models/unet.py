"""MONAI's residual U-Net (the default study's model)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from monai.networks.nets import UNet
from torch import nn

from glioseg.models.base import check_patch_multiple, levels


def build_unet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
               patch_size: Sequence[int] | None = None) -> nn.Module:
    """MONAI's residual U-Net, 16..256 wide by default."""
    topology = levels(params)
    check_patch_multiple("unet", patch_size, math.prod(topology["strides"]))
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        **topology,
        num_res_units=params.get("num_res_units", 2),
        dropout=params.get("dropout", 0.0),
        norm=params.get("norm", "instance"),
    )
