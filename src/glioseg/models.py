"""Model registry: a name in config → a MONAI network.

Every model maps ``in_channels`` modalities to one logit channel per region.
Adding a model is one builder function and one entry in :data:`MODELS`
(and its name in the config schema's enum; a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monai.networks.nets import UNet
from torch import nn

ModelBuilder = Callable[[Mapping[str, Any], int, int, int], nn.Module]


def build_unet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int) -> nn.Module:
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


MODELS: dict[str, ModelBuilder] = {"unet": build_unet}


def build_model(spec: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int = 3) -> nn.Module:
    """Build the network an experiment's ``model`` section names."""
    try:
        builder = MODELS[spec["name"]]
    except KeyError:
        raise KeyError(f"unknown model '{spec['name']}'; known models: {sorted(MODELS)}") from None
    return builder(spec.get("params", {}), in_channels, out_channels, spatial_dims)
