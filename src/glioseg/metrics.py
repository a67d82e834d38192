"""Per-region segmentation scores with the BraTS conventions made explicit.

:func:`score_region` scores one binary region mask (TC, WT or ET; 2D or 3D)
against the truth. The maths is MONAI's (``compute_dice``,
``compute_hausdorff_distance``, ``get_confusion_matrix`` with
``compute_confusion_matrix_metric``); this module only decides what the scores
mean when a region is empty, because there MONAI answers NaN or warns, and one
NaN silently drops a case from a mean.

Conventions (BraTS style):

=====================  ==========  ===============  ===========  ===========  ================
truth / prediction     dice, iou   hd95             sensitivity  precision    specificity
=====================  ==========  ===============  ===========  ===========  ================
empty / empty          1.0         0.0              1.0          1.0          1.0
empty / non-empty      0.0         image diagonal   1.0          0.0          confusion matrix
non-empty / empty      0.0         image diagonal   0.0          1.0          confusion matrix
non-empty / non-empty  MONAI       MONAI            MONAI        MONAI        MONAI
=====================  ==========  ===============  ===========  ===========  ================

* Sensitivity is 1.0 whenever the truth is empty: there is nothing to miss, so
  a prediction cannot do worse than perfect on that count (false positives are
  what dice, hd95 and specificity punish). Symmetrically, precision is 1.0
  when nothing is predicted (nothing claimed wrongly), and specificity is 1.0
  when the truth covers the whole image: there is nothing to flag wrongly.
* ``tp``, ``fp``, ``fn``, ``tn`` are the voxel counts themselves, so that
  tables can pool them over cases (study 3's per-class sensitivity,
  specificity, precision and F1 over a whole test set).
* The worst-case hd95 is the diagonal of the image extent,
  ``sqrt(sum((shape_i * spacing_i) ** 2))`` (:func:`image_diagonal_mm`): no
  two voxels of the image are further apart, so a missing or spurious region
  scores worse than any real boundary error in the same image.
* hd95 is MONAI's symmetric 95th-percentile Hausdorff distance in the unit of
  the spacing (millimetres for NIfTI; pixels for volumes stacked from images
  without a spacing, such as LGG kaggle_3m, whose unit spacing is no size):
  distances between the centres of the edge voxels of the two masks, scaled by
  the voxel spacing, so anisotropic spacing changes the answer. MONAI takes the
  95th percentile of each direction separately (linear interpolation) and
  reports the larger; it does not pool the two directions as medpy's ``hd95``
  does, so the two can differ on asymmetric shapes.

No score is ever NaN or infinite.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)


@dataclass(frozen=True)
class RegionScore:
    """The scores of one region of one case, all finite."""

    dice: float
    hd95: float  # in the spacing's unit: mm, or px where the spacing is not physical
    sensitivity: float
    specificity: float
    truth_voxels: int
    pred_voxels: int
    iou: float
    precision: float
    tp: int
    fp: int
    fn: int
    tn: int


def score_region(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> RegionScore:
    """Score one binary region mask (3D or 2D, same shape) against the truth.

    Any non-zero voxel counts as inside the region, so bool, uint8 (0/1 or
    0/255) and int masks all work. ``spacing`` is the voxel size (mm, or 1 per pixel) along
    each axis of the arrays. Raises ValueError on mismatched shapes, masks that
    are not 2D or 3D, or a spacing that does not fit them.
    """
    pred_mask, truth_mask = np.asarray(pred) != 0, np.asarray(truth) != 0
    spacing_mm = _checked_spacing(pred_mask.shape, truth_mask.shape, spacing)
    pred_t, truth_t = _as_batch(pred_mask), _as_batch(truth_mask)
    confusion = get_confusion_matrix(pred_t, truth_t, include_background=True)
    tp, fp, tn, fn = (int(v) for v in confusion.flatten().tolist())
    return RegionScore(
        dice=float(compute_dice(pred_t, truth_t, include_background=True, ignore_empty=False).item()),
        hd95=_hd95(pred_t, truth_t, spacing_mm),
        sensitivity=_ratio_metric("sensitivity", confusion, tp + fn),
        specificity=_ratio_metric("specificity", confusion, tn + fp),
        truth_voxels=tp + fn,
        pred_voxels=tp + fp,
        iou=float(compute_iou(pred_t, truth_t, include_background=True, ignore_empty=False).item()),
        precision=_ratio_metric("precision", confusion, tp + fp),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
    )


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The largest distance inside an image: the hd95 given when one mask is empty."""
    return math.hypot(*(n * s for n, s in zip(shape, spacing, strict=True)))


def _checked_spacing(
    pred_shape: tuple[int, ...], truth_shape: tuple[int, ...], spacing: Sequence[float]
) -> tuple[float, ...]:
    """Validate the inputs and return the spacing as plain floats.

    MONAI rejects a spacing that mixes ints and floats, or holds numpy float32
    values, so the spacing is normalised here rather than left to fail there.
    """
    if pred_shape != truth_shape:
        raise ValueError(f"prediction shape {pred_shape} does not match truth shape {truth_shape}")
    if len(pred_shape) not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {pred_shape}")
    spacing_mm = tuple(float(s) for s in spacing)
    if len(spacing_mm) != len(pred_shape) or not all(math.isfinite(s) and s > 0 for s in spacing_mm):
        raise ValueError(f"spacing {spacing_mm} must give one positive size per axis of shape {pred_shape}")
    return spacing_mm


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    """Shape a boolean mask as MONAI's (batch=1, channel=1, *spatial) float 0/1 tensor.

    The values must be exactly 0/1: with one channel, ``compute_dice`` reads
    the channel as class labels and scores label 1, so a 0/255 mask would
    score as empty.
    """
    return torch.as_tensor(mask, dtype=torch.float32)[None, None]


def _hd95(pred: torch.Tensor, truth: torch.Tensor, spacing: tuple[float, ...]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in the spacing's unit, with the empty-mask conventions.

    Empty masks are settled here, before MONAI, which would return NaN and
    warn for them.
    """
    pred_empty, truth_empty = not bool(pred.any()), not bool(truth.any())
    if pred_empty and truth_empty:
        return 0.0
    if pred_empty or truth_empty:
        return image_diagonal_mm(pred.shape[2:], spacing)
    with warnings.catch_warnings():
        # MONAI 1.6.1 passes its own deprecated ``always_return_as_numpy``
        # argument internally, so every call warns; no caller can act on it.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        distance = compute_hausdorff_distance(pred, truth, include_background=True, percentile=95, spacing=spacing)
    return float(distance.item())


def _ratio_metric(name: str, confusion: torch.Tensor, denominator: int) -> float:
    """A confusion-matrix ratio from MONAI, 1.0 where its denominator is empty (where MONAI would answer NaN)."""
    if denominator == 0:
        return 1.0
    return float(compute_confusion_matrix_metric(name, confusion).item())
