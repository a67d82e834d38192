"""The dataset profile against numbers computed by hand on tiny hand-made cases."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glioseg.errors import GliosegError
from glioseg.labels import BRATS
from glioseg.manifest import DatasetInfo
from glioseg.views.profile import (
    LEVELS,
    cell_means,
    outlier_flags,
    profile_dataset,
    profile_manifest,
    read_features,
    region_volumes,
)

SPACING = (2.0, 1.0, 3.0)  # 6 mm³ per voxel
SHAPE = (6, 5, 4)


def _save(path: Path, data: np.ndarray, spacing=SPACING) -> str:
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def hand_case(folder: Path, name: str, tumour: bool = True, spacing=SPACING) -> dict:
    """A 6×5×4 case whose brain is 10 voxels: t1 = 1…10, flair = 10×(1…10); 2 voxels of 1, 5 of 2, 3 of 4."""
    folder.mkdir(parents=True, exist_ok=True)
    brain = np.zeros(SHAPE, dtype=bool)
    brain[1:3, 1:2, 1:2] = True  # 2 voxels
    brain[1:3, 2:4, 2:4] = True  # 8 voxels
    t1 = np.zeros(SHAPE, dtype=np.float32)
    t1[brain] = np.arange(1, 11)
    label = np.zeros(SHAPE, dtype=np.uint8)
    if tumour:
        voxels = np.argwhere(brain)
        for (x, y, z), value in zip(voxels, [1, 1, 2, 2, 2, 2, 2, 4, 4, 4]):
            label[x, y, z] = value
    return {"case": name, "patient": name, "group": "HGG",
            "image_t1": _save(folder / f"{name}_t1.nii.gz", t1, spacing),
            "image_flair": _save(folder / f"{name}_flair.nii.gz", 10 * t1, spacing),
            "label": _save(folder / f"{name}_seg.nii.gz", label, spacing)}


def info(physical: bool = True) -> DatasetInfo:
    return DatasetInfo("hand", "custom", ("t1", "flair"), BRATS, physical)


def test_percentiles_volumes_and_spacing_match_hand_computed_values(tmp_path):
    manifest = pd.DataFrame([hand_case(tmp_path, "A"), hand_case(tmp_path, "B", tumour=False)])
    table, quantiles, grids = profile_manifest(manifest, info())
    a, b = table.iloc[0], table.iloc[1]
    assert (a["shape_x"], a["shape_y"], a["shape_z"]) == SHAPE
    assert (a["spacing_x"], a["spacing_y"], a["spacing_z"]) == SPACING
    assert a["brain_fraction"] == pytest.approx(10 / 120, abs=1e-6)  # rounded to 6 decimals
    # numpy's linear percentiles of 1..10: p = 1 + 9 * q / 100
    for p in (1, 5, 25, 50, 75, 95, 99):
        assert a[f"t1_p{p}"] == pytest.approx(1 + 9 * p / 100)
        assert a[f"flair_p{p}"] == pytest.approx(10 * (1 + 9 * p / 100))
    assert a["t1_mean"] == pytest.approx(5.5) and a["t1_std"] == pytest.approx(np.std(np.arange(1, 11)))
    # TC = {1, 4}: 5 voxels, WT: 10, ET: 3; 6 mm³ each
    assert (a["volume_TC"], a["volume_WT"], a["volume_ET"]) == pytest.approx((0.030, 0.060, 0.018))
    assert a["volume_unit"] == "cm3" and bool(a["tumour"]) and a["flags"] == ""
    assert b["volume_WT"] == 0 and not b["tumour"] and b["flags"] == "no tumour"
    assert quantiles.shape == (2, 2, len(LEVELS)) and quantiles[0, 0, 0] == 1 and quantiles[0, 0, -1] == 10
    assert grids.shape[:2] == (2, 2)


def test_volumes_are_voxel_counts_where_the_spacing_is_not_physical(tmp_path):
    manifest = pd.DataFrame([hand_case(tmp_path, "A")])
    table, _, _ = profile_manifest(manifest, info(physical=False))
    assert (table.at[0, "volume_TC"], table.at[0, "volume_WT"], table.at[0, "volume_ET"]) == (5, 10, 3)
    assert table.at[0, "volume_unit"] == "px"
    label = np.array([[[0, 1, 2, 4]]])
    assert region_volumes(label, BRATS, (0.5, 0.5, 4.0), physical=True) == pytest.approx({"TC": 0.002, "WT": 0.003, "ET": 0.001})


def test_cell_means_average_each_block_and_repeat_short_axes():
    volume = np.arange(4 * 4 * 2, dtype=float).reshape(4, 4, 2)
    means = cell_means(volume, (2, 2, 1))
    assert means[0, 0, 0] == pytest.approx(volume[:2, :2, :].mean())
    assert means[1, 1, 0] == pytest.approx(volume[2:, 2:, :].mean())
    assert cell_means(volume, (8, 4, 2))[7, 3, 1] == volume[3, 3, 1]  # an axis shorter than the grid: voxels repeated


def test_flags_a_swapped_modality_an_odd_shape_and_spacing():
    rng = np.random.default_rng(0)
    cases = 12
    levels = np.linspace(0, 1, len(LEVELS))
    t1 = 100 + 900 * levels  # uniform: linear quantiles
    flair = 50 + 400 * levels ** 3  # skewed: most voxels dark
    quantiles = np.stack([np.stack([t1 * rng.uniform(0.5, 2), flair * rng.uniform(0.5, 2)]) for _ in range(cases)])
    quantiles *= 1 + 0.01 * rng.standard_normal(quantiles.shape)
    quantiles[3, 1] = 2.0 * t1  # case 3's FLAIR is really a T1
    table = pd.DataFrame({"tumour": [True] * cases, **{f"shape_{a}": [240] * cases for a in "xyz"},
                          **{f"spacing_{a}": [1.0] * cases for a in "xyz"}})
    table.loc[7, "shape_z"] = 160
    table.loc[9, "spacing_x"] = 0.5
    flags = outlier_flags(table, np.sort(quantiles, axis=-1), ["t1", "flair"])
    assert flags[3] == "flair looks like t1"
    assert flags[7] == "shape unusual" and flags[9] == "spacing unusual"
    assert all(flag == "" for i, flag in enumerate(flags) if i not in (3, 7, 9))


def test_the_profile_stage_writes_table_page_and_features(tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest
    table = profile_dataset(csv, info_json, tmp_path / "p.csv", tmp_path / "p.html", tmp_path / "f.npz")
    written = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert len(written) == len(table) == 6 and (written["volume_WT"] > 0).all()
    features = read_features(tmp_path / "f.npz")
    assert features.case == written["case"].tolist() and features.role == ["t1", "t1ce", "t2", "flair"]
    assert features.quantiles.shape == (6, 4, 101) and np.isfinite(features.grid).all()

    headings = []

    class Headings(HTMLParser):
        tag = None

        def handle_starttag(self, tag, attrs):
            self.tag = tag

        def handle_data(self, data):
            if self.tag == "h2" and data.strip():
                headings.append(data.strip())
            self.tag = None

    Headings().feed((tmp_path / "p.html").read_text())
    assert headings == ["Overview", "Groups", "Shapes", "Voxel spacings", "Intensities inside the brain",
                        "Tumour region volumes (cm³)", "Flagged cases"]


def test_a_missing_image_is_named_with_what_to_do(tmp_path):
    row = hand_case(tmp_path, "A")
    Path(row["image_flair"]).unlink()
    with pytest.raises(GliosegError) as error:
        profile_manifest(pd.DataFrame([row]), info())
    assert row["image_flair"] in error.value.message and "What to do" in error.value.message
