"""Fixture archives packed the way Kaggle ships each release, through extract → manifest.

The layout tests read folder trees; these pack the same trees into the real
archive shapes (BraTS 2021's zip of tar files above all) so that the whole
acquire path is exercised on every layout.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest

from glioseg.acquire.extract import extract_archive
from glioseg.manifest import build_manifest

from .test_layouts import BRATS_MODALITIES, brats_case


def zip_tree(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return out


def tar_folder(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as archive:
        archive.add(folder, arcname=folder.name)
    return out


def test_brats2021_kaggle_zip_of_tars(tmp_path):
    """dschettler8845/brats-2021-task1: a zip holding BraTS2021_Training_Data.tar plus stray per-case tars."""
    staging, packed = tmp_path / "staging", tmp_path / "packed"
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        brats_case(staging / case, "_", BRATS_MODALITIES, ".nii.gz", [0, 1, 2, 4])
    brats_case(tmp_path / "stray" / "BraTS2021_00495", "_", BRATS_MODALITIES, ".nii.gz", [0, 2])
    packed.mkdir()
    with tarfile.open(packed / "BraTS2021_Training_Data.tar", "w") as archive:
        for case in sorted(staging.iterdir()):
            archive.add(case, arcname=f"./{case.name}")
    tar_folder(tmp_path / "stray" / "BraTS2021_00495", packed / "BraTS2021_00495.tar")
    raw = extract_archive(zip_tree(packed, tmp_path / "brats-2021-task1.zip"), tmp_path / "raw")

    assert not list(raw.rglob("*.tar"))
    frame, info = build_manifest(raw, "brats2021", "brats2021")
    assert list(frame["case"]) == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00495"]
    assert frame.loc[2, "label"].endswith("BraTS2021_00495/BraTS2021_00495/BraTS2021_00495_seg.nii.gz")
    assert info.convention.name == "brats"


def test_brats2018_kaggle_zip_with_grade_folders(tmp_path):
    tree = tmp_path / "tree" / "MICCAI_BraTS_2018_Data_Training"
    brats_case(tree / "HGG" / "Brats18_2013_2_1", "_", BRATS_MODALITIES, ".nii.gz", [0, 1, 2, 4])
    brats_case(tree / "LGG" / "Brats18_TCIA10_103_1", "_", BRATS_MODALITIES, ".nii.gz", [0, 1, 2])
    raw = extract_archive(zip_tree(tmp_path / "tree", tmp_path / "brats2018.zip"), tmp_path / "raw")
    frame, _ = build_manifest(raw, "brats2018", "brats2018")
    assert dict(zip(frame["case"], frame["group"])) == {"Brats18_2013_2_1": "HGG", "Brats18_TCIA10_103_1": "LGG"}


def test_brats2020_kaggle_zip_with_uncompressed_nifti_and_grades(tmp_path):
    data = tmp_path / "tree" / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    brats_case(data / "BraTS20_Training_001", "_", BRATS_MODALITIES, ".nii", [0, 1, 2, 4])
    brats_case(data / "BraTS20_Training_355", "_", BRATS_MODALITIES, ".nii", [0, 4], labelled=False)
    (data / "BraTS20_Training_355" / "BraTS20_Training_355_seg.nii").write_bytes(
        (data / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii").read_bytes())
    (data / "BraTS20_Training_355" / "BraTS20_Training_355_seg.nii").rename(data / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii")
    (data / "name_mapping.csv").write_text(
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,BraTS_2020_subject_ID\n"
        "HGG,,,,,BraTS20_Training_001\nLGG,,,,,BraTS20_Training_355\n")
    raw = extract_archive(zip_tree(tmp_path / "tree", tmp_path / "brats20.zip"), tmp_path / "raw")
    frame, _ = build_manifest(raw, "brats2020", "brats2020")
    assert dict(zip(frame["case"], frame["group"])) == {"BraTS20_Training_001": "HGG", "BraTS20_Training_355": "LGG"}
    assert frame.loc[1, "label"].endswith("W39_1998.09.19_Segm.nii")


def test_a_truncated_kaggle_zip_is_named_and_leaves_nothing(tmp_path):
    tree = tmp_path / "tree"
    brats_case(tree / "BraTS2021_00001", "_", BRATS_MODALITIES, ".nii.gz", [0, 1])
    archive = zip_tree(tree, tmp_path / "brats.zip")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(Exception, match="truncated or corrupt") as error:
        extract_archive(archive, tmp_path / "raw")
    assert str(archive) in str(error.value)
    assert not (tmp_path / "raw").exists()
