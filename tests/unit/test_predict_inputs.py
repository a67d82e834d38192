"""glioseg predict on the inputs a training dataset had: LGG kaggle_3m tif slices, and brain masks."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from glioseg.atomic import write_json
from glioseg.cli import main
from glioseg.config import experiment_record, training_settings, validate_config
from glioseg.datasets.lgg import stack_lgg
from glioseg.errors import GliosegError
from glioseg.inference import infer_cases
from glioseg.manifest import DatasetInfo, build_manifest, read_manifest, write_manifest
from glioseg.paths import Results
from glioseg.predict import predict
from glioseg.preprocess import preprocess_dataset
from glioseg.settings import InferenceSettings, TrainingSettings
from glioseg.splits import write_splits
from glioseg.training.loop import FoldPaths, train_fold

from .test_config import SCHEMA
from .test_lgg import CASES, write_case

CPU = torch.device("cpu")
MASK = "{case}_brainmask.nii.gz"


def train_study(root: Path, manifest: pd.DataFrame, info: DatasetInfo, dataset: Mapping[str, Any],
                experiment: Mapping[str, Any]) -> dict[str, Any]:
    """A results tree as the pipeline leaves it, as tests/unit/test_predict.py builds one: cache, 2-fold split, both
    fold models trained for an epoch, the experiment record."""
    config = validate_config({"seed": 5, "datasets": {"d": {"source": {"synthetic": {}}, "split": {"folds": 2, "seed": 0},
                                                            **dataset}},
                              "experiments": {"e": {"dataset": "d", "epochs": 1, "batch_size": 2, "num_workers": 0,
                                                    "model": {"name": "unet", "params": {"channels": [4, 8], "strides": [2],
                                                                                         "num_res_units": 0}},
                                                    **experiment}}}, SCHEMA)
    results = Results(str(root / "results"))
    preprocess_dataset(manifest, info, results.preprocessed("d"), margin=config["datasets"]["d"]["preprocess"]["margin"])
    table = write_splits(manifest, info.modalities, 2, 0.0, 0, results.folds("d"), results.split_table("d"))
    settings = TrainingSettings.from_json(training_settings(config, "e"))
    for fold in (0, 1):
        paths = FoldPaths(cache=Path(results.preprocessed("d")), model=Path(results.model("e", fold)),
                          history=Path(results.history("e", fold)), state=Path(results.state("e", fold)))
        train_fold(settings, paths, table.loc[table["fold"] != fold, "case"].tolist(),
                   table.loc[table["fold"] == fold, "case"].tolist(), list(info.convention.regions),
                   in_channels=len(info.modalities), device=CPU)
    write_json(results.experiment_record("e"), experiment_record(config, "e"))
    return {"results": results, "manifest": manifest, "info": info, "config": config,
            "experiment": Path(results.root) / "models" / "e"}


def infer(study: Mapping[str, Any], cases: list[str], out: Path) -> Path:
    """What the workflow's infer stage writes for ``cases`` from the training cache, with fold 0."""
    settings = InferenceSettings.from_json(experiment_record(study["config"], "e")["inference"])
    results = study["results"]
    infer_cases([results.model("e", 0)], results.preprocessed("d"), study["manifest"], study["info"], cases, settings,
                out, device=CPU)
    return out


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# ---------------------------------------------------------------- LGG kaggle_3m tif slices


@pytest.fixture(scope="module")
def lgg(tmp_path_factory) -> dict[str, Any]:
    """A 2D model trained on the stacked kaggle_3m miniature of tests/unit/test_lgg.py, and the release's tif folders."""
    root = tmp_path_factory.mktemp("lgg-study")
    raw = root / "raw" / "kaggle_3m"
    for case, slices in CASES.items():
        write_case(raw / case, slices)
    stack_lgg(root / "raw", root / "stacked")
    manifest, info = build_manifest(root / "stacked", "lgg_kaggle3m", "d")
    study = train_study(root, manifest, info, {"layout": "lgg_kaggle3m"}, {"patch_size": [16, 16]})
    return {**study, "raw": raw}


def test_a_tif_case_folder_gives_the_labels_infer_writes_from_the_cache(lgg, tmp_path):
    cases = sorted(CASES)
    inferred = infer(lgg, cases, tmp_path / "infer")
    report = predict(lgg["experiment"], [lgg["raw"]], tmp_path / "out", folds=[0], device=CPU)
    assert report.written == cases  # every case folder of the release; its _mask.tif files are not inputs
    for case in cases:
        want, got = nib.load(str(inferred / f"{case}.nii.gz")), nib.load(str(tmp_path / "out" / f"{case}.nii.gz"))
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
        assert np.array_equal(got.affine, want.affine) and got.header.binaryblock == want.header.binaryblock
    assert any(labels_of(tmp_path / "out" / f"{case}.nii.gz").any() for case in cases)


