# glioseg: one DAG from archive to report. This file holds the DAG only:
# configuration, includes and the final targets. All logic lives in the
# `glioseg` package, which every rule calls through its CLI.

from snakemake.utils import min_version

min_version("9.0")


# The default study, only when the command line names none: Snakemake would otherwise merge
# config.yaml into every `--configfile configs/<study>.yaml`, and a study must stand alone.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(DATASETS),
    experiment="|".join(EXPERIMENTS),
    train="|".join(DATASETS),
    evaluated="|".join(DATASETS),
    evaluation=evaluation_pattern(),
    fold=r"\d+",


include: "workflow/rules/acquire.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/views.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/bundle.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    acquire,
    extract,
    summarize,
    plot_curves,
    plot_boxplots,
    plot_montage,
    plot_gallery,
    plot_dataset_montage,
    plot_histograms,
    embedding,
    compare_published,
    describe_experiment,
    bundles,


onstart:
    check_kaggle_credentials()


rule all:
    input:
        final_targets(),
    default_target: True
