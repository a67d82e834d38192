"""U-Net 3+ (Huang et al. 2020): full-scale skip connections, in 2D or 3D.

A U-Net decoder stage sees one encoder scale and the stage below it; small
tumours need fine detail and large ones coarse context at every stage. U-Net 3+
gives each decoder stage every scale: the encoder maps at or above its
resolution (max-pooled down to it) and every deeper decoder map (upsampled
linearly), each reduced to ``cat_channels`` by a 3x3 conv-norm-ReLU, then
concatenated and fused by one more. Built from MONAI's ``Convolution`` and
``UpSample``, so it works in 3D as well.

Two options serve the studies' ablations: ``bridge=False`` leaves out the
convolution block at the deepest level (the "bottleneck bridge"), so the decoder
gets the max-pooled output of the last encoder stage as it is and
``features[-1]`` goes unused; ``dilation`` dilates the encoder's convolutions.

Left out: the paper's deep supervision (a head per decoder stage) and its
classification-guided module (an image-level "anything there?" branch that
blanks predictions). Both need extra training outputs and their own losses; the
network returns the top decoder stage's logits only. Patch sides must be
multiples of ``2 ** (len(features) - 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool
from torch import nn

from glioseg.models.base import check_patch_multiple

FEATURES = (64, 128, 256, 512, 1024)
"""The paper's encoder widths, the last being the bridge's."""


def _conv(spatial_dims: int, in_channels: int, out_channels: int, norm: str, dropout: float,
          dilation: int = 1) -> Convolution:
    """3x3 convolution, norm, (dropout,) ReLU: the one layer U-Net 3+ is made of."""
    return Convolution(spatial_dims, in_channels, out_channels, kernel_size=3, act="relu", norm=norm,
                       dropout=dropout or None, dilation=dilation)


def _resample(spatial_dims: int, steps: int) -> nn.Module:
    """From a map ``steps`` halvings coarser (negative: finer) to this scale: upsample linearly or max-pool."""
    if steps > 0:
        return UpSample(spatial_dims, scale_factor=2**steps, mode="nontrainable", interp_mode="linear",
                        align_corners=False)
    if steps < 0:
        return Pool[Pool.MAX, spatial_dims](kernel_size=2**-steps, ceil_mode=True)
    return nn.Identity()


def _stage_inputs(widths: Sequence[int], level: int, fused: int) -> list[int]:
    """The channels a decoder stage at ``level`` gets, finest first: encoder maps, deeper decoder stages, the deepest."""
    return [*widths[:level + 1], *[fused] * (len(widths) - 2 - level), widths[-1]]


class FullScaleStage(nn.Module):
    """One decoder stage: every scale resampled to this one, reduced, concatenated and fused."""

    def __init__(self, spatial_dims: int, level: int, in_channels: Sequence[int], cat_channels: int, norm: str,
                 dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(_resample(spatial_dims, scale - level),
                          _conv(spatial_dims, channels, cat_channels, norm, dropout))
            for scale, channels in enumerate(in_channels)
        )
        width = cat_channels * len(in_channels)
        self.fuse = _conv(spatial_dims, width, width, norm, dropout)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fuse(torch.cat([branch(m) for branch, m in zip(self.branches, maps)], dim=1))


class UNet3Plus(nn.Module):
    """U-Net 3+ without deep supervision or classification guidance; returns logits at the input's size."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int] = FEATURES,
                 cat_channels: int = 64, norm: str = "batch", dropout: float = 0.0, dilation: int = 1,
                 bridge: bool = True) -> None:
        super().__init__()
        if len(features) < 2:
            raise ValueError(f"U-Net 3+ needs at least 2 levels of features, got {list(features)}")
        self.down = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.encoder = nn.ModuleList(
            self._block(spatial_dims, c_in, c_out, norm, dropout, dilation)
            for c_in, c_out in zip((in_channels, *features[:-2]), features[:-1])
        )
        self.bridge = (self._block(spatial_dims, features[-2], features[-1], norm, dropout, dilation) if bridge
                       else nn.Identity())
        widths = [*features[:-1], features[-1] if bridge else features[-2]]
        fused = cat_channels * len(widths)
        self.decoder = nn.ModuleList(
            FullScaleStage(spatial_dims, level, _stage_inputs(widths, level, fused), cat_channels, norm, dropout)
            for level in reversed(range(len(widths) - 1))
        )
        self.head = Convolution(spatial_dims, fused, out_channels, kernel_size=3, conv_only=True)

    @staticmethod
    def _block(spatial_dims: int, in_channels: int, out_channels: int, norm: str, dropout: float,
               dilation: int) -> nn.Sequential:
        return nn.Sequential(_conv(spatial_dims, in_channels, out_channels, norm, dropout, dilation),
                             _conv(spatial_dims, out_channels, out_channels, norm, dropout, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = [self.encoder[0](x)]
        for block in self.encoder[1:]:
            encoded.append(block(self.down(encoded[-1])))
        decoded = [self.bridge(self.down(encoded[-1]))]  # the maps below the current stage, finest first
        for level, stage in zip(reversed(range(len(encoded))), self.decoder):
            decoded.insert(0, stage([*encoded[:level + 1], *decoded]))
        return self.head(decoded[0])


def build_unet3plus(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                    patch_size: Sequence[int] | None = None) -> nn.Module:
    """U-Net 3+ at the paper's widths unless ``features`` says otherwise, with batch norm as in the paper."""
    features = tuple(params.get("features", FEATURES))
    check_patch_multiple("unet3plus", patch_size, 2 ** (len(features) - 1))
    return UNet3Plus(
        spatial_dims,
        in_channels,
        out_channels,
        features=features,
        cat_channels=params.get("cat_channels", 64),
        norm=params.get("norm", "batch"),
        dropout=params.get("dropout", 0.0),
        dilation=params.get("dilation", 1),
        bridge=params.get("bridge", True),
    )