def test_each_slice_gets_a_mask_tif_as_the_release_names_and_stores_them(lgg, tmp_path):
    case = "TCGA_CS_4941_19960909"
    folder = tmp_path / "in" / case
    shutil.copytree(lgg["raw"] / case, folder)
    for mask in folder.glob("*_mask.tif"):  # new scans come without masks
        mask.unlink()
    predict(lgg["experiment"], [folder], tmp_path / "out", folds=[0], device=CPU)
    labels = labels_of(tmp_path / "out" / f"{case}.nii.gz")
    written = sorted((tmp_path / "out" / case).iterdir())
    assert [p.name for p in written] == sorted(f"{case}_{n}_mask.tif" for n in range(1, CASES[case] + 1))
    assert labels.any()
    for n in range(1, CASES[case] + 1):
        with Image.open(tmp_path / "out" / case / f"{case}_{n}_mask.tif") as image:
            mask = np.asarray(image)
            original = np.asarray(Image.open(folder / f"{case}_{n}.tif"))
        assert mask.dtype == np.uint8 and mask.shape == original.shape[:2]  # rows × columns, as the slice
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, labels[:, :, n - 1].T > 0)  # volume[:, :, n - 1] is slice n transposed


def test_a_rerun_skips_a_finished_tif_case_and_redoes_one_with_a_slice_mask_missing(lgg, tmp_path):
    case = "TCGA_CS_4941_20010101"
    first = predict(lgg["experiment"], [lgg["raw"] / case], tmp_path / "out", folds=[0], device=CPU)
    assert first.written == [case]
    assert predict(lgg["experiment"], [lgg["raw"] / case], tmp_path / "out", folds=[0], device=CPU).skipped == [case]
    (tmp_path / "out" / case / f"{case}_2_mask.tif").unlink()
    assert predict(lgg["experiment"], [lgg["raw"] / case], tmp_path / "out", folds=[0], device=CPU).written == [case]
    assert (tmp_path / "out" / case / f"{case}_2_mask.tif").is_file()


def test_a_broken_tif_case_is_named_and_the_others_are_written(lgg, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(lgg["raw"], inputs)
    broken = "TCGA_DU_5852_19950709"
    (inputs / broken / f"{broken}_4.tif").unlink()
    with pytest.raises(GliosegError) as raised:
        predict(lgg["experiment"], [inputs], tmp_path / "out", folds=[0], device=CPU)
    assert f"{broken}: " in raised.value.message and "slice numbering has a gap: slices 4 of 1..10" in raised.value.message
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in CASES if c != broken)


def test_nifti_scans_for_an_lgg_model_are_refused_with_what_it_reads(lgg, tiny_raw, tmp_path):
    with pytest.raises(GliosegError) as raised:
        predict(lgg["experiment"], [tiny_raw], tmp_path / "out", device=CPU)
    message = raised.value.message
    assert "the inputs hold NIfTI files" in message and "trained on the release's tif slices" in message
    assert "<case>_<n>.tif" in message
    with pytest.raises(GliosegError, match="--modality names NIfTI files"):
        predict(lgg["experiment"], [lgg["raw"]], tmp_path / "o2", patterns={"pre": "a", "flair": "b", "post": "c"},
                device=CPU)
    with pytest.raises(GliosegError, match="trained without them"):
        predict(lgg["experiment"], [lgg["raw"]], tmp_path / "o3", mask=MASK, device=CPU)


# ---------------------------------------------------------------- brain masks


def write_brain_mask(case_folder: Path, case: str, shape: tuple[int, ...], affine: np.ndarray) -> Path:
    """A brain mask smaller than the zero rule's brain: a central box, so that it crops otherwise."""
    mask = np.zeros(shape, np.uint8)
    mask[8:-8, 8:-8, 4:-4] = 1
    path = case_folder / MASK.replace("{case}", case)
    nib.save(nib.Nifti1Image(mask, affine), str(path))
    return path


