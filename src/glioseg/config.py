"""Study configuration: validation against the JSON schema, defaults, cross-references.

The Snakefile calls :func:`validate_config` before building the DAG, so a typo
fails in a second with one message instead of after hours of training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from glioseg.errors import GliosegError


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills ``default`` values while it validates, at every depth."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(jsonschema.Draft7Validator)


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _location(error: jsonschema.ValidationError) -> str:
    return " → ".join(str(part) for part in error.absolute_path) or "(top level)"


def validate_config(config: Mapping[str, Any], schema_path: str | Path, *, source: str = "config") -> dict[str, Any]:
    """Return a copy of ``config`` with defaults filled, or raise one clear :class:`GliosegError`."""
    resolved = copy.deepcopy(dict(config))
    schema = load_schema(schema_path)
    errors = sorted(_DefaultingValidator(schema).iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise GliosegError(
            f"invalid configuration at {_location(error)}: {error.message}",
            path=source,
            hint="fix that entry; the allowed keys, types and values are in workflow/schemas/config.schema.yaml.",
        )
    _check_references(resolved, source)
    return resolved


def _check_references(config: dict[str, Any], source: str) -> None:
    """What a schema cannot say: experiments name existing datasets and folds."""
    datasets = config["datasets"]
    for name, experiment in config["experiments"].items():
        if experiment["dataset"] not in datasets:
            raise GliosegError(
                f"experiment '{name}' trains on dataset '{experiment['dataset']}', which is not defined",
                path=source,
                hint=f"use one of {sorted(datasets)} or add it under 'datasets'.",
            )
        for evaluation in experiment.get("evaluate", []):
            if evaluation["dataset"] not in datasets:
                raise GliosegError(
                    f"experiment '{name}' is evaluated on dataset '{evaluation['dataset']}', which is not defined",
                    path=source,
                    hint=f"use one of {sorted(datasets)} or add it under 'datasets'.",
                )
            if evaluation["dataset"] == experiment["dataset"]:
                raise GliosegError(
                    f"experiment '{name}' lists its own training dataset '{experiment['dataset']}' under evaluate",
                    path=source,
                    hint="each fold is already scored on its own validation cases; list only other datasets.",
                )
            if evaluation["ensemble"] and evaluation["subset"] == "val":
                raise GliosegError(
                    f"experiment '{name}' ensembles its fold models on dataset '{evaluation['dataset']}' with subset val",
                    path=source,
                    hint="one fold's validation cases are not unseen by the other folds' models; use subset all or test.",
                )
        for other in experiment["exclude_overlap_with"]:
            if other not in datasets or other == experiment["dataset"]:
                raise GliosegError(
                    f"experiment '{name}' excludes the overlap with dataset '{other}', which is not another defined dataset",
                    path=source,
                    hint=f"use datasets among {sorted(set(datasets) - {experiment['dataset']})}.",
                )
        n_folds = datasets[experiment["dataset"]]["split"]["folds"]
        bad = [k for k in experiment.get("folds", []) if k >= n_folds]
        if bad:
            raise GliosegError(
                f"experiment '{name}' asks for folds {bad}, but dataset '{experiment['dataset']}' has {n_folds} folds (0..{n_folds - 1})",
                path=source,
                hint="remove those folds or raise the dataset's split → folds.",
            )
        _check_init(config, name, source)
    _check_init_cycles(config, source)


def _check_init(config: dict[str, Any], name: str, source: str) -> None:
    """An ``init`` names an existing experiment and fold it can start from; ``epochs: 0`` needs one."""
    experiment = config["experiments"][name]
    init = experiment.get("init")
    if init is None:
        if experiment["epochs"] == 0:
            raise GliosegError(
                f"experiment '{name}' has epochs: 0 but no init: there would be nothing to evaluate",
                path=source,
                hint="give init → checkpoint (a weights file) or init → experiment, or train for at least one epoch.",
            )
        return
    if "checkpoint" in init and "fold" in init:
        raise GliosegError(f"experiment '{name}': init → fold goes with init → experiment, not with a checkpoint",
                           path=source, hint="put {fold} in the checkpoint path to use one file per fold.")
    parent = init.get("experiment")
    if parent is None:
        return
    if parent not in config["experiments"] or parent == name:
        raise GliosegError(
            f"experiment '{name}' starts from experiment '{parent}', which is not another experiment of this study",
            path=source,
            hint=f"use one of {sorted(set(config['experiments']) - {name})}.",
        )
    parent_folds = experiment_folds(config, parent)
    needed = [init["fold"]] if "fold" in init else experiment_folds(config, name)
    missing = [k for k in needed if k not in parent_folds]
    if missing:
        raise GliosegError(
            f"experiment '{name}' starts from the fold {missing} models of '{parent}', which trains folds {parent_folds}",
            path=source,
            hint=f"set init → fold to one of {parent_folds}, or train those folds of '{parent}'.",
        )


def _check_init_cycles(config: dict[str, Any], source: str) -> None:
    experiments = config["experiments"]
    for name in experiments:
        chain = [name]
        while (parent := (experiments[chain[-1]].get("init") or {}).get("experiment")) is not None:
            if parent in chain:
                raise GliosegError(f"experiments initialise each other in a cycle: {' → '.join(chain + [parent])}",
                                   path=source, hint="one of them must start from a checkpoint file or from scratch.")
            chain.append(parent)


def experiment_folds(config: Mapping[str, Any], experiment: str) -> list[int]:
    """The folds an experiment trains: its own list, or every fold of its dataset."""
    spec = config["experiments"][experiment]
    if "folds" in spec:
        return list(spec["folds"])
    return list(range(config["datasets"][spec["dataset"]]["split"]["folds"]))


def training_settings(config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """Everything a training job needs from the config, and nothing else.

    Handed to the job as its parameters, so only a change to *this*
    experiment's recipe (or the root seed it inherits) re-runs its training;
    inference settings and scheduler resources are left out on purpose.
    """
    spec = copy.deepcopy(dict(config["experiments"][experiment]))
    spec.setdefault("seed", config["seed"])
    for key in ("inference", "resources", "folds", "evaluate"):
        spec.pop(key, None)
    spec["name"] = experiment
    return spec


def is_trained(config: Mapping[str, Any], experiment: str) -> bool:
    """Whether an experiment trains; one with ``epochs: 0`` only imports its ``init`` weights."""
    return config["experiments"][experiment]["epochs"] > 0


def init_source(config: Mapping[str, Any], experiment: str, fold: int) -> str | None:
    """The weights file fold ``fold`` of an experiment starts from, relative to the results folder's parent."""
    init = config["experiments"][experiment].get("init")
    if init is None:
        return None
    if "checkpoint" in init:
        return init["checkpoint"].replace("{fold}", str(fold))
    return f"{config['results']}/models/{init['experiment']}/fold{init.get('fold', fold)}/model.pt"


def inference_settings(config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """The sliding-window settings of an experiment; the ROI defaults to its training patch."""
    spec = config["experiments"][experiment]
    return {"roi_size": spec["patch_size"], **spec["inference"], "amp": spec["amp"]}
