from pathlib import Path

import pytest
import yaml

from glioseg.config import experiment_folds, inference_settings, training_settings, validate_config
from glioseg.errors import GliosegError
from glioseg.losses import LOSSES
from glioseg.models import MODELS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def minimal() -> dict:
    return {
        "datasets": {"d": {"source": {"synthetic": {}}, "layout": "brats2021"}},
        "experiments": {"e": {"dataset": "d", "model": {"name": "unet"}}},
    }


def test_defaults_are_filled_at_every_depth():
    config = validate_config(minimal(), SCHEMA)
    assert config["seed"] == 2026 and config["results"] == "results"
    assert config["datasets"]["d"]["split"] == {"folds": 5, "test_fraction": 0.0, "seed": 0}
    assert config["datasets"]["d"]["source"]["synthetic"]["cases"] == 20
    experiment = config["experiments"]["e"]
    assert experiment["optimizer"] == {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-5}
    assert experiment["inference"]["overlap"] == 0.5 and experiment["resources"]["gpus"] == 1


def test_the_shipped_configs_are_valid():
    for path in [ROOT / "config.yaml", *sorted((ROOT / "tests" / "workflow" / "configs").glob("*.yaml"))]:
        validate_config(yaml.safe_load(path.read_text()), SCHEMA, source=str(path))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["experiments"]["e"].update(epoch=3), r"experiments → e: Additional properties are not allowed \('epoch'"),
        (lambda c: c["experiments"]["e"].update(epochs="3"), r"experiments → e → epochs: '3' is not of type 'integer'"),
        (lambda c: c["experiments"]["e"]["model"].update(name="unett"), r"model → name: 'unett' is not one of"),
        (lambda c: c["experiments"]["e"]["model"].update(params={"chanels": [8]}), r"'chanels' was unexpected"),
        (lambda c: c["datasets"]["d"].update(layout="brats1999"), r"layout: 'brats1999' is not one of"),
        (lambda c: c["experiments"]["e"].update(dataset="nope"), r"trains on dataset 'nope', which is not defined"),
        (lambda c: c["experiments"]["e"].update(folds=[0, 5]), r"asks for folds \[5\], but dataset 'd' has 5 folds"),
        (lambda c: c.update(extra=1), r"\(top level\): Additional properties are not allowed"),
        (lambda c: c["experiments"]["e"].update(evaluate=[{"dataset": "other"}]), r"evaluated on dataset 'other', which is not"),
        (lambda c: c["experiments"]["e"].update(evaluate=[{"dataset": "d"}]), r"lists its own training dataset 'd'"),
        (lambda c: c["experiments"]["e"].update(evaluate=[{"dataset": "d", "subset": "train"}]), r"'train' is not one of"),
    ],
)
def test_bad_config_fails_with_one_clear_message(change, message):
    config = minimal()
    change(config)
    with pytest.raises(GliosegError, match=message) as error:
        validate_config(config, SCHEMA, source="my.yaml")
    assert error.value.message.startswith("my.yaml: ")
    assert "What to do:" in error.value.message


def test_schema_names_exactly_the_registered_models_and_losses():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["definitions"]["model"]["properties"]["name"]["enum"]) == set(MODELS)
    assert set(schema["definitions"]["loss"]["properties"]["name"]["enum"]) == set(LOSSES)


def test_training_settings_hold_only_what_changes_the_training():
    config = validate_config(minimal(), SCHEMA)
    settings = training_settings(config, "e")
    assert settings["name"] == "e" and settings["seed"] == 2026
    assert not {"inference", "resources", "folds", "evaluate"} & set(settings)
    config["experiments"]["e"]["inference"]["overlap"] = 0.75
    assert training_settings(config, "e") == settings
    assert inference_settings(config, "e")["overlap"] == 0.75
    assert inference_settings(config, "e")["roi_size"] == config["experiments"]["e"]["patch_size"]


def test_experiment_folds_default_to_every_fold():
    config = validate_config(minimal(), SCHEMA)
    assert experiment_folds(config, "e") == [0, 1, 2, 3, 4]
    config["experiments"]["e"]["folds"] = [2]
    assert experiment_folds(config, "e") == [2]
