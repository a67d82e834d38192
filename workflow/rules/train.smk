# One training job per (experiment, fold). Resumable state lives in state/,
# which is not a declared output, so a failed or killed job keeps it.
# Experiments with epochs: 0 have no training job: import_model writes their
# fold models from the init weights instead.


rule train:
    wildcard_constraints:
        experiment=name_pattern(TRAINED),
    input:
        cache=lambda w: f"{R}/preprocessed/{dataset_of(w)}",
        splits=lambda w: f"{R}/splits/{dataset_of(w)}/folds.json",
        init=init_weights,
        overlap=training_overlap_tables,
    output:
        model=f"{R}/models/{{experiment}}/fold{{fold}}/model.pt",
        history=f"{R}/models/{{experiment}}/fold{{fold}}/history.csv",
    params:
        settings=lambda w: canonical_json(training_settings(config, w.experiment)),
        state=lambda w: f"{R}/models/{w.experiment}/fold{w.fold}/state",
        init=init_option,
        exclude=training_exclude_option,
        # More than one GPU: one process per GPU under torchrun, trained with torch DDP.
        launcher=lambda w: (
            f"torchrun --standalone --nproc-per-node {gpus} -m glioseg"
            if (gpus := experiment_resources(w.experiment)["gpus"]) > 1
            else "glioseg"
        ),
    log:
        f"{R}/models/{{experiment}}/fold{{fold}}/train.log",
    threads: lambda w: experiment_resources(w.experiment)["cpus"]
    resources:
        gpu=lambda w: experiment_resources(w.experiment)["gpus"],
        cpus_per_task=lambda w, threads: threads,
        mem_mb=lambda w: experiment_resources(w.experiment)["mem_mb"],
        runtime=lambda w: experiment_resources(w.experiment)["runtime"],
        # Walltime: `signal_seconds` before the job's end, the timer in the shell below
        # sends glioseg SIGTERM; glioseg saves state/ and exits 75, and --retries
        # resubmits a job that resumes (docs/cluster.md, section 6). The timer reads the
        # job's end time from squeue, so it works whatever the cluster's process tracking.
        # No `sbatch --signal`: SLURM's warning also reaches the job step's Snakemake,
        # which then reports the job failed even when glioseg finishes its training in
        # time. `exec` makes glioseg replace the rule's bash, which would die at once on
        # SIGTERM and end the step before the save.
        signal_seconds=lambda w: (
            min(res["signal_seconds"], res["runtime"] * 30, 65535)
            if (res := experiment_resources(w.experiment))["signal_seconds"]
            else 0
        ),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "if [ -n \"${{SLURM_JOB_ID:-}}\" ] && [ {resources.signal_seconds} -gt 0 ]"
        " && end=$(date -d \"$(squeue -h -j \"$SLURM_JOB_ID\" -o %e 2>/dev/null)\" +%s 2>/dev/null) && [ \"$end\" -gt \"$(date +%s)\" ];"
        " then (while kill -0 $$; do [ $(date +%s) -lt $((end - {resources.signal_seconds})) ] || {{ kill -TERM $$; exit; }};"
        " sleep 2; done) </dev/null >/dev/null 2>&1 & fi;"
        " exec {params.launcher} --log-file {log} --threads {threads} train --cache {input.cache} --splits {input.splits}"
        " --fold {wildcards.fold} --settings {params.settings:q}"
        " {params.init} {params.exclude}"
        " --out-model {output.model} --out-history {output.history} --state {params.state}"


rule import_model:
    wildcard_constraints:
        experiment=name_pattern(IMPORTED),
    input:
        cache=lambda w: f"{R}/preprocessed/{dataset_of(w)}",
        init=init_weights,
    output:
        f"{R}/models/{{experiment}}/fold{{fold}}/model.pt",
    params:
        settings=lambda w: canonical_json(training_settings(config, w.experiment)),
    log:
        f"{R}/models/{{experiment}}/fold{{fold}}/import.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} import-model --cache {input.cache} --init {input.init}"
        " --settings {params.settings:q} --out {output}"
