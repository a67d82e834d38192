"""The study configs of configs/, planned against fixture archives packed in each release's real layout.

Each fixture holds small synthetic scans under the release's real folder and
file names (BraTS 2018/2019 grade folders, BraTS 2021's zip of tar files);
BraTS 2021's holds two BraTS 2018 scans renamed, as the real release does.
The data stages run for real (extract, manifest, split, fingerprints,
overlap); the rest of each study is planned with a dry run.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
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


def study_on_fixtures(workdir: Path, config_name: str, sources: dict[str, Path], checkpoints: list[str]) -> Path:
    """The shipped config with each dataset read from a fixture archive and placeholder weights files."""
    config = yaml.safe_load((ROOT / "configs" / config_name).read_text())
    for name, archive in sources.items():
        config["datasets"][name]["source"] = {"path": str(archive)}
    for path in checkpoints:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_bytes(b"placeholder: the dry run reads no weights")
    out = workdir / config_name
    out.write_text(yaml.safe_dump(config))
    return out


def test_study1_transfer_plans_zero_shot_fine_tuning_and_a_leak_free_pretraining(tmp_path):
    brats2018 = {f"Brats18_CBICA_A{i:02d}_1": i for i in range(6)}
    brats2021 = {f"BraTS2021_{i:05d}": i for i in (6, 7)}
    brats2021 |= {"BraTS2021_00100": 1, "BraTS2021_00101": 4}  # two BraTS 2018 scans under BraTS 2021 names
    sources = {"brats2018": graded_zip(tmp_path / "brats2018.zip", "MICCAI_BraTS_2018_Data_Training", brats2018),
               "brats2021": brats2021_zip(tmp_path / "brats-2021-task1.zip", brats2021)}
    config = yaml.safe_load((ROOT / "configs/study1-swin-brats21-to-brats18.yaml").read_text())
    workdir = tmp_path / "run"
    workdir.mkdir()
    path = study_on_fixtures(workdir, "study1-swin-brats21-to-brats18.yaml", sources,
                             [config["experiments"]["swin_zeroshot"]["init"]["checkpoint"]])
    fixture_config = yaml.safe_load(path.read_text())
    for name in ("brats2018", "brats2021"):  # 4 BraTS 2021 cases cannot fill 5 folds: 2 folds here
        fixture_config["datasets"][name]["split"]["folds"] = 2
    path.write_text(yaml.safe_dump(fixture_config))

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
    workdir = tmp_path / "run"
    workdir.mkdir()
    path = study_on_fixtures(workdir, "study2-medicalnet-resnet-brats19.yaml", {"brats2019": archive}, weights)

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
