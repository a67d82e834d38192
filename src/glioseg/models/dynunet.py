"""DynUNet: MONAI's nnU-Net-style U-Net, its topology derived from the patch and the voxel spacing.

:func:`nnunet_topology` follows nnU-Net's rule (as in MONAI's DynUNet
tutorial): at every level each axis is downsampled by 2 while its spacing is
within 2x of the finest axis and its feature map stays at least 4 voxels wide,
and an axis too coarse for that gets a kernel of 1 in-plane. Filters follow
nnU-Net (32, 64, ... capped at 320) unless given.

With ``deep_supervision`` MONAI 1.6's ``DynUNet`` returns, in training only, a
tensor ``(B, 1 + deep_supr_num, C, *patch)``: the full-resolution logits and
the lower decoder heads, nearest-upsampled to the patch size. In evaluation it
returns the logits alone. :meth:`DeepSupervisedDynUNet.training_loss` weights
the heads as nnU-Net does: 1, 1/2, 1/4, ... normalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import DynUNet
from torch import nn

from glioseg.models.base import LossFn, require_patch_size

MIN_FEATURE_MAP = 4
"""nnU-Net stops downsampling an axis once it would fall below this many voxels."""
FILTER_CAP = 320
"""nnU-Net's largest 3D feature count, for the default base of 32 filters."""


def nnunet_topology(patch_size: Sequence[int], spacing: Sequence[float] | None = None
                    ) -> tuple[list[list[int]], list[list[int]]]:
    """Kernel sizes and strides for each level of a DynUNet, the nnU-Net way.

    Returns ``(kernel_size, strides)``, each one list of per-axis values per
    level: the first stride is 1 (the input block) and the last kernel 3 (the
    bottleneck), as ``DynUNet`` expects.
    """
    sizes = [int(s) for s in patch_size]
    spacings = [float(s) for s in (spacing if spacing is not None else [1.0] * len(sizes))]
    if len(spacings) != len(sizes):
        raise ValueError(f"spacing {spacings} does not match the patch {sizes}")
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * len(sizes)]
    while True:
        ratios = [s / min(spacings) for s in spacings]
        stride = [2 if r <= 2 and n >= 2 * MIN_FEATURE_MAP else 1 for r, n in zip(ratios, sizes)]
        kernel = [3 if r <= 2 else 1 for r in ratios]
        if all(s == 1 for s in stride):
            break
        if any(n % s for n, s in zip(sizes, stride)):
            raise ValueError(f"patch {list(patch_size)} cannot be halved evenly at the size {sizes}: choose sides with "
                             "more factors of 2")
        sizes = [n // s for n, s in zip(sizes, stride)]
        spacings = [sp * s for sp, s in zip(spacings, stride)]
        kernels.append(kernel)
        strides.append(stride)
    kernels.append([3] * len(sizes))
    if len(strides) < 3:
        raise ValueError(f"patch {list(patch_size)} is too small for a DynUNet: it needs at least two downsamplings")
    return kernels, strides


def deep_supervision_weights(outputs: int) -> torch.Tensor:
    """nnU-Net's weights for the full-resolution output and ``outputs - 1`` lower heads: halving, summing to 1."""
    weights = torch.tensor([0.5**i for i in range(outputs)])
    return weights / weights.sum()


class DeepSupervisedDynUNet(DynUNet):
    """MONAI's DynUNet whose training loss understands its stacked deep-supervision output."""

    def training_loss(self, output: torch.Tensor, target: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        if output.dim() != target.dim() + 1:  # no deep supervision (or evaluation mode): plain logits
            return loss_fn(output, target)
        losses = torch.stack([loss_fn(head, target) for head in torch.unbind(output, dim=1)])
        return (deep_supervision_weights(len(losses)).to(losses) * losses).sum()


def _filters(spec: Any, levels: int) -> list[int] | None:
    if spec is None:
        return None  # MONAI's nnU-Net default
    if isinstance(spec, int):
        return [min(spec * 2**i, spec * FILTER_CAP // 32) for i in range(levels)]
    if len(spec) != levels:
        raise ValueError(f"dynunet has {levels} levels for this patch, but filters lists {len(spec)}")
    return [int(f) for f in spec]


def build_dynunet(params: Mapping[str, Any], in_channels: int, out_channels: int, spatial_dims: int, *,
                  patch_size: Sequence[int] | None = None) -> nn.Module:
    if ("kernel_size" in params) != ("strides" in params):
        raise ValueError("dynunet needs kernel_size and strides together, or neither (derived from the patch)")
    if "kernel_size" in params:
        kernels, strides = list(params["kernel_size"]), list(params["strides"])
    else:
        patch = require_patch_size("dynunet", patch_size, "kernel_size and strides")
        kernels, strides = nnunet_topology(patch, params.get("spacing"))
    return DeepSupervisedDynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=_filters(params.get("filters"), len(strides)),
        res_block=params.get("res_block", False),
        deep_supervision=params.get("deep_supervision", True),
        deep_supr_num=params.get("deep_supr_num", min(2, len(strides) - 2)),
    )
