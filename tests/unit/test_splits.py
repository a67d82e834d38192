import json

import pandas as pd
import pytest

from glioseg.errors import GliosegError
from glioseg.splits import TEST_FOLD, fold_cases, folds_json, split_table, write_splits


def manifest(n_patients: int = 23, scans_per_patient: int = 2) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        group = "LGG" if p % 4 == 0 else "HGG"
        for s in range(scans_per_patient):
            rows.append({"case": f"P{p:02d}_scan{s}", "patient": f"P{p:02d}", "group": group,
                         "image_t1": f"raw/P{p}_{s}_t1.nii.gz", "image_flair": f"raw/P{p}_{s}_flair.nii.gz",
                         "label": f"raw/P{p}_{s}_seg.nii.gz"})
    return pd.DataFrame(rows)


def test_no_patient_is_in_two_folds():
    table = split_table(manifest(), n_folds=5, test_fraction=0.0, seed=1)
    assert (table.groupby("patient")["fold"].nunique() == 1).all()
    assert set(table["fold"]) == {0, 1, 2, 3, 4}


def test_folds_are_balanced_and_stratified_by_group():
    table = split_table(manifest(40, 1), n_folds=5, test_fraction=0.0, seed=7)
    sizes = table.groupby("fold")["patient"].nunique()
    assert sizes.max() - sizes.min() <= 1
    lgg = table[table["group"] == "LGG"].groupby("fold")["patient"].nunique()
    assert len(lgg) == 5 and lgg.max() - lgg.min() <= 1  # 10 LGG patients, 2 per fold


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    a = split_table(manifest(), 5, 0.2, seed=3)
    b = split_table(manifest(), 5, 0.2, seed=3)
    c = split_table(manifest(), 5, 0.2, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(c["fold"])


def test_held_out_test_set_is_patient_level_and_sized():
    table = split_table(manifest(20, 3), 4, test_fraction=0.25, seed=0)
    test_patients = table.loc[table["fold"] == TEST_FOLD, "patient"].unique()
    assert len(test_patients) == 5  # 25 % of 15 HGG + 5 LGG patients, rounded per group (4 + 1)
    assert (table[table["patient"].isin(test_patients)]["subset"] == "test").all()


def test_fold_json_is_monai_format_with_paths_in_modality_order(tmp_path):
    frame = manifest(10, 1)
    table = write_splits(frame, ("t1", "flair"), 2, 0.2, 5, tmp_path / "folds.json", tmp_path / "splits.csv")
    payload = json.loads((tmp_path / "folds.json").read_text())
    assert set(payload) == {"training", "testing"}
    assert len(payload["training"]) + len(payload["testing"]) == 10
    item = payload["training"][0]
    row = frame.set_index("case").loc[item["case"]]
    assert item["image"] == [row["image_t1"], row["image_flair"]]
    assert item["label"] == row["label"] and item["patient"] == row["patient"] and item["fold"] in (0, 1)
    assert all("fold" not in t for t in payload["testing"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "splits.csv", keep_default_na=False), table.reset_index(drop=True),
                                  check_dtype=False)
    train, val = fold_cases(payload, 1)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(payload["training"])


def test_too_few_patients_for_the_folds_is_a_clear_error():
    with pytest.raises(GliosegError, match="cannot fill 5 folds"):
        split_table(manifest(3, 1), 5, 0.0, 0)


def test_a_holdout_split_takes_exact_patient_counts_stratified_and_seeded():
    """Study 4: 110 patients → 79 train / 20 validation / 11 test, no patient on two sides."""
    table = split_table(manifest(110, 2), n_folds=5, test_fraction=0.0, seed=0, holdout=(20, 11))
    patients = table.drop_duplicates("patient")
    assert patients["fold"].value_counts().to_dict() == {1: 79, 0: 20, TEST_FOLD: 11}
    assert (table.groupby("patient")["fold"].nunique() == 1).all()
    lgg_share = patients.groupby("fold")["group"].apply(lambda g: (g == "LGG").mean())
    assert lgg_share.between(0.18, 0.32).all()  # 28 of 110 patients are LGG (25 %): each part keeps about that
    train, val = fold_cases(folds_json(manifest(110, 2), table, ["t1", "flair"]), 0)
    assert len(val) == 40 and len(train) == 158
    again = split_table(manifest(110, 2), 5, 0.0, seed=0, holdout=(20, 11))
    pd.testing.assert_frame_equal(table, again)
    assert not table["fold"].equals(split_table(manifest(110, 2), 5, 0.0, seed=1, holdout=(20, 11))["fold"])


def test_a_holdout_split_needs_patients_left_to_train():
    with pytest.raises(GliosegError, match="10 patients cannot give 6 validation and 4 test patients"):
        split_table(manifest(10, 1), 5, 0.0, seed=0, holdout=(6, 4))
