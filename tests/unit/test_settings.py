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
