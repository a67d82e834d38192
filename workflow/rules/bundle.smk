# Applying an experiment's models to new scans: beside its fold models, a small record of what
# their training data's preprocessing and their sliding window were (written for every
# experiment, so `glioseg predict --model results/models/<experiment>` works after any run);
# the portable bundles: `snakemake bundles` exports every experiment of the study; and the
# submission folders of the config's predict section.

import os


rule describe_experiment:
    output:
        RESULTS.experiment_record("{experiment}"),
    params:
        record=lambda w: canonical_json(experiment_record(config, w.experiment)),
    log:
        RESULTS.log("describe_experiment", "{experiment}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} describe-experiment --record {params.record:q} --out {output}"


rule export:
    input:
        record=RESULTS.experiment_record("{experiment}"),
        models=each_fold(RESULTS.model("{experiment}", "{fold}")),
        cache=lambda w: RESULTS.preprocessed(training_dataset(w)),
        splits=lambda w: RESULTS.folds(training_dataset(w)),
    output:
        RESULTS.bundle("{experiment}"),
    params:
        experiment=lambda w: os.path.dirname(RESULTS.experiment_record(w.experiment)),
    log:
        RESULTS.log("export", "{experiment}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} export --model {params.experiment:q} --out {output}"


rule bundles:
    input:
        [RESULTS.bundle(experiment) for experiment in EXPERIMENTS],


rule predict_dataset:
    # A dataset of the config's predict section (usually an unlabelled one: a challenge's validation
    # release): every case of its manifest predicted by `glioseg predict` with the experiment's models
    # (the mean of every fold's probabilities unless ensemble: false), into a folder holding only
    # <case>.nii.gz, ready to submit; the run record goes beside it. Nothing is scored. The record
    # is the output, not the folder: Snakemake would write .snakemake_timestamp into a directory()
    # output, and a submission must hold the label maps alone. The job empties the folder first.
    wildcard_constraints:
        experiment=name_pattern(sorted({experiment for experiment, _ in PREDICTIONS})),
        dataset=name_pattern(sorted({dataset for _, dataset in PREDICTIONS})),
    input:
        record=RESULTS.experiment_record("{experiment}"),
        models=each_fold(RESULTS.model("{experiment}", "{fold}")),
        cache=lambda w: RESULTS.preprocessed(training_dataset(w)),
        splits=lambda w: RESULTS.folds(training_dataset(w)),
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    output:
        RESULTS.submission_record("{experiment}", "{dataset}"),
    params:
        submission=lambda w: RESULTS.submission(w.experiment, w.dataset),
        experiment=lambda w: os.path.dirname(RESULTS.experiment_record(w.experiment)),
        options=submission_options,
    log:
        RESULTS.log("predict", "{experiment}", "{dataset}"),
    threads: experiment_resource("cpus")
    resources:
        **NETWORK_JOB_RESOURCES,
        runtime=60,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "rm -rf {params.submission:q} && glioseg --log {log} --threads {threads} predict --model {params.experiment:q}"
        " --manifest {input.csv} --info {input.info} {params.options} --record {output} --output {params.submission:q}"
