"""nnU-Net raw datasets in (the nnunet layout) and out (export-nnunet), and predictions made elsewhere scored as glioseg's."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glioseg.cli import main
from glioseg.datasets.layouts import get_layout, resolve_layout_options
from glioseg.errors import GliosegError
from glioseg.evaluation import cases_for
from glioseg.labels import BRATS, LabelConvention
from glioseg.manifest import build_manifest, read_dataset_info, read_manifest, write_manifest
from glioseg.nnunet_raw import dataset_json, export_nnunet, import_predictions, splits_final
from glioseg.scoring import score_predictions
from glioseg.splits import write_given_splits, write_splits

SHAPE = (10, 9, 6)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
REGIONS_JSON = {
    "channel_names": {"0": "T2", "1": "FLAIR"},
    "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
    "regions_class_order": [1, 2, 3],
    "numTraining": 4,
    "file_ending": ".nii.gz",
    "name": "Tiny",
}
TRAINING = ["tiny_000", "tiny_001", "tiny_002", "tiny_003"]


def volume(seed: int, labels: bool = False) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4, SHAPE).astype(np.uint8) if labels else rng.normal(100, 20, SHAPE).astype(np.float32)
    return nib.Nifti1Image(data, AFFINE)


def nnunet_dataset(root: Path, description: dict = REGIONS_JSON, test_labels: bool = True) -> Path:
    """``Dataset501_Tiny``: 4 training cases of 2 channels with region labels, 1 test case with its label, splits_final.json."""
    folder = root / "Dataset501_Tiny"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    for i, case in enumerate([*TRAINING, "tiny_100"]):
        part = "Ts" if case == "tiny_100" else "Tr"
        for channel in range(2):
            nib.save(volume(10 * i + channel), folder / f"images{part}" / f"{case}_{channel:04d}.nii.gz")
        if part == "Tr" or test_labels:
            nib.save(volume(10 * i + 9, labels=True), folder / f"labels{part}" / f"{case}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps(description, indent=4))
    (folder / "splits_final.json").write_text(json.dumps(
        [{"train": TRAINING[2:], "val": TRAINING[:2]}, {"train": TRAINING[:2], "val": TRAINING[2:]}], indent=4))
    return folder


def read(folder: Path, options: dict | None = None, name: str = "tiny"):
    return build_manifest(folder, "nnunet", name, resolve_layout_options("nnunet", options or {}, folder))


def test_the_layout_reads_channels_region_labels_and_labelled_test_cases(tmp_path):
    folder = nnunet_dataset(tmp_path)
    frame, info = read(tmp_path)  # the dataset folder is found below the root
    assert info.modalities == ("t2", "flair") and info.layout == "nnunet"
    assert info.convention.members == {"TC": frozenset({2, 3}), "WT": frozenset({1, 2, 3}), "ET": frozenset({3})}
    assert info.convention.paint == (("WT", 1), ("TC", 2), ("ET", 3))
    assert frame["case"].tolist() == [*TRAINING, "tiny_100"]
    assert frame["nnunet_set"].tolist() == ["Tr"] * 4 + ["Ts"]
    row = frame.set_index("case").loc["tiny_001"]
    assert row["image_flair"] == str(folder / "imagesTr" / "tiny_001_0001.nii.gz")
    assert row["label"] == str(folder / "labelsTr" / "tiny_001.nii.gz") and row["patient"] == "tiny_001"


def test_unlabelled_test_images_are_left_out(tmp_path):
    nnunet_dataset(tmp_path, test_labels=False)
    frame, _ = read(tmp_path / "Dataset501_Tiny")
    assert frame["case"].tolist() == TRAINING


def test_regions_class_order_sets_the_values_predictions_are_painted_with(tmp_path):
    description = {**REGIONS_JSON, "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3},
                   "regions_class_order": [1, 3, 3]}
    nnunet_dataset(tmp_path, description)
    with pytest.raises(GliosegError, match="regions_class_order paints TC with 3, which is not a value of that region alone"):
        read(tmp_path)


def test_a_label_based_dataset_maps_tissue_classes_to_regions(tmp_path):
    description = {"channel_names": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                   "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
                   "file_ending": ".nii.gz"}
    layout = get_layout("nnunet", {"dataset_json": description})
    assert layout.modalities == ("flair", "t1w", "t1gd", "t2w")
    assert layout.convention.members == {"TC": frozenset({2, 3}), "WT": frozenset({1, 2, 3}), "ET": frozenset({3})}
    assert layout.convention.paint == (("WT", 1), ("TC", 2), ("ET", 3))
    unknown = {**description, "labels": {"background": 0, "kidney": 1, "cyst": 2}}
    with pytest.raises(GliosegError, match=r"label 'kidney' .* is no tumour class") as caught:
        get_layout("nnunet", {"dataset_json": unknown})
    assert "layout_options: modalities {channel: name}, labels {value: [TC|WT|ET, ...]}" in caught.value.hint
    chosen = get_layout("nnunet", {"dataset_json": unknown, "labels": {1: ["WT"], 2: ["TC", "WT"]},
                                   "modalities": {"0": "flair", "T1w": "t1"}})
    assert chosen.convention.members == {"TC": frozenset({2}), "WT": frozenset({1, 2})}
    assert chosen.modalities == ("flair", "t1", "t1gd", "t2w")


def test_a_config_is_checked_without_the_data(tmp_path):
    assert get_layout("nnunet").name == "nnunet"  # no dataset.json yet: options alone
    with pytest.raises(GliosegError, match="unknown layout_options \\['mask'\\]"):
        get_layout("nnunet", {"mask": "x"})
    with pytest.raises(GliosegError, match=r"no folder with a dataset\.json"):
        resolve_layout_options("nnunet", {}, tmp_path)


# ---------------------------------------------------------------- hostile datasets: every problem names its file


def without(key: str) -> dict:
    return {k: v for k, v in REGIONS_JSON.items() if k != key}


@pytest.mark.parametrize("description, problem", [
    (without("channel_names"), 'dataset.json has no channel_names {"0": name, ...}'),
    ({**REGIONS_JSON, "channel_names": ["T2", "FLAIR"]}, "dataset.json's channel_names must be {\"0\": name, ...}, not ['T2', 'FLAIR']"),
    ({**REGIONS_JSON, "channel_names": {"0": None, "1": "FLAIR"}}, 'channel 0 is named None, not a string such as "FLAIR"'),
    (without("labels"), "dataset.json has no labels {name: value, ...}"),
    ({**REGIONS_JSON, "labels": [0, 1]}, "dataset.json's labels must be {name: value, ...}, not [0, 1]"),
    ({**REGIONS_JSON, "labels": {"background": 0, "liver": [1, 2], "kidney": [2]}},
     "region 'liver' is none of whole tumour, tumour core, enhancing tumour"),
    ({**without("regions_class_order"), "labels": {"background": 0, "liver": 1, "kidney": 2}, "channel_names": {"0": "T2", "1": "FLAIR"}},
     "nnunet layout: label 'liver' (1) is no tumour class glioseg knows"),
    ({**REGIONS_JSON, "file_ending": ".mha"}, "file_ending '.mha': glioseg reads NIfTI only"),
])
def test_what_dataset_json_lacks_or_gets_wrong_is_named_with_the_file(tmp_path, description, problem):
    """These were raised while the layout was built from the file's content alone, so the error named no file."""
    folder = nnunet_dataset(tmp_path, description)
    with pytest.raises(GliosegError) as caught:
        resolve_layout_options("nnunet", {}, tmp_path)
    assert caught.value.path == folder / "dataset.json" and problem in caught.value.problem
    assert "fix dataset.json" in caught.value.hint and "layout_options" in caught.value.hint


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", "\u00e9".encode("latin-1")])
def test_a_dataset_json_that_is_not_a_json_object_is_named(tmp_path, content):
    folder = nnunet_dataset(tmp_path)
    (folder / "dataset.json").write_bytes(content)
    with pytest.raises(GliosegError, match=r"dataset\.json is not (readable JSON|a JSON object)") as caught:
        resolve_layout_options("nnunet", {}, tmp_path)
    assert caught.value.path == folder / "dataset.json"


