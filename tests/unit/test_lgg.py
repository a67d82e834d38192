"""LGG kaggle_3m: tif slices stacked into NIfTI volumes, read by the lgg_kaggle3m layout, split by patient."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glioseg.cli import main as cli_main
from glioseg.datasets.layouts import get_layout
from glioseg.datasets.lgg import stack_lgg
from glioseg.errors import GliosegError
from glioseg.manifest import build_manifest, read_dataset_info, write_manifest
from glioseg.report.figures import axial_slice, plot_score_boxplots
from glioseg.report.summary import markdown_report
from glioseg.scoring import score_prediction_slices, score_predictions
from glioseg.splits import split_table

SIDE = 16
MARKER = 200  # written at (row 2, column 5) of slice 10, every channel
MASK_AT = (3, 7)  # (row, column) of the one tumour pixel of slice 10's mask

#: case folder -> number of slices (≥ 10 somewhere, to catch lexical ordering)
CASES = {
    "TCGA_CS_4941_19960909": 12,
    "TCGA_CS_4941_20010101": 3,  # the same patient, a later scan
    "TCGA_DU_5852_19950709": 10,
}
LZW_CASE = "TCGA_DU_5852_19950709"
METADATA = [
    {"Patient": "TCGA_CS_4941", "RNASeqCluster": "2", "gender": "2", "age_at_initial_pathologic": "67"},
    {"Patient": "TCGA_HT_0000", "RNASeqCluster": "", "gender": "1", "age_at_initial_pathologic": "40"},
]


def slice_image(number: int) -> np.ndarray:
    """Slice ``number``: channel c filled with ``number * 3 + c``, plus the marker on slice 10."""
    image = np.empty((SIDE, SIDE, 3), np.uint8)
    image[:] = [number * 3 + c for c in range(3)]
    if number == 10:
        image[2, 5] = MARKER
    return image


def slice_mask(number: int) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    if number == 10:
        mask[MASK_AT] = 255
    return mask


def save_tif(path: Path, array: np.ndarray, lzw: bool = False) -> None:
    Image.fromarray(array).save(path, **({"compression": "tiff_lzw"} if lzw else {}))


def write_case(folder: Path, slices: int, lzw: bool = False) -> None:
    folder.mkdir(parents=True)
    for n in range(1, slices + 1):
        save_tif(folder / f"{folder.name}_{n}.tif", slice_image(n), lzw)
        save_tif(folder / f"{folder.name}_{n}_mask.tif", slice_mask(n), lzw)


def write_metadata(path: Path, rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def lgg_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release's layout in miniature, wrapped in a folder as Kaggle wraps it, with macOS debris beside it."""
    root = tmp_path_factory.mktemp("lgg") / "raw"
    data = root / "kaggle_3m"
    for case, slices in CASES.items():
        write_case(data / case, slices, lzw=case == LZW_CASE)
    write_metadata(data / "data.csv", METADATA)
    (data / "README.md").write_text("# LGG Segmentation Dataset\n")
    debris = root / "__MACOSX" / "kaggle_3m" / "TCGA_CS_4941_19960909"
    debris.mkdir(parents=True)
    (debris / "._TCGA_CS_4941_19960909_1.tif").write_bytes(b"\0\5\26\7")
    return root


