import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glioseg.cache import CACHE_FORMAT, cache_digest, readers
from glioseg.cli import main as cli_main
from glioseg.datasets.layouts.custom import custom_convention
from glioseg.errors import GliosegError
from glioseg.manifest import DatasetInfo, read_dataset_info, read_manifest, write_manifest
from glioseg.nifti import read_volume
from glioseg.preprocess import (
    brain_box,
    crop,
    normalise,
    preprocess_dataset,
    uncrop,
)


def cached(cache_dir, case):
    """A cached case as training reads it: the z-scored image and the region masks."""
    reader = readers(cache_dir, [case])[0]
    return reader.image(), reader.labels()


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
    image, regions = cached(tmp_path / "cache", row["case"])
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


# ---------------------------------------------------------------- the brain: masks and background rules

SHAPE = (20, 18, 16)
BRAIN = (slice(4, 15), slice(3, 12), slice(2, 13))
TUMOUR = (slice(7, 10), slice(5, 8), slice(5, 9))
WT_ONLY = custom_convention({1: ["WT"]})
INFO = DatasetInfo("d", "custom", ("t1", "flair"), WT_ONLY)


def save(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return str(path)


def skull_stripped(seed: int = 0) -> np.ndarray:
    """Two channels of brain intensities inside BRAIN on a 0 background."""
    rng = np.random.default_rng(seed)
    image = np.zeros((2, *SHAPE), np.float32)
    image[(slice(None), *BRAIN)] = rng.normal([[[[300.0]]], [[[120.0]]]], [[[[50.0]]], [[[20.0]]]], size=(2, 11, 9, 11))
    return image


def zscored(image: np.ndarray) -> np.ndarray:
    """Each channel z-scored over the whole volume, as some BraTS 2013/2015 cases are distributed: constant background < 0."""
    mean, std = image.mean(axis=(1, 2, 3), keepdims=True), image.std(axis=(1, 2, 3), keepdims=True)
    return ((image - mean) / std).astype(np.float32)


def case_row(folder: Path, image: np.ndarray, label: np.ndarray | None = None, mask: np.ndarray | None = None,
             case: str = "c1") -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    if label is None:
        label = np.zeros(SHAPE, np.uint8)
        label[TUMOUR] = 1
    row = {"case": case, "patient": case, "group": "", "image_t1": save(folder / f"{case}_t1.nii.gz", image[0]),
           "image_flair": save(folder / f"{case}_flair.nii.gz", image[1]), "label": save(folder / f"{case}_seg.nii.gz", label)}
    if mask is not None:
        row["mask"] = save(folder / f"{case}_brainmask.nii.gz", mask.astype(np.uint8))
    return row


def run(tmp_path: Path, rows: list[dict[str, str]], name: str = "cache", margin: int = 0, **kwargs) -> tuple[Path, dict]:
    out = tmp_path / name
    preprocess_dataset(pd.DataFrame(rows), INFO, out, margin, **kwargs)
    return out, json.loads((out / "properties.json").read_text())


def brain_voxels(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    brain = np.zeros(shape, bool)
    brain[BRAIN] = True
    return brain


def test_zero_background_is_the_default_and_is_recorded(tmp_path):
    _out, properties = run(tmp_path, [case_row(tmp_path / "raw", skull_stripped())])
    props = properties["cases"]["c1"]
    assert properties["background"] == "zero"
    assert props["brain"] == {"method": "zero", "fraction": round(11 * 9 * 11 / np.prod(SHAPE), 6)}
    assert props["crop"] == {"start": [4, 3, 2], "stop": [15, 12, 13]}


def test_a_constant_nonzero_background_keeps_the_whole_volume_and_is_warned(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="glioseg.preprocess")
    rows = [case_row(tmp_path / "raw", zscored(skull_stripped()), case=c) for c in ("c1", "c2")]
    _, properties = run(tmp_path, rows)
    assert properties["cases"]["c1"]["crop"] == {"start": [0, 0, 0], "stop": list(SHAPE)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("c1: the brain (found by rule 'zero') is 100.0% of the volume") and "background: mode" in m for m in warnings)
    assert "d: 2 of 2 cases kept their whole volume when cropped to the brain: c1, c2" in warnings


def test_mode_background_crops_to_the_brain_and_zscores_over_it_only(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="glioseg.preprocess")
    raw = zscored(skull_stripped())
    out, properties = run(tmp_path, [case_row(tmp_path / "raw", raw)], background="mode")
    props = properties["cases"]["c1"]
    assert properties["background"] == "mode"
    assert props["crop"] == {"start": [4, 3, 2], "stop": [15, 12, 13]}
    assert props["brain"]["method"] == "mode" and props["brain"]["fraction"] == round(11 * 9 * 11 / np.prod(SHAPE), 6)
    np.testing.assert_allclose(props["brain"]["background"], raw[:, 0, 0, 0])
    image = cached(out, "c1")[0]
    for channel in image:
        assert abs(channel.mean()) < 1e-5 and abs(channel.std() - 1) < 1e-4  # the crop is all brain here
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_mode_background_sets_the_background_inside_the_crop_to_zero(tmp_path):
    raw = zscored(skull_stripped())
    out, _ = run(tmp_path, [case_row(tmp_path / "raw", raw)], margin=2, background="mode")
    image = cached(out, "c1")[0]
    brain = crop(brain_voxels()[None], brain_box(brain_voxels()[None], 2))[0]
    assert image.shape[1:] == (15, 13, 15)
    assert np.all(image[:, ~brain] == 0)
    for channel in image:
        assert abs(channel[brain].mean()) < 1e-5 and abs(channel[brain].std() - 1) < 1e-4


def test_a_brain_mask_decides_the_crop_and_the_zscore_over_any_background_rule(tmp_path):
    raw = zscored(skull_stripped())
    mask = np.zeros(SHAPE, bool)
    mask[5:14, 4:11, 3:12] = True  # tighter than the nonzero region
    out, properties = run(tmp_path, [case_row(tmp_path / "raw", raw, mask=mask)], background="mode")
    props = properties["cases"]["c1"]
    assert props["brain"] == {"method": "mask", "fraction": round(float(mask.mean()), 6)}
    assert props["crop"] == {"start": [5, 4, 3], "stop": [14, 11, 12]}
    image = cached(out, "c1")[0]
    expected = (raw[:, 5:14, 4:11, 3:12] - raw[:, mask].mean(axis=1)[:, None, None, None]) / raw[:, mask].std(axis=1)[:, None, None, None]
    np.testing.assert_allclose(image, expected, atol=1e-4)


def test_an_empty_brain_mask_is_named(tmp_path):
    row = case_row(tmp_path / "raw", skull_stripped(), mask=np.zeros(SHAPE, bool))
    with pytest.raises(GliosegError, match="the brain mask is empty") as error:
        run(tmp_path, [row])
    assert str(error.value.path) == row["mask"]


def test_cli_preprocess_takes_the_background_rule(tmp_path):
    row = case_row(tmp_path / "raw", zscored(skull_stripped()))
    write_manifest(pd.DataFrame([row]), INFO, tmp_path / "d.csv", tmp_path / "d.json")
    argv = ["preprocess", "--manifest", str(tmp_path / "d.csv"), "--info", str(tmp_path / "d.json"), "--margin", "1",
            "--background", "mode", "--out", str(tmp_path / "cache")]
    assert cli_main(argv) == 0
    properties = json.loads((tmp_path / "cache" / "properties.json").read_text())
    assert properties["background"] == "mode" and properties["cases"]["c1"]["crop"] == {"start": [3, 2, 1], "stop": [16, 13, 14]}


# ---------------------------------------------------------------- the same checks as the manifest


def test_preprocess_refuses_non_finite_image_voxels(tmp_path):
    image = skull_stripped()
    image[1, 6, 6, 6] = np.nan
    row = case_row(tmp_path / "raw", image)
    with pytest.raises(GliosegError, match="image has 1 NaN voxel") as error:
        run(tmp_path, [row])
    assert str(error.value.path) == row["image_flair"]
    assert not (tmp_path / "cache").exists()


def test_preprocess_refuses_fractional_labels_instead_of_truncating_them(tmp_path):
    label = np.zeros(SHAPE, np.float32)
    label[TUMOUR] = 1.5
    row = case_row(tmp_path / "raw", skull_stripped(), label=label)
    with pytest.raises(GliosegError, match=r"label values are not whole numbers: 36 voxels hold values such as 1\.5") as error:
        run(tmp_path, [row])
    assert str(error.value.path) == row["label"]


# ---------------------------------------------------------------- the cache digest


def test_the_digest_is_stored_stable_and_follows_margin_and_content(tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest
    manifest, info = read_manifest(csv), read_dataset_info(info_json)
    digests = {}
    for name, margin in (("a", 1), ("b", 1), ("c", 2)):
        preprocess_dataset(manifest, info, tmp_path / name, margin=margin)
        digests[name] = json.loads((tmp_path / name / "properties.json").read_text())["digest"]
        assert cache_digest(tmp_path / name) == digests[name]
    assert len(digests["a"]) == 64 and int(digests["a"], 16) >= 0
    assert digests["a"] == digests["b"]  # the same input twice
    assert digests["c"] != digests["a"]  # another margin
    flair = tmp_path / "flair.nii.gz"
    source = nib.load(manifest.loc[2, "image_flair"])
    data = np.asarray(source.dataobj).copy()
    data[24, 24, 16] += 1
    nib.save(nib.Nifti1Image(data, source.affine, source.header), flair)
    preprocess_dataset(manifest.assign(image_flair=lambda f: f["image_flair"].where(f.index != 2, str(flair))), info,
                       tmp_path / "d", margin=1)
    assert cache_digest(tmp_path / "d") != digests["a"]  # one voxel


def test_a_cache_of_another_format_is_refused_with_what_to_do(tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest
    preprocess_dataset(read_manifest(csv), read_dataset_info(info_json), tmp_path / "cache", margin=1)
    path = tmp_path / "cache" / "properties.json"
    properties = json.loads(path.read_text())
    assert properties["format"] == CACHE_FORMAT
    del properties["format"]  # as the .npy caches before format 2 were written
    path.write_text(json.dumps(properties))
    with pytest.raises(GliosegError, match=f"the cache has format 1, this glioseg reads format {CACHE_FORMAT}") as error:
        cache_digest(tmp_path / "cache")
    assert error.value.path == path and "preprocess the dataset again" in error.value.hint


def test_the_cache_is_the_same_bytes_with_one_or_two_worker_processes(tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest
    manifest, info = read_manifest(csv), read_dataset_info(info_json)
    for threads in (1, 2):
        preprocess_dataset(manifest, info, tmp_path / f"threads{threads}", margin=1, threads=threads)
    files = sorted(p.relative_to(tmp_path / "threads1") for p in (tmp_path / "threads1").rglob("*") if p.is_file())
    assert len(files) == 2 * len(manifest) + 1  # images, labels, properties.json
    assert files == sorted(p.relative_to(tmp_path / "threads2") for p in (tmp_path / "threads2").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "threads1" / name).read_bytes() == (tmp_path / "threads2" / name).read_bytes(), name


def test_every_bad_case_is_listed_in_one_error_and_no_cache_is_left(tmp_path):
    rows = [case_row(tmp_path / "raw", skull_stripped(), case="good")]
    for case in ("blank1", "blank2"):
        rows.append(case_row(tmp_path / "raw", np.zeros_like(skull_stripped()), case=case))
    with pytest.raises(GliosegError, match="2 of 3 cases failed") as error:
        run(tmp_path, rows, threads=2)
    assert "blank1: every modality is zero" in str(error.value) and "blank2: every modality is zero" in str(error.value)
    assert not (tmp_path / "cache").exists()
