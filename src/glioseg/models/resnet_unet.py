"""A MedicalNet-compatible 3D ResNet encoder with a U-Net decoder (study 2: transfer learning).

Built on MONAI's ``FlexibleUNet`` with a ``resnet10/18/34/50`` backbone: the
encoder is MONAI's ``ResNet`` (``ResNetFeatures``) with MedicalNet's stem
(7x7x7 convolution, stride 2, then max-pooling) and MedicalNet's shortcut per
depth (``B``, a 1x1x1 convolution without bias, for 10 and 50; ``A``, the
parameter-free zero-padded identity, for 18 and 34), so MedicalNet's weights
load into ``encoder.*`` once their ``module.`` prefix is replaced and the first
convolution adapted with :func:`adapt_first_conv`. Unlike MedicalNet, whose
layer3 and layer4 keep stride 1 with dilations 2 and 4 (output stride 8),
MONAI's layer3 and layer4 downsample (output stride 32): the weights have the
same shapes, but those two stages see features at other scales than they were
pretrained on.

The decoder (MONAI's ``UNetDecoder``, after segmentation_models.pytorch)
upsamples five times by 2, concatenating the encoder's features at 1/16, 1/8,
1/4 and 1/2 of the input, and a 3x3x3 convolution gives logits at the input
resolution. It uses instance norm: with 3D batches of 2, batch statistics are
noisy and the eval-mode running averages differ from them. The encoder keeps
MedicalNet's batch norm.

``freeze_encoder``: ``"finetune"`` trains everything; ``"frozen"`` never
trains the encoder; an integer N freezes it for epochs 1..N and trains it from
epoch N+1 (see :meth:`ResNetUNet.on_epoch_start`). A frozen encoder has
``requires_grad=False`` and no gradients, so the optimiser skips it entirely
(PyTorch's Adam/AdamW/SGD skip parameters whose ``grad`` is ``None``: no weight
decay, no momentum), and its batch-norm layers stay in eval mode, so their
running statistics do not drift either.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import FlexibleUNet
from torch import nn

log = logging.getLogger(__name__)

DEPTHS = (10, 18, 34, 50)
DIVISOR = 32
"""The encoder downsamples five times: patch sides must be multiples of this (at 32, train with batches of 2 or
more, or batch norm meets a single value per channel at the bottom)."""
FIRST_CONV = "encoder.conv1.weight"
"""The state-dict key of the encoder's first convolution in :class:`ResNetUNet`."""

FreezeSchedule = str | int


class ResNetUNet(FlexibleUNet):
    """FlexibleUNet with a MONAI ResNet encoder and a freezing schedule for it."""

    def __init__(self, in_channels: int, out_channels: int, *, depth: int = 18,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), freeze_encoder: FreezeSchedule = "finetune",
                 spatial_dims: int = 3) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"resnet_unet depth must be one of {DEPTHS}, got {depth}")
        if len(decoder_channels) != 5:
            raise ValueError(f"resnet_unet needs 5 decoder_channels (one per upsampling), got {list(decoder_channels)}")
        if not (freeze_encoder in ("frozen", "finetune")
                or (isinstance(freeze_encoder, int) and not isinstance(freeze_encoder, bool) and freeze_encoder >= 0)):
            raise ValueError(f"freeze_encoder must be 'frozen', 'finetune' or a number of epochs, got {freeze_encoder!r}")
        super().__init__(in_channels=in_channels, out_channels=out_channels, backbone=f"resnet{depth}", pretrained=False,
                         decoder_channels=tuple(decoder_channels), spatial_dims=spatial_dims,
                         norm=("instance", {"affine": True}))
        self.freeze_encoder = freeze_encoder
        self.encoder_frozen = False
        self.set_encoder_frozen(self.frozen_at(1))

    def frozen_at(self, epoch: int) -> bool:
        """Whether the schedule freezes the encoder during ``epoch`` (1-based)."""
        if self.freeze_encoder == "frozen":
            return True
        if self.freeze_encoder == "finetune":
            return False
        return epoch <= int(self.freeze_encoder)

    def set_encoder_frozen(self, frozen: bool) -> None:
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)
            if frozen:
                parameter.grad = None
        self.encoder_frozen = frozen
        self.encoder.train(self.training and not frozen)

    def train(self, mode: bool = True) -> ResNetUNet:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def on_epoch_start(self, epoch: int) -> None:
        frozen = self.frozen_at(epoch)
        if frozen != self.encoder_frozen:
            log.info("epoch %d: encoder %s", epoch, "frozen" if frozen else "unfrozen, trained from now on")
        self.set_encoder_frozen(frozen)


def adapt_first_conv(state_dict: Mapping[str, torch.Tensor], key: str, in_channels: int) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` whose convolution ``key`` takes ``in_channels`` inputs.

    The kernel's input channels are repeated (cycled) to ``in_channels`` and
    scaled by ``old / in_channels``, so that an input with the same image in
    every channel gives exactly the activations of the original kernel on that
    image (timm's ``adapt_input_conv`` convention). For MedicalNet's 1-channel
    kernels and 4 modalities: each modality gets the kernel divided by 4.
    """
    if key not in state_dict:
        convolutions = [k for k, v in state_dict.items() if k.endswith("weight") and v.dim() >= 3][:5]
        raise KeyError(f"no '{key}' in the state dict (first convolution weights there: {convolutions})")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    weight = state_dict[key]
    old = weight.shape[1]
    adapted = dict(state_dict)
    if old != in_channels:
        repeats = math.ceil(in_channels / old)
        tiled = weight.repeat(1, repeats, *([1] * (weight.dim() - 2)))[:, :in_channels]
        adapted[key] = (tiled * (old / in_channels)).contiguous()
    return adapted


def build_resnet_unet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                      patch_size: Sequence[int] | None = None) -> nn.Module:
    if patch_size is not None and any(int(s) % DIVISOR for s in patch_size):
        raise ValueError(f"resnet_unet needs a patch whose sides are multiples of {DIVISOR}, not {list(patch_size)}")
    return ResNetUNet(
        in_channels,
        out_channels,
        depth=params.get("depth", 18),
        decoder_channels=tuple(params.get("decoder_channels", (256, 128, 64, 32, 16))),
        freeze_encoder=params.get("freeze_encoder", "finetune"),
        spatial_dims=spatial_dims,
    )
