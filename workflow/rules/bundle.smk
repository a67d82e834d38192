# Applying an experiment's models to new scans: beside its fold models, a small record of what
# their training data's preprocessing and their sliding window were (written for every
# experiment, so `glioseg predict --model results/models/<experiment>` works after any run);
# and the portable bundles: `snakemake bundles` exports every experiment of the study.

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
