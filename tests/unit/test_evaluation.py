import json

import pandas as pd
import pytest

from glioseg.errors import GliosegError
from glioseg.evaluation import cases_for, evaluation_cases, excluded_cases

FOLDS = {
    "training": [{"fold": 0, "case": "a"}, {"fold": 1, "case": "b"}, {"fold": 0, "case": "c"}, {"fold": 1, "case": "d"}],
    "testing": [{"case": "t1"}, {"case": "t2"}],
}


def test_subsets_select_validation_test_or_all_cases():
    assert evaluation_cases(FOLDS, 0, "val") == ["a", "c"]
    assert evaluation_cases(FOLDS, 1, "val") == ["b", "d"]
    assert evaluation_cases(FOLDS, 0, "test") == ["t1", "t2"]
    assert evaluation_cases(FOLDS, 3, "all") == ["a", "b", "c", "d", "t1", "t2"]


def test_overlapping_cases_are_left_out(tmp_path):
    table = tmp_path / "overlap.csv"
    pd.DataFrame({"dataset_a": ["x"], "case_a": ["X9"], "dataset_b": ["y"], "case_b": ["c"], "similarity": [0.999]}).to_csv(
        table, index=False)
    second = tmp_path / "second.csv"
    pd.DataFrame({"dataset_a": ["z"], "case_a": ["Z1"], "dataset_b": ["y"], "case_b": ["t2"], "similarity": [0.97]}).to_csv(
        second, index=False)
    assert excluded_cases([table]) == {"c"}
    assert evaluation_cases(FOLDS, 0, "all", excluded_cases([table])) == ["a", "b", "d", "t1", "t2"]
    assert evaluation_cases(FOLDS, 0, "all", excluded_cases([table, second])) == ["a", "b", "d", "t1"]
    assert excluded_cases() == set()


def test_nothing_left_to_evaluate_is_a_clear_error(tmp_path):
    splits = tmp_path / "folds.json"
    splits.write_text(json.dumps({"training": FOLDS["training"], "testing": []}))
    with pytest.raises(GliosegError, match="no cases left to evaluate"):
        cases_for(splits, 0, "test")


def test_unknown_subset_is_rejected():
    with pytest.raises(ValueError, match="unknown subset"):
        evaluation_cases(FOLDS, 0, "train")


def test_training_folds_leave_out_the_overlap_with_other_datasets(tmp_path):
    from glioseg.evaluation import training_cases

    splits = tmp_path / "folds.json"
    splits.write_text(json.dumps(FOLDS))
    table = tmp_path / "overlap.csv"
    pd.DataFrame({"dataset_a": ["x", "x"], "case_a": ["X1", "X2"], "dataset_b": ["y", "y"], "case_b": ["a", "b"],
                  "similarity": [0.99, 0.98]}).to_csv(table, index=False)
    assert training_cases(splits, 0, [table]) == (["d"], ["c"])
    assert training_cases(splits, 0, []) == (["b", "d"], ["a", "c"])
    pd.DataFrame({"dataset_a": ["x"], "case_a": ["X3"], "dataset_b": ["y"], "case_b": ["d"], "similarity": [0.99]}).to_csv(
        tmp_path / "more.csv", index=False)
    with pytest.raises(GliosegError, match="fold 0 has no training cases left"):
        training_cases(splits, 0, [table, tmp_path / "more.csv"])


@pytest.mark.parametrize("content, problem", [
    (None, "no such fold JSON"),
    ("{", "unreadable fold JSON (JSONDecodeError"),
    ("[]", "not a glioseg fold JSON"),  # e.g. nnU-Net's splits_final.json given as --splits
    ('{"training": [{"case": "a"}], "testing": []}', "not a glioseg fold JSON"),
])
def test_a_missing_or_foreign_fold_json_is_named_for_every_stage(tmp_path, content, problem):
    from glioseg.evaluation import read_folds, training_cases

    splits = tmp_path / "folds.json"
    if content is not None:
        splits.write_text(content)
    for read in (read_folds, lambda path: cases_for(path, 0, "val"), lambda path: training_cases(path, 0)):
        with pytest.raises(GliosegError) as caught:
            read(splits)
        assert caught.value.path == splits and problem in caught.value.problem
        assert "results/splits/<dataset>/folds.json" in caught.value.hint


def test_cases_of_the_split_the_manifest_lacks_are_named_at_once():
    from glioseg.evaluation import case_labels

    manifest = pd.DataFrame({"case": ["a", "b"], "label": ["a.nii.gz", "b.nii.gz"]})
    assert case_labels(manifest, ["b"]) == {"b": "b.nii.gz"}
    with pytest.raises(GliosegError, match=r"2 of 3 cases of the split are not in the manifest: c, d") as caught:
        case_labels(manifest, ["a", "c", "d"])
    assert "--splits" in caught.value.hint and "--manifest" in caught.value.hint
