"""What every model module shares: the builder signature and the training hooks.

Most networks map an image to logits in training and in evaluation alike. A few
return more while training (DynUNet's deep-supervision heads, SegResNetVAE's
reconstruction loss) or change during training (a ResNet encoder frozen for the
first epochs). They implement the optional :class:`TrainingHooks` methods, and
the training loop calls :func:`training_loss` and :func:`on_epoch_start`, which
fall back to the plain behaviour for every other model. In evaluation mode every
model returns plain logits, so inference needs no hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModelBuilder(Protocol):
    """``builder(params, in_channels, out_channels, spatial_dims, patch_size=None) -> nn.Module``.

    ``params`` is the model's ``params`` section of the config; ``patch_size``
    is the training patch, which a few models need to size themselves.
    """

    def __call__(self, params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                 patch_size: Sequence[int] | None = None) -> nn.Module: ...


@runtime_checkable
class TrainingHooks(Protocol):
    """Optional methods a model defines when its training differs from ``loss_fn(model(x), y)``."""

    def training_loss(self, output: Any, target: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """The loss of one training batch, given what ``forward`` returned in training mode."""
        ...

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (1-based) is trained, including the first epoch after a resume."""
        ...


def levels(params: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """A MONAI U-Net's ``channels`` (default 16..256) and ``strides`` (default 2 between every pair of levels)."""
    channels = tuple(params.get("channels", (16, 32, 64, 128, 256)))
    return {"channels": channels, "strides": tuple(params.get("strides", (2,) * (len(channels) - 1)))}


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside ``DataParallel``/``DistributedDataParallel`` or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def training_loss(model: nn.Module, output: Any, target: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """The loss of one training step: the model's own combination if it has one, else ``loss_fn(output, target)``."""
    hook = getattr(_unwrap(model), "training_loss", None)
    if callable(hook):
        return hook(output, target, loss_fn)
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"{type(_unwrap(model)).__name__} returned {type(output).__name__} in training; a model with "
                        "extra training outputs must define training_loss(output, target, loss_fn)")
    return loss_fn(output, target)


def on_epoch_start(model: nn.Module, epoch: int) -> None:
    """Let the model adjust itself before epoch ``epoch`` (1-based); a no-op for most models."""
    hook = getattr(_unwrap(model), "on_epoch_start", None)
    if callable(hook):
        hook(epoch)


def check_patch_multiple(model: str, patch_size: Sequence[int] | None, multiple: int) -> None:
    """Refuse a patch whose sides the network's downsamplings cannot divide.

    Such a network builds, then fails at its first skip connection with a raw
    tensor-size error hours into a job; checked when the network is built
    (which the config check does at Snakemake's start), it is one clear line.
    """
    if patch_size is None:
        return
    sides = [int(s) for s in patch_size]
    if any(side % multiple for side in sides):
        raise ValueError(f"{model}'s downsamplings need every side of the patch to be a multiple of {multiple}; "
                         f"the patch {sides} is not (try {[-(-side // multiple) * multiple for side in sides]})")


def require_patch_size(model: str, patch_size: Sequence[int] | None, alternative: str) -> Sequence[int]:
    """``patch_size`` or a clear error naming what to pass instead."""
    if patch_size is None:
        raise ValueError(f"model '{model}' needs the training patch size: call build_model(..., patch_size=...) "
                         f"or set {alternative} in the model's params")
    return tuple(int(s) for s in patch_size)
