# Helpers shared by all the .smk files: the validated config and the path scheme.

import json

from snakemake.exceptions import WorkflowError

from glioseg.config import (
    TEST_SUFFIX,
    check_networks,
    experiment_folds,
    inference_settings,
    init_source,
    is_trained,
    training_settings,
    validate_config,
)
from glioseg.errors import GliosegError

CONFIG_SOURCE = ", ".join(str(path) for path in workflow.configfiles) or "config"
try:
    config = validate_config(config, workflow.source_path("../schemas/config.schema.yaml"), source=CONFIG_SOURCE)
    if workflow.is_main_process:  # job steps re-read this file: the networks were checked when the DAG started
        check_networks(config, CONFIG_SOURCE)
except GliosegError as error:
    raise WorkflowError(error.message) from None

R = config["results"]
DATASETS = config["datasets"]
EXPERIMENTS = config["experiments"]


def name_pattern(names):
    """A wildcard constraint matching exactly these names (and nothing, when there are none)."""
    return "|".join(names) or "(?!)"


TRAINED = [name for name in EXPERIMENTS if is_trained(config, name)]
IMPORTED = [name for name in EXPERIMENTS if not is_trained(config, name)]


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
        and not any(
            Path(path).exists()
            for path in (f"{R}/downloads/{name}/{name}.zip", f"{R}/raw/{name}", f"{R}/volumes/{name}")
        )
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


def extracted_dir(dataset):
    """An on-disk folder is read where it is; anything else is extracted under results/raw."""
    path = source_path(dataset)
    if path and Path(path).is_dir():
        return path
    return f"{R}/raw/{dataset}"


# Layouts whose release is not volumes: the manifest reads what stack_slices made of the extracted files.
STACKED_LAYOUTS = {"lgg_kaggle3m"}


def raw_dir(dataset):
    """The folder the manifest reads: the extracted dataset, or its stacked volumes for 2D-slice releases."""
    if DATASETS[dataset]["layout"] in STACKED_LAYOUTS:
        return f"{R}/volumes/{dataset}"
    return extracted_dir(dataset)


def init_weights(wildcards):
    """The file a fold starts from, as an input list: empty for a random initialisation."""
    path = init_source(config, wildcards.experiment, int(wildcards.fold))
    return [path] if path else []


def cli_option(flag, paths):
    """A CLI option over a rule's optional input list: ``--flag path…``, or nothing when the list is empty."""
    return f"{flag} {' '.join(paths)}" if paths else ""


def init_option(wildcards):
    return cli_option("--init", init_weights(wildcards))


def training_overlap_tables(wildcards):
    """Overlap tables listing the experiment's cases that are scans of the datasets it must not see."""
    own = dataset_of(wildcards)
    return [f"{R}/overlap/{other}/{own}.csv" for other in EXPERIMENTS[wildcards.experiment]["exclude_overlap_with"]]


# An evaluation is named by its dataset, or `<dataset>+test` (TEST_SUFFIX) for the held-out test
# patients of the experiment's own dataset (`test: true`); `+` never occurs in a dataset name.


def evaluation_pattern():
    """The wildcard constraint of an evaluation name."""
    return f"({name_pattern(DATASETS)})(\\{TEST_SUFFIX})?"


def evaluated_datasets(experiment):
    """The evaluations of an experiment: its own validation cases, its test cases if asked, then other datasets."""
    spec = EXPERIMENTS[experiment]
    own = [spec["dataset"], f"{spec['dataset']}{TEST_SUFFIX}"] if spec["test"] else [spec["dataset"]]
    return [*own, *(evaluation["dataset"] for evaluation in spec["evaluate"])]


def evaluations():
    """(experiment, fold, evaluation) triples to infer and score."""
    return [
        (experiment, fold, evaluation)
        for experiment in EXPERIMENTS
        for fold in experiment_folds(config, experiment)
        for evaluation in evaluated_datasets(experiment)
    ]


def evaluated_dataset(wildcards):
    """The dataset an evaluation reads."""
    return wildcards.evaluation.removesuffix(TEST_SUFFIX)


def cross_evaluation(wildcards):
    """The experiment's ``evaluate`` entry for this evaluation; None on its own dataset."""
    for evaluation in EXPERIMENTS[wildcards.experiment]["evaluate"]:
        if evaluation["dataset"] == wildcards.evaluation:
            return evaluation
    return None


def subset_of(wildcards):
    if wildcards.evaluation.endswith(TEST_SUFFIX):
        return "test"
    evaluation = cross_evaluation(wildcards)
    return "val" if evaluation is None else evaluation["subset"]


def dataset_tables(wildcards):
    """What inferring or scoring an evaluation reads of its dataset's manifest and split."""
    dataset = evaluated_dataset(wildcards)
    return {
        "csv": f"{R}/manifests/{dataset}.csv",
        "info": f"{R}/manifests/{dataset}.json",
        "splits": f"{R}/splits/{dataset}/folds.json",
    }


def evaluated_cache(wildcards):
    """The preprocessed cache an evaluation's inference reads (scoring reads the original labels instead)."""
    return f"{R}/preprocessed/{evaluated_dataset(wildcards)}"


def overlap_tables(wildcards):
    """Overlap tables whose cases an evaluation leaves out, as an input list.

    On the experiment's own dataset: those of ``exclude_overlap_with``, as in
    training. On another dataset: the overlap with the training dataset,
    unless the evaluation keeps it.
    """
    evaluation = cross_evaluation(wildcards)
    if evaluation is None:
        return training_overlap_tables(wildcards)
    if not evaluation["exclude_overlap"]:
        return []
    return [f"{R}/overlap/{dataset_of(wildcards)}/{evaluated_dataset(wildcards)}.csv"]


def exclude_option(wildcards):
    return cli_option("--exclude", overlap_tables(wildcards))


def training_exclude_option(wildcards):
    return cli_option("--exclude", training_overlap_tables(wildcards))


def fold_models(experiment):
    return [f"{R}/models/{experiment}/fold{fold}/model.pt" for fold in experiment_folds(config, experiment)]


def ensembles():
    """(experiment, dataset) pairs scored with the average of every fold model (other datasets only)."""
    return [
        (experiment, evaluation["dataset"])
        for experiment, spec in EXPERIMENTS.items()
        for evaluation in spec["evaluate"]
        if evaluation["ensemble"]
    ]


def score_files():
    return [
        *(f"{R}/scores/{experiment}/fold{fold}/{evaluation}.csv" for experiment, fold, evaluation in evaluations()),
        *(f"{R}/scores/{experiment}/ensemble/{dataset}.csv" for experiment, dataset in ensembles()),
    ]


def experiment_resources(name):
    return EXPERIMENTS[name]["resources"]


def final_targets():
    targets = [f"{R}/summary/summary.md", f"{R}/figures/score_boxplots.png"]
    for experiment in EXPERIMENTS:
        if is_trained(config, experiment):
            targets.append(f"{R}/figures/{experiment}/training_curves.png")
        targets += [f"{R}/figures/{experiment}/montage_{dataset}.png" for dataset in evaluated_datasets(experiment)]
        targets += [
            f"{R}/figures/{experiment}/gallery_{dataset}.png"
            for dataset in evaluated_datasets(experiment)
            if DATASETS[dataset.removesuffix(TEST_SUFFIX)]["layout"] in STACKED_LAYOUTS
        ]
    return targets
