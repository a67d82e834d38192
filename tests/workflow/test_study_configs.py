"""The study configs of configs/, planned against fixture archives packed in each release's real layout.

Each fixture holds small synthetic scans under the release's real folder and
file names (BraTS 2018/2019 grade folders, BraTS 2021's zip of tar files);
BraTS 2021's holds two BraTS 2018 scans renamed, as the real release does.
The data stages run for real (extract, manifest, split, fingerprints,
overlap); the rest of each study is planned with a dry run.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from glioseg.datasets.synthetic import SyntheticSpec, synthesize_case

from .conftest import ROOT, planned_jobs, snakemake

pytestmark = pytest.mark.workflow

SPEC = SyntheticSpec(cases=8, shape=(32, 32, 24), spacing=(3.0, 3.0, 3.0), lgg_fraction=0.25, seed=11)
MODALITIES = ("t1", "t1ce", "t2", "flair")


def case_volumes(index: int) -> dict[str, bytes]:
    """One synthetic case as ``.nii.gz`` bytes per BraTS file suffix."""
    case = synthesize_case(SPEC, index)
    volumes = {**case.images, "seg": case.seg}
    return {suffix: nib.Nifti1Image(volumes[suffix], case.affine).to_bytes() for suffix in (*MODALITIES, "seg")}


def gz(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw, mtime=0)


def graded_zip(out: Path, top: str, cases: dict[str, int]) -> Path:
    """BraTS 2018/2019 on Kaggle: ``<top>/{HGG,LGG}/<case>/<case>_<suffix>.nii.gz``."""
    with zipfile.ZipFile(out, "w") as archive:
        for name, index in cases.items():
            grade = synthesize_case(SPEC, index).grade
            for suffix, data in case_volumes(index).items():
                archive.writestr(f"{top}/{grade}/{name}/{name}_{suffix}.nii.gz", gz(data))
    return out


def brats2021_zip(out: Path, cases: dict[str, int]) -> Path:
    """dschettler8845/brats-2021-task1: a zip holding BraTS2021_Training_Data.tar of ``./<case>/<case>_<suffix>.nii.gz``."""
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as tar:
        for name, index in cases.items():
            for suffix, data in case_volumes(index).items():
                member = tarfile.TarInfo(f"./{name}/{name}_{suffix}.nii.gz")
                payload = gz(data)
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("BraTS2021_Training_Data.tar", packed.getvalue())
    return out


def study_on_fixtures(tmp_path: Path, config_name: str, sources: dict[str, Path], checkpoints: Sequence[str] = (),
                      adjust: Callable[[dict], None] = lambda config: None) -> tuple[Path, Path]:
    """A working directory and the shipped config in it, each dataset read from a fixture, weights as placeholders.

    ``adjust`` shrinks the config to the fixture (fewer folds, a smaller model);
    keys keep their order, which grid experiment names depend on.
    """
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = yaml.safe_load((ROOT / "configs" / config_name).read_text())
    for name, archive in sources.items():
        config["datasets"][name]["source"] = {"path": str(archive)}
    adjust(config)
    for path in checkpoints:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_bytes(b"placeholder: the dry run reads no weights")
    out = workdir / config_name
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir, out


def holdout(val: int, test: int) -> Callable[[dict], None]:
    """An adjustment: every dataset split into ``val`` validation and ``test`` test patients."""
    def adjust(config: dict) -> None:
        for dataset in config["datasets"].values():
            dataset["split"].update(val_patients=val, test_patients=test)
    return adjust


def test_study1_transfer_plans_zero_shot_fine_tuning_and_a_leak_free_pretraining(tmp_path):
    brats2018 = {f"Brats18_CBICA_A{i:02d}_1": i for i in range(6)}
    brats2021 = {f"BraTS2021_{i:05d}": i for i in (6, 7)}
    brats2021 |= {"BraTS2021_00100": 1, "BraTS2021_00101": 4}  # two BraTS 2018 scans under BraTS 2021 names
    sources = {"brats2018": graded_zip(tmp_path / "brats2018.zip", "MICCAI_BraTS_2018_Data_Training", brats2018),
               "brats2021": brats2021_zip(tmp_path / "brats-2021-task1.zip", brats2021)}
    config = yaml.safe_load((ROOT / "configs/study1-swin-brats21-to-brats18.yaml").read_text())

    def two_folds(config: dict) -> None:  # 4 BraTS 2021 cases cannot fill 5 folds
        for dataset in config["datasets"].values():
            dataset["split"]["folds"] = 2

    workdir, path = study_on_fixtures(tmp_path, "study1-swin-brats21-to-brats18.yaml", sources,
                                      [config["experiments"]["swin_zeroshot"]["init"]["checkpoint"]], two_folds)

    plan = planned_jobs(snakemake(workdir, "-n", configfile=path))
    assert plan["import_model"] == 2  # zero-shot: the checkpoint on each fold, no training
    assert plan["train"] == 3  # fine-tune, leak-free pre-training, fine-tune from it
    assert plan["overlap"] == 1 and plan["fingerprint"] == 2
    assert plan["plot_curves"] == 3 and plan["infer"] == plan["score"] == 2 + 3

    done = snakemake(workdir, "--until", "split", "overlap", configfile=path)
    assert done.returncode == 0, done.output[-4000:]
    results = workdir / "results/study1"
    manifest = pd.read_csv(results / "manifests/brats2018.csv")
    assert sorted(manifest["case"]) == sorted(brats2018) and set(manifest["group"]) == {"HGG", "LGG"}
    assert sorted(pd.read_csv(results / "manifests/brats2021.csv")["case"]) == sorted(brats2021)
    overlap = pd.read_csv(results / "overlap/brats2018/brats2021.csv")
    assert dict(zip(overlap["case_a"], overlap["case_b"])) == {"Brats18_CBICA_A01_1": "BraTS2021_00100",
                                                                "Brats18_CBICA_A04_1": "BraTS2021_00101"}

    plan = snakemake(workdir, "-n", "-p", configfile=path)
    clean_training = [line for line in plan.output.splitlines() if " train --cache results/study1/preprocessed/brats2021" in line]
    assert len(clean_training) == 1 and "--exclude results/study1/overlap/brats2018/brats2021.csv" in clean_training[0]
    assert "--init results/study1/models/swin_brats21_clean/fold1/model.pt" in plan.output


def test_study2_plans_six_medicalnet_encoders_on_one_fold_without_downloads(tmp_path):
    brats2019 = {f"BraTS19_TCIA01_{i:03d}_1": i for i in range(8)}
    archive = graded_zip(tmp_path / "brats2019.zip", "MICCAI_BraTS_2019_Data_Training/MICCAI_BraTS_2019_Data_Training",
                         brats2019)
    config = yaml.safe_load((ROOT / "configs/study2-medicalnet-resnet-brats19.yaml").read_text())
    weights = sorted({spec["init"]["checkpoint"] for spec in config["experiments"].values()})
    assert [Path(w).name for w in weights] == [f"resnet_{d}_23dataset.pth" for d in (10, 18, 50)]
    workdir, path = study_on_fixtures(tmp_path, "study2-medicalnet-resnet-brats19.yaml", {"brats2019": archive}, weights)

    result = snakemake(workdir, "-n", "-p", configfile=path)
    plan = planned_jobs(result)
    assert plan["train"] == 6 and "import_model" not in plan and plan["infer"] == plan["score"] == 6
    assert "acquire" not in plan  # a path: source is read where it is
    for depth in (10, 18, 50):
        assert f"--init checkpoints/medicalnet/resnet_{depth}_23dataset.pth" in result.output

    done = snakemake(workdir, "--until", "split", configfile=path)
    assert done.returncode == 0, done.output[-4000:]
    manifest = pd.read_csv(workdir / "results/study2/manifests/brats2019.csv")
    assert sorted(manifest["case"]) == sorted(brats2019)
    assert manifest["group"].value_counts().to_dict() == {"HGG": 6, "LGG": 2}


def kaggle_3m_zip(out: Path, patients: int, shape: tuple[int, int, int] = (64, 64, 16)) -> Path:
    """mateuszbuda/lgg-mri-segmentation in miniature: ``kaggle_3m/TCGA_<inst>_<id>_<date>/…_<n>.tif`` + ``_mask.tif``.

    Each slice is an RGB tif of (pre-contrast, FLAIR, post-contrast) from a
    synthetic case, scaled to 8 bits as the release's are, and its mask the
    whole tumour at 0/255.
    """
    from PIL import Image

    spec = SyntheticSpec(cases=patients, shape=shape, spacing=(3.0, 3.0, 3.0), lgg_fraction=1.0, seed=5)
    rows = ["Patient,RNASeqCluster,gender,age_at_initial_pathologic"]
    with zipfile.ZipFile(out, "w") as archive:
        for index in range(patients):
            case = synthesize_case(spec, index)
            patient = f"TCGA_{'CS' if index % 2 else 'DU'}_{5000 + index}"
            folder = f"{patient}_199{index % 10}0101"
            rows.append(f"{patient},{index % 3 + 1},{index % 2 + 1},{40 + index}")
            channels = [case.images[m].astype(np.float32) for m in ("t1", "flair", "t1ce")]
            rgb = np.stack([255 * c / max(c.max(), 1) for c in channels], axis=-1).astype(np.uint8)
            for z in range(shape[2]):
                for name, array in ((f"{folder}_{z + 1}.tif", rgb[:, :, z].transpose(1, 0, 2)),
                                    (f"{folder}_{z + 1}_mask.tif", (255 * (case.seg[:, :, z] > 0).T).astype(np.uint8))):
                    buffer = io.BytesIO()
                    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="TIFF")
                    archive.writestr(f"kaggle_3m/{folder}/{name}", buffer.getvalue())
        archive.writestr("kaggle_3m/data.csv", "\n".join(rows) + "\n")
    return out


def test_study4_lgg_unet_trains_2d_keeps_the_best_iou_epoch_and_scores_the_test_patients(tmp_path):
    """The LGG study config, shrunk to 8 synthetic patients, run end to end on slices of kaggle_3m's layout."""
    archive = kaggle_3m_zip(tmp_path / "lgg-mri-segmentation.zip", patients=8)

    def tiny(config: dict) -> None:
        holdout(2, 2)(config)
        config["experiments"]["unet_buda"].update(
            model={"name": "basic_unet", "params": {"features": [8, 8, 16, 16, 32, 8], "norm": "batch"}},
            epochs=3, batch_size=8, patch_size=[64, 64], num_workers=0, optimizer={"name": "adam", "lr": 3.0e-3},
            resources={"gpus": 0, "cpus": 1, "mem_mb": 2000, "runtime": 10})

    workdir, path = study_on_fixtures(tmp_path, "lgg-unet.yaml", {"lgg": archive}, adjust=tiny)

    done = snakemake(workdir, configfile=path)
    assert done.returncode == 0, done.output[-4000:]
    results = workdir / "results/lgg"
    patients = pd.read_csv(results / "splits/lgg/splits.csv").drop_duplicates("patient")
    assert patients["subset"].value_counts().to_dict() == {"train": 6, "test": 2}
    assert (patients["fold"] == 0).sum() == 2  # the validation patients

    history = pd.read_csv(results / "models/unet_buda/fold0/history.csv")
    import torch

    model = torch.load(results / "models/unet_buda/fold0/model.pt", weights_only=True)
    assert model["epoch"] == int(history.loc[history["val_iou_mean"].idxmax(), "epoch"])
    assert model["best_metric"] == pytest.approx(history["val_iou_mean"].max())

    scores = pd.read_csv(results / "summary/scores.csv")
    test_patients = set(patients.loc[patients["subset"] == "test", "patient"])
    tested = scores[scores["dataset"] == "lgg+test"]
    assert {case.rsplit("_", 1)[0] for case in tested["case"]} == test_patients
    assert set(tested["region"]) == {"WT"} and tested["iou"].between(0, 1).all()

    slices = pd.read_csv(results / "slice_scores/unet_buda/fold0/lgg+test.csv")
    assert len(slices) == 2 * 16 and set(slices["case"]) == set(tested["case"])
    assert (slices["truth_pixels"] > 0).any() and ((slices["truth_pixels"] == 0) & (slices["pred_pixels"] == 0)).any()
    assert (slices["missed_parts"] <= slices["truth_parts"]).all()
    for evaluation in ("lgg", "lgg+test"):
        assert (results / f"figures/unet_buda/gallery_{evaluation}.png").stat().st_size > 10_000
    summary = (results / "summary/summary.md").read_text()
    assert "| unet_buda | lgg+test | WT |" in summary and "| unet_buda | lgg+test | mean |" in summary


