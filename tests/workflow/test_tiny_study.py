"""The tiny study end to end through Snakemake, then what caching re-runs after each kind of change.

One module-scoped run feeds every test here: its outputs are checked for
content (geometry, label values, score ranges, table sizes), and dry runs on
top of it prove that Snakemake re-runs exactly what a change invalidates.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import CONFIGS, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

EXPERIMENTS = ("unet_a", "unet_b")
FOLDS = (0, 1)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    shutil.copy(CONFIGS / "tiny.yaml", workdir / "study.yaml")
    result = snakemake(workdir, configfile=workdir / "study.yaml")
    assert result.returncode == 0, result.output[-5000:]
    return workdir


def edited(workdir: Path, change) -> Path:
    config = yaml.safe_load((workdir / "study.yaml").read_text())
    change(config)
    path = workdir / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_predictions_are_label_maps_in_the_original_geometry(study):
    splits = json.loads((study / "results/splits/tiny/folds.json").read_text())
    for experiment in EXPERIMENTS:
        for fold in FOLDS:
            expected = sorted(item["case"] for item in splits["training"] if item["fold"] == fold)
            folder = study / f"results/predictions/{experiment}/fold{fold}/tiny"
            written = sorted(p.name.removesuffix(".nii.gz") for p in folder.glob("*.nii.gz"))
            assert written == expected
            for case in expected:
                prediction = nib.load(folder / f"{case}.nii.gz")
                truth = nib.load(study / f"results/raw/tiny/{case}/{case}_seg.nii.gz")
                assert prediction.shape == truth.shape == (48, 48, 32)
                np.testing.assert_allclose(prediction.affine, truth.affine)
                assert prediction.get_data_dtype() == np.uint8
                assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 4}


def test_scores_cover_every_case_and_region_with_valid_values(study):
    scores = pd.read_csv(study / "results/summary/scores.csv")
    assert len(scores) == 8 * 3 * len(EXPERIMENTS)  # every case is validated once per experiment, 3 regions each
    assert set(scores["region"]) == {"TC", "WT", "ET"} and set(scores["fold"]) == set(FOLDS)
    assert scores["dice"].between(0, 1).all() and scores["sensitivity"].between(0, 1).all()
    assert scores["specificity"].between(0, 1).all()
    diagonal = np.sqrt((48 * 2) ** 2 + (48 * 2) ** 2 + (32 * 2) ** 2)
    assert scores["hd95"].between(0, diagonal + 1e-6).all()
    truth_wt = scores[scores["region"] == "WT"].set_index(["experiment", "case"])["truth_voxels"]
    for case, voxels in truth_wt.xs("unet_a").items():
        label = np.asarray(nib.load(study / f"results/raw/tiny/{case}/{case}_seg.nii.gz").dataobj)
        assert voxels == np.count_nonzero(label)


def test_summary_and_history_tables(study):
    summary = (study / "results/summary/summary.md").read_text()
    for experiment in EXPERIMENTS:
        assert experiment in summary
        for fold in FOLDS:
            history = pd.read_csv(study / f"results/models/{experiment}/fold{fold}/history.csv")
            assert list(history["epoch"]) == [1, 2]
            assert history["train_loss"].gt(0).all()
            # validate_every defaults to 5: of 2 epochs only the last is validated
            assert history["val_dice_mean"].isna().tolist() == [True, False] and history["val_dice_mean"].iloc[-1] <= 1
            assert (study / f"results/models/{experiment}/fold{fold}/state/last.pt").exists()
            log = (study / f"results/models/{experiment}/fold{fold}/train.log").read_text()
            assert "best mean validation dice" in log
    assert "± " in summary
    lesions = summary.split("## Lesion-wise")[1]  # the score files' lesion columns reach the report
    assert all(f"| {experiment} | tiny | {region} |" in lesions for experiment in EXPERIMENTS for region in ("TC", "WT", "ET"))


def test_figures_are_real_images(study):
    for path in ["results/figures/score_boxplots.png", "results/figures/unet_a/training_curves.png",
                 "results/figures/unet_b/montage_tiny.png"]:
        image = matplotlib.image.imread(study / path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.01  # not a blank canvas


def test_a_second_run_does_nothing(study):
    assert planned_jobs(snakemake(study, "-n", configfile=study / "study.yaml")) == {}


def test_reordering_the_config_file_reruns_nothing(study):
    assert planned_jobs(snakemake(study, "-n", configfile=edited(study, lambda c: None))) == {}


def test_changing_one_experiment_reruns_only_that_experiment(study):
    path = edited(study, lambda c: c["experiments"]["unet_b"].update(epochs=3))
    result = snakemake(study, "-n", configfile=path)
    assert planned_jobs(result) == {"train": 2, "infer": 2, "score": 2, "plot_curves": 1, "plot_montage": 1,
                                    "summarize": 1, "plot_boxplots": 1, "describe_experiment": 1, "all": 1}
    assert "experiment=unet_b" in result.output and "experiment=unet_a" not in result.output


def test_changing_inference_settings_does_not_retrain(study):
    path = edited(study, lambda c: c["experiments"]["unet_a"]["inference"].update(overlap=0.5))
    jobs = planned_jobs(snakemake(study, "-n", configfile=path))
    assert "train" not in jobs
    assert jobs["infer"] == 2 and jobs["score"] == 2


def test_changing_preprocessing_reruns_that_dataset_and_downstream_only(study):
    path = edited(study, lambda c: c["datasets"]["tiny"]["preprocess"].update(margin=2))
    jobs = planned_jobs(snakemake(study, "-n", configfile=path))
    assert not {"acquire", "extract", "manifest", "split"} & set(jobs)
    assert jobs["preprocess"] == 1 and jobs["train"] == 4 and jobs["infer"] == 4 and jobs["score"] == 4


def test_report_has_every_figure_and_caption(study):
    result = snakemake(study, "--report", "report.html", configfile=study / "study.yaml")
    assert result.returncode == 0, result.output[-3000:]
    html = (study / "report.html").read_text()
    for text in ["training_curves.png", "montage_tiny.png", "score_boxplots.png", "scores.csv",
                 "Best, median and worst validation case"]:
        assert text in html


def test_cross_dataset_evaluation_finds_and_excludes_renamed_training_scans(study, tmp_path):
    """A second dataset holds two training cases renamed and re-saved as rescaled float32, plus three new scans."""
    from glioseg.acquire.extract import extract_archive
    from glioseg.datasets.synthetic import SyntheticSpec, write_sample_archive

    workdir = shutil.copytree(study, tmp_path / "study", symlinks=True)
    write_sample_archive(SyntheticSpec(cases=3, shape=(48, 48, 32), seed=99), tmp_path / "new.zip")
    other = extract_archive(tmp_path / "new.zip", tmp_path / "other")
    copies = {"BraTS2021_00000": "BraTS2021_00100", "BraTS2021_00005": "BraTS2021_00101"}
    for original, renamed in copies.items():
        (other / renamed).mkdir()
        for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
            image = nib.load(workdir / f"results/raw/tiny/{original}/{original}_{suffix}.nii.gz")
            data = np.asarray(image.dataobj)
            data = data if suffix == "seg" else (data * 0.37).astype(np.float32)
            nib.save(nib.Nifti1Image(data, image.affine), other / renamed / f"{renamed}_{suffix}.nii.gz")

    def add_other(config):
        config["views"] = {"enabled": False}  # views of a new dataset are test_views_report's business
        config["datasets"]["other"] = {"source": {"path": str(other)}, "layout": "brats2021", "split": {"folds": 2}}
        config["experiments"]["unet_a"]["evaluate"] = [{"dataset": "other", "ensemble": True}]

    path = edited(workdir, add_other)
    plan = planned_jobs(snakemake(workdir, "-n", configfile=path))
    assert "train" not in plan and plan["infer"] == plan["score"] == 2
    assert plan["infer_ensemble"] == plan["score_ensemble"] == 1
    result = snakemake(workdir, configfile=path)
    assert result.returncode == 0, result.output[-4000:]

    overlap = pd.read_csv(workdir / "results/overlap/tiny/other.csv")
    assert dict(zip(overlap["case_a"], overlap["case_b"])) == copies
    assert overlap["similarity"].min() > 0.95
    scores = pd.read_csv(workdir / "results/summary/scores.csv")
    cross = scores[(scores["dataset"] == "other")]
    assert set(cross["case"]) == {"BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"}  # the new scans only
    assert sorted(cross["fold"].unique()) == [-1, 0, 1] and len(cross) == 3 * 3 * 3
    ensemble = cross[cross["experiment"] == "unet_a+ensemble"]
    assert set(ensemble["fold"]) == {-1} and set(ensemble["case"]) == set(cross["case"])
    assert (scores[scores["experiment"] == "unet_a+ensemble"]["dataset"] == "other").all()
    assert (workdir / "results/figures/unet_a/montage_other.png").exists()


def _research_contributions_checkpoint(path: Path) -> dict:
    """A Swin UNETR checkpoint saved the way MONAI research-contributions' BraTS 2021 trainer saves it."""
    import torch

    from glioseg.models import build_model

    torch.manual_seed(3)
    model = build_model({"name": "swin_unetr", "params": {"feature_size": 12}}, 4, 3, spatial_dims=3)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"epoch": 299, "best_acc": np.mean(np.array([0.9, 0.8])), "state_dict": state}, path)
    return model.state_dict()


