"""Layout adapters: each real release's folder tree, in miniature, read into the right manifest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from glioseg.datasets.layouts import LAYOUTS, check_layout_options, get_layout, layout_names, stacks_slices
from glioseg.datasets.layouts.custom import CUSTOM_OPTIONS, custom_convention
from glioseg.datasets.layouts.nnunet import NNUNET_OPTIONS
from glioseg.errors import GliosegError
from glioseg.labels import BRATS, BRATS2023
from glioseg.manifest import build_manifest, read_dataset_info, write_manifest

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SHAPE = (8, 8, 6)


def write_volume(path: Path, values: Sequence[int] = (0, 1)) -> Path:
    """A tiny volume holding ``values`` (one voxel each, 0 elsewhere)."""
    data = np.zeros(SHAPE, np.int16)
    data.flat[: len(values)] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def write_case(folder: Path, images: Iterable[str], label: str | None, values: Sequence[int]) -> None:
    for name in images:
        write_volume(folder / name)
    if label is not None:
        write_volume(folder / label, values)


def brats_case(folder: Path, sep: str, modalities: Sequence[str], ext: str, values: Sequence[int], labelled: bool = True) -> None:
    """A case folder named as BraTS names them: ``<case><sep><modality><ext>``, label ``<case><sep>seg<ext>``."""
    case = folder.name
    write_case(folder, [f"{case}{sep}{m}{ext}" for m in modalities], f"{case}{sep}seg{ext}" if labelled else None, values)


def images(frame, modalities: Sequence[str]) -> list[list[str]]:
    return frame[[f"image_{m}" for m in modalities]].values.tolist()


# ---------------------------------------------------------------- BraTS 2018 / 2019

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")


@pytest.mark.parametrize("layout, year, prefix", [("brats2018", "2018", "Brats18"), ("brats2019", "2019", "BraTS19")])
def test_brats2018_2019_read_grade_folders(tmp_path, layout, year, prefix):
    training = tmp_path / f"MICCAI_BraTS_{year}_Data_Training"
    cases = {f"{prefix}_2013_10_1": "HGG", f"{prefix}_CBICA_AAB_1": "HGG", f"{prefix}_TCIA09_141_1": "LGG"}
    for case, grade in cases.items():
        brats_case(training / grade / case, "_", BRATS_MODALITIES, ".nii.gz", [0, 1, 2, 4])
    (training / "survival_data.csv").write_text("BraTS18ID,Age,Survival,ResectionStatus\n")
    # The validation release: ungraded, unlabelled, not under HGG/LGG.
    brats_case(tmp_path / f"MICCAI_BraTS_{year}_Data_Validation" / f"{prefix}_CBICA_AAM_1", "_", BRATS_MODALITIES, ".nii.gz", [],
               labelled=False)
    # macOS zip debris mirrors real folder names.
    debris = tmp_path / "__MACOSX" / training.name / "HGG" / f"{prefix}_2013_10_1"
    debris.mkdir(parents=True)
    (debris / f"._{prefix}_2013_10_1_t1.nii.gz").write_bytes(b"\0" * 10)

    frame, info = build_manifest(tmp_path, layout, "d")

    assert list(frame["case"]) == sorted(cases)
    assert list(frame["patient"]) == list(frame["case"])
    assert list(frame["group"]) == ["HGG", "HGG", "LGG"]
    assert list(frame.columns[:8]) == ["case", "patient", "group", "image_t1", "image_t1ce", "image_t2", "image_flair", "label"]
    case = f"{prefix}_TCIA09_141_1"
    folder = training / "LGG" / case
    assert images(frame, BRATS_MODALITIES)[2] == [str(folder / f"{case}_{m}.nii.gz") for m in BRATS_MODALITIES]
    assert frame.loc[2, "label"] == str(folder / f"{case}_seg.nii.gz")
    assert info.layout == layout and info.modalities == BRATS_MODALITIES and info.convention == BRATS


# ---------------------------------------------------------------- BraTS 2020

NAME_MAPPING = """Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,BraTS_2020_subject_ID
HGG,Brats17_CBICA_AAB_1,Brats18_CBICA_AAB_1,NA,BraTS19_CBICA_AAB_1,BraTS20_Training_001
LGG,Brats17_2013_0_1,Brats18_2013_0_1,TCGA-CS-4941,BraTS19_2013_0_1,BraTS20_Training_260
HGG,NA,NA,NA,NA,BraTS20_Training_355
"""


@pytest.fixture
def brats2020(tmp_path) -> Path:
    """The awsaf49 Kaggle tree: uncompressed .nii, case 355's misnamed seg, grades in name_mapping.csv, a validation set."""
    data = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    for number in ("001", "260"):
        brats_case(data / f"BraTS20_Training_{number}", "_", BRATS_MODALITIES, ".nii", [0, 1, 2, 4])
    odd = data / "BraTS20_Training_355"
    write_case(odd, [f"{odd.name}_{m}.nii" for m in BRATS_MODALITIES], "W39_1998.09.19_Segm.nii", [0, 2, 4])
    (data / "name_mapping.csv").write_text(NAME_MAPPING)
    (data / "survival_info.csv").write_text("Brats20ID,Age,Survival_days,Extent_of_Resection\nBraTS20_Training_001,60.463,289,GTR\n")
    validation = tmp_path / "BraTS2020_ValidationData" / "MICCAI_BraTS2020_ValidationData"
    brats_case(validation / "BraTS20_Validation_001", "_", BRATS_MODALITIES, ".nii", [], labelled=False)
    (validation / "name_mapping_validation_data.csv").write_text("BraTS_2017_subject_ID,BraTS_2018_subject_ID,"
                                                                 "BraTS_2019_subject_ID,BraTS_2020_subject_ID\n")
    return tmp_path


