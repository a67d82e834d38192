# Per (experiment, fold, dataset): predict the evaluation's cases, then score them. On the
# experiment's own dataset these are the fold's validation cases; on another dataset, the
# configured subset minus the cases that are the same scans as training cases.


rule fingerprint:
    input:
        csv=f"{R}/manifests/{{dataset}}.csv",
        info=f"{R}/manifests/{{dataset}}.json",
    output:
        f"{R}/fingerprints/{{dataset}}.npz",
    log:
        f"{R}/logs/fingerprint/{{dataset}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} fingerprint --manifest {input.csv} --info {input.info} --out {output}"


rule overlap:
    input:
        train=f"{R}/fingerprints/{{train}}.npz",
        evaluated=f"{R}/fingerprints/{{evaluated}}.npz",
    output:
        f"{R}/overlap/{{train}}/{{evaluated}}.csv",
    log:
        f"{R}/logs/overlap/{{train}}/{{evaluated}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} overlap --train {input.train} --evaluated {input.evaluated} --out {output}"


rule infer:
    input:
        unpack(dataset_tables),
        cache=evaluated_cache,
        model=f"{R}/models/{{experiment}}/fold{{fold}}/model.pt",
        overlap=overlap_tables,
    output:
        directory(f"{R}/predictions/{{experiment}}/fold{{fold}}/{{evaluation}}"),
    params:
        settings=lambda w: canonical_json(inference_settings(config, w.experiment)),
        subset=subset_of,
        exclude=exclude_option,
    log:
        f"{R}/logs/infer/{{experiment}}/fold{{fold}}/{{evaluation}}.log",
    threads: lambda w: experiment_resources(w.experiment)["cpus"]
    resources:
        gpu=lambda w: experiment_resources(w.experiment)["gpus"],
        cpus_per_task=lambda w, threads: threads,
        mem_mb=lambda w: experiment_resources(w.experiment)["mem_mb"],
        runtime=60,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} infer --model {input.model} --cache {input.cache}"
        " --manifest {input.csv} --info {input.info} --splits {input.splits} --fold {wildcards.fold}"
        " --subset {params.subset} {params.exclude} --settings {params.settings:q} --out {output}"


rule score:
    input:
        unpack(dataset_tables),
        predictions=f"{R}/predictions/{{experiment}}/fold{{fold}}/{{evaluation}}",
        overlap=overlap_tables,
    output:
        f"{R}/scores/{{experiment}}/fold{{fold}}/{{evaluation}}.csv",
    params:
        subset=subset_of,
        exclude=exclude_option,
    log:
        f"{R}/logs/score/{{experiment}}/fold{{fold}}/{{evaluation}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} score --predictions {input.predictions} --manifest {input.csv} --info {input.info}"
        " --splits {input.splits} --fold {wildcards.fold} --subset {params.subset} {params.exclude}"
        " --experiment {wildcards.experiment} --label {wildcards.evaluation} --out {output}"


rule infer_ensemble:
    input:
        unpack(dataset_tables),
        cache=evaluated_cache,
        models=lambda w: fold_models(w.experiment),
        overlap=overlap_tables,
    output:
        directory(f"{R}/predictions/{{experiment}}/ensemble/{{evaluation}}"),
    params:
        settings=lambda w: canonical_json(inference_settings(config, w.experiment)),
        subset=subset_of,
        exclude=exclude_option,
    log:
        f"{R}/logs/infer/{{experiment}}/ensemble/{{evaluation}}.log",
    threads: lambda w: experiment_resources(w.experiment)["cpus"]
    resources:
        gpu=lambda w: experiment_resources(w.experiment)["gpus"],
        cpus_per_task=lambda w, threads: threads,
        mem_mb=lambda w: experiment_resources(w.experiment)["mem_mb"],
        runtime=60,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} infer --model {input.models} --cache {input.cache}"
        " --manifest {input.csv} --info {input.info} --splits {input.splits} --fold 0"
        " --subset {params.subset} {params.exclude} --settings {params.settings:q} --out {output}"


rule score_ensemble:
    input:
        unpack(dataset_tables),
        predictions=f"{R}/predictions/{{experiment}}/ensemble/{{evaluation}}",
        overlap=overlap_tables,
    output:
        f"{R}/scores/{{experiment}}/ensemble/{{evaluation}}.csv",
    params:
        subset=subset_of,
        exclude=exclude_option,
    log:
        f"{R}/logs/score/{{experiment}}/ensemble/{{evaluation}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} score --predictions {input.predictions} --manifest {input.csv} --info {input.info}"
        " --splits {input.splits} --fold -1 --subset {params.subset} {params.exclude}"
        " --experiment {wildcards.experiment}+ensemble --out {output}"


rule score_slices:
    input:
        unpack(dataset_tables),
        predictions=f"{R}/predictions/{{experiment}}/fold{{fold}}/{{evaluation}}",
        overlap=overlap_tables,
    output:
        f"{R}/slice_scores/{{experiment}}/fold{{fold}}/{{evaluation}}.csv",
    params:
        subset=subset_of,
        exclude=exclude_option,
    log:
        f"{R}/logs/score_slices/{{experiment}}/fold{{fold}}/{{evaluation}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} score-slices --predictions {input.predictions} --manifest {input.csv} --info {input.info}"
        " --splits {input.splits} --fold {wildcards.fold} --subset {params.subset} {params.exclude}"
        " --experiment {wildcards.experiment} --label {wildcards.evaluation} --out {output}"
