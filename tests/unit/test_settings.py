"""Typed settings: the JSON a job receives round-trips exactly, and a stray key fails where the object is built."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from glioseg.config import inference_settings, training_settings, validate_config
from glioseg.errors import GliosegError
from glioseg.settings import InferenceSettings, TrainingSettings

from .test_config import ROOT, SCHEMA

SHIPPED = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_experiment_round_trips_through_its_typed_settings(path):
    config = validate_config(yaml.safe_load(path.read_text()), SCHEMA, source=str(path))
    for name in config["experiments"]:
        recipe = training_settings(config, name)
        settings = TrainingSettings.from_json(recipe)
        assert settings.to_json() == recipe  # the model file and the run identity see the config's JSON
        assert settings.name == name and settings.spatial_dims == len(recipe["patch_size"])
        window = inference_settings(config, name)
        assert InferenceSettings.from_json(window).to_json() == window


def test_a_misspelt_or_missing_setting_names_itself():
    config = validate_config({"datasets": {"d": {"source": {"synthetic": {}}, "layout": "brats2021"}},
                              "experiments": {"e": {"dataset": "d", "model": {"name": "unet"}}}}, SCHEMA)
    recipe = training_settings(config, "e")
    with pytest.raises(GliosegError, match=r"training settings do not fit this glioseg: unknown \['epoch'\]"):
        TrainingSettings.from_json({**recipe, "epoch": 3})
    with pytest.raises(GliosegError, match=r"augmentation settings .* missing \['flip_prob'\]"):
        TrainingSettings.from_json({**recipe, "augment": {"scale_intensity": 0.1, "shift_intensity": 0.1}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainingSettings.from_json(recipe).epochs = 5  # type: ignore[misc]


def _recipe(augment: dict) -> dict:
    config = validate_config({"datasets": {"d": {"source": {"synthetic": {}}, "layout": "brats2021"}},
                              "experiments": {"e": {"dataset": "d", "model": {"name": "unet"}, "augment": augment}}}, SCHEMA)
    return training_settings(config, "e")


def test_rotation_and_zoom_enter_the_settings_only_when_the_config_asks_for_them():
    plain = _recipe({})
    assert plain["augment"] == {"flip_prob": 0.5, "scale_intensity": 0.1, "shift_intensity": 0.1}  # as before they existed
    assert TrainingSettings.from_json(plain).augment.spatial is None
    spun = _recipe({"spatial": {"rotate_degrees": 15}})
    assert spun["augment"]["spatial"] == {"prob": 0.2, "rotate_degrees": 15, "zoom": 0}
    settings = TrainingSettings.from_json(spun)
    assert settings.augment.spatial.rotate_degrees == 15 and settings.to_json() == spun
    with pytest.raises(GliosegError, match=r"spatial augmentation settings .* unknown \['angle'\]"):
        TrainingSettings.from_json({**spun, "augment": {**spun["augment"], "spatial": {"angle": 3}}})


@pytest.mark.parametrize("spatial", [{"zoom": 1.5}, {"rotate_degrees": -5}, {"prob": 2}, {"shear": 0.1}])
def test_an_impossible_rotation_or_zoom_is_refused_with_its_key(spatial):
    with pytest.raises(GliosegError, match=r"augment → spatial"):
        _recipe({"spatial": spatial})