@pytest.fixture(scope="module")
def lgg_stacked(lgg_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lgg-stacked") / "volumes"
    stack_lgg(lgg_raw, out)
    return out


def mutated(lgg_raw: Path, tmp_path: Path) -> Path:
    """A private copy of the raw tree to break."""
    return Path(shutil.copytree(lgg_raw, tmp_path / "raw"))


# ---------------------------------------------------------------- stacking


def test_stacking_writes_volumes_in_slice_order(lgg_stacked):
    assert sorted(p.name for p in lgg_stacked.iterdir()) == sorted([*CASES, "data.csv"])
    for case, slices in CASES.items():
        folder = lgg_stacked / case
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{case}_{m}.nii.gz" for m in ("pre", "flair", "post", "seg"))
        for channel, modality in enumerate(("pre", "flair", "post")):
            image = nib.load(folder / f"{case}_{modality}.nii.gz")
            assert image.shape == (SIDE, SIDE, slices)
            assert image.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(image.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))  # LPS, unit spacing
            volume = np.asarray(image.dataobj)
            # numeric order: index k holds slice k + 1 (lexical order would put 10, 11, 12 after 1)
            assert [int(volume[0, 0, k]) for k in range(slices)] == [(k + 1) * 3 + channel for k in range(slices)]
            if slices >= 10:
                # x = column, y = row: the marker at (row 2, column 5) of slice 10 lands at [5, 2, 9]
                assert volume[5, 2, 9] == MARKER
                assert int((volume == MARKER).sum()) == 1
                # ...and the figures show slice 10 as the tif looks (the affine says how it was displayed)
                assert axial_slice(image, 9)[2, 5] == MARKER
                np.testing.assert_array_equal(volume[:, :, 9], slice_image(10)[..., channel].T)


def test_masks_become_binary_labels(lgg_stacked):
    for case, slices in CASES.items():
        seg = nib.load(lgg_stacked / case / f"{case}_seg.nii.gz")
        assert seg.get_data_dtype() == np.uint8 and seg.shape == (SIDE, SIDE, slices)
        label = np.asarray(seg.dataobj)
        assert set(np.unique(label)) <= {0, 1}
        expected = 1 if slices >= 10 else 0
        assert int(label.sum()) == expected
        if expected:
            assert label[MASK_AT[1], MASK_AT[0], 9] == 1


def test_data_csv_is_copied(lgg_raw, lgg_stacked):
    assert (lgg_stacked / "data.csv").read_bytes() == (lgg_raw / "kaggle_3m" / "data.csv").read_bytes()


def test_identical_duplicate_release_copy_is_read_once(lgg_raw, tmp_path):
    """The Kaggle archive holds kaggle_3m/ twice (again under lgg-mri-segmentation/)."""
    raw = mutated(lgg_raw, tmp_path)
    shutil.copytree(raw / "kaggle_3m", raw / "lgg-mri-segmentation" / "kaggle_3m")
    stack_lgg(raw, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*CASES, "data.csv"])


