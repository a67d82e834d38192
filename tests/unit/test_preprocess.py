import json

import numpy as np
import pytest

from glioseg.errors import GliosegError
from glioseg.manifest import read_dataset_info, read_manifest
from glioseg.nifti import read_volume
from glioseg.preprocess import (
    brain_box,
    cached_paths,
    crop,
    normalise,
    preprocess_dataset,
    uncrop,
)


def test_crop_then_uncrop_is_exact_outside_nothing_lost():
    rng = np.random.default_rng(1)
    volume = np.zeros((2, 20, 18, 16), dtype=np.float32)
    volume[:, 4:15, 3:11, 5:12] = rng.normal(size=(2, 11, 8, 7)) + 5
    box = brain_box(volume, margin=0)
    assert box.start == (4, 3, 5) and box.stop == (15, 11, 12)
    cropped = crop(volume, box)
    assert cropped.shape == (2, 11, 8, 7)
    np.testing.assert_array_equal(uncrop(cropped, box, (20, 18, 16)), volume)


def test_margin_grows_the_box_but_stays_inside_the_volume():
    volume = np.zeros((1, 10, 10, 10))
    volume[0, 0:3, 4:6, 8:10] = 1
    box = brain_box(volume, margin=2)
    assert box.start == (0, 2, 6) and box.stop == (5, 8, 10)


def test_uncrop_of_a_plain_label_map():
    volume = np.zeros((1, 6, 6, 6))
    volume[0, 1:4, 2:5, 0:6] = 1
    box = brain_box(volume, 0)
    labels = np.full((3, 3, 6), 4, dtype=np.uint8)
    out = uncrop(labels, box, (6, 6, 6))
    assert out.dtype == np.uint8 and out.sum() == 4 * 54 and out[0].sum() == 0


def test_normalise_is_zscore_per_channel_over_brain_voxels():
    rng = np.random.default_rng(2)
    image = np.zeros((2, 8, 8, 8), dtype=np.float32)
    image[0, 2:6, 2:6, 2:6] = rng.normal(100, 20, size=(4, 4, 4))
    image[1, 1:7, 1:7, 1:7] = rng.normal(5, 1, size=(6, 6, 6))
    out = normalise(image)
    for c in range(2):
        brain = out[c][image[c] != 0]
        assert abs(brain.mean()) < 1e-5 and abs(brain.std() - 1) < 1e-4
        assert np.all(out[c][image[c] == 0] == 0)


def test_preprocessed_cache_matches_the_raw_case(tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest
    manifest, info = read_manifest(csv), read_dataset_info(info_json)
    preprocess_dataset(manifest, info, tmp_path / "cache", margin=1)
    properties = json.loads((tmp_path / "cache" / "properties.json").read_text())
    assert properties["regions"] == ["TC", "WT", "ET"]
    assert set(properties["cases"]) == set(manifest["case"])
    row = manifest.iloc[0]
    image_path, label_path = cached_paths(tmp_path / "cache", row["case"])
    image, regions = np.load(image_path), np.load(label_path)
    props = properties["cases"][row["case"]]
    assert image.dtype == np.float32 and image.shape[0] == 4 and regions.dtype == np.uint8
    assert image.shape[1:] == regions.shape[1:] == tuple(b - a for a, b in zip(props["crop"]["start"], props["crop"]["stop"]))
    # Every tumour voxel survives the crop: the whole-tumour volume is unchanged.
    truth = read_volume(row["label"], dtype=np.int32)
    assert regions[1].sum() == np.count_nonzero(truth)
    assert props["original_shape"] == list(truth.shape) and props["spacing"] == [2.0, 2.0, 2.0]


def test_a_blank_case_is_named(tiny_manifest, tmp_path):
    import nibabel as nib

    csv, info_json = tiny_manifest
    manifest, info = read_manifest(csv), read_dataset_info(info_json)
    blank = manifest.iloc[:1].copy()
    for column in [c for c in blank.columns if c.startswith("image_")]:
        source = nib.load(blank.iloc[0][column])
        path = tmp_path / f"{column}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(source.shape, np.int16), source.affine), path)
        blank[column] = str(path)
    with pytest.raises(GliosegError, match="every modality is zero"):
        preprocess_dataset(blank, info, tmp_path / "cache", margin=0)
    assert not (tmp_path / "cache").exists()
