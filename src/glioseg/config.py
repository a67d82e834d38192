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
        n_folds = datasets[experiment["dataset"]]["split"]["folds"]
        bad = [k for k in experiment.get("folds", []) if k >= n_folds]
        if bad:
            raise GliosegError(
                f"experiment '{name}' asks for folds {bad}, but dataset '{experiment['dataset']}' has {n_folds} folds (0..{n_folds - 1})",
                path=source,
                hint="remove those folds or raise the dataset's split → folds.",
            )


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


def inference_settings(config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """The sliding-window settings of an experiment; the ROI defaults to its training patch."""
    spec = config["experiments"][experiment]
    return {"roi_size": spec["patch_size"], **spec["inference"], "amp": spec["amp"]}