def test_differing_duplicate_case_is_an_error(lgg_raw, tmp_path):
    raw = mutated(lgg_raw, tmp_path)
    write_case(raw / "other" / "TCGA_CS_4941_20010101", 4)
    with pytest.raises(GliosegError, match="TCGA_CS_4941_20010101 is found twice"):
        stack_lgg(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- manifest and split


def test_manifest_reads_stacked_cases_patients_and_metadata(lgg_stacked):
    frame, info = build_manifest(lgg_stacked, "lgg_kaggle3m", "lgg")
    assert frame["case"].tolist() == sorted(CASES)
    assert frame["patient"].tolist() == ["TCGA_CS_4941", "TCGA_CS_4941", "TCGA_DU_5852"]
    assert frame["group"].tolist() == ["", "", ""]
    assert info.modalities == ("pre", "flair", "post") and info.convention.name == "lgg"
    assert info.convention.regions == ("WT",)
    for row in frame.itertuples():
        assert row.image_flair == str(lgg_stacked / row.case / f"{row.case}_flair.nii.gz")
        assert row.label == str(lgg_stacked / row.case / f"{row.case}_seg.nii.gz")
    # every data.csv column but Patient, as strings; a patient it does not list gets empty strings
    assert [c for c in frame.columns if c not in {"case", "patient", "group", "label"} and not c.startswith("image_")] == [
        "RNASeqCluster", "gender", "age_at_initial_pathologic"]
    by_case = frame.set_index("case")
    assert by_case.loc["TCGA_CS_4941_19960909", "age_at_initial_pathologic"] == "67"
    assert by_case.loc["TCGA_CS_4941_20010101", "RNASeqCluster"] == "2"
    assert by_case.loc["TCGA_DU_5852_19950709", ["RNASeqCluster", "gender", "age_at_initial_pathologic"]].tolist() == ["", "", ""]
    table = split_table(frame, 2, 0.0, 0)
    assert table.groupby("patient")["fold"].nunique().max() == 1  # two dates of one patient share a fold


def test_stacked_volumes_are_marked_as_having_no_physical_spacing(lgg_stacked, tmp_path):
    frame, info = build_manifest(lgg_stacked, "lgg_kaggle3m", "lgg")
    assert info.physical_spacing is False and info.distance_unit == "px"
    write_manifest(frame, info, tmp_path / "lgg.csv", tmp_path / "lgg.json")
    assert read_dataset_info(tmp_path / "lgg.json") == info
    sidecar = json.loads((tmp_path / "lgg.json").read_text())
    assert sidecar["physical_spacing"] is False
    del sidecar["physical_spacing"]  # a sidecar written before the flag existed: millimetres, as then
    (tmp_path / "old.json").write_text(json.dumps(sidecar))
    assert read_dataset_info(tmp_path / "old.json").distance_unit == "mm"


@pytest.fixture(scope="module")
def lgg_scored(lgg_stacked: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every stacked case predicted perfectly (the label itself), scored per case and per slice."""
    frame, info = build_manifest(lgg_stacked, "lgg_kaggle3m", "lgg")
    predictions = tmp_path_factory.mktemp("lgg-predictions")
    for row in frame.itertuples():
        shutil.copy(row.label, predictions / f"{row.case}.nii.gz")
    cases = frame["case"].tolist()
    return (score_predictions(predictions, frame, info, cases, "unet", 0),
            score_prediction_slices(predictions, frame, info, cases, "unet", 0))


def test_lgg_hd95_is_labelled_in_pixels_in_scores_tables_and_figures(lgg_scored):
    scores, _ = lgg_scored
    assert set(scores["hd95_unit"]) == {"px"}
    report = markdown_report(scores)
    assert "HD95 WT (px)" in report and "HD95 in px (pixels" in report and "(mm)" not in report and " mm " not in report
    titles = [ax.get_title() for ax in plot_score_boxplots(scores).axes]
    assert "HD95 (px), WT" in titles and not any("mm" in t for t in titles)


def test_a_summary_mixing_millimetres_and_pixels_says_which_dataset_is_in_pixels(lgg_scored):
    lgg, _ = lgg_scored
    brats = lgg.assign(dataset="brats", hd95_unit="mm")
    old = brats.assign(dataset="old").drop(columns="hd95_unit")  # a score file from before the unit column: mm
    report = markdown_report(pd.concat([lgg, brats, old], ignore_index=True))
    assert "HD95 WT (mm/px)" in report and "in mm except in px (pixels: voxels with no physical size) for lgg." in report


def test_slice_scores_number_slices_as_the_tif_files_do(lgg_scored):
    _, slices = lgg_scored
    for case, count in CASES.items():
        assert slices.loc[slices["case"] == case, "slice_number"].tolist() == list(range(1, count + 1))
    tumour = slices[slices["truth_pixels"] > 0]
    assert tumour[["case", "slice_number"]].values.tolist() == [["TCGA_CS_4941_19960909", 10], ["TCGA_DU_5852_19950709", 10]]


def test_layout_without_data_csv_has_no_extra_columns(lgg_stacked, tmp_path):
    copy = Path(shutil.copytree(lgg_stacked, tmp_path / "volumes"))
    (copy / "data.csv").unlink()
    cases = get_layout("lgg_kaggle3m").find_cases(copy)
    assert [c.extra for c in cases] == [{}, {}, {}]


def test_layout_rejects_data_csv_without_patient_column(lgg_stacked, tmp_path):
    copy = Path(shutil.copytree(lgg_stacked, tmp_path / "volumes"))
    write_metadata(copy / "data.csv", [{"patient_id": "TCGA_CS_4941", "gender": "2"}])
    with pytest.raises(GliosegError, match="no 'Patient' column") as caught:
        get_layout("lgg_kaggle3m").find_cases(copy)
    assert caught.value.path == copy / "data.csv"


def test_cli_stack_slices(lgg_raw, tmp_path):
    assert cli_main(["stack-slices", "--raw", str(lgg_raw), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "TCGA_DU_5852_19950709" / "TCGA_DU_5852_19950709_seg.nii.gz").is_file()
    assert cli_main(["stack-slices", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out2")]) == 2


# ---------------------------------------------------------------- errors


CASE = "TCGA_CS_4941_19960909"


def break_missing_mask(folder: Path) -> Path:
    (folder / f"{CASE}_11_mask.tif").unlink()
    return folder / f"{CASE}_11.tif"


def break_missing_image(folder: Path) -> Path:
    (folder / f"{CASE}_2.tif").unlink()
    return folder / f"{CASE}_2_mask.tif"


def break_gap(folder: Path) -> Path:
    (folder / f"{CASE}_11.tif").unlink()
    (folder / f"{CASE}_11_mask.tif").unlink()
    return folder


def break_empty(folder: Path) -> Path:
    for tif in folder.glob("*.tif"):
        tif.unlink()
    return folder


def break_mask_value(folder: Path) -> Path:
    mask = slice_mask(10)
    mask[0, 0] = 128
    save_tif(folder / f"{CASE}_10_mask.tif", mask)
    return folder / f"{CASE}_10_mask.tif"


def break_truncated(folder: Path) -> Path:
    path = folder / f"{CASE}_12.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def break_channels(folder: Path) -> Path:
    save_tif(folder / f"{CASE}_4.tif", slice_image(4)[..., 0])
    return folder / f"{CASE}_4.tif"


def break_shape(folder: Path) -> Path:
    save_tif(folder / f"{CASE}_5_mask.tif", np.zeros((SIDE, SIDE + 2), np.uint8))
    return folder / f"{CASE}_5_mask.tif"


def break_slice_size(folder: Path) -> Path:
    """One slice of another size than the case's first, with its mask to match."""
    save_tif(folder / f"{CASE}_6.tif", np.zeros((SIDE + 2, SIDE, 3), np.uint8))
    save_tif(folder / f"{CASE}_6_mask.tif", np.zeros((SIDE + 2, SIDE), np.uint8))
    return folder / f"{CASE}_6.tif"


def break_mask_values_0_1(folder: Path) -> Path:
    save_tif(folder / f"{CASE}_7_mask.tif", (slice_mask(10) > 0).astype(np.uint8))
    return folder / f"{CASE}_7_mask.tif"


def break_masks_only(folder: Path) -> Path:
    for tif in folder.glob("*.tif"):
        if not tif.name.endswith("_mask.tif"):
            tif.unlink()
    return folder


def break_multipage(folder: Path) -> Path:
    """Pillow reads a multi-page tif's first page only: the other pages were dropped without a word."""
    path = folder / f"{CASE}_3.tif"
    Image.fromarray(slice_image(3)).save(path, save_all=True, append_images=[Image.fromarray(slice_image(4))])
    return path


def break_empty_file(folder: Path) -> Path:
    (folder / f"{CASE}_8_mask.tif").write_bytes(b"")
    return folder / f"{CASE}_8_mask.tif"


@pytest.mark.parametrize(
    "breaker, message",
    [
        (break_missing_mask, "slice 11 has no mask"),
        (break_missing_image, "mask 2 has no image"),
        (break_gap, r"gap: slices 11 of 1\.\.12"),
        (break_empty, "case folder holds no slices"),
        (break_mask_value, r"mask values \[128\]"),
        (break_truncated, "unreadable or truncated tif"),
        (break_channels, r"expected \(16, 16, 3\) uint8"),
        (break_shape, r"expected \(16, 16\) uint8"),
        (break_slice_size, r"image has shape \(18, 16, 3\) and type uint8, expected \(16, 16, 3\) uint8"),
        (break_mask_values_0_1, r"mask values \[1\] are neither 0 nor 255"),
        (break_masks_only, r"case folder holds 12 masks but no image slices \(TCGA_CS_4941_19960909_<n>\.tif\)"),
        (break_multipage, "the tif holds 2 pages; a slice is one page"),
        (break_empty_file, "unreadable or truncated tif"),
    ],
)
def test_broken_case_names_the_file_and_writes_nothing(lgg_raw, tmp_path, breaker, message):
    raw = mutated(lgg_raw, tmp_path)
    culprit = breaker(raw / "kaggle_3m" / CASE)
    out = tmp_path / "out"
    with pytest.raises(GliosegError, match=message) as caught:
        stack_lgg(raw, out)
    assert caught.value.path == culprit
    assert str(culprit) in caught.value.message and "What to do" in caught.value.message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [raw]  # no temporary folder left behind


def test_every_broken_case_is_listed_in_one_error(lgg_raw, tmp_path):
    raw = mutated(lgg_raw, tmp_path)
    missing = break_missing_mask(raw / "kaggle_3m" / CASE)
    truncated = raw / "kaggle_3m" / LZW_CASE / f"{LZW_CASE}_3_mask.tif"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(GliosegError) as caught:
        stack_lgg(raw, tmp_path / "out", threads=2)
    message = caught.value.message
    assert "2 of 3 cases failed (stacking LGG slices)" in message
    assert f"{CASE}: slice 11 has no mask" in message and str(missing) in message
    assert f"{LZW_CASE}: unreadable or truncated tif" in message and str(truncated) in message
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [raw]  # no temporary folder left behind


def test_two_threads_stack_the_same_files(lgg_raw, lgg_stacked, tmp_path):
    out = tmp_path / "volumes"
    stack_lgg(lgg_raw, out, threads=2)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(out) == files(lgg_stacked)  # built with one thread


def test_truncated_lzw_tif_is_named(lgg_raw, tmp_path):
    raw = mutated(lgg_raw, tmp_path)
    path = raw / "kaggle_3m" / LZW_CASE / f"{LZW_CASE}_3_mask.tif"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(GliosegError, match="unreadable or truncated tif") as caught:
        stack_lgg(raw, tmp_path / "out")
    assert caught.value.path == path


def test_no_cases_is_an_error(tmp_path):
    (tmp_path / "raw" / "kaggle_3m").mkdir(parents=True)
    with pytest.raises(GliosegError, match="no LGG case folders"):
        stack_lgg(tmp_path / "raw", tmp_path / "out")


# ---------------------------------------------------------------- the real release (10-patient subset)


def _real_root() -> Path:
    data = os.environ.get("GLIOSEG_SHARED_DATA")
    base = Path(data) if data else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "lgg-kaggle_3m-subset"


REAL = _real_root()


@pytest.mark.skipif(not (REAL / "kaggle_3m").is_dir(), reason=f"the LGG kaggle_3m subset is not at {REAL} (set GLIOSEG_SHARED_DATA)")
def test_real_subset_stacks_manifests_and_splits_by_patient(tmp_path):
    folders = sorted(p for p in (REAL / "kaggle_3m").iterdir() if p.is_dir())
    masks_per_case = {f.name: len(list(f.glob("*_mask.tif"))) for f in folders}
    stack_lgg(REAL, tmp_path / "volumes")

    frame, _info = build_manifest(tmp_path / "volumes", "lgg_kaggle3m", "lgg")
    assert frame["case"].tolist() == sorted(masks_per_case)
    patients = frame["patient"].tolist()
    assert len(set(patients)) == 10
    assert all(p.startswith("TCGA_") and len(p.split("_")) == 3 for p in patients)
    assert patients == [case.rsplit("_", 1)[0] for case in frame["case"]]
    assert frame["RNASeqCluster"].notna().all() and (frame["age_at_initial_pathologic"] != "").all()

    slices = {}
    for row in frame.itertuples():
        label = np.asarray(nib.load(row.label).dataobj)
        assert label.shape[:2] == (256, 256) and set(np.unique(label)) <= {0, 1}
        assert nib.load(row.image_flair).shape == label.shape
        slices[row.case] = label.shape[2]
    assert slices == masks_per_case
    assert sum(slices.values()) == 366  # 366 slices = 732 tif files (image + mask)

    table = split_table(frame, 5, 0.0, 0)
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    assert table.groupby("patient")["fold"].nunique().max() == 1
