"""BraTS 2023 lesion-wise Dice and HD95 on hand-made cases, and the score columns that carry them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.labels import BRATS2023
from glioseg.metrics import BRATS2023_LESION_PARAMETERS, LesionWiseParameters, LesionWiseScore, score_lesions
from glioseg.scoring import lesion_parameters, score_case

pytestmark = pytest.mark.filterwarnings("error")

SHAPE = (40, 40, 40)
SPACING = (1.0, 1.0, 1.0)
GLI = BRATS2023_LESION_PARAMETERS["GLI"]


def box(start: tuple[int, int, int], side: int | tuple[int, int, int], shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A box of ``side`` voxels per axis whose lowest corner is ``start``."""
    sides = (side,) * 3 if isinstance(side, int) else side
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, sides, strict=True))] = True
    return mask


A = box((2, 2, 2), 6)  # 216 voxels
B = box((25, 25, 25), 6)  # far from A: their 3-voxel dilations do not touch
FAR = box((2, 30, 30), 4)  # 64 voxels, far from both


def test_two_lesions_one_found_one_missed():
    score = score_lesions(A, A | B, SPACING, GLI)
    assert score == LesionWiseScore(dice=0.5, hd95=374 / 2, lesions_found=1, lesions_missed=1, false_lesions=0)


def test_a_false_positive_component_adds_a_zero_entry():
    assert score_lesions(A | FAR, A, SPACING, GLI) == LesionWiseScore(0.5, 374 / 2, 1, 0, 1)
    three = score_lesions(A | FAR, A | B, SPACING, GLI)
    assert three.dice == pytest.approx(1 / 3) and three.hd95 == pytest.approx(2 * 374 / 3)
    assert (three.lesions_found, three.lesions_missed, three.false_lesions) == (1, 1, 1)


def test_lesions_at_or_below_the_minimum_volume_are_ignored():
    tiny = box((30, 2, 2), 3)  # 27 voxels, under GLI's 50
    assert score_lesions(A, A | tiny, SPACING, GLI) == LesionWiseScore(1.0, 0.0, 1, 0, 0)
    # a prediction on an ignored lesion is matched to it, so it is not a false positive either
    assert score_lesions(A | tiny, A | tiny, SPACING, GLI) == LesionWiseScore(1.0, 0.0, 1, 0, 0)
    fifty, fifty_one = box((30, 2, 2), (5, 5, 2)), box((30, 2, 2), (3, 17, 1))
    assert fifty.sum() == 50 and score_lesions(A, A | fifty, SPACING, GLI).lesions_missed == 0
    assert fifty_one.sum() == 51 and score_lesions(A, A | fifty_one, SPACING, GLI).lesions_missed == 1
    # MET counts lesions of 3 voxels and more
    three = box((30, 2, 2), (3, 1, 1))
    assert score_lesions(A, A | three, SPACING, BRATS2023_LESION_PARAMETERS["MET"]).lesions_missed == 1


@pytest.mark.parametrize("pred, truth, expected", [
    (np.zeros(SHAPE, bool), A, LesionWiseScore(0.0, 374.0, 0, 1, 0)),
    (FAR, np.zeros(SHAPE, bool), LesionWiseScore(0.0, 374.0, 0, 0, 1)),
    (np.zeros(SHAPE, bool), np.zeros(SHAPE, bool), LesionWiseScore(1.0, 0.0, 0, 0, 0)),
    (FAR, box((30, 2, 2), 3), LesionWiseScore(0.0, 374.0, 0, 0, 1)),  # only an ignored lesion: the false one counts
])
def test_hd95_penalties_and_empty_masks(pred, truth, expected):
    assert score_lesions(pred, truth, SPACING, GLI) == expected


def test_the_penalty_is_a_parameter():
    assert score_lesions(np.zeros(SHAPE, bool), A, SPACING, LesionWiseParameters(hd95_penalty=100.0)).hd95 == 100.0