def test_a_dataset_json_with_a_byte_order_mark_is_read(tmp_path):
    folder = nnunet_dataset(tmp_path)
    (folder / "dataset.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(REGIONS_JSON).encode())
    frame, info = read(tmp_path)
    assert info.modalities == ("t2", "flair") and len(frame) == 5


def test_a_file_ending_the_files_do_not_have_is_named_not_taken_for_an_empty_dataset(tmp_path):
    folder = nnunet_dataset(tmp_path, {**REGIONS_JSON, "file_ending": ".nii"})
    with pytest.raises(GliosegError) as caught:
        read(tmp_path)
    assert caught.value.path == folder / "imagesTr"
    assert "imagesTr holds no <case>_<XXXX>.nii file (file_ending '.nii') but 8 other NIfTI files, e.g. tiny_000_0000.nii.gz" \
        in caught.value.problem


def test_a_missing_channel_and_a_label_without_images_are_named_by_the_file_expected(tmp_path):
    folder = nnunet_dataset(tmp_path)
    (folder / "imagesTr" / "tiny_001_0001.nii.gz").unlink()
    (folder / "labelsTr" / "tiny_999.nii.gz").write_bytes((folder / "labelsTr" / "tiny_000.nii.gz").read_bytes())
    with pytest.raises(GliosegError) as caught:
        read(tmp_path)
    message = caught.value.message
    assert "2 of 6 cases are unusable" in message
    assert f"tiny_001: missing flair ({folder / 'imagesTr' / 'tiny_001_0001.nii.gz'})" in message
    assert (f"tiny_999: missing t2 ({folder / 'imagesTr' / 'tiny_999_0000.nii.gz'}), "
            f"flair ({folder / 'imagesTr' / 'tiny_999_0001.nii.gz'})") in message
    assert "case folders" not in caught.value.hint  # an nnU-Net dataset has none


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, problem", [
    (lambda f: truncate(f / "imagesTr" / "tiny_001_0000.nii.gz"), "t2: truncated or corrupt image data"),
    (lambda f: (f / "labelsTr" / "tiny_001.nii.gz").write_bytes(b""), "label: not a readable NIfTI image"),
    (lambda f: nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 2), np.float32), AFFINE), f / "imagesTr" / "tiny_001_0000.nii.gz"),
     "t2: expected a 3D volume, found shape (10, 9, 6, 2)"),
    (lambda f: nib.save(nib.Nifti1Image(np.zeros((10, 9, 7), np.uint8), AFFINE), f / "labelsTr" / "tiny_001.nii.gz"),
     "label has shape (10, 9, 7) but t2 has (10, 9, 6)"),
    (lambda f: nib.save(nib.Nifti1Image(np.full(SHAPE, 7, np.uint8), AFFINE), f / "labelsTr" / "tiny_001.nii.gz"),
     "label values [7] outside the nnunet convention [0, 1, 2, 3]"),
])
def test_a_damaged_case_is_named_with_its_file_and_nothing_is_written(tmp_path, damage, problem):
    folder = nnunet_dataset(tmp_path)
    damage(folder)
    out = tmp_path / "manifest"
    code = main(["manifest", "--raw", str(tmp_path), "--layout", "nnunet", "--dataset", "tiny",
                 "--out-csv", str(out / "tiny.csv"), "--out-json", str(out / "tiny.json")])
    assert code == 2 and not out.exists()
    with pytest.raises(GliosegError) as caught:
        read(tmp_path)
    line = next(line for line in caught.value.message.splitlines() if "tiny_001:" in line)
    assert problem in line and str(folder) in line


