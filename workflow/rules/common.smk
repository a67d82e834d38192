# Helpers shared by all the .smk files: the validated config and the path scheme.

import json

from snakemake.exceptions import WorkflowError

from glioseg.config import (
    experiment_folds,
    inference_settings,
    training_settings,
    validate_config,
)
from glioseg.errors import GliosegError

try:
    config = validate_config(
        config,
        workflow.source_path("../schemas/config.schema.yaml"),
        source=", ".join(str(path) for path in workflow.configfiles) or "config",
    )
except GliosegError as error:
    raise WorkflowError(error.message) from None

R = config["results"]
DATASETS = config["datasets"]
EXPERIMENTS = config["experiments"]


def check_kaggle_credentials():
    """Fail before any job runs when a Kaggle download is due and the client has no credentials.

    Called from ``onstart``, so a dry run, a lint or a cluster job re-reading
    this file needs no credentials, and neither does a dataset whose archive
    or extracted folder is already on disk.
    """
    due = [
        name
        for name, spec in DATASETS.items()
        if "kaggle" in spec["source"]
        and not Path(f"{R}/downloads/{name}/{name}.zip").exists()
        and not Path(f"{R}/raw/{name}").exists()
    ]
    if due:
        from glioseg.acquire.kaggle import check_credentials

        try:
            check_credentials()
        except GliosegError as error:
            raise WorkflowError(f"datasets {due} must be downloaded from Kaggle. {error.message}") from None


def canonical_json(value):
    """Params as JSON with sorted keys: reordering a YAML file must not re-run anything."""
    return json.dumps(value, sort_keys=True)


def dataset_of(wildcards):
    return EXPERIMENTS[wildcards.experiment]["dataset"]


def source_path(dataset):
    return DATASETS[dataset]["source"].get("path")


def archive_of(wildcards):
    """The archive a dataset is extracted from: synthesised, or the user's file."""
    path = source_path(wildcards.dataset)
    return path if path else f"{R}/downloads/{wildcards.dataset}/{wildcards.dataset}.zip"


def sha256_option(dataset):
    digest = DATASETS[dataset].get("sha256")
    return f"--sha256 {digest}" if digest else ""


def raw_dir(dataset):
    """An on-disk folder is read where it is; anything else is extracted under results/raw."""
    path = source_path(dataset)
    if path and Path(path).is_dir():
        return path
    return f"{R}/raw/{dataset}"


def evaluations():
    """(experiment, fold, dataset) triples to infer and score: each fold on its own validation cases."""
    return [
        (experiment, fold, spec["dataset"])
        for experiment, spec in EXPERIMENTS.items()
        for fold in experiment_folds(config, experiment)
    ]


def score_files():
    return [
        f"{R}/scores/{experiment}/fold{fold}/{dataset}.csv"
        for experiment, fold, dataset in evaluations()
    ]


def experiment_resources(name):
    return EXPERIMENTS[name]["resources"]


def final_targets():
    targets = [f"{R}/summary/summary.md", f"{R}/figures/score_boxplots.png"]
    for experiment, spec in EXPERIMENTS.items():
        targets.append(f"{R}/figures/{experiment}/training_curves.png")
        targets.append(f"{R}/figures/{experiment}/montage_{spec['dataset']}.png")
    return targets