def test_transfer_experiments_start_from_a_checkpoint_or_another_experiment(study, tmp_path):
    """Evaluation-only experiments import weights (no training job); a fine-tune starts from another fold's model."""
    import torch

    workdir = shutil.copytree(study, tmp_path / "study", symlinks=True)
    published = _research_contributions_checkpoint(tmp_path / "swin_brats21_fold1.pt")
    unet_a = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())["experiments"]["unet_a"]

    def add_transfer(config):
        config["experiments"]["swin_zero"] = {
            "dataset": "tiny", "model": {"name": "swin_unetr", "params": {"feature_size": 12}}, "epochs": 0,
            "patch_size": [64, 64, 32], "init": {"checkpoint": str(tmp_path / "swin_brats21_fold1.pt")}, "folds": [0],
            "inference": {"overlap": 0.0, "sw_batch_size": 1}, "resources": unet_a["resources"]}
        config["experiments"]["unet_copy"] = {**unet_a, "epochs": 0, "init": {"experiment": "unet_a"}}
        config["experiments"]["unet_ft"] = {**unet_a, "epochs": 1, "folds": [1], "init": {"experiment": "unet_a", "fold": 0}}

    path = edited(workdir, add_transfer)
    plan = planned_jobs(snakemake(workdir, "-n", configfile=path))
    assert plan["import_model"] == 3 and plan["train"] == 1  # swin_zero (one fold) and unet_copy train nothing
    assert plan["plot_curves"] == 1 and plan["infer"] == plan["score"] == 4
    result = snakemake(workdir, configfile=path)
    assert result.returncode == 0, result.output[-4000:]

    models = workdir / "results/models"
    imported = torch.load(models / "swin_zero/fold0/model.pt", weights_only=True)
    assert imported["format"] == "glioseg-model/1" and imported["epoch"] == 0
    for key, value in published.items():
        torch.testing.assert_close(imported["state_dict"][key], value)
    assert "loaded 159/159 tensors" in (models / "swin_zero/fold0/import.log").read_text()
    assert not (models / "swin_zero/fold0/history.csv").exists()

    for fold in FOLDS:  # the same weights predict the same labels
        ours, theirs = (workdir / f"results/predictions/{name}/fold{fold}/tiny" for name in ("unet_copy", "unet_a"))
        for prediction in theirs.glob("*.nii.gz"):
            np.testing.assert_array_equal(np.asarray(nib.load(ours / prediction.name).dataobj),
                                          np.asarray(nib.load(prediction).dataobj))
    assert "initial weights from results/models/unet_a/fold0/model.pt" in (models / "unet_ft/fold1/train.log").read_text()
    scores = pd.read_csv(workdir / "results/summary/scores.csv")
    assert set(scores["experiment"]) == {"unet_a", "unet_b", "swin_zero", "unet_copy", "unet_ft"}
    assert sorted(scores.loc[scores["experiment"] == "unet_ft", "fold"].unique()) == [1]
    assert not (workdir / "results/figures/swin_zero/training_curves.png").exists()