@pytest.fixture(scope="module")
def masked(tiny_manifest, tmp_path_factory) -> dict[str, Any]:
    """A model trained on the tiny dataset with a brain mask per case, as a custom layout's ``mask`` gives them."""
    root = tmp_path_factory.mktemp("masked-study")
    frame = read_manifest(tiny_manifest[0])
    raw = root / "raw"
    for row in frame.itertuples():
        folder = raw / row.case
        shutil.copytree(Path(row.image_t1).parent, folder)
        reference = nib.load(row.image_t1)
        write_brain_mask(folder, row.case, reference.shape, reference.affine)
    manifest, info = build_manifest(raw, "brats2021", "d")
    manifest["mask"] = [str(raw / case / MASK.replace("{case}", case)) for case in manifest["case"]]
    write_manifest(manifest, info, root / "d.csv", root / "d.json")
    study = train_study(root, manifest, info, {"layout": "brats2021", "preprocess": {"margin": 2}},
                        {"patch_size": [16, 16, 16]})
    return {**study, "raw": raw, "csv": root / "d.csv", "json": root / "d.json"}


def test_mask_finds_the_brain_as_training_did(masked, tmp_path):
    cases = sorted(masked["manifest"]["case"])[:2]
    inferred = infer(masked, cases, tmp_path / "infer")
    report = predict(masked["experiment"], [masked["raw"] / case for case in cases], tmp_path / "out", folds=[0],
                     mask=MASK, device=CPU)
    assert report.written == cases
    for case in cases:
        assert np.array_equal(labels_of(tmp_path / "out" / f"{case}.nii.gz"), labels_of(inferred / f"{case}.nii.gz"))
    report = predict(masked["experiment"], [], tmp_path / "manifest", folds=[0], manifest=(masked["csv"], masked["json"]),
                     device=CPU)  # a dataset's manifest brings its layout's masks
    for case in cases:
        assert np.array_equal(labels_of(tmp_path / "manifest" / f"{case}.nii.gz"), labels_of(inferred / f"{case}.nii.gz"))


def test_a_masked_model_without_mask_is_refused_before_anything_is_written(masked, tmp_path):
    with pytest.raises(GliosegError) as raised:
        predict(masked["experiment"], [masked["raw"]], tmp_path / "out", device=CPU)
    message = raised.value.message
    assert "e was trained with brain masks" in message and "6 case(s) have none" in message and "--mask PATTERN" in message
    assert not (tmp_path / "out").exists()


def test_a_mask_of_another_shape_or_none_is_named_and_the_other_cases_are_written(masked, tmp_path):
    good, shaped, absent = sorted(masked["manifest"]["case"])[:3]
    inputs = tmp_path / "in"
    for case in (good, shaped, absent):
        shutil.copytree(masked["raw"] / case, inputs / case)
    reference = nib.load(str(inputs / shaped / f"{shaped}_t1.nii.gz"))
    write_brain_mask(inputs / shaped, shaped, (48, 48, 20), reference.affine)
    (inputs / absent / MASK.replace("{case}", absent)).unlink()
    with pytest.raises(GliosegError) as raised:
        predict(masked["experiment"], [inputs], tmp_path / "out", folds=[0], mask=MASK, device=CPU)
    message = raised.value.message
    assert "2 of 3 cases could not be predicted" in message
    assert f"{shaped}: {inputs / shaped / MASK.replace('{case}', shaped)}: brain mask has shape (48, 48, 20) but t1 " \
           "has (48, 48, 32)" in message
    assert f"{absent}: " in message and f"--mask '{MASK}' matches 0 files" in message
    assert [p.name for p in (tmp_path / "out").glob("*.nii.gz")] == [f"{good}.nii.gz"]


def test_tif_slices_for_a_nifti_model_are_refused_with_what_it_reads(masked, tmp_path):
    folder = tmp_path / "TCGA_CS_4941_20010101"
    write_case(folder, 3)
    with pytest.raises(GliosegError) as raised:
        predict(masked["experiment"], [tmp_path], tmp_path / "out", mask=MASK, device=CPU)
    assert "the inputs hold tif slices (TCGA_CS_4941_20010101_1.tif)" in raised.value.message
    assert "trained on NIfTI volumes of t1, t1ce, t2, flair" in raised.value.message


def test_the_predict_command_takes_mask(masked, tmp_path):
    case = sorted(masked["manifest"]["case"])[0]
    argv = ["predict", "--model", str(masked["experiment"]), "--input", str(masked["raw"] / case), "--fold", "0",
            "--output", str(tmp_path / "out")]
    assert main(argv) == 2  # no --mask
    assert main([*argv, "--mask", MASK]) == 0
    assert (tmp_path / "out" / f"{case}.nii.gz").is_file()
