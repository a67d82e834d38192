# Per (experiment, fold, dataset): predict the fold's validation cases, then score them.


rule infer:
    input:
        model=f"{R}/models/{{experiment}}/fold{{fold}}/model.pt",
        cache=f"{R}/preprocessed/{{dataset}}",
        csv=f"{R}/manifests/{{dataset}}.csv",
        info=f"{R}/manifests/{{dataset}}.json",
        splits=f"{R}/splits/{{dataset}}/folds.json",
    output:
        directory(f"{R}/predictions/{{experiment}}/fold{{fold}}/{{dataset}}"),
    params:
        settings=lambda w: canonical_json(inference_settings(config, w.experiment)),
    log:
        f"{R}/logs/infer/{{experiment}}/fold{{fold}}/{{dataset}}.log",
    threads: lambda w: experiment_resources(w.experiment)["cpus"]
    resources:
        gpu=lambda w: experiment_resources(w.experiment)["gpus"],
        mem_mb=lambda w: experiment_resources(w.experiment)["mem_mb"],
        runtime=60,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} infer --model {input.model} --cache {input.cache}"
        " --manifest {input.csv} --info {input.info} --splits {input.splits} --fold {wildcards.fold}"
        " --settings {params.settings:q} --out {output}"


rule score:
    input:
        predictions=f"{R}/predictions/{{experiment}}/fold{{fold}}/{{dataset}}",
        csv=f"{R}/manifests/{{dataset}}.csv",
        info=f"{R}/manifests/{{dataset}}.json",
        splits=f"{R}/splits/{{dataset}}/folds.json",
    output:
        f"{R}/scores/{{experiment}}/fold{{fold}}/{{dataset}}.csv",
    log:
        f"{R}/logs/score/{{experiment}}/fold{{fold}}/{{dataset}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} score --predictions {input.predictions} --manifest {input.csv} --info {input.info}"
        " --splits {input.splits} --fold {wildcards.fold} --experiment {wildcards.experiment} --out {output}"
