# One training job per (experiment, fold). Resumable state lives in state/,
# which is not a declared output, so a failed or killed job keeps it.
# Experiments with epochs: 0 have no training job: import_model writes their
# fold models from the init weights instead.

import os

# The walltime timer the train rule sources, as an absolute path found from this file's folder:
# the same whatever the working directory, so running a study from another folder, or moving its
# results/, leaves the params of its finished trainings unchanged (Snakemake would train them
# again). Moving the glioseg checkout itself does change it.
WALLTIME_TIMER = os.path.abspath(os.path.join(workflow.current_basedir, "..", "scripts", "walltime_timer.sh"))


rule train:
    wildcard_constraints:
        experiment=name_pattern(TRAINED),
    input:
        cache=lambda w: RESULTS.preprocessed(training_dataset(w)),
        splits=lambda w: RESULTS.folds(training_dataset(w)),
        init=init_weights,
        shared_scans=training_shared_scan_tables,
    output:
        model=RESULTS.model("{experiment}", "{fold}"),
        history=RESULTS.history("{experiment}", "{fold}"),
    params:
        settings=lambda w: canonical_json(training_settings(config, w.experiment)),
        state=RESULTS.state("{experiment}", "{fold}"),
        init=init_option,
        exclude=training_exclude_option,
        walltime_timer=WALLTIME_TIMER,
        # More than one GPU: one process per GPU under torchrun, trained with torch DDP.
        launcher=lambda w: (
            f"torchrun --standalone --nproc-per-node {gpus} -m glioseg"
            if (gpus := EXPERIMENTS[w.experiment]["resources"]["gpus"]) > 1
            else "glioseg"
        ),
    log:
        RESULTS.train_log("{experiment}", "{fold}"),
    threads: experiment_resource("cpus")
    resources:
        **NETWORK_JOB_RESOURCES,
        runtime=experiment_resource("runtime"),
        # Walltime: `signal_seconds` before the job's end, the walltime timer sends glioseg
        # SIGTERM; glioseg saves state/ and exits 75, and --retries resubmits a job that
        # resumes (workflow/scripts/walltime_timer.sh, docs/cluster.md section 6). `exec`
        # makes glioseg replace the rule's bash, which would die at once on SIGTERM and end
        # the step before the save.
        signal_seconds=lambda w: (
            min(res["signal_seconds"], res["runtime"] * 30, 65535)
            if (res := EXPERIMENTS[w.experiment]["resources"])["signal_seconds"]
            else 0
        ),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        ". {params.walltime_timer:q} {resources.signal_seconds};"
        " exec {params.launcher} --log-file {log} --threads {threads} train --cache {input.cache} --splits {input.splits}"
        " --fold {wildcards.fold} --settings {params.settings:q}"
        " {params.init} {params.exclude}"
        " --out-model {output.model} --out-history {output.history} --state {params.state}"


rule import_model:
    wildcard_constraints:
        experiment=name_pattern(IMPORTED),
    input:
        cache=lambda w: RESULTS.preprocessed(training_dataset(w)),
        init=init_weights,
    output:
        RESULTS.model("{experiment}", "{fold}"),
    params:
        settings=lambda w: canonical_json(training_settings(config, w.experiment)),
    log:
        RESULTS.import_log("{experiment}", "{fold}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} import-model --cache {input.cache} --init {input.init}"
        " --settings {params.settings:q} --out {output}"