def test_brats2020_groups_from_name_mapping_and_accepts_case_355s_seg(brats2020):
    frame, info = build_manifest(brats2020, "brats2020", "d")
    data = brats2020 / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    assert list(frame["case"]) == ["BraTS20_Training_001", "BraTS20_Training_260", "BraTS20_Training_355"]
    assert list(frame["patient"]) == list(frame["case"])
    assert list(frame["group"]) == ["HGG", "LGG", "HGG"]
    assert images(frame, BRATS_MODALITIES)[1] == [str(data / "BraTS20_Training_260" / f"BraTS20_Training_260_{m}.nii")
                                                  for m in BRATS_MODALITIES]
    assert list(frame["label"]) == [
        str(data / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii"),
        str(data / "BraTS20_Training_260" / "BraTS20_Training_260_seg.nii"),
        str(data / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii"),
    ]
    assert info.modalities == BRATS_MODALITIES and info.convention == BRATS


def test_brats2020_missing_training_label_is_reported_and_the_alias_is_355s_only(brats2020):
    case = brats2020 / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001"
    (case / "BraTS20_Training_001_seg.nii").rename(case / "W39_1998.09.19_Segm.nii")
    with pytest.raises(GliosegError) as error:
        build_manifest(brats2020, "brats2020", "d")
    assert "1 of 3 cases are unusable" in error.value.message
    assert "BraTS20_Training_001: missing label" in error.value.message


# ---------------------------------------------------------------- BraTS 2023

BRATS2023_MODALITIES = ("t1n", "t1c", "t2w", "t2f")


@pytest.fixture
def brats2023(tmp_path) -> Path:
    training = tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00000-001", "BraTS-GLI-00002-000"):
        brats_case(training / case, "-", BRATS2023_MODALITIES, ".nii.gz", [0, 1, 2, 3])
    validation = tmp_path / "ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData"
    brats_case(validation / "BraTS-GLI-00001-000", "-", BRATS2023_MODALITIES, ".nii.gz", [], labelled=False)
    return tmp_path


def test_brats2023_timepoints_share_a_patient(brats2023):
    frame, info = build_manifest(brats2023, "brats2023", "d")
    assert list(frame["case"]) == ["BraTS-GLI-00000-000", "BraTS-GLI-00000-001", "BraTS-GLI-00002-000"]
    assert list(frame["patient"]) == ["BraTS-GLI-00000", "BraTS-GLI-00000", "BraTS-GLI-00002"]
    assert list(frame["group"]) == ["", "", ""]
    assert list(frame.columns[3:8]) == ["image_t1n", "image_t1c", "image_t2w", "image_t2f", "label"]
    folder = brats2023 / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / "BraTS-GLI-00000-001"
    assert images(frame, BRATS2023_MODALITIES)[1] == [str(folder / f"BraTS-GLI-00000-001-{m}.nii.gz") for m in BRATS2023_MODALITIES]
    assert frame.loc[1, "label"] == str(folder / "BraTS-GLI-00000-001-seg.nii.gz")
    assert info.modalities == BRATS2023_MODALITIES and info.convention == BRATS2023


def test_brats2023_label_4_is_outside_its_convention(brats2023):
    write_volume(brats2023 / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-seg.nii.gz",
                 [0, 2, 4])
    with pytest.raises(GliosegError) as error:
        build_manifest(brats2023, "brats2023", "d")
    assert "1 of 3 cases are unusable" in error.value.message
    assert "BraTS-GLI-00002-000: label values [4] outside the brats2023 convention [0, 1, 2, 3]" in error.value.message


def test_a_case_found_twice_is_refused(brats2023):
    training = brats2023 / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
    shutil.copytree(training / "BraTS-GLI-00002-000", training / "copy" / "BraTS-GLI-00002-000")
    with pytest.raises(GliosegError, match="case ids found more than once: BraTS-GLI-00002-000"):
        get_layout("brats2023").find_cases(brats2023)


@pytest.mark.parametrize("cohort", ["GLI", "MEN", "MET", "PED", "SSA"])
def test_each_brats2023_cohort_reads_its_own_case_folders(tmp_path, cohort):
    for other in ("GLI", "MEN", "MET", "PED", "SSA"):  # every cohort extracted side by side, as a user might
        training = tmp_path / f"ASNR-MICCAI-BraTS2023-{other}-Challenge-TrainingData"
        for case in (f"BraTS-{other}-00004-000", f"BraTS-{other}-00004-001", f"BraTS-{other}-00010-000"):
            brats_case(training / case, "-", BRATS2023_MODALITIES, ".nii.gz", [0, 1, 2, 3])
    frame, info = build_manifest(tmp_path, "brats2023", "d", {"cohort": cohort})
    assert list(frame["case"]) == [f"BraTS-{cohort}-00004-000", f"BraTS-{cohort}-00004-001", f"BraTS-{cohort}-00010-000"]
    assert list(frame["patient"]) == [f"BraTS-{cohort}-00004"] * 2 + [f"BraTS-{cohort}-00010"]
    folder = tmp_path / f"ASNR-MICCAI-BraTS2023-{cohort}-Challenge-TrainingData" / f"BraTS-{cohort}-00010-000"
    assert images(frame, BRATS2023_MODALITIES)[2] == [str(folder / f"BraTS-{cohort}-00010-000-{m}.nii.gz") for m in BRATS2023_MODALITIES]
    assert frame.loc[2, "label"] == str(folder / f"BraTS-{cohort}-00010-000-seg.nii.gz")
    assert info.layout == "brats2023" and info.modalities == BRATS2023_MODALITIES and info.convention == BRATS2023


def test_brats2023_without_a_cohort_reads_adult_glioma(brats2023):
    men = brats2023 / "ASNR-MICCAI-BraTS2023-MEN-Challenge-TrainingData" / "BraTS-MEN-00004-000"
    brats_case(men, "-", BRATS2023_MODALITIES, ".nii.gz", [0, 1, 2, 3])
    assert [c.case for c in get_layout("brats2023").find_cases(brats2023)] == \
        [c.case for c in get_layout("brats2023", {"cohort": "GLI"}).find_cases(brats2023)] == \
        ["BraTS-GLI-00000-000", "BraTS-GLI-00000-001", "BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]


def test_a_cohort_without_cases_finds_none(brats2023):
    with pytest.raises(GliosegError, match="no cases in the brats2023 layout were found"):
        build_manifest(brats2023, "brats2023", "d", {"cohort": "PED"})


@pytest.mark.parametrize("options, message", [
    ({"cohort": "GBM"}, r"unknown BraTS 2023 cohort 'GBM'; known cohorts: \['GLI', 'MEN', 'MET', 'PED', 'SSA'\]"),
    ({"cohort": "gli"}, "unknown BraTS 2023 cohort 'gli'"),
    ({"cohort": "MEN", "year": 2024}, r"unknown brats2023 layout_options \['year'\]"),
])
def test_brats2023_options_are_checked_before_any_data_is_read(options, message):
    with pytest.raises(GliosegError, match=f"dataset 'd': {message}"):
        check_layout_options("d", "brats2023", options)


def test_schema_lists_the_brats2023_cohorts():
    from glioseg.datasets.layouts.brats import BRATS2023_COHORTS, BRATS2023_OPTIONS

    options = yaml.safe_load(SCHEMA.read_text())["definitions"]["brats2023_layout_options"]
    assert set(options["properties"]) == BRATS2023_OPTIONS and options["additionalProperties"] is False
    assert options["properties"]["cohort"]["enum"] == list(BRATS2023_COHORTS) and options["properties"]["cohort"]["default"] == "GLI"


def test_the_config_takes_a_brats2023_cohort_and_no_other_option():
    from glioseg.config import validate_config

    def config(**dataset: object) -> dict:
        return {"datasets": {"d": {"source": {"path": "raw"}, "layout": "brats2023", **dataset}},
                "experiments": {"e": {"dataset": "d", "model": {"name": "unet"}}}}

    assert "layout_options" not in validate_config(config(), SCHEMA)["datasets"]["d"]
    assert validate_config(config(layout_options={"cohort": "MET"}), SCHEMA)["datasets"]["d"]["layout_options"] == {"cohort": "MET"}
    with pytest.raises(GliosegError, match=r"'met' is not one of \['GLI', 'MEN', 'MET', 'PED', 'SSA'\]"):
        validate_config(config(layout_options={"cohort": "met"}), SCHEMA)
    with pytest.raises(GliosegError, match=r"Additional properties are not allowed \('modalities'"):
        validate_config(config(layout_options={"modalities": {"t1": "t1.nii.gz"}}), SCHEMA)


# ---------------------------------------------------------------- validation releases (labelled: false)


def _graded_release(root: Path, year: str, prefix: str) -> tuple[str, list[str]]:
    """BraTS 2018/2019: ``MICCAI_BraTS_<year>_Data_Training/{HGG,LGG}/`` beside ``MICCAI_BraTS_<year>_Data_Validation/``,
    whose cases sit directly in it, ungraded and unlabelled."""
    for case, grade in ((f"{prefix}_2013_10_1", "HGG"), (f"{prefix}_TCIA09_141_1", "LGG")):
        brats_case(root / f"MICCAI_BraTS_{year}_Data_Training" / grade / case, "_", BRATS_MODALITIES, ".nii.gz", [0, 1, 2, 4])
    validation = root / f"MICCAI_BraTS_{year}_Data_Validation"
    cases = [f"{prefix}_CBICA_AAM_1", f"{prefix}_TCIA01_147_1"]
    for case in cases:
        brats_case(validation / case, "_", BRATS_MODALITIES, ".nii.gz", [], labelled=False)
    (validation / "survival_evaluation.csv").write_text("BraTS19ID,Age,ResectionStatus\n")
    return validation.name, cases


def brats2018_release(root: Path) -> tuple[str, list[str]]:
    return _graded_release(root, "2018", "Brats18")


def brats2019_release(root: Path) -> tuple[str, list[str]]:
    return _graded_release(root, "2019", "BraTS19")


def brats2020_release(root: Path) -> tuple[str, list[str]]:
    """Kaggle awsaf49: ``BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData`` beside
    ``BraTS2020_ValidationData/MICCAI_BraTS2020_ValidationData`` (uncompressed .nii, no seg)."""
    brats_case(root / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001", "_",
               BRATS_MODALITIES, ".nii", [0, 1, 2, 4])
    validation = root / "BraTS2020_ValidationData" / "MICCAI_BraTS2020_ValidationData"
    cases = ["BraTS20_Validation_001", "BraTS20_Validation_125"]
    for case in cases:
        brats_case(validation / case, "_", BRATS_MODALITIES, ".nii", [], labelled=False)
    (validation / "name_mapping_validation_data.csv").write_text("BraTS_2017_subject_ID,BraTS_2018_subject_ID,"
                                                                 "BraTS_2019_subject_ID,BraTS_2020_subject_ID\n")
    (validation / "survival_evaluation.csv").write_text("BraTS20ID,Age,ResectionStatus\n")
    return "BraTS2020_ValidationData", cases


def brats2021_release(root: Path) -> tuple[str, list[str]]:
    """``RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021`` beside ``RSNA_ASNR_MICCAI_BraTS2021_ValidationData``."""
    brats_case(root / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021" / "BraTS2021_00000", "_", BRATS_MODALITIES,
               ".nii.gz", [0, 1, 2, 4])
    validation = root / "RSNA_ASNR_MICCAI_BraTS2021_ValidationData"
    cases = ["BraTS2021_00001", "BraTS2021_00013"]
    for case in cases:
        brats_case(validation / case, "_", BRATS_MODALITIES, ".nii.gz", [], labelled=False)
    return validation.name, cases


def brats2023_release(root: Path) -> tuple[str, list[str]]:
    """``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData`` beside ``...-ValidationData`` (t1n, t1c, t2w, t2f; no seg)."""
    brats_case(root / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / "BraTS-GLI-00000-000", "-", BRATS2023_MODALITIES,
               ".nii.gz", [0, 1, 2, 3])
    validation = root / "ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData"
    cases = ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001"]
    for case in cases:
        brats_case(validation / case, "-", BRATS2023_MODALITIES, ".nii.gz", [], labelled=False)
    return validation.name, cases


RELEASES = [("brats2018", brats2018_release), ("brats2019", brats2019_release), ("brats2020", brats2020_release),
            ("brats2021", brats2021_release), ("brats2023", brats2023_release)]


@pytest.mark.parametrize("layout, release", RELEASES)
def test_an_unlabelled_dataset_is_the_validation_release_beside_the_training_data(tmp_path, layout, release):
    """The whole archive, or its validation folder alone, named as a labelled: false dataset: its validation cases."""
    folder, cases = release(tmp_path)
    for root in (tmp_path, tmp_path / folder):
        frame, info = build_manifest(root, layout, "val", labelled=False)
        assert list(frame["case"]) == cases
        assert (frame["label"] == "").all() and not info.labelled
        assert all(str(tmp_path / folder) in path for path in frame[[c for c in frame.columns if c.startswith("image_")]]
                   .values.ravel())
    write_manifest(frame, info, tmp_path / "val.csv", tmp_path / "val.json")
    assert read_dataset_info(tmp_path / "val.json").labelled is False


@pytest.mark.parametrize("layout, release", RELEASES)
def test_a_labelled_dataset_leaves_the_validation_release_out(tmp_path, layout, release):
    folder, cases = release(tmp_path)
    frame, info = build_manifest(tmp_path, layout, "train")
    assert not set(cases) & set(frame["case"]) and len(frame) >= 1 and (frame["label"] != "").all() and info.labelled
    with pytest.raises(GliosegError, match="no cases in the") as error:
        build_manifest(tmp_path / folder, layout, "train")
    assert f"the {len(cases)} cases found are a validation release without labels" in error.value.message
    assert "datasets → train → labelled: false" in error.value.message


def test_an_unlabelled_dataset_without_a_validation_release_is_every_case(tmp_path):
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        brats_case(tmp_path / "my_scans" / case, "_", BRATS_MODALITIES, ".nii.gz", [], labelled=False)
    frame, _ = build_manifest(tmp_path, "brats2021", "val", labelled=False)
    assert list(frame["case"]) == ["BraTS2021_00000", "BraTS2021_00002"]


# ---------------------------------------------------------------- custom

CUSTOM = {
    "cases": "*/*",
    "modalities": {"t1c": "{case}_T1c.nii.gz", "flair": "anat/*FLAIR*.nii.gz"},
    "label": "{case}_mask.nii.gz",
    "labels": {1: ["WT"]},
    "patient": r"^(?P<patient>P\d+)_",
    "group": r"^(?P<group>[^/]+)/",
}


@pytest.fixture
def custom_tree(tmp_path) -> Path:
    for site, case in (("siteA", "P01_s1"), ("siteA", "P01_s2"), ("siteB", "P02_s1")):
        write_case(tmp_path / site / case, [f"{case}_T1c.nii.gz", f"anat/{case}_FLAIR_reg.nii.gz"], f"{case}_mask.nii.gz", [0, 1])
    return tmp_path


def test_custom_layout_end_to_end_through_build_manifest(custom_tree, tmp_path_factory):
    frame, info = build_manifest(custom_tree, "custom", "d", CUSTOM)
    assert list(frame["case"]) == ["P01_s1", "P01_s2", "P02_s1"]
    assert list(frame["patient"]) == ["P01", "P01", "P02"]
    assert list(frame["group"]) == ["siteA", "siteA", "siteB"]
    assert list(frame.columns[3:6]) == ["image_t1c", "image_flair", "label"]
    folder = custom_tree / "siteB" / "P02_s1"
    assert images(frame, ("t1c", "flair"))[2] == [str(folder / "P02_s1_T1c.nii.gz"), str(folder / "anat" / "P02_s1_FLAIR_reg.nii.gz")]
    assert frame.loc[2, "label"] == str(folder / "P02_s1_mask.nii.gz")
    assert info.layout == "custom" and info.modalities == ("t1c", "flair")
    assert info.convention.members == {"WT": frozenset({1})} and info.convention.paint == (("WT", 1),)
    out = tmp_path_factory.mktemp("manifest")
    write_manifest(frame, info, out / "d.csv", out / "d.json")
    assert read_dataset_info(out / "d.json") == info  # the custom convention survives the sidecar


def test_custom_label_outside_the_map_is_reported(custom_tree):
    write_volume(custom_tree / "siteA" / "P01_s2" / "P01_s2_mask.nii.gz", [0, 1, 2])
    with pytest.raises(GliosegError, match=r"P01_s2: label values \[2\] outside the custom convention \[0, 1\]"):
        build_manifest(custom_tree, "custom", "d", CUSTOM)


def test_a_missing_custom_file_is_named_by_where_its_pattern_looked(custom_tree):
    """A pattern that matches nothing ('t1c' for 'T1c') misses in every case: the path shows the pattern, not only the role."""
    (custom_tree / "siteA" / "P01_s2" / "anat" / "P01_s2_FLAIR_reg.nii.gz").unlink()
    options = {**CUSTOM, "modalities": {"t1c": "{case}_t1c.nii.gz", "flair": "anat/*FLAIR*.nii.gz"}}
    with pytest.raises(GliosegError) as error:
        build_manifest(custom_tree, "custom", "d", options)
    folder = custom_tree / "siteA" / "P01_s2"
    assert f"P01_s2: missing t1c ({folder / 'P01_s2_t1c.nii.gz'}), flair ({folder / 'anat' / '*FLAIR*.nii.gz'})" in error.value.message
    assert f"P02_s1: missing t1c ({custom_tree / 'siteB' / 'P02_s1' / 'P02_s1_t1c.nii.gz'})" in error.value.message


def test_custom_pattern_matching_two_files_is_an_error(custom_tree):
    write_volume(custom_tree / "siteB" / "P02_s1" / "anat" / "P02_s1_FLAIR_raw.nii.gz")
    with pytest.raises(GliosegError, match=r"case P02_s1: pattern 'anat/\*FLAIR\*.nii.gz' matches 2 files"):
        get_layout("custom", CUSTOM).find_cases(custom_tree)


def test_custom_patient_regex_must_match_every_case(custom_tree):
    write_case(custom_tree / "siteB" / "control7", ["control7_T1c.nii.gz"], None, [])
    with pytest.raises(GliosegError, match="captures no patient id in case 'control7'"):
        get_layout("custom", CUSTOM).find_cases(custom_tree)


@pytest.mark.parametrize(
    "labels, convention",
    [({1: ["TC", "WT"], 2: ["WT"], 4: ["TC", "WT", "ET"]}, BRATS), ({"3": ["ET", "TC", "WT"], "2": ["WT"], "1": ["WT", "TC"]}, BRATS2023)],
)
def test_custom_convention_reproduces_the_brats_ones(labels, convention):
    built = custom_convention(labels)
    assert built.members == convention.members and built.paint == convention.paint


def test_custom_convention_paints_outermost_first_with_disjoint_inner_regions():
    built = custom_convention({3: ["WT", "ET"], 1: ["WT", "TC"], 2: ["WT"]})
    assert built.regions == ("TC", "WT", "ET")
    assert built.paint == (("WT", 2), ("TC", 1), ("ET", 3))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": {1: ["NCR"]}}, r"label 1 must list one or more regions among \['TC', 'WT', 'ET'\]"),
        ({"labels": {0: ["WT"]}}, "label value 0 must be a positive integer"),
        ({"labels": {1: ["TC", "WT"], 2: ["WT", "ET"], 3: ["TC", "ET"]}}, "regions TC and WT overlap without one containing the other"),
        ({"labels": {1: ["WT", "TC"], 2: ["WT", "ET"]}}, "region WT has no label value of its own"),
        ({"label_file": "x"}, r"unknown keys \['label_file'\]"),
        ({"patient": r"^P\d+"}, r"needs a named group \(\?P<patient>...\)"),
        ({"modalities": {}}, "'modalities' must map each modality name to a file pattern"),
        ({"mask": "{subject}_brain.nii.gz"}, r"the 'mask' pattern '\{subject\}_brain.nii.gz' has placeholders \['\{subject\}'\]"),
        ({"label": "/data/{case}_seg.nii.gz"}, "the 'label' pattern '/data/{case}_seg.nii.gz' must stay inside the case folder"),
        ({"modalities": {"t1": "../{case}_t1.nii.gz"}}, r"the 'modalities → t1' pattern .* must stay inside the case folder"),
        ({"cases": "{case}"}, r"the 'cases' pattern '\{case\}' has placeholders \['\{case\}'\]; it takes none"),
        ({"modalities": {"t 1": "x"}}, r"modality names \['t 1'\] must be letters, digits"),
        ({"mask": 3}, "'mask' must be a file pattern"),
    ],
)
def test_bad_custom_spec_fails_early_and_clearly(change, message):
    with pytest.raises(GliosegError, match=message) as error:
        get_layout("custom", {**CUSTOM, **change})
    assert error.value.message.startswith("custom layout: ") and "layout_options" in error.value.message


def test_custom_spec_without_its_required_keys():
    with pytest.raises(GliosegError, match=r"missing keys \['label', 'labels'\]"):
        get_layout("custom", {"modalities": {"t1": "t1.nii.gz"}})


# ---------------------------------------------------------------- registry


def test_unknown_layout_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown layout 'brats2022'; known layouts: "
                                       r"\['brats2018', 'brats2019', 'brats2020', 'brats2021', 'brats2023', 'custom', "
                                       r"'lgg_kaggle3m', 'nnunet'\]"):
        get_layout("brats2022")


