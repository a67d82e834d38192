"""Splits a user brings (split: {file: …}): each kind read, matched to the manifest, and every defect reported at once."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from glioseg import splits
from glioseg.config import experiment_folds, validate_config
from glioseg.errors import GliosegError
from glioseg.given_split import TEST_FOLD, read_given_split
from glioseg.splits import given_split_table, write_given_splits, write_splits

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def manifest(n_patients: int = 6, scans: int = 1, root: str = "results/raw/ds/TrainingData") -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for s in range(scans):
            case = f"P{p}_{s}"
            rows.append({"case": case, "patient": f"P{p}", "group": "",
                         "image_t1": f"{root}/{case}/{case}_t1.nii.gz", "image_flair": f"{root}/{case}/{case}_flair.nii.gz",
                         "label": f"{root}/{case}/{case}_seg.nii.gz"})
    return pd.DataFrame(rows)


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_test_fold_is_the_splits_one():
    assert TEST_FOLD == splits.TEST_FOLD


def test_glioseg_own_split_files_given_back_give_the_same_split(tmp_path):
    frame = manifest(10, 2)
    drawn = write_splits(frame, ("t1", "flair"), 3, 0.2, 4, tmp_path / "folds.json", tmp_path / "splits.csv")
    for given in (tmp_path / "folds.json", tmp_path / "splits.csv"):
        table = given_split_table(frame, given)
        pd.testing.assert_frame_equal(table.reset_index(drop=True), drawn.reset_index(drop=True))
        assert read_given_split(given).folds == 3 and read_given_split(given).has_test


def test_monai_datalist_entries_are_matched_by_their_label_path_wherever_the_data_lies(tmp_path):
    """research-contributions' brats21_folds.json names files relative to its own data folder, not glioseg's."""
    frame = manifest(4)
    entries = [{"fold": p % 2, "image": [f"TrainingData/P{p}_0/P{p}_0_flair.nii.gz"], "label": f"TrainingData/P{p}_0/P{p}_0_seg.nii.gz"}
               for p in range(4)]
    path = tmp_path / "brats_folds.json"
    path.write_text(json.dumps({"training": entries}))
    table = given_split_table(frame, path)
    assert table.set_index("case")["fold"].to_dict() == {"P0_0": 0, "P1_0": 1, "P2_0": 0, "P3_0": 1}


def test_monai_training_and_validation_lists_are_a_holdout(tmp_path):
    frame = manifest(5)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"case": f"P{p}_0"} for p in range(3)], "validation": [{"case": "P3_0"}],
                                "testing": [{"image": "x/P4_0/P4_0_t1.nii.gz"}]}))
    given = read_given_split(path)
    assert given.holdout and given.folds == 1
    assert given_split_table(frame, path).set_index("case")["fold"].to_dict() == {
        "P0_0": 1, "P1_0": 1, "P2_0": 1, "P3_0": 0, "P4_0": TEST_FOLD}


def test_nnunet_splits_final_gives_its_folds_and_imagests_cases_are_the_test_set(tmp_path):
    frame = manifest(5)
    frame["nnunet_set"] = ["Tr", "Tr", "Tr", "Tr", "Ts"]
    folds = [{"train": ["P1_0", "P3_0"], "val": ["P0_0", "P2_0"]}, {"train": ["P0_0", "P2_0"], "val": ["P1_0", "P3_0"]}]
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(folds))
    table = given_split_table(frame, path).set_index("case")
    assert table["fold"].to_dict() == {"P0_0": 0, "P1_0": 1, "P2_0": 0, "P3_0": 1, "P4_0": TEST_FOLD}
    assert table.loc["P4_0", "subset"] == "test"


def test_a_csv_by_patient_places_all_its_cases_and_subsets_make_a_holdout(tmp_path):
    frame = manifest(4, scans=2)
    by_patient = write_csv(tmp_path / "by_patient.csv", [{"patient": f"P{p}", "fold": p % 2} for p in range(4)])
    table = given_split_table(frame, by_patient)
    assert (table.groupby("patient")["fold"].nunique() == 1).all() and len(table) == 8
    holdout = write_csv(tmp_path / "holdout.csv", [{"case": c, "subset": s} for c, s in zip(
        frame["case"], ["train", "train", "train", "train", "val", "val", "test", "test"])])
    assert read_given_split(holdout).folds == 1
    assert given_split_table(frame, holdout)["fold"].tolist() == [1, 1, 1, 1, 0, 0, TEST_FOLD, TEST_FOLD]


def test_written_given_split_is_the_drawn_format_and_the_file_is_copied(tmp_path):
    frame = manifest(4)
    given = write_csv(tmp_path / "mine.csv", [{"case": f"P{p}_0", "fold": p % 2} for p in range(4)])
    write_given_splits(frame, ("t1", "flair"), given, tmp_path / "out" / "folds.json", tmp_path / "out" / "splits.csv",
                       tmp_path / "out" / "given")
    payload = json.loads((tmp_path / "out" / "folds.json").read_text())
    assert [item["fold"] for item in payload["training"]] == [0, 1, 0, 1] and payload["testing"] == []
    assert payload["training"][0]["image"] == [frame.loc[0, "image_t1"], frame.loc[0, "image_flair"]]
    assert (tmp_path / "out" / "given" / "mine.csv").read_bytes() == given.read_bytes()
    assert list(pd.read_csv(tmp_path / "out" / "splits.csv").columns) == ["case", "patient", "group", "fold", "subset"]


# ---------------------------------------------------------------- defects


def failure(frame: pd.DataFrame, path: Path) -> str:
    with pytest.raises(GliosegError) as caught:
        given_split_table(frame, path, "ds")
    assert caught.value.path == path
    assert "edit the split file" in caught.value.hint and "remove split → file" in caught.value.hint
    return caught.value.problem


def test_unknown_cases_are_named(tmp_path):
    rows = [{"case": f"P{p}_0", "fold": p % 2} for p in range(4)] + [{"case": "Q9_0", "fold": 0}]
    problem = failure(manifest(4), write_csv(tmp_path / "s.csv", rows))
    assert "unknown cases, not in the dataset (1): Q9_0" in problem and "1 problem:" in problem


def test_missing_cases_are_named(tmp_path):
    problem = failure(manifest(5), write_csv(tmp_path / "s.csv", [{"case": f"P{p}_0", "fold": p % 2} for p in range(4)]))
    assert "missing cases, in no fold (1): P4_0" in problem


def test_a_patient_in_two_folds_is_named_with_its_folds(tmp_path):
    frame = manifest(3, scans=2)
    rows = [{"case": c, "fold": i % 2} for i, c in enumerate(frame["case"])]
    problem = failure(frame, write_csv(tmp_path / "s.csv", rows))
    assert "patients whose cases are in different folds (3): P0 (folds 0, 1), P1 (folds 0, 1), P2 (folds 0, 1)" in problem


def test_a_patient_split_between_a_fold_and_test_is_named(tmp_path):
    frame = manifest(3, scans=2)
    rows = [{"case": c, "fold": f} for c, f in zip(frame["case"], [0, 0, 1, 1, 1, -1])]
    assert "P2 (folds test, 1)" in failure(frame, write_csv(tmp_path / "s.csv", rows))


def test_an_empty_fold_is_named(tmp_path):
    rows = [{"case": f"P{p}_0", "fold": [0, 2][p % 2]} for p in range(4)]
    assert "empty folds: 1" in failure(manifest(4), write_csv(tmp_path / "s.csv", rows))


def test_an_empty_holdout_validation_is_named(tmp_path):
    rows = [{"case": f"P{p}_0", "subset": "train"} for p in range(3)] + [{"case": "P3_0", "subset": "test"}]
    assert "empty folds: 0 (validation)" in failure(manifest(4), write_csv(tmp_path / "s.csv", rows))


def test_every_defect_is_listed_in_one_error(tmp_path):
    frame = manifest(5, scans=2)
    rows = [{"case": "P0_0", "fold": 0}, {"case": "P0_1", "fold": 3}, {"case": "P1_0", "fold": 3}, {"case": "P1_1", "fold": 3},
            {"case": "P2_0", "fold": 0}, {"case": "P2_1", "fold": 0}, {"case": "P2_1", "fold": 0}, {"case": "nobody", "fold": 1}]
    problem = failure(frame, write_csv(tmp_path / "s.csv", rows))
    assert "does not fit dataset 'ds' (10 cases); 5 problems:" in problem
    for part in ("unknown cases, not in the dataset (1): nobody", "cases listed more than once (1): P2_1 (line 7, line 8)",
                 "missing cases, in no fold (4): P3_0, P3_1, P4_0, P4_1", "patients whose cases are in different folds (1): P0",
                 "empty folds: 1, 2"):
        assert part in problem


def test_nnunet_folds_that_do_not_train_on_the_other_folds_are_refused(tmp_path):
    folds = [{"train": ["P1_0"], "val": ["P0_0", "P2_0"]}, {"train": ["P0_0", "P2_0", "P9_0"], "val": ["P1_0", "P3_0"]}]
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(folds))
    problem = failure(manifest(4), path)
    assert "fold 0 leaves out of training cases that other folds validate (1): P3_0" in problem
    assert "fold 1 trains on cases that no fold validates (1): P9_0" in problem


@pytest.mark.parametrize("name, content, message", [
    ("s.json", "{not json", "not valid JSON"),
    ("s.json", '{"folds": []}', "neither"),
    ("s.json", '[{"train": []}]', "a non-empty list of {'train'"),
    ("s.csv", "case,group\nP0_0,a\n", "needs a 'case' or 'patient' column and a 'fold' and/or 'subset' column"),
    ("s.json", '{"training": [{"case": "P0_0"}]}', "no 'fold' keys and there is no 'validation'"),
    ("s.csv", b"", "the file is empty; a split CSV starts with a header line"),
    ("s.csv", b"case,fold\n", "the CSV has a header but no rows"),
    ("s.csv", "case,fold\nP0_0,0\n".encode("utf-16"), "not UTF-8 text"),
    ("s.csv", b"case;fold\nP0_0;0\n", "its columns look separated by ';': save it comma-separated"),
    ("s.csv", b"case\tfold\nP0_0\t0\n", "its columns look separated by '\\t'"),
    ("s.tsv", b"case,fold\nP0_0,0\n", "a CSV split must be named .csv, not .tsv"),
    ("s.json", b"", "not valid JSON"),
])
def test_a_file_of_no_known_kind_or_unreadable_is_refused_at_once_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GliosegError, match="cannot read the given split") as caught:
        read_given_split(path)
    assert caught.value.path == path and message in caught.value.problem


CSV_LINES = ["case,fold", *(f"P{p}_0,{p % 2}" for p in range(4))]


@pytest.mark.parametrize("content", [
    "\r\n".join(CSV_LINES).encode(),                                # Windows line endings
    b"\xef\xbb\xbf" + "\n".join(CSV_LINES).encode(),               # a BOM (Excel's 'CSV UTF-8')
    b"\xef\xbb\xbf" + "\r\n\r\n".join(CSV_LINES).encode(),        # both, and blank lines
    "\n".join(["Case , FOLD ", *CSV_LINES[1:]]).encode(),
])
def test_a_csv_from_windows_or_excel_is_read_as_written(tmp_path, content):
    path = tmp_path / "s.csv"
    path.write_bytes(content)
    assert given_split_table(manifest(4), path).set_index("case")["fold"].to_dict() == {"P0_0": 0, "P1_0": 1, "P2_0": 0, "P3_0": 1}


def test_a_json_split_with_a_bom_is_read(tmp_path):
    path = tmp_path / "splits_final.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"train": ["P0_0", "P1_0"], "val": ["P2_0"]}]).encode())
    assert given_split_table(manifest(3), path)["fold"].tolist() == [1, 1, 0]


def test_rows_with_more_or_fewer_fields_than_the_header_are_named(tmp_path):
    """csv.DictReader would file the extra fields under None and take the row as it reads: a wrong fold, silently."""
    path = tmp_path / "s.csv"
    path.write_text("case,fold\nP0_0,0\nP1,0,1\nP2_0\nP3_0,1\n")
    problem = failure(manifest(4), path)
    assert "line 3 has 3 fields where the header has 2 (a name holding a comma needs quotes)" in problem
    assert "line 4 has 1 field where the header has 2" in problem


@pytest.mark.parametrize("fold", ["1.5", "one", "²", "١", "-2", ""])
def test_folds_that_are_not_integers_are_named_with_their_line(tmp_path, fold):
    """'²' and '١' pass str.isdigit: the first made int() raise a bare ValueError, the second was read as fold 1."""
    path = tmp_path / "s.csv"
    path.write_text(f"case,fold\nP0_0,{fold}\nP1_0,0\nP2_0,1\n", encoding="utf-8")
    problem = failure(manifest(3), path)
    assert f"line 2: fold {fold!r} is not a fold number" in problem and "missing cases, in no fold (1): P0_0" in problem


@pytest.mark.parametrize("name, content", [
    ("s.csv", "case,fold\nP0_0,1000000000000000000000\nP1_0,0\nP2_0,1\n"),
    ("s.json", json.dumps({"training": [{"case": "P0_0", "fold": 10**9}, {"case": "P1_0", "fold": 0}, {"case": "P2_0", "fold": 1}]})),
])
def test_a_fold_number_no_file_could_fill_is_a_problem_not_a_fold_count(tmp_path, name, content):
    """The Snakefile plans one training per fold from this count: 10**9 folds ran the machine out of memory."""
    path = tmp_path / name
    path.write_text(content)
    given = read_given_split(path)
    assert given.folds == 2
    problem = failure(manifest(3), path)
    assert "is beyond what 3 entries in folds can fill (folds 0 to 2)" in problem


def test_a_splits_final_json_with_one_fold_is_a_holdout(tmp_path):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["P0_0", "P1_0", "P2_0"], "val": ["P3_0"]}]))
    given = read_given_split(path)
    assert given.holdout and given.folds == 1 and given.fold_numbers() == [0, 1]
    assert given_split_table(manifest(4), path)["fold"].tolist() == [1, 1, 1, 0]


def test_a_single_fold_is_not_cross_validation(tmp_path):
    problem = failure(manifest(2), write_csv(tmp_path / "s.csv", [{"case": "P0_0", "fold": 0}, {"case": "P1_0", "fold": 0}]))
    assert "it gives 1 fold: cross-validation needs at least two" in problem


# ---------------------------------------------------------------- the config


def config_with(split: dict, tmp_path: Path, test: bool = False) -> dict:
    return {"results": str(tmp_path / "results"),
            "datasets": {"ds": {"source": {"path": "somewhere"}, "layout": "brats2021", "split": split}},
            "experiments": {"e": {"dataset": "ds", "model": {"name": "unet"}, "test": test}}}


def test_the_config_counts_the_folds_of_the_given_file(tmp_path):
    path = write_csv(tmp_path / "s.csv", [{"case": f"P{p}_0", "fold": p % 3} for p in range(6)] + [{"case": "P6_0", "fold": -1}])
    config = validate_config(config_with({"file": str(path)}, tmp_path, test=True), SCHEMA)
    assert experiment_folds(config, "e") == [0, 1, 2]


def test_the_config_refuses_a_missing_split_file_and_test_without_test_cases(tmp_path):
    with pytest.raises(GliosegError, match=r"dataset 'ds': split → file: .*does not exist"):
        validate_config(config_with({"file": str(tmp_path / "nope.csv")}, tmp_path), SCHEMA)
    path = write_csv(tmp_path / "s.csv", [{"case": f"P{p}_0", "fold": p % 2} for p in range(4)])
    with pytest.raises(GliosegError, match="holds out no test patients"):
        validate_config(config_with({"file": str(path)}, tmp_path, test=True), SCHEMA)
    with pytest.raises(GliosegError, match="invalid configuration at datasets → ds → split"):
        validate_config(config_with({"file": str(path), "val_patients": 2}, tmp_path), SCHEMA)


def test_the_schema_documents_the_key():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert "file" in schema["definitions"]["split"]["properties"]