def test_a_component_near_a_lesion_is_matched_within_the_dilation():
    near = box((10, 2, 2), 6)  # 2 voxels of gap after A (which ends at x = 7)
    gli = score_lesions(near, A, SPACING, GLI)
    assert (gli.lesions_found, gli.false_lesions, gli.dice) == (1, 0, 0.0)
    assert gli.hd95 == pytest.approx(8.0, abs=0.5)  # the boxes' far faces are 8 voxels apart: a real distance, no penalty
    men = score_lesions(near, A, SPACING, BRATS2023_LESION_PARAMETERS["MEN"])  # dilated by 1 voxel: out of reach
    assert (men.lesions_found, men.lesions_missed, men.false_lesions, men.dice, men.hd95) == (0, 1, 1, 0.0, 374.0)


def test_lesions_whose_dilations_touch_count_as_one():
    left, right = box((2, 2, 2), 6), box((12, 2, 2), 6)  # 4 voxels apart: 3-voxel dilations overlap
    score = score_lesions(left, left | right, SPACING, GLI)
    assert (score.lesions_found, score.lesions_missed) == (1, 0)
    assert score.dice == pytest.approx(2 * 216 / (216 + 432))
    apart = score_lesions(left, left | right, SPACING, BRATS2023_LESION_PARAMETERS["MEN"])
    assert (apart.lesions_found, apart.lesions_missed, apart.dice) == (1, 1, 0.5)


def test_one_prediction_over_a_lesion_in_two_parts_scores_their_union():
    pred = box((2, 2, 2), (6, 6, 4)) | box((2, 2, 7), (6, 6, 1))  # two components (gap at z = 6) covering A's 6 slices but one
    score = score_lesions(pred, A, SPACING, GLI)
    assert (score.lesions_found, score.false_lesions) == (1, 0)
    assert score.dice == pytest.approx(2 * 180 / (180 + 216))


def test_2d_masks_are_scored_too():
    truth = np.zeros((30, 30), bool)
    truth[2:12, 2:12] = True
    truth[20:28, 20:28] = True
    score = score_lesions(truth & (np.arange(30) < 15)[:, None], truth, (1.0, 1.0), GLI)
    assert (score.dice, score.lesions_found, score.lesions_missed) == (0.5, 1, 1)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="does not match"):
        score_lesions(A, A[:-1], SPACING, GLI)


@pytest.mark.parametrize("case, cohort", [
    ("BraTS-GLI-00000-000", "GLI"), ("BraTS-MEN-00004-000", "MEN"), ("BraTS-MET-00001-000", "MET"),
    ("BraTS-PED-00002-000", "PED"), ("BraTS-SSA-00002-000", "SSA"), ("BraTS2021_00000", "GLI"), ("TCGA_CS_4941", "GLI"),
])
def test_the_cohort_is_read_from_the_case_id(case, cohort):
    assert lesion_parameters(case) == BRATS2023_LESION_PARAMETERS[cohort]


def test_documented_cohort_settings():
    assert {c: (p.dilation, p.min_voxels, p.hd95_penalty) for c, p in BRATS2023_LESION_PARAMETERS.items()} == {
        "GLI": (3, 50, 374.0), "SSA": (3, 50, 374.0), "PED": (3, 50, 374.0), "MEN": (1, 50, 374.0), "MET": (1, 2, 374.0)}


def save(path: Path, labels: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), np.eye(4)), path)
    return path


def test_score_rows_carry_the_lesion_wise_columns(tmp_path):
    truth = np.zeros(SHAPE, np.uint8)
    truth[A] = 2  # edema: WT only
    truth[B] = 3  # enhancing: ET, TC and WT
    pred = np.where(A, 2, 0)
    rows = {row["region"]: row for row in score_case(save(tmp_path / "p.nii.gz", pred), save(tmp_path / "t.nii.gz", truth),
                                                     BRATS2023)}
    assert (rows["WT"]["lesion_dice"], rows["WT"]["lesions_found"], rows["WT"]["lesions_missed"]) == (0.5, 1, 1)
    assert (rows["ET"]["lesion_dice"], rows["ET"]["lesion_hd95"], rows["ET"]["false_lesions"]) == (0.0, 374.0, 0)
    assert rows["WT"]["dice"] == pytest.approx(2 / 3)  # the whole-region Dice weighs voxels, not lesions
