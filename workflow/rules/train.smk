# One training job per (experiment, fold). Resumable state lives in state/,
# which is not a declared output, so a failed or killed job keeps it.


rule train:
    input:
        cache=lambda w: f"{R}/preprocessed/{dataset_of(w)}",
        splits=lambda w: f"{R}/splits/{dataset_of(w)}/folds.json",
    output:
        model=f"{R}/models/{{experiment}}/fold{{fold}}/model.pt",
        history=f"{R}/models/{{experiment}}/fold{{fold}}/history.csv",
    params:
        settings=lambda w: canonical_json(training_settings(config, w.experiment)),
        state=lambda w: f"{R}/models/{w.experiment}/fold{w.fold}/state",
    log:
        f"{R}/models/{{experiment}}/fold{{fold}}/train.log",
    threads: lambda w: experiment_resources(w.experiment)["cpus"]
    resources:
        gpu=lambda w: experiment_resources(w.experiment)["gpus"],
        cpus_per_task=lambda w, threads: threads,
        mem_mb=lambda w: experiment_resources(w.experiment)["mem_mb"],
        runtime=lambda w: experiment_resources(w.experiment)["runtime"],
        # Walltime: `signal_seconds` before the job's end, glioseg gets SIGTERM, saves state/
        # and exits 75; --retries resubmits and the new job resumes (docs/cluster.md).
        # SLURM's own warning reaches glioseg only where SLURM tracks processes by their
        # parents (proctrack/linuxproc); with proctrack/cgroup it signals just the job
        # step's Snakemake, which then waits for glioseg. So the shell below also arms a
        # timer from the job's end time, and `exec` makes glioseg replace the rule's bash,
        # which would die at once on SIGTERM and end the step before the save.
        signal_seconds=lambda w: (
            min(res["signal_seconds"], res["runtime"] * 30, 65535)
            if (res := experiment_resources(w.experiment))["signal_seconds"]
            else 0
        ),
        slurm_extra=lambda w: (
            "--signal=TERM@{}".format(min(res["signal_seconds"], res["runtime"] * 30, 65535))
            if (res := experiment_resources(w.experiment))["signal_seconds"]
            else ""
        ),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "if [ -n \"${{SLURM_JOB_ID:-}}\" ] && [ {resources.signal_seconds} -gt 0 ]"
        " && end=$(date -d \"$(squeue -h -j \"$SLURM_JOB_ID\" -o %e 2>/dev/null)\" +%s 2>/dev/null) && [ \"$end\" -gt \"$(date +%s)\" ];"
        " then (while kill -0 $$; do [ $(date +%s) -lt $((end - {resources.signal_seconds})) ] || {{ kill -TERM $$; exit; }};"
        " sleep 2; done) </dev/null >/dev/null 2>&1 & fi;"
        " exec glioseg --log {log} --threads {threads} train --cache {input.cache} --splits {input.splits}"
        " --fold {wildcards.fold} --settings {params.settings:q}"
        " --out-model {output.model} --out-history {output.history} --state {params.state}"
