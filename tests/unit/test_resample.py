"""Resampling (a dataset's ``preprocess → spacing``): the crop is resampled, and every prediction goes back to the
original geometry, alike for the infer stage and ``glioseg predict``."""

from __future__ import annotations

import json
from pathlib import Path

import blosc2
import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from glioseg.acquire.extract import extract_archive
from glioseg.cache import readers
from glioseg.cli import main as cli_main
from glioseg.config import experiment_record, inference_settings, training_settings, validate_config
from glioseg.datasets.synthetic import SyntheticSpec, write_sample_archive
from glioseg.errors import GliosegError
from glioseg.inference import infer_cases, original_labels
from glioseg.labels import BRATS, labels_to_regions
from glioseg.manifest import build_manifest, read_dataset_info, read_manifest, write_manifest
from glioseg.models.model_file import network_for, save_model
from glioseg.nifti import read_label
from glioseg.paths import Results
from glioseg.predict import predict
from glioseg.preprocess import CaseGeometry, CropBox, prepare_image, preprocess_dataset
from glioseg.resample import resampled_shape, resize, resize_masks
from glioseg.settings import InferenceSettings, TrainingSettings
from glioseg.splits import write_splits

from .test_config import SCHEMA

CPU = torch.device("cpu")
SPEC = SyntheticSpec(cases=3, shape=(96, 96, 32), spacing=(1.2, 1.2, 3.0), lgg_fraction=0.0, seed=7)
"""An anisotropic dataset: thick slices, as many clinical scans."""
TARGET = [2.0, 2.0, 1.5]
"""Coarser in plane, twice as fine through the slices: both directions of resampling at once."""
SURFACE_SHARE = 0.25
"""A resample → inverse round trip changes a region's volume by at most this share of its surface voxels.

Thresholding at 0.5 twice moves the boundary by less than a voxel, so the
change scales with the surface, not the volume: measured up to 0.16 of it for
the smallest regions here (~100 voxels, 14 % of their volume), 0.02–0.05 for
regions of a few thousand voxels (2–4 %)."""
MIN_DICE = 0.88
"""And the round trip puts the region in the same place (measured: Dice 0.90–0.97)."""


def assert_close_regions(before: np.ndarray, after: np.ndarray) -> None:
    """Two binary masks of one region, before and after a round trip, within SURFACE_SHARE and MIN_DICE."""
    before, after = before.astype(bool), after.astype(bool)
    surface = int((before & ~ndimage.binary_erosion(before)).sum())
    assert abs(int(after.sum()) - int(before.sum())) <= SURFACE_SHARE * surface
    assert 2 * (before & after).sum() / (before.sum() + after.sum()) >= MIN_DICE


