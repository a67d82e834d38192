"""Model registry: a name in config → a network, mostly MONAI's.

Every model maps ``in_channels`` modalities to one logit channel per region.
Adding a model is one builder function and one entry in :data:`MODELS` (and
its name and ``params`` in the config schema; a test keeps the names in step).
Models whose training differs from ``loss_fn(model(x), y)`` implement the
optional :class:`TrainingHooks` methods; the training loop calls them through
:func:`training_loss` and :func:`on_epoch_start`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from glioseg.models.base import (
    ModelBuilder,
    TrainingHooks,
    on_epoch_start,
    training_loss,
)
from glioseg.models.dynunet import build_dynunet
from glioseg.models.resnet_unet import adapt_first_conv, build_resnet_unet
from glioseg.models.resunetpp import build_resunetpp
from glioseg.models.segresnet import build_segresnet, build_segresnet_vae
from glioseg.models.swin import build_swin_unetr
from glioseg.models.unet import build_unet
from glioseg.models.unet2d import build_attention_unet, build_basic_unet
from glioseg.models.unet3plus import build_unet3plus

__all__ = ["MODELS", "ModelBuilder", "TrainingHooks", "adapt_first_conv", "build_model", "build_unet", "on_epoch_start",
           "training_loss"]

MODELS: dict[str, ModelBuilder] = {
    "unet": build_unet,
    "swin_unetr": build_swin_unetr,
    "segresnet": build_segresnet,
    "segresnet_vae": build_segresnet_vae,
    "dynunet": build_dynunet,
    "resnet_unet": build_resnet_unet,
    "basic_unet": build_basic_unet,
    "attention_unet": build_attention_unet,
    "unet3plus": build_unet3plus,
    "resunetpp": build_resunetpp,
}


def build_model(spec: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int = 3, *,
                patch_size: Sequence[int] | None = None) -> nn.Module:
    """Build the network an experiment's ``model`` section names.

    ``patch_size`` is the training patch: ``dynunet`` derives its topology from
    it and ``segresnet_vae`` sizes its VAE with it (unless their params give
    ``kernel_size``/``strides`` or ``input_image_size``); the others ignore it.
    """
    try:
        builder = MODELS[spec["name"]]
    except KeyError:
        raise KeyError(f"unknown model '{spec['name']}'; known models: {sorted(MODELS)}") from None
    return builder(spec.get("params", {}), in_channels, out_channels, spatial_dims, patch_size=patch_size)