def brats2020_zip(out: Path, cases: int) -> Path:
    """awsaf49/brats20-dataset-training-validation: uncompressed ``.nii``, grades in ``name_mapping.csv``."""
    top = "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"
    rows = ["Grade,BraTS_2019_subject_ID,BraTS_2018_subject_ID,BraTS_2017_subject_ID,BraTS_2020_subject_ID"]
    with zipfile.ZipFile(out, "w") as archive:
        for index in range(cases):
            name = f"BraTS20_Training_{index + 1:03d}"
            rows.append(f"{synthesize_case(SPEC, index).grade},NA,NA,NA,{name}")
            for suffix, data in case_volumes(index).items():
                archive.writestr(f"{top}/{name}/{name}_{suffix}.nii", data)
        archive.writestr(f"{top}/name_mapping.csv", "\n".join(rows) + "\n")
    return out


def test_study3_grid_plans_23_two_dimensional_runs_scored_on_test_patients(tmp_path):
    archive = brats2020_zip(tmp_path / "brats20-dataset-training-validation.zip", cases=8)
    workdir, path = study_on_fixtures(tmp_path, "brats-unet2d-family.yaml", {"brats2020": archive}, adjust=holdout(2, 2))

    result = snakemake(workdir, "-n", "-p", configfile=path)
    plan = planned_jobs(result)
    assert plan["train"] == 23 and plan["infer"] == plan["score"] == 23 * 2  # validation and test patients
    assert "--subset test" in result.output and "--evaluation brats2020+test" in result.output
    for name in ("main-unet3p-explog02-adam", "optim-unet-weighted-adagrad", "variant-unet3p_dilated-bcedice-adam",
                 "variant-unet_3conv-bcedice-adam"):
        assert f"results/study3/models/{name}/fold0/model.pt" in result.output

    done = snakemake(workdir, "--until", "split", configfile=path)
    assert done.returncode == 0, done.output[-4000:]
    manifest = pd.read_csv(workdir / "results/study3/manifests/brats2020.csv")
    assert len(manifest) == 8 and manifest["image_t1"].str.endswith(".nii").all()
    assert set(manifest["group"]) == {"HGG", "LGG"}


