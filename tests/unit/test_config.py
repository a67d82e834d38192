from pathlib import Path

import pytest
import yaml

from glioseg.config import (
    check_networks,
    experiment_folds,
    inference_settings,
    init_source,
    is_trained,
    training_settings,
    validate_config,
)
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


def test_a_dataset_s_threads_default_to_four_and_must_be_positive():
    config = validate_config(minimal(), SCHEMA)
    assert config["datasets"]["d"]["threads"] == 4
    config = minimal()
    config["datasets"]["d"]["threads"] = 0
    with pytest.raises(GliosegError, match=r"datasets → d → threads: 0 is less than the minimum of 1"):
        validate_config(config, SCHEMA)


def test_the_shipped_configs_are_valid():
    shipped = [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml")),
               *sorted((ROOT / "tests" / "workflow" / "configs").glob("*.yaml"))]
    assert len(shipped) >= 4
    for path in shipped:
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
        (lambda c: c["experiments"]["e"].update(epochs=0), r"has epochs: 0 but no init"),
        (lambda c: c["experiments"]["e"].update(init={"experiment": "nope"}), r"starts from experiment 'nope', which is not"),
        (lambda c: c["experiments"]["e"].update(init={"experiment": "e"}), r"starts from experiment 'e', which is not another"),
        (lambda c: c["experiments"]["e"].update(init={"checkpoint": "w.pt", "fold": 1}), r"init → fold goes with init → experiment"),
        (lambda c: c["experiments"]["e"].update(init={"checkpoint": "w.pt", "experiment": "e"}), r"init: .* is valid under each of"),
        (lambda c: c["experiments"]["e"].update(init={"checkpoint": "w.pt", "format": "onnx"}), r"'onnx' is not one of"),
        (lambda c: c["experiments"]["e"].update(exclude_overlap_with=["d"]), r"excludes the overlap with dataset 'd'"),
        (lambda c: c["experiments"]["e"].update(scheduler={"name": "step", "gamma": 2}), r"gamma: 2 is greater than the maximum"),
        (lambda c: c["experiments"]["e"].update(loss={"name": "exp_log", "w_cee": 0.7}),
         r"loss: Additional properties are not allowed \('w_cee' was unexpected"),
    ],
)
def test_bad_config_fails_with_one_clear_message(change, message):
    config = minimal()
    change(config)
    with pytest.raises(GliosegError, match=message) as error:
        validate_config(config, SCHEMA, source="my.yaml")
    assert error.value.message.startswith("my.yaml: ")
    assert "What to do:" in error.value.message


def test_every_shipped_experiment_builds_its_network_for_its_patch():
    for path in [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]:
        check_networks(validate_config(yaml.safe_load(path.read_text()), SCHEMA, source=str(path)), str(path))


@pytest.mark.parametrize(
    "model, patch, message",
    [
        ({"name": "unet", "params": {"channels": [8, 16, 32], "strides": [2, 2]}}, [33, 33, 33],
         r"unet's downsamplings need every side of the patch to be a multiple of 4; the patch \[33, 33, 33\] is not "
         r"\(try \[36, 36, 36\]\)"),
        ({"name": "unet", "params": {"channels": [8, 16, 32], "strides": [2, 3]}}, [36, 36, 20],
         r"multiple of 6; the patch \[36, 36, 20\] is not \(try \[36, 36, 24\]\)"),
        ({"name": "attention_unet", "params": {"channels": [8, 16], "strides": [2]}}, [63, 64], r"multiple of 2"),
        ({"name": "segresnet", "params": {"init_filters": 8}}, [60, 64, 64], r"segresnet's downsamplings .* multiple of 8"),
        ({"name": "resnet_unet", "params": {"depth": 10}}, [100, 100, 96], r"multiples of 32"),
        ({"name": "unet3plus"}, [200, 200], r"multiple of 16"),
        ({"name": "resunetpp"}, [100, 100], r"multiple of 8"),
        ({"name": "swin_unetr"}, [96, 96, 100], r"multiples of 32"),
    ],
)
def test_a_network_that_cannot_take_the_patch_fails_before_any_job(model, patch, message):
    config = minimal()
    config["experiments"]["e"].update(model=model, patch_size=patch)
    with pytest.raises(GliosegError, match=message) as error:
        check_networks(validate_config(config, SCHEMA), "my.yaml")
    assert error.value.message.startswith(f"my.yaml: experiment 'e' cannot build its network ({model['name']}) for patch_size")
    assert "change experiments → e → patch_size or → model → params" in error.value.message


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


