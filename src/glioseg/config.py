"""Study configuration: validation against the JSON schema, defaults, cross-references.

The Snakefile calls :func:`validate_config` before building the DAG, so a typo
fails in a second with one message instead of after hours of training.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from glioseg.datasets.layouts import check_layout_options
from glioseg.errors import GliosegError
from glioseg.given_split import read_given_split
from glioseg.paths import Results

TEST_SUFFIX = "+test"
"""Appended to a dataset's name for the evaluation of its held-out test patients (``test: true``)."""


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills ``default`` values while it validates, at every depth."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(jsonschema.Draft7Validator)


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _location(error: jsonschema.ValidationError) -> str:
    return " → ".join(str(part) for part in error.absolute_path) or "(top level)"


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


def _merged(base: Any, choice: Any) -> Any:
    """``choice`` laid over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(choice, Mapping):
        return {**base, **{key: _merged(base.get(key), value) for key, value in choice.items()}}
    return copy.deepcopy(choice)


def expand_grids(experiments: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Replace each experiment that has a ``grid`` by one experiment per combination of its choices.

    ``grid`` maps a key of the experiment to labelled choices, e.g.
    ``loss: {bcedice: {name: dice_bce}, explog: {name: exp_log}}``; every
    combination becomes ``<name>-<label>-<label>…`` (keys in the order
    given), each choice merged over the experiment's own value of that key.
    Study 3's 22 (model, loss, optimiser) runs are a few grids, not 22 copies.
    """
    expanded: dict[str, Any] = {}
    for name, spec in experiments.items():
        if not isinstance(spec, Mapping) or "grid" not in spec:
            expanded[name] = spec
            continue
        base = {key: value for key, value in spec.items() if key != "grid"}
        axes = _grid_axes(name, spec["grid"], source)
        for combination in itertools.product(*(choices.items() for _, choices in axes)):
            variant = copy.deepcopy(base)
            for (key, _), (_, choice) in zip(axes, combination):
                variant[key] = _merged(variant.get(key), choice)
            variant_name = "-".join([name, *(label for label, _ in combination)])
            if variant_name in experiments or variant_name in expanded:
                raise GliosegError(f"grid experiment '{variant_name}' is defined twice", path=source,
                                   hint="rename the experiment or one of its grid labels.")
            expanded[variant_name] = variant
    return expanded