def _real_lgg() -> Path:
    data = os.environ.get("GLIOSEG_SHARED_DATA")
    return (Path(data) if data else ROOT.parent / "shared" / "data") / "lgg-kaggle_3m-subset"


REAL_LGG = _real_lgg()


@pytest.mark.skipif(not (REAL_LGG / "kaggle_3m").is_dir(), reason=f"the real LGG subset is not at {REAL_LGG} (set GLIOSEG_SHARED_DATA)")
def test_study4_runs_end_to_end_on_ten_real_lgg_patients(tmp_path):
    """Realism: the real release's files, read in place, through stacking, a 6/2/2 patient split, 2D training at
    128² (resampled, as configs/lgg-unet-cpu.yaml) and scoring on the original 256² slices.

    Two epochs of a small U-Net on the CPU: this proves the path, not the accuracy (bench/ holds the numbers).
    The data views are left out: tests/workflow/test_views_report.py covers them.
    """

    def light(config: dict) -> None:
        holdout(2, 2)(config)
        config["views"] = {"enabled": False}
        config["datasets"]["lgg"]["preprocess"] = {"spacing": [2, 2, 1]}
        config["experiments"]["unet_buda"].update(patch_size=[128, 128],
            model={"name": "basic_unet", "params": {"features": [8, 8, 16, 16, 32, 8], "norm": "batch"}},
            epochs=2, batch_size=16, num_workers=0, optimizer={"name": "adam", "lr": 3.0e-3},
            slices={"min_label_area": 0, "empty_rate": 0.3}, resources={"gpus": 0, "cpus": 2, "mem_mb": 4000, "runtime": 20})

    workdir, path = study_on_fixtures(tmp_path, "lgg-unet.yaml", {"lgg": REAL_LGG}, adjust=light)

    done = snakemake(workdir, configfile=path, timeout=900)
    assert done.returncode == 0, done.output[-4000:]
    results = workdir / "results/lgg"
    assert not (results / "raw").exists()  # an extracted folder is read where it is
    split = pd.read_csv(results / "splits/lgg/splits.csv")
    assert split["patient"].nunique() == 10 and split.groupby("patient")["subset"].nunique().max() == 1
    slices = pd.concat(pd.read_csv(p) for p in (results / "slice_scores/unet_buda/fold0").glob("*.csv"))
    manifest = pd.read_csv(results / "manifests/lgg.csv")
    evaluated = manifest[manifest["case"].isin(slices["case"])]
    assert len(slices) == sum(nib.load(workdir / label).shape[2] for label in evaluated["label"])
    for case, label in zip(evaluated["case"], evaluated["label"]):  # predicted at 128², written back at 256²
        prediction = next((results / "predictions/unet_buda/fold0").glob(f"*/{case}.nii.gz"))
        assert nib.load(prediction).shape == nib.load(workdir / label).shape == (256, 256, nib.load(workdir / label).shape[2])
    cache = json.loads((results / "preprocessed/lgg/properties.json").read_text())
    assert cache["spacing"] == [2.0, 2.0, 1.0]
    for props in cache["cases"].values():  # halved in-plane, every slice kept
        sides = [b - a for a, b in zip(props["crop"]["start"], props["crop"]["stop"])]
        assert props["resampled_shape"] == [round(sides[0] / 2), round(sides[1] / 2), sides[2]]
    assert slices["dice"].between(0, 1).all() and (slices["truth_pixels"] > 0).any()
    scores = pd.read_csv(results / "summary/scores.csv")
    assert set(scores["dataset"]) == {"lgg", "lgg+test"} and len(scores) == 4  # 2 validation + 2 test patients, WT only
    assert (results / "figures/unet_buda/gallery_lgg+test.png").stat().st_size > 10_000
