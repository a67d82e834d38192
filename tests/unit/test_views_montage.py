"""The dataset montage: a seeded or named case, three planes oriented by the affine."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from glioseg.errors import GliosegError
from glioseg.manifest import read_dataset_info, read_manifest
from glioseg.views.montage import _canonical, pick_case, plane, plot_dataset_montage, section


def test_the_case_is_drawn_by_seed_or_named(tiny_manifest):
    manifest = read_manifest(tiny_manifest[0])
    assert pick_case(manifest, seed=3)["case"] == pick_case(manifest.iloc[::-1], seed=3)["case"]
    assert pick_case(manifest, case="BraTS2021_00002")["case"] == "BraTS2021_00002"
    with pytest.raises(GliosegError, match="views → montage → cases"):
        pick_case(manifest, case="nobody", source="m.csv")


def test_planes_follow_the_affine_patients_right_on_the_viewers_left(tmp_path):
    volume = np.zeros((10, 8, 6), dtype=np.float32)
    volume[0, 7, 5] = 1  # LPS file: x index 0 is the patient's right, y index 7 posterior, z index 5 superior
    nib.save(nib.Nifti1Image(volume, np.diag([-1.0, -1.0, 1.0, 1.0])), str(tmp_path / "lps.nii.gz"))
    ras, spacing = _canonical(str(tmp_path / "lps.nii.gz"))
    axial = plane(ras, 2, section(ras, 2))
    rows, cols = np.argwhere(axial)[0]
    assert cols < axial.shape[1] / 2 and rows > axial.shape[0] / 2  # right on the left, posterior at the bottom
    coronal = plane(ras, 1, section(ras, 1))
    rows, cols = np.argwhere(coronal)[0]
    assert cols < coronal.shape[1] / 2 and rows < coronal.shape[0] / 2  # right on the left, superior at the top
    assert spacing == (1.0, 1.0, 1.0)


def test_the_montage_is_drawn(tiny_manifest, tmp_path):
    row = pick_case(read_manifest(tiny_manifest[0]), seed=42)
    fig = plot_dataset_montage(row, read_dataset_info(tiny_manifest[1]), out=tmp_path / "m.png")
    assert len(fig.axes) == 3 * 5 and (tmp_path / "m.png").stat().st_size > 20_000