def two_experiments(**child: object) -> dict:
    config = minimal()
    config["datasets"]["d"]["split"] = {"folds": 3}
    config["experiments"]["parent"] = {"dataset": "d", "model": {"name": "unet"}, "folds": [0, 2]}
    config["experiments"]["e"].update(child)
    return config


def test_init_names_an_experiment_and_folds_it_trains():
    with pytest.raises(GliosegError, match=r"starts from the fold \[1\] models of 'parent', which trains folds \[0, 2\]"):
        validate_config(two_experiments(init={"experiment": "parent"}), SCHEMA)
    config = validate_config(two_experiments(init={"experiment": "parent"}, folds=[2]), SCHEMA)
    assert init_source(config, "e", 2) == "results/models/parent/fold2/model.pt"
    config = validate_config(two_experiments(init={"experiment": "parent", "fold": 0}), SCHEMA)
    assert [init_source(config, "e", k) for k in range(3)] == ["results/models/parent/fold0/model.pt"] * 3
    assert config["experiments"]["e"]["init"] == {"experiment": "parent", "fold": 0, "format": "auto", "min_fraction": 0.5}
    assert init_source(config, "parent", 0) is None


def test_a_checkpoint_path_may_name_one_file_per_fold():
    config = validate_config(two_experiments(init={"checkpoint": "ckpt/fold{fold}.pt"}, epochs=0), SCHEMA)
    assert init_source(config, "e", 1) == "ckpt/fold1.pt"
    assert not is_trained(config, "e") and is_trained(config, "parent")
    assert training_settings(config, "e")["init"]["checkpoint"] == "ckpt/fold{fold}.pt"  # a new file re-runs training


def test_experiments_may_not_initialise_each_other_in_a_cycle():
    config = two_experiments(init={"experiment": "parent", "fold": 0})
    config["experiments"]["parent"]["init"] = {"experiment": "e", "fold": 0}
    with pytest.raises(GliosegError, match=r"in a cycle: (e → parent → e|parent → e → parent)"):
        validate_config(config, SCHEMA)


def test_an_ensemble_is_not_scored_on_one_folds_validation_cases():
    config = minimal()
    config["datasets"]["x"] = {"source": {"synthetic": {}}, "layout": "brats2021"}
    config["experiments"]["e"]["evaluate"] = [{"dataset": "x", "subset": "val", "ensemble": True}]
    with pytest.raises(GliosegError, match="ensembles its fold models on dataset 'x' with subset val"):
        validate_config(config, SCHEMA)
    config["experiments"]["e"]["evaluate"][0]["subset"] = "all"
    assert validate_config(config, SCHEMA)["experiments"]["e"]["evaluate"][0]["ensemble"] is True


def test_a_grid_expands_into_one_experiment_per_combination():
    config = minimal()
    config["experiments"]["e"].update(
        model={"name": "unet", "params": {"channels": [8, 16], "strides": [2]}}, loss={"name": "dice"},
        grid={"model": {"plain": {}, "drop": {"params": {"dropout": 0.2}}},
              "loss": {"bcedice": {"name": "dice_bce"}, "explog": {"name": "exp_log", "w_ce": 0.2}},
              "optimizer": {"adam": {"name": "adam"}, "adagrad": {"name": "adagrad", "lr": 0.01}}})
    experiments = validate_config(config, SCHEMA)["experiments"]
    assert len(experiments) == 8 and "e" not in experiments
    variant = experiments["e-drop-explog-adagrad"]
    assert variant["model"] == {"name": "unet", "params": {"channels": [8, 16], "strides": [2], "dropout": 0.2}}
    assert variant["loss"] == {"name": "exp_log", "w_ce": 0.2}
    assert variant["optimizer"] == {"name": "adagrad", "lr": 0.01, "weight_decay": 1e-5}  # defaults filled after expansion
    assert experiments["e-plain-bcedice-adam"]["model"]["params"] == {"channels": [8, 16], "strides": [2]}