def _grid_axes(name: str, grid: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    """A grid's (key, labelled choices) pairs, checked: a mistake here would otherwise surface as odd experiment names."""
    problem = None
    if not isinstance(grid, Mapping) or not grid:
        problem = "grid must map experiment keys to labelled choices"
    elif "grid" in grid or "dataset" in grid:
        problem = "a grid cannot vary 'grid' or 'dataset' (define one experiment per dataset)"
    else:
        for key, choices in grid.items():
            if not isinstance(choices, Mapping) or not choices:
                problem = f"grid → {key} must map labels to values, e.g. {{adam: {{name: adam}}}}"
            elif bad := [label for label in choices if not _LABEL.match(str(label))]:
                problem = f"grid → {key} labels {bad} are not letters, digits and underscores"
    if problem:
        raise GliosegError(f"experiment '{name}': {problem}", path=source,
                           hint="see 'grid' in workflow/schemas/config.schema.yaml and configs/brats-unet2d-family.yaml.")
    return [(key, dict(choices)) for key, choices in grid.items()]


def validate_config(config: Mapping[str, Any], schema_path: str | Path, *, source: str = "config") -> dict[str, Any]:
    """Return a copy of ``config`` with grids expanded and defaults filled, or raise one clear :class:`GliosegError`."""
    resolved = copy.deepcopy(dict(config))
    if isinstance(resolved.get("experiments"), Mapping):
        resolved["experiments"] = expand_grids(resolved["experiments"], source)
    schema = load_schema(schema_path)
    errors = sorted(_DefaultingValidator(schema).iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise GliosegError(
            f"invalid configuration at {_location(error)}: {error.message}",
            path=source,
            hint="fix that entry; the allowed keys, types and values are in workflow/schemas/config.schema.yaml.",
        )
    _check_finite(resolved, source)
    for name, dataset in resolved["datasets"].items():
        check_layout_options(name, dataset["layout"], dataset.get("layout_options"), source)
    _check_given_splits(resolved, source)
    _check_unlabelled(resolved, source)
    _check_references(resolved, source)
    _check_evaluation_spacing(resolved, source)
    _check_predictions(resolved, source)
    return resolved


def is_labelled(config: Mapping[str, Any], dataset: str) -> bool:
    """Whether a dataset has labels; one with ``labelled: false`` is only predicted (the ``predict`` section)."""
    return config["datasets"][dataset]["labelled"]


def _check_unlabelled(config: Mapping[str, Any], source: str) -> None:
    """An unlabelled dataset is used for nothing that needs labels: training, scoring, nnU-Net export, data views."""
    unlabelled = [name for name, dataset in config["datasets"].items() if not dataset["labelled"]]
    uses = [(f"experiment '{name}' trains on it", experiment["dataset"]) for name, experiment in config["experiments"].items()]
    uses += [(f"experiment '{name}' is scored on it (evaluate)", evaluation["dataset"])
             for name, experiment in config["experiments"].items() for evaluation in experiment.get("evaluate", [])]
    uses += [("export_nnunet writes its labels for nnU-Net", name) for name in unlabelled
             if "export_nnunet" in config["datasets"][name]]
    uses += [("views → embedding → datasets profiles its labels", name)
             for name in config.get("views", {}).get("embedding", {}).get("datasets", [])]
    for use, dataset in uses:
        if dataset in unlabelled:
            raise GliosegError(
                f"dataset '{dataset}' has no labels (labelled: false), but {use}: an unlabelled dataset cannot be "
                "trained on or scored, only predicted",
                path=source,
                hint=f"name it in the predict section instead (predict: [{{experiment: <experiment>, dataset: {dataset}}}] "
                     f"writes submissions/<experiment>/{dataset}/<case>.nii.gz), or set labelled: true if it has labels.",
            )


def _check_evaluation_spacing(config: Mapping[str, Any], source: str) -> None:
    """A model is scored on another dataset's cache, so that cache must be resampled as its training data was.

    Otherwise the network would see voxels of another size than it learnt on,
    and its scores would measure the mismatch, not the model.
    """
    datasets = config["datasets"]
    for name, experiment in config["experiments"].items():
        trained = datasets[experiment["dataset"]]["preprocess"].get("spacing")
        for evaluation in experiment.get("evaluate", []):
            other = datasets[evaluation["dataset"]]["preprocess"].get("spacing")
            if "external" not in experiment and other != trained:
                raise GliosegError(
                    f"experiment '{name}' is trained on dataset '{experiment['dataset']}' resampled to "
                    f"{trained or 'no spacing (not resampled)'} but scored on dataset '{evaluation['dataset']}' "
                    f"resampled to {other or 'no spacing (not resampled)'}",
                    path=source,
                    hint=f"give dataset '{evaluation['dataset']}' the same preprocess → spacing as "
                         f"'{experiment['dataset']}'; scores are still computed in its original geometry.",
                )


def _check_predictions(config: Mapping[str, Any], source: str) -> None:
    """Each ``predict`` entry names an experiment with models of ours, a dataset of the study, and folds it trains."""
    seen: set[tuple[str, str]] = set()
    for entry in config["predict"]:
        name, dataset = entry["experiment"], entry["dataset"]
        where = f"predict → {{experiment: {name}, dataset: {dataset}}}"
        problem, hint = None, None
        if name not in config["experiments"]:
            problem, hint = f"experiment '{name}' is not defined", f"use one of {sorted(config['experiments'])}."
        elif "external" in config["experiments"][name]:
            problem, hint = (f"experiment '{name}' is external: glioseg has no models of it to predict with",
                             "name an experiment that trains (or imports) glioseg models.")
        elif dataset not in config["datasets"]:
            problem, hint = f"dataset '{dataset}' is not defined", f"use one of {sorted(config['datasets'])}."
        elif (name, dataset) in seen:
            problem, hint = "listed twice (both would write one submission folder)", "keep one entry."
        elif entry["ensemble"] and "fold" in entry:
            problem, hint = "gives a fold with ensemble: true", "set ensemble: false to predict with that fold alone."
        elif not entry["ensemble"] and entry.get("fold") not in experiment_folds(config, name):
            problem, hint = (f"ensemble: false needs a fold the experiment trains, one of {experiment_folds(config, name)}",
                             "give fold: <k>, or leave ensemble out to average every fold model.")
        if problem:
            raise GliosegError(f"{where}: {problem}", path=source, hint=hint)
        seen.add((name, dataset))


def prediction_folds(config: Mapping[str, Any], entry: Mapping[str, Any]) -> list[int]:
    """The fold models a ``predict`` entry predicts with: every fold of its experiment, or its one ``fold``."""
    return experiment_folds(config, entry["experiment"]) if entry["ensemble"] else [entry["fold"]]


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
            if evaluation["ensemble"] and "external" in experiment:
                raise GliosegError(
                    f"experiment '{name}' is external and cannot ensemble on dataset '{evaluation['dataset']}'",
                    path=source,
                    hint="glioseg has no models of an external experiment to average; set ensemble: false.",
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
        split = datasets[experiment["dataset"]]["split"]
        if experiment["test"] and not holds_out_test(split):
            raise GliosegError(
                f"experiment '{name}' asks for test scores, but dataset '{experiment['dataset']}' holds out no test patients",
                path=source,
                hint="set the dataset's split → test_fraction (or test_patients with val_patients; or test cases in its "
                     "split → file), or remove test: true.",
            )
        n_folds = validation_folds(datasets[experiment["dataset"]]["split"])
        bad = [k for k in experiment.get("folds", []) if k >= n_folds]
        if bad:
            raise GliosegError(
                f"experiment '{name}' asks for folds {bad}, but dataset '{experiment['dataset']}' has {n_folds} folds (0..{n_folds - 1})",
                path=source,
                hint="remove those folds or raise the dataset's split → folds.",
            )
        roi = experiment["inference"].get("roi_size")
        if roi is not None and len(roi) != len(experiment["patch_size"]):
            raise GliosegError(
                f"experiment '{name}' trains on {len(experiment['patch_size'])}D patches but infers with a "
                f"{len(roi)}D roi_size",
                path=source,
                hint="give inference → roi_size as many sides as patch_size, or leave it out to use the patch size.",
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
                raise GliosegError(f"experiments initialise each other in a cycle: {' → '.join([*chain, parent])}",
                                   path=source, hint="one of them must start from a checkpoint file or from scratch.")
            chain.append(parent)


def check_networks(config: Mapping[str, Any], source: str = "config") -> None:
    """Build every experiment's network once, without memory, with its training patch.

    What the schema cannot see (a patch the network's strides cannot divide,
    ``init_filters`` that GroupNorm cannot split) is otherwise found by the
    first training step, hours after the DAG started. Built on PyTorch's meta
    device where the builder allows, so a network costs no memory; the import of
    torch and MONAI is the price, which is why this is separate from
    :func:`validate_config` and the Snakefile runs it in its main process only.
    """
    from glioseg.models import build_model

    checked: set[str] = set()
    for name, experiment in config["experiments"].items():
        if "external" in experiment:
            continue
        key = json.dumps([experiment["model"], experiment["patch_size"]], sort_keys=True)
        if key in checked:
            continue
        patch = experiment["patch_size"]
        try:
            _build_lightly(build_model, experiment["model"], patch)
        except (ValueError, TypeError) as exc:
            raise GliosegError(
                f"experiment '{name}' cannot build its network ({experiment['model']['name']}) for patch_size {patch}: {exc}",
                path=source,
                hint=f"change experiments → {name} → patch_size or → model → params "
                     "(each model's params are listed in workflow/schemas/config.schema.yaml).",
            ) from None
        checked.add(key)


def _build_lightly(build_model: Callable[..., Any], model: Mapping[str, Any], patch: list[int]) -> None:
    """Build on the meta device, or on the CPU for a builder that reads a tensor's value (Swin's drop-path rates)."""
    import torch

    try:
        with torch.device("meta"):
            build_model(model, 4, 3, spatial_dims=len(patch), patch_size=patch)
    except RuntimeError:
        build_model(model, 4, 3, spatial_dims=len(patch), patch_size=patch)


def validation_folds(split: Mapping[str, Any]) -> int:
    """How many folds a dataset's split validates on: ``folds``, 1 for a hold-out split, or as many as a given file has."""
    if "file" in split:
        return read_given_split(split["file"]).folds
    return 1 if "val_patients" in split else split["folds"]


def holds_out_test(split: Mapping[str, Any]) -> bool:
    """Whether a dataset's split keeps test patients apart (``test: true`` experiments need some)."""
    if "file" in split:
        return read_given_split(split["file"]).has_test
    return split["test_fraction"] > 0 or split.get("test_patients", 0) > 0


def _check_given_splits(config: Mapping[str, Any], source: str) -> None:
    """A dataset's ``split → file`` exists and is a split file of a known kind (its fit to the data is checked by the split job)."""
    for name, dataset in config["datasets"].items():
        if "file" in dataset["split"]:
            try:
                read_given_split(dataset["split"]["file"])
            except GliosegError as exc:
                raise GliosegError(f"dataset '{name}': split → file: {exc.message}", path=source) from None


def _non_finite(value: Any, at: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    """The NaN and infinite numbers in ``value``, with their key paths."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(at, value)]
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    return [found for key, item in items for found in _non_finite(item, (*at, str(key)))]


def _check_finite(config: Mapping[str, Any], source: str) -> None:
    """YAML's ``.nan`` and ``.inf`` pass every bound of the schema (NaN compares false both ways); a NaN spacing
    failed deep in resampling, an infinite one resampled every case to one voxel."""
    found = _non_finite(config)
    if found:
        at, value = found[0]
        raise GliosegError(f"invalid configuration at {' → '.join(at)}: {value} is not a finite number", path=source,
                           hint="give a finite number; the allowed values are in workflow/schemas/config.schema.yaml.")


def experiment_folds(config: Mapping[str, Any], experiment: str) -> list[int]:
    """The folds an experiment trains: its own list, or every fold of its dataset."""
    spec = config["experiments"][experiment]
    if "folds" in spec:
        return list(spec["folds"])
    return list(range(validation_folds(config["datasets"][spec["dataset"]]["split"])))


def training_settings(config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """Everything a training job needs from the config, and nothing else.

    Handed to the job as its parameters, so only a change to *this*
    experiment's recipe (or the root seed it inherits) re-runs its training;
    inference settings and scheduler resources are left out on purpose.
    """
    spec = copy.deepcopy(dict(config["experiments"][experiment]))
    spec.setdefault("seed", config["seed"])
    for key in ("inference", "resources", "folds", "evaluate", "test"):
        spec.pop(key, None)
    spec["name"] = experiment
    return spec


def is_trained(config: Mapping[str, Any], experiment: str) -> bool:
    """Whether an experiment trains; one with ``epochs: 0`` only imports its ``init`` weights, an external one neither."""
    spec = config["experiments"][experiment]
    return "external" not in spec and spec["epochs"] > 0


def is_external(config: Mapping[str, Any], experiment: str) -> bool:
    """Whether an experiment's predictions were made by another tool (``external: {predictions: …}``): no model of ours."""
    return "external" in config["experiments"][experiment]


def external_predictions(config: Mapping[str, Any], experiment: str, fold: int | str, evaluation: str) -> str:
    """The folder an external experiment's predictions of one fold and evaluation are read from."""
    pattern = config["experiments"][experiment]["external"]["predictions"]
    return pattern.replace("{fold}", str(fold)).replace("{evaluation}", evaluation)


def init_source(config: Mapping[str, Any], experiment: str, fold: int) -> str | None:
    """The weights file fold ``fold`` of an experiment starts from, relative to the results folder's parent."""
    init = config["experiments"][experiment].get("init")
    if init is None:
        return None
    if "checkpoint" in init:
        return init["checkpoint"].replace("{fold}", str(fold))
    return Results(config["results"]).model(init["experiment"], init.get("fold", fold))


def inference_settings(config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """The sliding-window settings of an experiment; the ROI defaults to its training patch."""
    spec = config["experiments"][experiment]
    return {"roi_size": spec["patch_size"], **spec["inference"], "amp": spec["amp"]}


EXPERIMENT_RECORD_FORMAT = "glioseg-experiment/1"


def experiment_record(config: Mapping[str, Any], experiment: str) -> dict[str, Any]:
    """What applying an experiment's models to new scans needs from the config (``models/<experiment>/experiment.json``).

    The model files rebuild the network; this adds how its training data was
    preprocessed (crop margin, background rule, target spacing if resampled:
    left out otherwise, so that records of studies without it stay as they
    were), the sliding window it predicts with, its folds, and the config
    excerpt that defined it.
    """
    spec = config["experiments"][experiment]
    dataset = config["datasets"][spec["dataset"]]
    preprocess = dataset["preprocess"]
    return {
        "format": EXPERIMENT_RECORD_FORMAT,
        "experiment": experiment,
        "dataset": spec["dataset"],
        "folds": experiment_folds(config, experiment),
        "preprocess": {"margin": preprocess["margin"], "background": preprocess["background"],
                       **({"spacing": [float(s) for s in preprocess["spacing"]]} if "spacing" in preprocess else {})},
        "inference": inference_settings(config, experiment),
        "config": {"seed": config["seed"], "experiment": _without(spec, "resources"), "dataset": _without(dataset, "threads")},
    }


def _without(section: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of a config section without the keys that only size jobs (a record must not change with them)."""
    return {key: copy.deepcopy(value) for key, value in section.items() if key not in keys}
