# Helpers shared by all the .smk files: the validated config, the results layout and what each job reads.

import json
import shlex

from snakemake.exceptions import WorkflowError

from glioseg.config import (
    TEST_SUFFIX,
    check_networks,
    experiment_folds,
    external_predictions,
    experiment_record,
    inference_settings,
    init_source,
    is_external,
    is_labelled,
    is_trained,
    prediction_folds,
    training_settings,
    validate_config,
    validation_folds,
)
from glioseg.datasets.layouts import stacks_slices
from glioseg.errors import GliosegError
from glioseg.formats import CACHE_FORMAT
from glioseg.paths import ENSEMBLE, Results
from glioseg.report.published import resolve_entries

CONFIG_SOURCE = ", ".join(str(path) for path in workflow.configfiles) or "config"
try:
    config = validate_config(config, workflow.source_path("../schemas/config.schema.yaml"), source=CONFIG_SOURCE)
    if workflow.is_main_process:  # job steps re-read this file: the networks were checked when the DAG started
        check_networks(config, CONFIG_SOURCE)
except GliosegError as error:
    raise WorkflowError(error.message) from None

RESULTS = Results(config["results"])
DATASETS = config["datasets"]
EXPERIMENTS = config["experiments"]


def name_pattern(names):
    """A wildcard constraint matching exactly these names (and nothing, when there are none)."""
    return "|".join(names) or "(?!)"


TRAINED = [name for name in EXPERIMENTS if is_trained(config, name)]
EXTERNAL = [name for name in EXPERIMENTS if is_external(config, name)]  # predictions made by another tool
IMPORTED = [name for name in EXPERIMENTS if not is_trained(config, name) and name not in EXTERNAL]
MODELLED = TRAINED + IMPORTED  # experiments with glioseg models, which infer

# Datasets with labels; one with `labelled: false` is only predicted (the config's predict section).
LABELLED = [name for name in DATASETS if is_labelled(config, name)]

# Datasets whose split glioseg draws, and those whose split a file gives (split: {file: …}).
GIVEN_SPLITS = [name for name, spec in DATASETS.items() if "file" in spec["split"]]
DRAWN_SPLITS = [name for name in DATASETS if name not in GIVEN_SPLITS]


def given_split_file(wildcards):
    """The split file a dataset gives: an input of its split job, so that editing it re-runs the split."""
    return DATASETS[wildcards.dataset]["split"]["file"]


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
            for path in (RESULTS.archive(name), RESULTS.raw(name), RESULTS.volumes(name))
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


def training_dataset(wildcards):
    return EXPERIMENTS[wildcards.experiment]["dataset"]


def source_path(dataset):
    return DATASETS[dataset]["source"].get("path")


def archive_of(wildcards):
    """The archive a dataset is extracted from: synthesised, or the user's file."""
    path = source_path(wildcards.dataset)
    return path if path else RESULTS.archive(wildcards.dataset)


def sha256_option(dataset):
    digest = DATASETS[dataset].get("sha256")
    return f"--sha256 {digest}" if digest else ""


def extracted_dir(dataset):
    """An on-disk folder is read where it is; anything else is extracted under results/raw."""
    path = source_path(dataset)
    if path and Path(path).is_dir():
        return path
    return RESULTS.raw(dataset)


def is_stacked(dataset):
    """Whether a dataset is released as 2D slices, which stack_slices makes into volumes."""
    return stacks_slices(DATASETS[dataset]["layout"])


def raw_dir(dataset):
    """The folder the manifest reads: the extracted dataset, or its stacked volumes for 2D-slice releases."""
    return RESULTS.volumes(dataset) if is_stacked(dataset) else extracted_dir(dataset)


def init_weights(wildcards):
    """The file a fold starts from, as an input list: empty for a random initialisation."""
    path = init_source(config, wildcards.experiment, int(wildcards.fold))
    return [path] if path else []


def cli_option(flag, paths):
    """A CLI option over a rule's optional input list: ``--flag path…``, or nothing when the list is empty."""
    return f"{flag} {' '.join(paths)}" if paths else ""


def init_option(wildcards):
    return cli_option("--init", init_weights(wildcards))


def training_shared_scan_tables(wildcards):
    """Tables of the experiment's cases that are the same scans as cases of the datasets it must not see."""
    own = training_dataset(wildcards)
    return [RESULTS.shared_scans(other, own) for other in EXPERIMENTS[wildcards.experiment]["exclude_overlap_with"]]


# An evaluation is named by its dataset, or `<dataset>+test` (TEST_SUFFIX) for the held-out test
# patients of the experiment's own dataset (`test: true`); `+` never occurs in a dataset name.