def test_options_go_only_to_layouts_that_take_them():
    assert get_layout("brats2021").name == "brats2021"
    with pytest.raises(GliosegError, match="the custom layout needs layout_options"):
        get_layout("custom")
    with pytest.raises(GliosegError, match="the brats2020 layout takes no layout_options"):
        get_layout("brats2020", CUSTOM)


def test_only_the_slice_release_is_stacked():
    assert [name for name in layout_names() if stacks_slices(name)] == ["lgg_kaggle3m"]
    with pytest.raises(KeyError, match="unknown layout 'brats2022'"):
        stacks_slices("brats2022")


def test_the_registry_imports_no_network_or_image_library():
    """The Snakefile imports it at every start, dry runs included."""
    probe = "import sys, glioseg.datasets.layouts\nprint(sorted({'torch', 'monai', 'nibabel', 'PIL'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_schema_enum_names_exactly_the_registered_layouts():
    definitions = yaml.safe_load(SCHEMA.read_text())["definitions"]
    dataset = definitions["dataset"]
    assert dataset["properties"]["layout"]["enum"] == layout_names()
    custom, fixed, nnunet, brats2023 = dataset["allOf"]
    assert custom["if"]["properties"]["layout"] == {"const": "custom"} and custom["then"]["required"] == ["layout_options"]
    assert fixed["if"]["properties"]["layout"]["enum"] == sorted(LAYOUTS)
    assert nnunet["if"]["properties"]["layout"] == {"const": "nnunet"} and "required" not in nnunet["then"]
    assert set(definitions["nnunet_layout_options"]["properties"]) == NNUNET_OPTIONS
    assert brats2023["if"]["properties"]["layout"] == {"const": "brats2023"} and "required" not in brats2023["then"]