@pytest.mark.parametrize("grid, message", [
    ({"loss": {"bce dice": {"name": "dice_bce"}}}, r"labels \['bce dice'\] are not letters"),
    ({"loss": []}, r"grid → loss must map labels to values"),
    ({"dataset": {"a": "d"}}, r"cannot vary 'grid' or 'dataset'"),
    ({"loss": {"x": {"name": "nope"}}}, r"experiments → e-x → loss → name: 'nope' is not one of"),
])
def test_a_bad_grid_fails_with_one_clear_message(grid, message):
    config = minimal()
    config["experiments"]["e"]["grid"] = grid
    with pytest.raises(GliosegError, match=message):
        validate_config(config, SCHEMA)


def test_grid_names_may_not_collide_with_other_experiments():
    config = minimal()
    config["experiments"]["e-a"] = {"dataset": "d", "model": {"name": "unet"}}
    config["experiments"]["e"]["grid"] = {"loss": {"a": {"name": "dice"}}}
    with pytest.raises(GliosegError, match="grid experiment 'e-a' is defined twice"):
        validate_config(config, SCHEMA)


def test_a_dataset_s_spacing_is_optional_and_three_positive_numbers():
    config = validate_config(minimal(), SCHEMA)
    assert "spacing" not in config["datasets"]["d"]["preprocess"]  # no resampling unless asked for
    for bad, message in (([0, 1, 1], r"spacing → 0: 0 is less than or equal to the minimum of 0"),
                         ([1, 1], r"spacing: \[1, 1\] is too short"), ([1, 1, 1, 1], r"spacing: \[1, 1, 1, 1\] is too long")):
        config = minimal()
        config["datasets"]["d"]["preprocess"] = {"spacing": bad}
        with pytest.raises(GliosegError, match=rf"datasets → d → preprocess → {message}"):
            validate_config(config, SCHEMA)


@pytest.mark.parametrize("bad, message", [
    ([-1, 1, 1], r"spacing → 0: -1 is less than or equal to the minimum of 0"),
    ([2, "2", 1], r"spacing → 1: '2' is not of type 'number'"),
    ("2", r"spacing: '2' is not of type 'array'"),
    ([float("nan"), 1, 1], r"spacing → 0: nan is not a finite number"),  # YAML's .nan passes every bound of the schema
    ([1, 1, float("inf")], r"spacing → 2: inf is not a finite number"),
])
def test_a_spacing_that_is_no_positive_finite_number_is_named_by_its_key_path(bad, message):
    config = minimal()
    config["datasets"]["d"]["preprocess"] = {"spacing": bad}
    with pytest.raises(GliosegError, match=rf"invalid configuration at datasets → d → preprocess → {message}") as raised:
        validate_config(config, SCHEMA, source="study.yaml")
    assert raised.value.path == Path("study.yaml") and "config.schema.yaml" in raised.value.hint


def test_a_nan_anywhere_in_the_config_is_refused_from_yaml():
    config = minimal()
    config["experiments"]["e"]["optimizer"] = yaml.safe_load("{name: adam, lr: .nan}")
    with pytest.raises(GliosegError, match=r"experiments → e → optimizer → lr: nan is not a finite number"):
        validate_config(config, SCHEMA)


def test_a_model_is_scored_only_on_datasets_resampled_as_its_training_data():
    config = minimal()
    config["datasets"]["d"]["preprocess"] = {"spacing": [2, 2, 2]}
    config["datasets"]["x"] = {"source": {"synthetic": {}}, "layout": "brats2021"}
    config["experiments"]["e"]["evaluate"] = [{"dataset": "x"}]
    with pytest.raises(GliosegError, match=r"trained on dataset 'd' resampled to \[2, 2, 2\] but scored on dataset 'x' "
                                           r"resampled to no spacing") as raised:
        validate_config(config, SCHEMA)
    assert "same preprocess → spacing" in raised.value.hint
    config["datasets"]["x"]["preprocess"] = {"spacing": [2, 2, 2]}
    assert validate_config(config, SCHEMA)["experiments"]["e"]["evaluate"][0]["dataset"] == "x"
