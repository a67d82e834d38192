"""Per-region scores against hand-computed cases.

How MONAI measures hd95 (checked in monai 1.6.1's source): the edge voxels of
each mask are the mask minus its binary erosion; every edge voxel of one mask
gets the distance (voxel centre to voxel centre, times the spacing) to the
nearest edge voxel of the other; the 95th percentile of each direction is
taken with linear interpolation, and the larger of the two is hd95.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from glioseg.metrics import RegionScore, image_diagonal_mm, score_region

# MONAI warns on empty masks and on its own deprecated arguments; none of that may reach users.
pytestmark = pytest.mark.filterwarnings("error")

SHAPE = (20, 20, 20)


def cube(offset: tuple[int, int, int] = (0, 0, 0), side: int = 10, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A side**3 cube starting at voxel (5, 5, 5) + offset."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(5 + o, 5 + o + side) for o in offset)] = True
    return mask


def test_identical_masks_score_perfectly():
    score = score_region(cube(), cube(), (1.0, 1.0, 1.0))
    assert score == RegionScore(
        dice=1.0, hd95=0.0, sensitivity=1.0, specificity=1.0, truth_voxels=1000, pred_voxels=1000,
        iou=1.0, precision=1.0, tp=1000, fp=0, fn=0, tn=7000,
    )


def test_shifted_cube_overlap_scores():
    # Shifting a 10-voxel cube by 2 along axis 0 keeps 8 of its 10 slabs: 800 voxels in common.
    score = score_region(cube((2, 0, 0)), cube(), (1.0, 1.0, 1.0))
    assert score.dice == pytest.approx(2 * 800 / 2000)
    assert score.sensitivity == pytest.approx(800 / 1000)
    # tn = 8000 voxels - |truth ∪ pred| (1200) = 6800, of 8000 - 1000 = 7000 truth-negative voxels.
    assert score.specificity == pytest.approx(6800 / 7000)
    assert (score.truth_voxels, score.pred_voxels) == (1000, 1000)
    assert (score.tp, score.fp, score.fn, score.tn) == (800, 200, 200, 6800)
    assert score.iou == pytest.approx(800 / 1200) and score.precision == pytest.approx(800 / 1000)


@pytest.mark.parametrize(
    ("axis", "k", "spacing", "expected_mm"),
    [
        (0, 2, (1.0, 1.0, 1.0), 2.0),
        (1, 3, (1.0, 1.0, 1.0), 3.0),
        (0, 2, (2.5, 1.0, 1.0), 5.0),
        (2, 2, (1.0, 1.0, 3.0), 6.0),  # anisotropic: the shift is along the coarse axis...
        (0, 2, (1.0, 1.0, 3.0), 2.0),  # ...and the same spacing leaves a shift along a fine axis alone.
    ],
)
def test_hd95_of_shifted_cube_is_the_shift_in_mm(axis, k, spacing, expected_mm):
    # Geometrically, shifting a cube by k voxels moves its surface by k * spacing[axis] mm, and
    # no surface point moves further. MONAI agrees exactly: the far face of the shifted cube
    # (100 of its 488 edge voxels, over 5%) is k voxels from the truth's face, every other
    # edge voxel is closer, and the same holds the other way round.
    offset = [0, 0, 0]
    offset[axis] = k
    score = score_region(cube(tuple(offset)), cube(), spacing)
    assert score.hd95 == pytest.approx(expected_mm)


def test_hd95_of_single_voxel_far_from_truth_is_the_interpolated_95th_percentile():
    # Truth: a one-voxel-thick bar of 21 voxels along axis 0 (x = 0..20); all of it is edge.
    # Prediction: one voxel on the bar's axis at x = 30, 10 voxels past the bar's end.
    truth = np.zeros((40, 9, 9), dtype=np.uint8)
    truth[0:21, 4, 4] = 1
    pred = np.zeros_like(truth)
    pred[30, 4, 4] = 1
    spacing = (2.0, 1.0, 1.0)
    # pred -> truth: the one distance, 10 voxels. truth -> pred: 10, 11, ..., 30 voxels, whose
    # 95th percentile by linear interpolation is 10 + 0.95 * 20 = 29. hd95 is the larger, 29
    # voxels = 58 mm: neither the nearest distance (20 mm) nor the plain Hausdorff (60 mm).
    # (Pooling both directions first, as medpy does, would give 28.95 voxels instead.)
    score = score_region(pred, truth, spacing)
    assert score.hd95 == pytest.approx(29 * 2.0)
    assert (score.dice, score.sensitivity) == (0.0, 0.0)
    assert score.specificity == pytest.approx(1 - 1 / (40 * 9 * 9 - 21))


def test_image_diagonal_for_known_shape_and_spacing():
    # Extent (3 * 1, 2 * 2, 12 * 1) mm = (3, 4, 12): a Pythagorean quadruple, diagonal 13 mm.
    assert image_diagonal_mm((3, 2, 12), (1.0, 2.0, 1.0)) == pytest.approx(13.0)
    assert image_diagonal_mm((3, 8), (2.0, 1.0)) == pytest.approx(10.0)


def test_both_empty_is_a_perfect_score():
    empty = np.zeros((3, 2, 12), dtype=np.uint8)
    score = score_region(empty, empty, (1.0, 2.0, 1.0))
    assert score == RegionScore(dice=1.0, hd95=0.0, sensitivity=1.0, specificity=1.0, truth_voxels=0, pred_voxels=0,
                                iou=1.0, precision=1.0, tp=0, fp=0, fn=0, tn=72)


def test_empty_truth_with_prediction_scores_worst_case_but_full_sensitivity():
    truth = np.zeros((3, 2, 12), dtype=np.uint8)
    pred = np.zeros_like(truth)
    pred[0, 0, :6] = 1
    score = score_region(pred, truth, (1.0, 2.0, 1.0))
    assert score.dice == 0.0
    assert score.hd95 == pytest.approx(13.0)
    assert score.sensitivity == 1.0  # nothing to miss
    assert score.specificity == pytest.approx((72 - 6) / 72)
    assert (score.truth_voxels, score.pred_voxels) == (0, 6)
    assert score.precision == 0.0 and score.iou == 0.0  # all six predicted voxels are wrong


def test_missed_truth_scores_worst_case():
    truth = np.zeros((3, 2, 12), dtype=np.uint8)
    truth[1, 1, 2:5] = 1
    score = score_region(np.zeros_like(truth), truth, (1.0, 2.0, 1.0))
    assert score.dice == 0.0
    assert score.hd95 == pytest.approx(13.0)
    assert score.sensitivity == 0.0
    assert score.specificity == 1.0  # no false positives among the 69 background voxels
    assert (score.truth_voxels, score.pred_voxels) == (3, 0)
    assert score.precision == 1.0  # nothing predicted, nothing claimed wrongly
    assert (score.tp, score.fp, score.fn, score.tn) == (0, 0, 3, 69)


def test_truth_covering_the_whole_image_has_full_specificity():
    full = np.ones((4, 4, 4), dtype=bool)
    score = score_region(full, full, (1.0, 1.0, 1.0))
    assert (score.dice, score.hd95, score.sensitivity, score.specificity) == (1.0, 0.0, 1.0, 1.0)


def test_2d_masks():
    # 6x6 squares, the prediction shifted by one column; columns are 0.5 mm apart.
    truth = np.zeros((12, 12), dtype=bool)
    truth[2:8, 2:8] = True
    pred = np.roll(truth, 1, axis=1)
    score = score_region(pred, truth, (1.0, 0.5))
    assert score.dice == pytest.approx(2 * 30 / 72)
    assert score.hd95 == pytest.approx(0.5)
    assert score.sensitivity == pytest.approx(30 / 36)
    assert score.specificity == pytest.approx((144 - 42) / (144 - 36))


def test_any_nonzero_value_is_inside_the_region():
    # MONAI reads a single channel as class labels, so 0/255 masks must not score as empty.
    as_bool = score_region(cube((2, 0, 0)), cube(), (1.0, 1.0, 1.0))
    as_uint8 = score_region(cube((2, 0, 0)).astype(np.uint8) * 255, cube().astype(np.int64) * 4, (1, 1, 1))
    assert as_uint8 == as_bool


def test_scores_are_plain_finite_floats():
    score = score_region(cube((2, 0, 0)), np.zeros(SHAPE, dtype=bool), np.array([1, 1, 3], dtype=np.float32))
    floats = (score.dice, score.hd95, score.sensitivity, score.specificity)
    assert all(type(v) is float and math.isfinite(v) for v in floats)
    assert score.hd95 == pytest.approx(math.hypot(20, 20, 60))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(20, 20, 20\).*\(20, 20, 19\)"):
        score_region(cube(), np.zeros((20, 20, 19), dtype=bool), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, float("nan"), 1.0)])
def test_spacing_must_fit_the_masks(spacing):
    with pytest.raises(ValueError, match="spacing"):
        score_region(cube(), cube(), spacing)