def tree(folder: Path) -> dict[str, object]:
    """Every file under ``folder``: JSON parsed, anything else as bytes."""
    return {p.relative_to(folder).as_posix(): json.loads(p.read_text()) if p.suffix == ".json" else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_nnunet_dataset_read_and_exported_with_its_split_is_the_same_tree(tmp_path):
    original = nnunet_dataset(tmp_path / "raw")
    frame, info = read(original)
    write_given_splits(frame, info.modalities, original / "splits_final.json", tmp_path / "folds.json", tmp_path / "splits.csv")
    folds = json.loads((tmp_path / "folds.json").read_text())
    assert [item["case"] for item in folds["testing"]] == ["tiny_100"]  # imagesTs is nnU-Net's test set
    exported = tmp_path / "out" / "Dataset501_Tiny"
    assert export_nnunet(frame, info, folds, exported) == {"training": 4, "test": 1}
    assert tree(exported) == tree(original)


def brats_dataset(tmp_path: Path) -> tuple[pd.DataFrame, LabelConvention]:
    rows = []
    for i in range(4):
        case = f"B{i}"
        folder = tmp_path / "brats" / case
        folder.mkdir(parents=True)
        for channel, modality in enumerate(("t1", "flair")):
            nib.save(volume(i * 3 + channel), folder / f"{modality}.nii")
        labels = np.asarray(volume(i * 3 + 2, labels=True).dataobj)
        nib.save(nib.Nifti1Image(np.where(labels == 3, 4, labels).astype(np.uint8), AFFINE), folder / "seg.nii.gz")
        rows.append({"case": case, "patient": case, "group": "", "image_t1": str(folder / "t1.nii"),
                     "image_flair": str(folder / "flair.nii"), "label": str(folder / "seg.nii.gz")})
    return pd.DataFrame(rows), BRATS


def test_a_brats_dataset_is_exported_regions_based_with_consecutive_labels_and_read_back(tmp_path):
    from glioseg.manifest import DatasetInfo

    frame, convention = brats_dataset(tmp_path)
    info = DatasetInfo("bt", "custom", ("t1", "flair"), convention)
    write_splits(frame, info.modalities, 2, 0.0, 0, tmp_path / "folds.json", tmp_path / "splits.csv")
    folds = json.loads((tmp_path / "folds.json").read_text())
    out = tmp_path / "Dataset502_bt"
    export_nnunet(frame, info, folds, out)
    description = json.loads((out / "dataset.json").read_text())
    assert description["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
    assert description["regions_class_order"] == [2, 1, 3] and description["glioseg"]["label_values"] == {"3": 4}
    assert description["channel_names"] == {"0": "t1", "1": "flair"} and description["numTraining"] == 4
    written = np.asarray(nib.load(out / "labelsTr" / "B0.nii.gz").dataobj)
    original = np.asarray(nib.load(frame.loc[0, "label"]).dataobj)
    assert np.array_equal(written, np.where(original == 4, 3, original))
    assert np.array_equal(nib.load(out / "imagesTr" / "B0_0001.nii.gz").get_fdata(), nib.load(frame.loc[0, "image_flair"]).get_fdata())
    split = json.loads((out / "splits_final.json").read_text())
    assert split == splits_final(folds) and sorted(split[0]["val"] + split[1]["val"]) == ["B0", "B1", "B2", "B3"]
    _, back_info = read(out, name="bt")
    assert back_info.convention.members == {"TC": frozenset({1, 3}), "WT": frozenset({1, 2, 3}), "ET": frozenset({3})}
    assert back_info.convention.paint == (("WT", 2), ("TC", 1), ("ET", 3))


def test_a_holdout_split_is_one_nnunet_fold():
    folds = {"training": [{"case": "a", "fold": 0}, {"case": "b", "fold": 1}, {"case": "c", "fold": 1}], "testing": []}
    assert splits_final(folds, 1) == [{"train": ["b", "c"], "val": ["a"]}]


def test_dataset_json_of_a_single_region_dataset_is_label_based():
    from glioseg.labels import LGG
    from glioseg.manifest import DatasetInfo

    payload = dataset_json(DatasetInfo("lgg", "lgg_kaggle3m", ("pre", "flair", "post"), LGG), 3)
    assert payload["labels"] == {"background": 0, "whole tumor": 1} and "regions_class_order" not in payload


# ---------------------------------------------------------------- predictions made elsewhere


@pytest.fixture
def scored(tmp_path):
    nnunet_dataset(tmp_path / "raw")
    frame, info = read(tmp_path / "raw")
    write_manifest(frame, info, tmp_path / "m.csv", tmp_path / "m.json")
    write_given_splits(frame, info.modalities, tmp_path / "raw/Dataset501_Tiny/splits_final.json", tmp_path / "folds.json",
                       tmp_path / "splits.csv")
    internal = tmp_path / "predictions"  # as glioseg's infer writes them: uint8 label maps on the reference grid
    internal.mkdir()
    for i, case in enumerate(TRAINING):
        nib.save(volume(100 + i, labels=True), internal / f"{case}.nii.gz")
    return tmp_path, read_manifest(tmp_path / "m.csv"), read_dataset_info(tmp_path / "m.json"), internal


def test_predictions_scored_from_an_external_folder_equal_the_internal_scores(scored):
    tmp_path, manifest, info, internal = scored
    cases = cases_for(tmp_path / "folds.json", 0, "val")
    imported = tmp_path / "imported"
    import_predictions(internal, manifest, info, cases, imported)
    ours = score_predictions(internal, manifest, info, cases, "e", 0)
    theirs = score_predictions(imported, manifest, info, cases, "e", 0)
    pd.testing.assert_frame_equal(ours, theirs)
    assert sorted(p.name for p in imported.iterdir()) == [f"{c}.nii.gz" for c in cases]
    # and by the command, straight from the outside folder, in the same table format
    assert main(["score", "--predictions", str(internal), "--manifest", str(tmp_path / "m.csv"), "--info", str(tmp_path / "m.json"),
                 "--splits", str(tmp_path / "folds.json"), "--fold", "0", "--experiment", "e", "--out", str(tmp_path / "s.csv")]) == 0
    table = pd.read_csv(tmp_path / "s.csv")
    assert np.allclose(table["dice"], ours["dice"]) and table["case"].tolist() == ours["case"].tolist()


def test_a_label_map_brings_predictions_back_to_the_datasets_values(scored):
    tmp_path, manifest, info, internal = scored
    cases = cases_for(tmp_path / "folds.json", 1, "val")
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for case in cases:
        image = nib.load(internal / f"{case}.nii.gz")
        data = np.asarray(image.dataobj)
        nib.save(nib.Nifti1Image(np.where(data == 3, 7, data).astype(np.uint8), image.affine), shifted / f"{case}.nii")
    import_predictions(shifted, manifest, info, cases, tmp_path / "back", {"7": 3})
    pd.testing.assert_frame_equal(score_predictions(internal, manifest, info, cases, "e", 1),
                                  score_predictions(tmp_path / "back", manifest, info, cases, "e", 1))


def test_every_unusable_external_prediction_is_named_at_once(scored):
    tmp_path, manifest, info, _ = scored
    bad = tmp_path / "bad"
    bad.mkdir()
    nib.save(nib.Nifti1Image(np.full(SHAPE, 5, np.uint8), AFFINE), bad / "tiny_000.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), AFFINE), bad / "tiny_001.nii.gz")
    with pytest.raises(GliosegError) as caught:
        import_predictions(bad, manifest, info, ["tiny_000", "tiny_001", "tiny_002"], tmp_path / "out")
    problem = caught.value.problem
    assert caught.value.path == bad and "3 of 3 predictions are unusable" in problem
    assert "tiny_000: label values [5] outside the nnunet convention [0, 1, 2, 3]" in problem
    assert "tiny_001: not on the reference label's grid" in problem and "shape (4, 4, 4) differs from (10, 9, 6)" in problem
    assert "tiny_002: no tiny_002.nii.gz" in problem
    hint = caught.value.hint
    assert "e.g. tiny_000.nii.gz" in hint and "label_map" in hint and "original images' geometry" in hint
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- hostile predictions: scored by hand and imported alike


def label_data(case: str, dtype=np.uint8) -> np.ndarray:
    return np.asarray(volume(100 + TRAINING.index(case), labels=True).dataobj).astype(dtype)


def score_command(tmp_path: Path, predictions: Path, out: Path) -> int:
    return main(["score", "--predictions", str(predictions), "--manifest", str(tmp_path / "m.csv"), "--info", str(tmp_path / "m.json"),
                 "--splits", str(tmp_path / "folds.json"), "--fold", "0", "--experiment", "e", "--out", str(out)])


def both_refuse(scored, folder: Path) -> list[GliosegError]:
    """The errors of scoring and of importing ``folder`` (fold 0's tiny_000 and tiny_001); nothing is written by either."""
    tmp_path, manifest, info, _ = scored
    errors = []
    for stage in (lambda: score_predictions(folder, manifest, info, TRAINING[:2], "e", 0),
                  lambda: import_predictions(folder, manifest, info, TRAINING[:2], tmp_path / "imported")):
        with pytest.raises(GliosegError) as caught:
            stage()
        errors.append(caught.value)
    assert not (tmp_path / "imported").exists()
    return errors


def predictions(tmp_path: Path, name: str, **replaced) -> Path:
    """fold 0's two good predictions in ``tmp_path/name``, with ``replaced`` {case: image or None (left out)}."""
    folder = tmp_path / name
    folder.mkdir()
    for case in TRAINING[:2]:
        image = replaced.get(case, nib.Nifti1Image(label_data(case), AFFINE))
        if image is not None:
            nib.save(image, folder / f"{case}.nii.gz")
    return folder


@pytest.mark.parametrize("make, problem", [
    (lambda folder: None, "no such folder of predictions"),
    (lambda folder: folder.write_text("x"), "is a file, not a folder of predictions"),
])
def test_a_predictions_folder_that_is_missing_or_a_file_is_named(scored, make, problem):
    folder = scored[0] / "preds"
    make(folder)
    for error in both_refuse(scored, folder):
        assert error.path == folder and error.problem == problem and "{fold}" in error.hint


def test_an_empty_folder_or_one_of_images_names_every_case_and_what_it_holds_instead(scored):
    tmp_path = scored[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    for error in both_refuse(scored, empty):
        assert "2 of 2 predictions are" in error.problem and "tiny_001: no tiny_001.nii.gz" in error.problem
        assert "this folder holds no NIfTI file: has the tool that writes them finished?" in error.hint
    images = tmp_path / "images"
    images.mkdir()
    for case in TRAINING[:2]:
        nib.save(nib.Nifti1Image(label_data(case), AFFINE), images / f"{case}_0000.nii.gz")
    for error in both_refuse(scored, images):
        assert "tiny_000: no tiny_000.nii.gz" in error.problem
        assert "such as tiny_000_0000.nii.gz, tiny_001_0000.nii.gz: named as nnU-Net names input image channels" in error.hint


def test_a_missing_ambiguous_or_broken_prediction_is_named_and_the_earlier_scores_are_kept(scored):
    tmp_path = scored[0]
    folder = predictions(tmp_path, "preds", tiny_001=None)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), folder / "tiny_000.nii")
    for error in both_refuse(scored, folder):
        assert error.path == folder
        assert "tiny_000: two predictions, tiny_000.nii.gz and tiny_000.nii: remove the one that is not meant" in error.problem
        assert "tiny_001: no tiny_001.nii.gz" in error.problem
    (folder / "tiny_000.nii").unlink()
    (folder / "tiny_001.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    assert "tiny_001.nii.gz is a broken link" in both_refuse(scored, folder)[0].problem
    out = tmp_path / "s.csv"
    out.write_text("earlier scores\n")
    assert score_command(tmp_path, folder, out) == 2 and out.read_text() == "earlier scores\n"


def test_a_prediction_of_a_case_not_in_the_dataset_is_reported_not_scored(scored, caplog):
    tmp_path, manifest, info, internal = scored
    folder = predictions(tmp_path, "preds")
    nib.save(nib.Nifti1Image(label_data("tiny_002"), AFFINE), folder / "zzz_999.nii.gz")
    table = score_predictions(folder, manifest, info, TRAINING[:2], "e", 0)
    pd.testing.assert_frame_equal(table, score_predictions(internal, manifest, info, TRAINING[:2], "e", 0))
    import_predictions(folder, manifest, info, TRAINING[:2], tmp_path / "imported")
    assert sorted(p.name for p in (tmp_path / "imported").iterdir()) == ["tiny_000.nii.gz", "tiny_001.nii.gz"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("1 file named after no case of the dataset, not scored: zzz_999.nii.gz" in w for w in warnings)


@pytest.mark.parametrize("image, problem, advice", [
    (nib.Nifti1Image(np.zeros((10, 9, 7), np.uint8), AFFINE), "shape (10, 9, 7) differs from (10, 9, 6)", "original images' geometry"),
    (nib.Nifti1Image(label_data("tiny_000"), np.diag([1.0, 1.5, 2.0, 1.0])), "voxel spacing [1.0, 1.5, 2.0] differs from [1.5, 1.5, 2.0]",
     "re-run inference"),
    (nib.Nifti1Image(label_data("tiny_000"), AFFINE @ np.diag([-1, 1, 1, 1])), "orientation differs", "original images' geometry"),
    (nib.Nifti1Image(np.where(label_data("tiny_000") == 3, 5, label_data("tiny_000")).astype(np.uint8), AFFINE),
     "label values [5] outside the nnunet convention [0, 1, 2, 3]", "label_map"),
    (nib.Nifti1Image(np.where(label_data("tiny_000") == 3, -1, label_data("tiny_000", np.int16)).astype(np.int16), AFFINE),
     "label values [-1] outside the nnunet convention", "label_map"),
    (nib.Nifti1Image(label_data("tiny_000", np.float32) / 2, AFFINE), "label values are not whole numbers", "integer values"),
    (nib.Nifti1Image(np.random.default_rng(0).random((*SHAPE, 4)).astype(np.float32), AFFINE),
     "expected a 3D volume, found shape (10, 9, 6, 4)", "one 3D volume"),
    (b"", "not a readable NIfTI image", "good copy"),
    (b"\x1f\x8b\x08\x00truncated", "not a readable NIfTI image", "good copy"),
])
def test_a_prediction_on_another_grid_or_with_values_off_the_convention_is_never_scored(scored, image, problem, advice):
    tmp_path = scored[0]
    folder = predictions(tmp_path, "preds")
    if isinstance(image, bytes):
        (folder / "tiny_000.nii.gz").write_bytes(image)
    else:
        nib.save(image, folder / "tiny_000.nii.gz")
    score_error, import_error = both_refuse(scored, folder)
    assert score_error.path == folder / "tiny_000.nii.gz" and problem in score_error.problem and advice in score_error.hint
    assert import_error.path == folder and f"tiny_000: {score_error.problem}" in import_error.problem
    assert advice in import_error.hint and "tiny_001" not in import_error.problem
    assert score_command(tmp_path, folder, tmp_path / "s.csv") == 2 and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_whole_label_values_of_any_type_score_as_uint8_and_are_imported_as_uint8(scored, dtype):
    tmp_path, manifest, info, internal = scored
    folder = predictions(tmp_path, "preds", **{case: nib.Nifti1Image(label_data(case, dtype), AFFINE) for case in TRAINING[:2]})
    pd.testing.assert_frame_equal(score_predictions(folder, manifest, info, TRAINING[:2], "e", 0),
                                  score_predictions(internal, manifest, info, TRAINING[:2], "e", 0))
    import_predictions(folder, manifest, info, TRAINING[:2], tmp_path / "imported")
    for case in TRAINING[:2]:
        written = nib.load(tmp_path / "imported" / f"{case}.nii.gz")
        assert written.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(written.dataobj), label_data(case))


def test_predictions_in_another_convention_are_refused_until_a_label_map_brings_them_back(tmp_path):
    from glioseg.manifest import DatasetInfo

    frame, convention = brats_dataset(tmp_path)
    info = DatasetInfo("bt", "custom", ("t1", "flair"), convention)
    folder = tmp_path / "nnunet"
    folder.mkdir()
    for _, row in frame.iterrows():  # nnU-Net's (and BraTS 2023's) 3 where BraTS 2018-2021 write 4
        image = nib.load(row["label"])
        nib.save(nib.Nifti1Image(np.where(np.asarray(image.dataobj) == 4, 3, np.asarray(image.dataobj)).astype(np.uint8), image.affine),
                 folder / f"{row['case']}.nii.gz")
    cases = frame["case"].tolist()
    with pytest.raises(GliosegError, match=r"B0.nii.gz: label values \[3\] outside the brats convention \[0, 1, 2, 4\]") as caught:
        score_predictions(folder, frame, info, cases, "nnunet", 0)
    assert "import-predictions --label-map" in caught.value.hint and "glioseg → label_values" in caught.value.hint
    with pytest.raises(GliosegError, match="label_map maps to \\[5\\], outside the brats convention"):
        import_predictions(folder, frame, info, cases, tmp_path / "out", {3: 5})
    with pytest.raises(GliosegError, match="label_map \\[3, 4\\] is not a mapping of label values"):
        import_predictions(folder, frame, info, cases, tmp_path / "out", [3, 4])
    import_predictions(folder, frame, info, cases, tmp_path / "out", {"3": 4})
    table = score_predictions(tmp_path / "out", frame, info, cases, "nnunet", 0)
    assert (table["dice"] == 1).all()


def test_an_import_never_deletes_what_it_did_not_write(scored):
    tmp_path, manifest, info, _ = scored
    folder = predictions(tmp_path, "preds")
    (folder / "summary.json").write_text("{}")  # nnU-Net's, beside its validation predictions
    with pytest.raises(GliosegError, match="the output folder is the folder of predictions read"):
        import_predictions(folder, manifest, info, TRAINING[:2], folder)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(GliosegError, match=r"holds what this command does not write \(notes.txt\)") as caught:
        import_predictions(folder, manifest, info, TRAINING[:2], mine)
    assert caught.value.path == mine and (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["summary.json", "tiny_000.nii.gz", "tiny_001.nii.gz"]


def test_a_split_of_another_dataset_is_named_not_a_key_error(scored):
    tmp_path, manifest, info, _ = scored
    for stage in (lambda: score_predictions(tmp_path / "predictions", manifest, info, ["B0"], "e", 0),
                  lambda: import_predictions(tmp_path / "predictions", manifest, info, ["B0"], tmp_path / "out")):
        with pytest.raises(GliosegError, match="1 of 1 cases of the split are not in the manifest: B0"):
            stage()


# ---------------------------------------------------------------- hostile exports


@pytest.fixture
def exportable(tmp_path):
    from glioseg.manifest import DatasetInfo

    frame, convention = brats_dataset(tmp_path)
    info = DatasetInfo("bt", "custom", ("t1", "flair"), convention)
    write_splits(frame, info.modalities, 2, 0.0, 0, tmp_path / "folds.json", tmp_path / "splits.csv")
    return tmp_path, frame, info, json.loads((tmp_path / "folds.json").read_text())


@pytest.mark.parametrize("name", ["Dataset000_bt", "Dataset1000_bt", "Dataset5_bt", "Dataset502_my data", "Dataset502_",
                                  "Dataset502-bt", "bt", "nnUNet_raw"])
def test_an_export_nnunet_would_not_find_is_refused(exportable, name):
    tmp_path, frame, info, folds = exportable
    with pytest.raises(GliosegError, match="nnU-Net finds a raw dataset only by a folder named Dataset<id>_<name>") as caught:
        export_nnunet(frame, info, folds, tmp_path / name)
    assert caught.value.path == tmp_path / name and "Dataset501_brats" in caught.value.hint
    assert not (tmp_path / name).exists()


def test_an_export_never_deletes_what_it_did_not_write(exportable):
    tmp_path, frame, info, folds = exportable
    out = tmp_path / "Dataset502_bt"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GliosegError, match=r"holds what this command does not write \(notes.txt\)"):
        export_nnunet(frame, info, folds, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (out / "notes.txt").unlink()
    (out / "dataset.json").write_text("{}")  # an earlier export's: replaced
    assert export_nnunet(frame, info, folds, out) == {"training": 4, "test": 0}
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 4
    (tmp_path / "Dataset503_bt").write_text("mine")
    with pytest.raises(GliosegError, match="is a file; a folder is written here"):
        export_nnunet(frame, info, folds, tmp_path / "Dataset503_bt")
    assert (tmp_path / "Dataset503_bt").read_text() == "mine"


@pytest.mark.parametrize("count", [0, 3, -1])
def test_validation_folds_the_split_does_not_have_are_refused(exportable, count):
    tmp_path, frame, info, folds = exportable
    with pytest.raises(GliosegError, match=f"{count} validation folds asked for, but the split has 2 folds") as caught:
        export_nnunet(frame, info, folds, tmp_path / "Dataset502_bt", count)
    assert "between 1 (a hold-out split) and 2" in caught.value.hint and not (tmp_path / "Dataset502_bt").exists()


def test_an_export_with_a_split_of_another_dataset_or_no_labels_is_refused(exportable):
    from dataclasses import replace

    tmp_path, frame, info, folds = exportable
    other = {"training": [{"case": "tiny_000", "fold": 0}], "testing": []}
    with pytest.raises(GliosegError, match="1 of 1 cases of the split are not in the manifest: tiny_000"):
        export_nnunet(frame, info, other, tmp_path / "Dataset502_bt")
    with pytest.raises(GliosegError, match="dataset 'bt' has no labels"):
        export_nnunet(frame, replace(info, labelled=False), folds, tmp_path / "Dataset502_bt")
    assert not (tmp_path / "Dataset502_bt").exists()


def test_a_channel_nnunet_reads_as_a_normalisation_is_warned_about(exportable, caplog):
    from dataclasses import replace

    tmp_path, frame, info, folds = exportable
    frame = frame.rename(columns={"image_t1": "image_CT"})
    export_nnunet(frame, replace(info, modalities=("CT", "flair")), folds, tmp_path / "Dataset502_bt")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["channel 0 is named 'CT', which nnU-Net reads as its 'ct' normalisation (glioseg z-scores each case): "
                        "the two models do not see the same inputs; edit channel_names in dataset.json if that is not meant"]


def test_the_command_names_a_bad_splits_file_and_a_read_only_output(exportable, monkeypatch, capsys):
    import os

    tmp_path, frame, info, _ = exportable
    from glioseg.manifest import write_manifest as write

    write(frame, info, tmp_path / "m.csv", tmp_path / "m.json")
    (tmp_path / "splits_final.json").write_text("[]")
    args = ["export-nnunet", "--manifest", str(tmp_path / "m.csv"), "--info", str(tmp_path / "m.json")]
    assert main([*args, "--splits", str(tmp_path / "splits_final.json"), "--out", str(tmp_path / "Dataset502_bt")]) == 2
    assert f"{tmp_path / 'splits_final.json'}: not a glioseg fold JSON" in capsys.readouterr().err
    locked = tmp_path / "readonly"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert main([*args, "--splits", str(tmp_path / "folds.json"), "--out", str(locked / "Dataset502_bt")]) == 2
    assert f"{locked}: cannot write in this output folder (read-only, or not permitted)" in capsys.readouterr().err
    assert list(locked.iterdir()) == []