def nested_regions(shape: tuple[int, ...], seed: int = 0, cell: int = 4) -> np.ndarray:
    """(TC, WT, ET) irregular random masks with ET ⊂ TC ⊂ WT, as labels_to_regions gives them; blobs of about
    ``cell`` voxels."""
    rng = np.random.default_rng(seed)
    smooth = resize(rng.random((3, *(max(2, n // cell) for n in shape))).astype(np.float32), shape)
    wt = smooth[0] > 0.4
    tc = wt & (smooth[1] > 0.45)
    et = tc & (smooth[2] > 0.5)
    return np.stack([tc, wt, et]).astype(np.uint8)


def test_the_resampled_shape_rounds_keeps_matching_axes_and_never_reaches_zero():
    assert resampled_shape((100, 51, 7), (1.0, 1.0, 3.0), (2.0, 1.0, 1.4)) == (50, 51, 15)
    assert resampled_shape((3, 3, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)
    assert resampled_shape((33, 20, 9), (0.9999999, 2.0, 1.0), (1.0, 2.0, 1.0)) == (33, 20, 9)  # spacing already the target


def test_masks_stay_binary_and_nested_after_resampling():
    regions = nested_regions((24, 20, 12))
    for shape in ((12, 10, 12), (37, 29, 30), (24, 20, 5)):
        resampled = resize_masks(regions, shape)
        assert resampled.shape == (3, *shape) and resampled.dtype == np.uint8
        assert set(np.unique(resampled)) <= {0, 1} and resampled[1].any() and resampled[2].any()
        tc, wt, et = resampled.astype(bool)
        assert not (et & ~tc).any() and not (tc & ~wt).any()  # ET ⊂ TC ⊂ WT
    assert resize_masks(regions, regions.shape[1:]) is regions  # nothing to do: the masks themselves


def test_2d_slices_train_at_half_the_in_plane_resolution_and_come_back_whole():
    """LGG kaggle_3m stacks have spacing 1 × 1 × 1 (pixels, slices): [2, 2, 1] trains on 128² slices."""
    rng = np.random.default_rng(1)
    image = rng.integers(1, 255, size=(3, 256, 256, 5)).astype(np.uint8)  # no background: the crop is the whole stack
    prepared = prepare_image(image, margin=0, spacing=(2, 2, 1), case_spacing=(1.0, 1.0, 1.0))
    assert prepared.image.shape == (3, 128, 128, 5) and prepared.geometry.crop_shape == (256, 256, 5)
    flat = np.broadcast_to(np.arange(5, dtype=np.float32), (1, 256, 256, 5))
    assert np.array_equal(resize(flat, (128, 128, 5)), flat[:, :128, :128])  # slices are not mixed
    regions = nested_regions((256, 256, 5), seed=2, cell=32)
    small = resize_masks(regions, (128, 128, 5))
    back = original_labels(prepared.geometry.to_crop(small.astype(np.float32)), prepared.geometry, 0.5, BRATS)
    assert back.shape == (256, 256, 5)
    for before, after in zip(regions, labels_to_regions(back, BRATS)):
        assert_close_regions(before, after)
    with pytest.raises(ValueError, match="case's own spacing"):
        prepare_image(image, margin=0, spacing=(2, 2, 1))


def test_the_inverse_puts_probabilities_back_on_the_crop_and_then_into_the_volume():
    geometry = CaseGeometry(CropBox((2, 3, 1), (22, 13, 9)), (30, 20, 12))
    probabilities = np.full((3, 10, 5, 16), 0.7, np.float32)
    on_crop = geometry.to_crop(probabilities)
    assert on_crop.shape == (3, 20, 10, 8) and np.allclose(on_crop, 0.7)
    labels = original_labels(on_crop, geometry, 0.5, BRATS)
    assert labels.shape == (30, 20, 12) and (labels[2:22, 3:13, 1:9] == 4).all() and labels.sum() == 4 * 20 * 10 * 8
    unresampled = np.zeros((3, 20, 10, 8), np.float32)
    assert geometry.to_crop(unresampled) is unresampled  # a case that was not resampled: nothing to undo


# ---------------------------------------------------------------- the cache of a resampled dataset


@pytest.fixture(scope="module")
def anisotropic(tmp_path_factory):
    """An extracted anisotropic synthetic dataset and its manifest."""
    root = tmp_path_factory.mktemp("anisotropic")
    write_sample_archive(SPEC, root / "sample.zip")
    raw = extract_archive(root / "sample.zip", root / "raw")
    frame, info = build_manifest(raw, "brats2021", "aniso")
    write_manifest(frame, info, root / "aniso.csv", root / "aniso.json")
    return {"raw": raw, "csv": root / "aniso.csv", "json": root / "aniso.json", "manifest": read_manifest(root / "aniso.csv"),
            "info": read_dataset_info(root / "aniso.json")}


def test_the_cache_records_the_target_and_each_crop_s_resampled_shape(anisotropic, tmp_path):
    preprocess_dataset(anisotropic["manifest"], anisotropic["info"], tmp_path / "cache", margin=2, spacing=TARGET)
    properties = json.loads((tmp_path / "cache" / "properties.json").read_text())
    assert properties["spacing"] == TARGET
    cases = anisotropic["manifest"]["case"].tolist()
    for case, reader in zip(cases, readers(tmp_path / "cache", cases)):
        props = properties["cases"][case]
        crop = CaseGeometry.of(props).crop_shape
        assert np.allclose(props["spacing"], SPEC.spacing)  # the case's own spacing (float32 in NIfTI), as before
        assert props["resampled_shape"] == list(resampled_shape(crop, props["spacing"], TARGET)) == list(reader.shape)
        assert reader.image().dtype == np.float32 and set(np.unique(reader.labels())) <= {0, 1}


def test_resample_then_inverse_round_trip_keeps_shape_and_region_volumes(anisotropic, tmp_path):
    preprocess_dataset(anisotropic["manifest"], anisotropic["info"], tmp_path / "cache", margin=2, spacing=TARGET)
    properties = json.loads((tmp_path / "cache" / "properties.json").read_text())
    for _, row in anisotropic["manifest"].iterrows():
        geometry = CaseGeometry.of(properties["cases"][row["case"]])
        cached = readers(tmp_path / "cache", [row["case"]])[0].labels()
        back = original_labels(geometry.to_crop(cached.astype(np.float32)), geometry, 0.5, BRATS)
        original = labels_to_regions(read_label(row["label"]), BRATS)
        assert back.shape == original.shape[1:]
        for before, after in zip(original, labels_to_regions(back, BRATS)):
            assert_close_regions(before, after)


def test_without_a_spacing_the_cache_is_as_before_and_an_own_spacing_changes_no_voxel(anisotropic, tmp_path):
    manifest, info = anisotropic["manifest"], anisotropic["info"]
    preprocess_dataset(manifest, info, tmp_path / "plain", margin=2)
    preprocess_dataset(manifest, info, tmp_path / "same", margin=2, spacing=SPEC.spacing)
    plain = json.loads((tmp_path / "plain" / "properties.json").read_text())
    same = json.loads((tmp_path / "same" / "properties.json").read_text())
    assert "spacing" not in plain and all("resampled_shape" not in props for props in plain["cases"].values())
    for case in manifest["case"]:
        assert same["cases"][case].pop("resampled_shape") == list(CaseGeometry.of(plain["cases"][case]).crop_shape)
        assert same["cases"][case] == plain["cases"][case]
        for folder in ("images", "labels"):
            plain_array, same_array = (blosc2.open(str(tmp_path / name / folder / f"{case}.b2nd"))[:] for name in ("plain", "same"))
            assert plain_array.dtype == same_array.dtype and np.array_equal(plain_array, same_array)


def test_preprocess_refuses_a_bad_spacing_and_the_command_takes_one(anisotropic, tmp_path):
    for bad in ([0, 1, 1], [1.0, 1.0], [1, -2, 1]):
        with pytest.raises(GliosegError, match="not three positive numbers"):
            preprocess_dataset(anisotropic["manifest"], anisotropic["info"], tmp_path / "bad", margin=0, spacing=bad)
    with pytest.raises(GliosegError, match=r"would multiply its [\d,]+ voxels by [\d,]+") as metres:
        preprocess_dataset(anisotropic["manifest"], anisotropic["info"], tmp_path / "metres", margin=0,
                           spacing=[0.002, 0.002, 0.003])
    assert "_t1.nii.gz" in str(metres.value) and "the images' unit" in str(metres.value)
    assert not (tmp_path / "metres" / "properties.json").exists()
    argv = ["preprocess", "--manifest", str(anisotropic["csv"]), "--info", str(anisotropic["json"]), "--spacing", "2",
            "2", "1.5", "--out", str(tmp_path / "cli")]
    assert cli_main(argv) == 0
    assert json.loads((tmp_path / "cli" / "properties.json").read_text())["spacing"] == TARGET


# ---------------------------------------------------------------- infer and predict on a resampled model


@pytest.fixture(scope="module")
def study(anisotropic, tmp_path_factory):
    """A results tree of a resampled dataset: its cache, a 2-fold split, two (untrained) fold models, the record."""
    config = validate_config({
        "seed": 5,
        "datasets": {"aniso": {"source": {"synthetic": {}}, "layout": "brats2021", "split": {"folds": 2, "seed": 0},
                               "preprocess": {"margin": 2, "spacing": TARGET}}},
        "experiments": {"e": {"dataset": "aniso", "model": {"name": "unet", "params": {"channels": [4, 8], "strides": [2],
                                                                                       "num_res_units": 0}},
                              "epochs": 1, "patch_size": [16, 16, 16], "inference": {"overlap": 0.25}}},
    }, SCHEMA)
    results = Results(str(tmp_path_factory.mktemp("study") / "results"))
    manifest, info = anisotropic["manifest"], anisotropic["info"]
    preprocess_dataset(manifest, info, results.preprocessed("aniso"), margin=2, spacing=TARGET)
    write_splits(manifest, info.modalities, 2, 0.0, 0, results.folds("aniso"), results.split_table("aniso"))
    settings = TrainingSettings.from_json(training_settings(config, "e"))
    for fold in (0, 1):
        torch.manual_seed(fold)
        network = network_for(settings, 4, 3)
        save_model(results.model("e", fold), network.state_dict(), settings, ["TC", "WT", "ET"], 4, epoch=1,
                   best_metric=0.0)
    from glioseg.atomic import write_json

    write_json(results.experiment_record("e"), experiment_record(config, "e"))
    return {"results": results, "config": config, "experiment": Path(results.root) / "models" / "e"}


def test_the_record_and_the_bundle_carry_the_spacing(study):
    from glioseg.bundle import from_results

    assert experiment_record(study["config"], "e")["preprocess"]["spacing"] == TARGET
    assert from_results(study["experiment"]).spacing == tuple(TARGET)


def test_infer_on_a_resampled_cache_writes_the_original_geometry_and_predict_gives_the_same(study, anisotropic, tmp_path):
    results, manifest = study["results"], anisotropic["manifest"]
    cases = manifest["case"].tolist()
    settings = InferenceSettings.from_json(inference_settings(study["config"], "e"))
    infer_cases([results.model("e", 0)], results.preprocessed("aniso"), manifest, anisotropic["info"], cases, settings,
                tmp_path / "infer", device=CPU)
    predict(study["experiment"], [anisotropic["raw"]], tmp_path / "predict", folds=[0], device=CPU)
    labels = manifest.set_index("case")["label"]
    for case in cases:
        inferred, predicted = (nib.load(str(tmp_path / name / f"{case}.nii.gz")) for name in ("infer", "predict"))
        original = nib.load(labels[case])
        assert inferred.shape == original.shape and np.array_equal(inferred.affine, original.affine)  # scored as is
        assert np.array_equal(np.asarray(predicted.dataobj), np.asarray(inferred.dataobj))
    assert any(np.asarray(nib.load(str(tmp_path / "infer" / f"{case}.nii.gz")).dataobj).any() for case in cases)


def test_a_bundle_refuses_a_cache_of_another_spacing(study, tmp_path):
    from glioseg.bundle import from_results

    path = Path(study["results"].preprocessed("aniso")) / "properties.json"
    original = path.read_text()
    try:
        path.write_text(json.dumps({**json.loads(original), "spacing": [1.0, 1.0, 1.0]}))
        with pytest.raises(GliosegError, match="resampled to spacing"):
            from_results(study["experiment"])
    finally:
        path.write_text(original)