def test_schema_layout_options_are_exactly_the_custom_layouts():
    options = yaml.safe_load(SCHEMA.read_text())["definitions"]["layout_options"]
    assert set(options["properties"]) == CUSTOM_OPTIONS and options["additionalProperties"] is False
    assert all(spec.get("description") for spec in options["properties"].values())
    assert options["properties"]["labels"]["additionalProperties"]["items"]["enum"] == ["TC", "WT", "ET"]


# ---------------------------------------------------------------- brain masks (custom layout)

MASKED = {**CUSTOM, "mask": "{case}_brain.nii.gz"}


def test_custom_brain_masks_are_listed_in_the_manifest(custom_tree):
    for case in ("siteA/P01_s1", "siteA/P01_s2", "siteB/P02_s1"):
        write_volume(custom_tree / case / f"{Path(case).name}_brain.nii.gz", [1, 1, 0, 1])
    frame, info = build_manifest(custom_tree, "custom", "d", MASKED)
    assert list(frame.columns[3:7]) == ["image_t1c", "image_flair", "label", "mask"]
    assert frame.loc[2, "mask"] == str(custom_tree / "siteB" / "P02_s1" / "P02_s1_brain.nii.gz")
    assert info.modalities == ("t1c", "flair")


def test_custom_brain_masks_are_checked_like_the_other_files(custom_tree):
    write_volume(custom_tree / "siteA" / "P01_s2" / "P01_s2_brain.nii.gz", [0, 255, 255])
    write_volume(custom_tree / "siteB" / "P02_s1" / "P02_s1_brain.nii.gz", [0])
    write_case(custom_tree / "siteB" / "P03_s1", ["P03_s1_T1c.nii.gz", "anat/P03_s1_FLAIR.nii.gz"], "P03_s1_mask.nii.gz", [0, 1])
    odd = custom_tree / "siteB" / "P03_s1" / "P03_s1_brain.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), odd)
    with pytest.raises(GliosegError) as error:
        build_manifest(custom_tree, "custom", "d", MASKED)
    message = error.value.message
    assert "4 of 4 cases are unusable" in message
    assert "P01_s1: missing mask" in message
    assert "P01_s2: mask: brain mask values must be 0 and 1, found 0, 255" in message
    assert f"P02_s1: mask: the brain mask is empty ({custom_tree / 'siteB' / 'P02_s1' / 'P02_s1_brain.nii.gz'})" in message
    assert "P03_s1: mask has shape (4, 4, 4) but t1c has (8, 8, 6)" in message


# ---------------------------------------------------------------- config-time check


def test_layout_options_are_checked_with_the_dataset_and_config_named():
    check_layout_options("mine", "custom", MASKED, "study.yaml")
    check_layout_options("b21", "brats2021", None, "study.yaml")
    with pytest.raises(GliosegError, match=r"dataset 'mine': custom layout: the 'patient' regex needs a named group") as error:
        check_layout_options("mine", "custom", {**CUSTOM, "patient": r"^P\d+"}, "study.yaml")
    assert error.value.path == Path("study.yaml") and "layout_options" in error.value.hint
    with pytest.raises(GliosegError, match="dataset 'b21': the brats2021 layout takes no layout_options"):
        check_layout_options("b21", "brats2021", CUSTOM, "study.yaml")
    with pytest.raises(GliosegError, match="dataset 'mine': the custom layout needs layout_options"):
        check_layout_options("mine", "custom", {}, "study.yaml")
    with pytest.raises(GliosegError, match="dataset 'x': unknown layout 'brats1999'"):
        check_layout_options("x", "brats1999", None, "study.yaml")
