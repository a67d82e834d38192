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
        mem_mb=lambda w: experiment_resources(w.experiment)["mem_mb"],
        runtime=lambda w: experiment_resources(w.experiment)["runtime"],
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} train --cache {input.cache} --splits {input.splits}"
        " --fold {wildcards.fold} --settings {params.settings:q}"
        " --out-model {output.model} --out-history {output.history} --state {params.state}"
