import numpy as np
import pytest

from glioseg.labels import (
    BRATS,
    BRATS2023,
    labels_to_regions,
    regions_to_labels,
    unexpected_labels,
)


@pytest.mark.parametrize("convention, values", [(BRATS, [0, 1, 2, 4]), (BRATS2023, [0, 1, 2, 3])])
def test_label_region_round_trip_is_exact(convention, values):
    rng = np.random.default_rng(0)
    label = rng.choice(values, size=(9, 8, 7)).astype(np.uint8)
    regions = labels_to_regions(label, convention)
    assert regions.shape == (3, 9, 8, 7) and regions.dtype == np.uint8
    np.testing.assert_array_equal(regions_to_labels(regions, convention), label)


def test_regions_are_nested_as_brats_defines_them():
    label = np.array([0, 1, 2, 4], dtype=np.uint8)
    tc, wt, et = labels_to_regions(label, BRATS)
    assert tc.tolist() == [0, 1, 0, 1]
    assert wt.tolist() == [0, 1, 1, 1]
    assert et.tolist() == [0, 0, 0, 1]


def test_non_nested_prediction_takes_innermost_label():
    # ET predicted where TC and WT are not: the voxel is still enhancing tumour.
    regions = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)  # rows: TC, WT, ET over three voxels
    assert regions_to_labels(regions, BRATS).tolist() == [2, 1, 4]


def test_unknown_label_values_are_named():
    label = np.array([0, 1, 3, 7])
    assert unexpected_labels(label, BRATS) == [3, 7]
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        labels_to_regions(label, BRATS)
