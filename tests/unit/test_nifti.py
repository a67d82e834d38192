"""The shared readers: images must be finite, labels whole numbers, brain masks 0/1, wherever they are read."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from glioseg.errors import GliosegError
from glioseg.nifti import read_image, read_label, read_mask


def save(path, data, slope=None):
    image = nib.Nifti1Image(data, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, path)
    return path


def test_a_label_scaled_in_its_header_reads_as_its_whole_numbers(tmp_path):
    """Stored 10/20/40 with scl_slope 0.1: float32 scaling gives 1.0000000149..., still label 1, 2, 4."""
    stored = np.zeros((4, 4, 4), np.int16)
    stored[0, 0, :3] = [10, 20, 40]
    label = read_label(save(tmp_path / "seg.nii.gz", stored, slope=0.1))
    assert np.issubdtype(label.dtype, np.integer) and label[0, 0, :3].tolist() == [1, 2, 4] and label.sum() == 7


def test_a_label_with_values_between_whole_numbers_names_them_and_their_count(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, :, 0] = [1.5, 4.6, 1.5, 2.25]
    data[1, :, :] = np.arange(16, dtype=np.float32).reshape(4, 4) + 0.5
    with pytest.raises(GliosegError, match=r"20 voxels hold values such as 0\.5, 1\.5, 2\.25, 2\.5, 3\.5, \.\.\."):
        read_label(save(tmp_path / "seg.nii.gz", data))


def test_infinite_image_voxels_are_counted(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, :2] = [np.inf, -np.inf]
    with pytest.raises(GliosegError, match="image has 2 infinite voxels") as error:
        read_image(save(tmp_path / "t1.nii.gz", data))
    assert error.value.path == tmp_path / "t1.nii.gz"


def test_a_brain_mask_must_be_zero_and_one(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[1:3, 1:3, 1:3] = 1
    assert read_mask(save(tmp_path / "ok.nii.gz", data)).sum() == 8
    with pytest.raises(GliosegError, match="brain mask values must be 0 and 1, found 0, 255"):
        read_mask(save(tmp_path / "bad.nii.gz", data * 255))