def test_an_unlabelled_dataset_is_predicted_into_a_submission_folder(study, tmp_path):
    """labelled: false and predict: the trained study predicts a folder of cases without seg files into
    submissions/<experiment>/<dataset>/, <case>.nii.gz alone in each case's geometry; nothing else runs, nothing is scored."""
    cases = ("BraTS2021_00001", "BraTS2021_00006")
    for case in cases:
        shutil.copytree(study / f"results/raw/tiny/{case}", tmp_path / "validation" / case,
                        ignore=shutil.ignore_patterns("*_seg.nii.gz"))

    def add(config):
        config["datasets"]["val"] = {"source": {"path": str(tmp_path / "validation")}, "layout": "brats2021",
                                     "labelled": False, "threads": 1}
        config["predict"] = [{"experiment": "unet_a", "dataset": "val"}]

    path = edited(study, add)
    assert planned_jobs(snakemake(study, "-n", configfile=path)) == {"manifest": 1, "predict_dataset": 1, "all": 1}
    result = snakemake(study, configfile=path)
    assert result.returncode == 0, result.output[-5000:]
    folder = study / "results/submissions/unet_a/val"
    assert sorted(p.name for p in folder.iterdir()) == [f"{case}.nii.gz" for case in cases]
    for case in cases:
        prediction, image = nib.load(folder / f"{case}.nii.gz"), nib.load(tmp_path / "validation" / case / f"{case}_t1.nii.gz")
        assert prediction.shape == image.shape and prediction.get_data_dtype() == np.uint8
        np.testing.assert_allclose(prediction.affine, image.affine)
        assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2, 4}
    assert json.loads((study / "results/submissions/unet_a/val.json").read_text())["folds"] == [0, 1]
    assert pd.read_csv(study / "results/manifests/val.csv", keep_default_na=False)["label"].eq("").all()
    assert not list((study / "results/scores").glob("*/*/val.csv"))