def evaluation_pattern():
    """The wildcard constraint of an evaluation name."""
    return f"({name_pattern(DATASETS)})(\\{TEST_SUFFIX})?"


def evaluation_names(experiment):
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
        for evaluation in evaluation_names(experiment)
    ]


def evaluated_dataset(evaluation):
    """The dataset an evaluation (by its name) reads."""
    return evaluation.removesuffix(TEST_SUFFIX)


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
    dataset = evaluated_dataset(wildcards.evaluation)
    return {"csv": RESULTS.manifest_csv(dataset), "info": RESULTS.manifest_json(dataset), "splits": RESULTS.folds(dataset)}


def evaluated_cache(wildcards):
    """The preprocessed cache an evaluation's inference reads (scoring reads the original labels instead)."""
    return RESULTS.preprocessed(evaluated_dataset(wildcards.evaluation))


def evaluated_manifest(wildcards):
    return RESULTS.manifest_csv(evaluated_dataset(wildcards.evaluation))


def shared_scan_tables(wildcards):
    """Tables of the same scans whose cases an evaluation leaves out, as an input list.

    On the experiment's own dataset: those of ``exclude_overlap_with``, as in
    training. On another dataset: its scans shared with the training dataset,
    unless the evaluation keeps them.
    """
    evaluation = cross_evaluation(wildcards)
    if evaluation is None:
        return training_shared_scan_tables(wildcards)
    if not evaluation["exclude_overlap"]:
        return []
    return [RESULTS.shared_scans(training_dataset(wildcards), evaluated_dataset(wildcards.evaluation))]


def exclude_option(wildcards):
    return cli_option("--exclude", shared_scan_tables(wildcards))


def training_exclude_option(wildcards):
    return cli_option("--exclude", training_shared_scan_tables(wildcards))


def each_fold(pattern):
    """An input function: ``pattern`` (a path with ``{fold}``) for every fold of the job's experiment."""
    return lambda wildcards: expand(pattern, fold=experiment_folds(config, wildcards.experiment), **wildcards)


def each_fold_option(pattern):
    """A params function: ``<fold>=<path>`` for every fold of the job's experiment, as the plot commands take them."""

    def option(wildcards):
        folds = experiment_folds(config, wildcards.experiment)
        return " ".join(f"{fold}={path}" for fold, path in zip(folds, expand(pattern, fold=folds, **wildcards)))

    return option


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
        *(RESULTS.scores(experiment, fold, evaluation) for experiment, fold, evaluation in evaluations()),
        *(RESULTS.scores(experiment, ENSEMBLE, dataset) for experiment, dataset in ensembles()),
    ]


def external_source(wildcards):
    """The folder another tool's predictions of this (external experiment, fold, evaluation) are read from."""
    return external_predictions(config, wildcards.experiment, wildcards.fold, wildcards.evaluation)


def label_map_option(wildcards):
    label_map = EXPERIMENTS[wildcards.experiment]["external"].get("label_map")
    return f"--label-map {shlex.quote(canonical_json(label_map))}" if label_map else ""


def nnunet_exports():
    """The nnU-Net raw datasets the study writes: one per dataset with ``export_nnunet: <id>``."""
    return [RESULTS.nnunet_raw(f"{spec['export_nnunet']:03d}", name) for name, spec in DATASETS.items() if "export_nnunet" in spec]


def layout_arguments(wildcards):
    """The manifest job's ``--layout`` value, followed by ``--unlabelled`` for a dataset with ``labelled: false``.

    One param rather than a new one: a new param, or a new word in the rule's command, would make
    Snakemake's params or code trigger re-run every existing manifest, and everything after it.
    """
    layout = DATASETS[wildcards.dataset]["layout"]
    return layout if is_labelled(config, wildcards.dataset) else f"{layout} --unlabelled"


def background_arguments(wildcards):
    """The preprocess job's ``--background`` value, followed by ``--spacing X Y Z`` for a dataset resampled to one.

    One param, as layout_arguments, so that caches of datasets without a spacing are not rebuilt for it,
    while a changed spacing, like a changed background rule, rebuilds the cache.
    """
    preprocess = DATASETS[wildcards.dataset]["preprocess"]
    spacing = preprocess.get("spacing")
    return preprocess["background"] + (" --spacing " + " ".join(str(float(s)) for s in spacing) if spacing else "")


# The config's predict section: (experiment, dataset) pairs predicted into submissions/, never scored.
PREDICTIONS = {(entry["experiment"], entry["dataset"]): entry for entry in config["predict"]}


