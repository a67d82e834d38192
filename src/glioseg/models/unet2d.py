"""The plain U-Nets of the 2D studies, MONAI's ``BasicUNet`` and ``AttentionUnet``.

Both work in 2D and 3D alike. ``basic_unet`` is the classic U-Net (two
conv-norm-act per level, max-pool down) that Buda et al. 2019 trained on the
LGG kaggle_3m slices, so it defaults to their batch norm rather than MONAI's
instance norm. ``attention_unet`` defaults to Oktay et al. 2018's widths
(their reference code divides 64..1024 by its feature scale 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from monai.networks.blocks import Convolution
from monai.networks.nets import AttentionUnet, BasicUNet
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from glioseg.models.base import check_patch_multiple, levels

NORMS: dict[str, str | tuple[str, dict[str, Any]]] = {"batch": "batch", "instance": ("instance", {"affine": True})}
"""Config name → MONAI norm; instance norm keeps ``BasicUNet``'s own affine default."""


ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
"""``BasicUNet``'s own activation, passed explicitly so that added convolutions use the same."""


def build_basic_unet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                     patch_size: Sequence[int] | None = None) -> nn.Module:
    """MONAI's ``BasicUNet`` with batch norm, as Buda et al. 2019 trained it.

    ``convs_per_block`` above 2 (study 3's "U-Nets with 3 convolutions per
    block") deepens every conv block of the encoder, the bottleneck and the
    decoder with more conv-norm-act layers like its second one.
    """
    norm, dropout = NORMS[params.get("norm", "batch")], params.get("dropout", 0.0)
    network = BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(params.get("features", (32, 32, 64, 128, 256, 32))),
        act=ACT,
        norm=norm,
        dropout=dropout,
        upsample=params.get("upsample", "deconv"),
    )
    for block in [m for m in network.modules() if isinstance(m, TwoConv)]:
        width = block.conv_1.conv.out_channels
        for index in range(2, params.get("convs_per_block", 2)):
            block.add_module(f"conv_{index}", Convolution(spatial_dims, width, width, act=ACT, norm=norm, dropout=dropout,
                                                          padding=1))
    return network


def build_attention_unet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                         patch_size: Sequence[int] | None = None) -> nn.Module:
    """MONAI's ``AttentionUnet`` (Oktay et al. 2018), at their widths 16..256 by default."""
    topology = levels(params)
    check_patch_multiple("attention_unet", patch_size, math.prod(topology["strides"]))
    return AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        **topology,
        dropout=params.get("dropout", 0.0),
    )
