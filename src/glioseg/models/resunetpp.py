"""ResUNet++ (Jha et al. 2019), composed of MONAI blocks, in 2D or 3D.

ResUNet++ adds to a residual U-Net what each helps small, low-contrast lesions
with: squeeze-and-excitation between encoder stages (reweighs the modalities'
features), an atrous spatial pyramid (ASPP) as the bridge and before the output
(context at several scales without more downsampling), and an attention gate
on each decoder input (the finer encoder map says where to look).

MONAI provides the residual blocks (``ResidualUnit``: conv-norm-act with a
projected shortcut, rather than the paper's pre-activation order), the
squeeze-and-excitation (``ChannelSELayer``, reduction 8 as in the paper) and
the ASPP (``SimpleASPP``, dilations 1, 2, 4, 6 rather than the paper's 1, 6,
12, 18, which would mostly see padding at a 2D slice's 1/8 scale). The
attention gate is the paper's own. Widths follow the reference code: ``features``
are the stem's and the encoder stages', the bridge is twice the last, each
decoder stage has the width of the encoder stage below it. Patch sides must be
multiples of ``2 ** (len(features) - 1)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from monai.networks.blocks import (
    ChannelSELayer,
    Convolution,
    ResidualUnit,
    SimpleASPP,
    UpSample,
)
from monai.networks.layers.factories import Pool
from torch import nn

from glioseg.models.base import check_patch_multiple

FEATURES = (32, 64, 128, 256)
"""The stem's and the encoder stages' widths (the bridge is twice the last)."""

SE_REDUCTION = 8
"""The paper's squeeze-and-excitation reduction (less for narrower maps, so at least one channel remains)."""


def _aspp(spatial_dims: int, in_channels: int, out_channels: int) -> SimpleASPP:
    """ASPP whose four branches together have ``out_channels``."""
    return SimpleASPP(spatial_dims, in_channels, out_channels // 4, norm_type="batch", acti_type="relu")


class AttentionGate(nn.Module):
    """The paper's attention: the finer encoder map, max-pooled, and the decoder map weigh the decoder map."""

    def __init__(self, spatial_dims: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        conv = partial(Convolution, spatial_dims, kernel_size=3, act="relu", norm="batch")
        self.skip = nn.Sequential(conv(skip_channels, channels), Pool[Pool.MAX, spatial_dims](kernel_size=2))
        self.inner = conv(channels, channels)
        self.gate = Convolution(spatial_dims, channels, channels, kernel_size=3, conv_only=True)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.skip(skip) + self.inner(x)) * x


class ResUNetPlusPlus(nn.Module):
    """ResUNet++ returning logits at the input's size."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int] = FEATURES,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if len(features) < 2 or any(f % 4 for f in features):
            # The output ASPP splits features[0] over its four branches.
            raise ValueError(f"ResUNet++ needs at least 2 features, each a multiple of 4, got {list(features)}")
        residual = partial(ResidualUnit, spatial_dims, act="relu", norm="batch", dropout=dropout or None)
        self.stem = residual(in_channels, features[0])
        self.excite = nn.ModuleList(ChannelSELayer(spatial_dims, f, r=min(SE_REDUCTION, f)) for f in features[:-1])
        self.encoder = nn.ModuleList(residual(c_in, c_out, strides=2) for c_in, c_out in itertools.pairwise(features))
        self.bridge = _aspp(spatial_dims, features[-1], 2 * features[-1])
        self.attention, self.decoder = nn.ModuleList(), nn.ModuleList()
        width = 2 * features[-1]
        for skip, out in zip(features[-2::-1], features[:0:-1]):
            self.attention.append(AttentionGate(spatial_dims, skip, width))
            self.decoder.append(residual(width + skip, out))
            width = out
        self.up = UpSample(spatial_dims, scale_factor=2, mode="nontrainable", interp_mode="nearest", align_corners=None)
        self.output_aspp = _aspp(spatial_dims, features[1], features[0])
        self.head = Convolution(spatial_dims, features[0], out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.excite[0](self.stem(x))]
        for block, excite in zip(self.encoder, self.excite[1:]):
            skips.append(excite(block(skips[-1])))
        x = self.bridge(self.encoder[-1](skips[-1]))
        for skip, attention, block in zip(reversed(skips), self.attention, self.decoder):
            x = block(torch.cat([self.up(attention(skip, x)), skip], dim=1))
        return self.head(self.output_aspp(x))


def build_resunetpp(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                    patch_size: Sequence[int] | None = None) -> nn.Module:
    """ResUNet++ at the reference code's widths unless ``features`` says otherwise."""
    features = tuple(params.get("features", FEATURES))
    check_patch_multiple("resunetpp", patch_size, 2 ** (len(features) - 1))
    return ResUNetPlusPlus(spatial_dims, in_channels, out_channels, features=features, dropout=params.get("dropout", 0.0))
