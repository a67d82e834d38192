"""Unlabelled datasets (labelled: false) and the predict section: what a config may and may not ask of them."""

from pathlib import Path

import pytest

from glioseg.config import is_labelled, prediction_folds, validate_config
from glioseg.errors import GliosegError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def study(**predict: object) -> dict:
    """A training dataset, an unlabelled validation release, a 3-fold experiment and one predict entry."""
    return {
        "datasets": {"train": {"source": {"synthetic": {}}, "layout": "brats2021", "split": {"folds": 3}},
                     "val": {"source": {"path": "val"}, "layout": "brats2021", "labelled": False}},
        "experiments": {"e": {"dataset": "train", "model": {"name": "unet"}},
                        "theirs": {"dataset": "train", "external": {"predictions": "x/{fold}"}}},
        "predict": [{"experiment": "e", "dataset": "val", **predict}],
    }


def test_a_dataset_is_labelled_unless_it_says_otherwise_and_an_entry_ensembles_every_fold():
    config = validate_config(study(), SCHEMA)
    assert is_labelled(config, "train") and not is_labelled(config, "val")
    assert config["predict"] == [{"experiment": "e", "dataset": "val", "ensemble": True}]
    assert prediction_folds(config, config["predict"][0]) == [0, 1, 2]
    one = validate_config(study(ensemble=False, fold=1, labels="brats2023"), SCHEMA)
    assert prediction_folds(one, one["predict"][0]) == [1]


@pytest.mark.parametrize("change, message", [
    (lambda c: c["experiments"]["e"].update(dataset="val"), "but experiment 'e' trains on it"),
    (lambda c: c["experiments"]["e"].update(evaluate=[{"dataset": "val"}]), "but experiment 'e' is scored on it (evaluate)"),
    (lambda c: c["datasets"]["val"].update(export_nnunet=501), "but export_nnunet writes its labels"),
    (lambda c: c.update(views={"embedding": {"datasets": ["train", "val"]}}), "but views → embedding → datasets"),
])
def test_an_unlabelled_dataset_cannot_be_trained_on_or_scored(change, message):
    config = study()
    change(config)
    with pytest.raises(GliosegError) as error:
        validate_config(config, SCHEMA)
    assert "dataset 'val' has no labels (labelled: false), " + message in error.value.message
    assert "cannot be trained on or scored, only predicted" in error.value.message
    assert "predict: [{experiment: <experiment>, dataset: val}]" in error.value.message


@pytest.mark.parametrize("entry, message", [
    ({"experiment": "nope"}, "experiment 'nope' is not defined"),
    ({"experiment": "theirs"}, "experiment 'theirs' is external"),
    ({"dataset": "nope"}, "dataset 'nope' is not defined"),
    ({"fold": 1}, "gives a fold with ensemble: true"),
    ({"ensemble": False}, "ensemble: false needs a fold the experiment trains, one of [0, 1, 2]"),
    ({"ensemble": False, "fold": 3}, "ensemble: false needs a fold"),
    ({"labels": "brats2024"}, "'brats2024' is not one of"),
])
def test_a_bad_predict_entry_fails_with_one_clear_message(entry, message):
    config = study()
    config["predict"][0].update(entry)
    with pytest.raises(GliosegError, match="predict") as error:
        validate_config(config, SCHEMA)
    assert message in error.value.message


def test_one_submission_folder_per_experiment_and_dataset():
    config = study()
    config["predict"].append({"experiment": "e", "dataset": "val", "ensemble": False, "fold": 0})
    with pytest.raises(GliosegError, match="listed twice"):
        validate_config(config, SCHEMA)