def submission_options(wildcards):
    """``glioseg predict`` options of a predict entry: one fold instead of the ensemble, a label convention, TTA."""
    entry = PREDICTIONS[(wildcards.experiment, wildcards.dataset)]
    options = [] if entry["ensemble"] else [f"--fold {' '.join(map(str, prediction_folds(config, entry)))}"]
    if "labels" in entry:
        options.append(f"--labels {entry['labels']}")
    if "tta" in entry:
        options.append("--tta" if entry["tta"] else "--no-tta")
    return " ".join(options)


def submissions():
    """The predict section's targets: each submission folder's run record, the rule's output (workflow/rules/bundle.smk)."""
    return [RESULTS.submission_record(experiment, dataset) for experiment, dataset in PREDICTIONS]


def validation_folds_of(wildcards):
    return validation_folds(DATASETS[wildcards.dataset]["split"])


def dataset_threads(wildcards):
    """The threads of a dataset job that works case by case (stack_slices, manifest, fingerprint)."""
    return DATASETS[wildcards.dataset]["threads"]


def experiment_resource(key):
    """A threads or resources function: the job's experiment's ``resources: {key: …}``."""
    return lambda wildcards: EXPERIMENTS[wildcards.experiment]["resources"][key]


# What a job that runs an experiment's network (train, infer) asks of its machine: the
# experiment's GPUs and memory, and a CPU per thread. Each rule adds its runtime.
NETWORK_JOB_RESOURCES = {
    "gpu": experiment_resource("gpus"),
    "cpus_per_task": lambda wildcards, threads: threads,
    "mem_mb": experiment_resource("mem_mb"),
}


def final_targets():
    targets = [RESULTS.summary_md(), RESULTS.score_boxplots()]
    for experiment in EXPERIMENTS:
        targets.append(RESULTS.experiment_record(experiment))  # for glioseg predict (workflow/rules/bundle.smk)
        if is_trained(config, experiment):
            targets.append(RESULTS.training_curves(experiment))
        for evaluation in evaluation_names(experiment):
            targets.append(RESULTS.montage(experiment, evaluation))
            if is_stacked(evaluated_dataset(evaluation)):
                targets.append(RESULTS.gallery(experiment, evaluation))
    # workflow/rules/views.smk; nnU-Net exports (dataset.smk); submission folders (bundle.smk)
    return targets + view_targets() + nnunet_exports() + submissions()


# ---------------------------------------------------------------- the data views (workflow/rules/views.smk)

VIEWS = config["views"]
EMBEDDING = VIEWS["embedding"]
try:
    PUBLISHED = resolve_entries(config, CONFIG_SOURCE)
except GliosegError as error:
    raise WorkflowError(error.message) from None


def embedded_datasets():
    """The datasets the t-SNE embeds: those named in views → embedding → datasets, or every dataset."""
    names = EMBEDDING["datasets"] or LABELLED  # the views read labels: unlabelled datasets have none
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        raise WorkflowError(f"{CONFIG_SOURCE}: views → embedding → datasets names {unknown}, which the study does not define; "
                            f"use some of {sorted(DATASETS)}.")
    return names


def planned_overlap_pairs():
    """The (train, evaluated) dataset pairs whose same scans the experiments look for (exclusions, cross-dataset evaluations)."""
    pairs = set()
    for spec in EXPERIMENTS.values():
        pairs |= {(other, spec["dataset"]) for other in spec["exclude_overlap_with"]}
        pairs |= {(spec["dataset"], evaluation["dataset"]) for evaluation in spec["evaluate"] if evaluation["exclude_overlap"]}
    return pairs


def embedding_same_scans():
    """One overlap table per pair of embedded datasets: the one the experiments already ask for, in whichever
    direction they ask, so the embedding adds no second overlap job for a pair; otherwise the study's order."""
    if not EMBEDDING["same_scans"]:
        return []
    names, planned = embedded_datasets(), planned_overlap_pairs()
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return [RESULTS.shared_scans(*((b, a) if (b, a) in planned and (a, b) not in planned else (a, b))) for a, b in pairs]


def montage_case_option(wildcards):
    case = VIEWS["montage"]["cases"].get(wildcards.dataset)
    return f"--case {shlex.quote(case)}" if case else ""


def published_option():
    """``--published '<json>'`` for the summary, or nothing for a study without published numbers."""
    return f"--published {shlex.quote(canonical_json(PUBLISHED))}" if PUBLISHED else ""


def view_targets():
    targets = []
    if VIEWS["enabled"]:
        for dataset in LABELLED:
            targets += [RESULTS.profile(dataset), RESULTS.profile_summary(dataset), RESULTS.dataset_montage(dataset)]
        targets.append(RESULTS.intensity_histograms())
        if EMBEDDING["enabled"]:
            targets.append(RESULTS.embedding_figure())
    if PUBLISHED:
        targets.append(RESULTS.published_figure())
    return targets
