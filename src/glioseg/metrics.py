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

:func:`score_lesions` adds the BraTS 2023 challenge's lesion-wise Dice and
HD95, which score each tumour lesion on its own so that a missed small lesion
weighs as much as a missed large one (docs/decisions.md, "Lesion-wise scores").
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
from scipy import ndimage as ndi


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


# ---------------------------------------------------------------- lesion-wise (BraTS 2023)


@dataclass(frozen=True)
class LesionWiseParameters:
    """How the BraTS 2023 lesion-wise scores match lesions (:func:`score_lesions`).

    ``dilation``: iterations of the 18-neighbourhood dilation (3D; the 8-neighbourhood in 2D) that
    grows each truth lesion before predicted components are matched to it; truth lesions whose
    dilations touch count as one. ``min_voxels``: truth lesions of this many voxels or fewer are
    left out of the score (a prediction on one is neither counted nor penalised). ``hd95_penalty``:
    the hd95 of a missed lesion and of a false-positive component, in the spacing's unit.
    """

    dilation: int = 3
    min_voxels: int = 50
    hd95_penalty: float = 374.0


#: The BraTS 2023 challenge's settings per cohort (its lesion-wise evaluation: GLI, SSA and PED dilate
#: by 3 voxels and ignore lesions of 50 voxels or fewer; MEN dilates by 1; MET dilates by 1 and ignores
#: lesions of 2 voxels or fewer).
BRATS2023_LESION_PARAMETERS: dict[str, LesionWiseParameters] = {
    "GLI": LesionWiseParameters(3, 50),
    "SSA": LesionWiseParameters(3, 50),
    "PED": LesionWiseParameters(3, 50),
    "MEN": LesionWiseParameters(1, 50),
    "MET": LesionWiseParameters(1, 2),
}


@dataclass(frozen=True)
class LesionWiseScore:
    """The lesion-wise scores of one region of one case, all finite.

    ``dice`` and ``hd95`` average one entry per counted truth lesion and one per false-positive
    component; ``lesions_found`` and ``lesions_missed`` count the truth lesions (above the size
    threshold) with and without a matching predicted component, ``false_lesions`` the predicted
    components that touch no (dilated) truth lesion.
    """

    dice: float
    hd95: float
    lesions_found: int
    lesions_missed: int
    false_lesions: int


def score_lesions(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
                  parameters: LesionWiseParameters = LesionWiseParameters()) -> LesionWiseScore:
    """The BraTS 2023 lesion-wise Dice and HD95 of one binary region mask (2D or 3D) against the truth.

    Lesions are connected components (full connectivity: 26 neighbours in 3D)
    of the truth, merged where their dilations (``parameters.dilation``)
    touch. A lesion is matched by every predicted component that overlaps its
    dilation; its Dice and HD95 compare it with the union of those components
    (a missed lesion scores Dice 0 and HD95 ``hd95_penalty``). Predicted
    components overlapping no dilated lesion are false positives, each adding
    an entry of Dice 0 and HD95 ``hd95_penalty``. Lesions of
    ``parameters.min_voxels`` voxels or fewer are left out. With no entry at
    all (no lesion to score, nothing false predicted) Dice is 1 and HD95 0.
    """
    pred_mask, truth_mask = np.asarray(pred) != 0, np.asarray(truth) != 0
    spacing_mm = _checked_spacing(pred_mask.shape, truth_mask.shape, spacing)
    full = ndi.generate_binary_structure(truth_mask.ndim, truth_mask.ndim)
    grown = ndi.binary_dilation(truth_mask, ndi.generate_binary_structure(truth_mask.ndim, 2), parameters.dilation) \
        if parameters.dilation > 0 else truth_mask
    zones, n_zones = ndi.label(grown, full)  # one zone per lesion, lesions whose dilations touch merged
    components, _ = ndi.label(pred_mask, full)
    component_boxes = ndi.find_objects(components)
    lesions = np.where(truth_mask, zones, 0)
    sizes = np.bincount(lesions.ravel(), minlength=n_zones + 1)
    matched = set()
    dice, hd95 = [], []
    found = missed = 0
    for zone, box in enumerate(ndi.find_objects(zones), start=1):
        touching = np.unique(components[box][zones[box] == zone])
        touching = touching[touching != 0]
        matched.update(touching.tolist())
        if sizes[zone] <= parameters.min_voxels:
            continue
        if touching.size == 0:
            missed += 1
            dice.append(0.0)
            hd95.append(parameters.hd95_penalty)
            continue
        found += 1
        # every voxel of the lesion and of its components lies in the union of their boxes: score inside it
        around = _union_box([box, *(component_boxes[c - 1] for c in touching)], truth_mask.shape)
        lesion_dice, lesion_hd95 = _lesion_scores(lesions[around] == zone, np.isin(components[around], touching), spacing_mm)
        dice.append(lesion_dice)
        hd95.append(lesion_hd95)
    false_lesions = len(set(np.unique(components[components != 0]).tolist()) - matched)
    dice += [0.0] * false_lesions
    hd95 += [parameters.hd95_penalty] * false_lesions
    if not dice:
        return LesionWiseScore(1.0, 0.0, 0, 0, 0)
    return LesionWiseScore(float(np.mean(dice)), float(np.mean(hd95)), found, missed, false_lesions)


def _union_box(boxes: Sequence[tuple[slice, ...]], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The smallest box holding all ``boxes``, grown by one voxel (inside the image), so that MONAI finds the same
    mask edges in it as in the whole image, at a fraction of the cost."""
    return tuple(slice(max(min(b[axis].start for b in boxes) - 1, 0), min(max(b[axis].stop for b in boxes) + 1, n))
                 for axis, n in enumerate(shape))


def _lesion_scores(lesion: np.ndarray, pred: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """Dice and HD95 of one lesion and the predicted components matched to it, both non-empty."""
    pred_t, truth_t = _as_batch(pred), _as_batch(lesion)
    dice = float(compute_dice(pred_t, truth_t, include_background=True, ignore_empty=False).item())
    return dice, _hd95(pred_t, truth_t, spacing)
