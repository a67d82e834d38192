# Per (experiment, fold, evaluation): predict the evaluation's cases, then score them. On the
# experiment's own dataset these are the fold's validation cases; on another dataset, the
# configured subset minus the cases that are the same scans as training cases. An ensemble
# evaluation does the same with the average of every fold model, as fold -1 of its scores. An
# external experiment's predictions, made by another tool, are imported instead of inferred.


rule infer:
    wildcard_constraints:
        experiment=name_pattern(MODELLED),
    input:
        unpack(dataset_tables),
        cache=evaluated_cache,
        model=RESULTS.model("{experiment}", "{fold}"),
        shared_scans=shared_scan_tables,
    output:
        directory(RESULTS.predictions("{experiment}", "{fold}", "{evaluation}")),
    params:
        fold="{fold}",
        settings=lambda w: canonical_json(inference_settings(config, w.experiment)),
        subset=subset_of,
        exclude=exclude_option,
    log:
        RESULTS.evaluation_log("infer", "{experiment}", "{fold}", "{evaluation}"),
    threads: experiment_resource("cpus")
    resources:
        **NETWORK_JOB_RESOURCES,
        runtime=60,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} infer --model {input.model} --cache {input.cache}"
        " --manifest {input.csv} --info {input.info} --splits {input.splits} --fold {params.fold}"
        " --subset {params.subset} {params.exclude} --settings {params.settings:q} --out {output}"


use rule infer as infer_ensemble with:
    input:
        unpack(dataset_tables),
        cache=evaluated_cache,
        model=each_fold(RESULTS.model("{experiment}", "{fold}")),
        shared_scans=shared_scan_tables,
    output:
        directory(RESULTS.predictions("{experiment}", ENSEMBLE, "{evaluation}")),
    params:
        fold=0,
    log:
        RESULTS.evaluation_log("infer", "{experiment}", ENSEMBLE, "{evaluation}"),


rule import_predictions:
    # An external experiment (external: {predictions: …}): another tool's predictions of the same
    # cases, checked (every case, its grid, its label values after label_map) and copied where
    # infer would have written them, so scoring, montages and galleries treat them alike.
    wildcard_constraints:
        experiment=name_pattern(EXTERNAL),
    input:
        unpack(dataset_tables),
        source=external_source,
        shared_scans=shared_scan_tables,
    output:
        directory(RESULTS.predictions("{experiment}", "{fold}", "{evaluation}")),
    params:
        subset=subset_of,
        exclude=exclude_option,
        label_map=label_map_option,
    log:
        RESULTS.evaluation_log("import_predictions", "{experiment}", "{fold}", "{evaluation}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} import-predictions --source {input.source:q} --manifest {input.csv} --info {input.info}"
        " --splits {input.splits} --fold {wildcards.fold} --subset {params.subset} {params.exclude} {params.label_map}"
        " --out {output}"


rule score:
    input:
        unpack(dataset_tables),
        predictions=RESULTS.predictions("{experiment}", "{fold}", "{evaluation}"),
        shared_scans=shared_scan_tables,
    output:
        RESULTS.scores("{experiment}", "{fold}", "{evaluation}"),
    params:
        command="score",
        fold="{fold}",
        experiment="{experiment}",
        subset=subset_of,
        exclude=exclude_option,
    log:
        RESULTS.evaluation_log("score", "{experiment}", "{fold}", "{evaluation}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} {params.command} --predictions {input.predictions} --manifest {input.csv} --info {input.info}"
        " --splits {input.splits} --fold {params.fold} --subset {params.subset} {params.exclude}"
        " --experiment {params.experiment} --evaluation {wildcards.evaluation} --out {output}"


use rule score as score_ensemble with:
    input:
        unpack(dataset_tables),
        predictions=RESULTS.predictions("{experiment}", ENSEMBLE, "{evaluation}"),
        shared_scans=shared_scan_tables,
    output:
        RESULTS.scores("{experiment}", ENSEMBLE, "{evaluation}"),
    params:
        fold=-1,
        experiment="{experiment}+ensemble",
    log:
        RESULTS.evaluation_log("score", "{experiment}", ENSEMBLE, "{evaluation}"),


# Per slice, for datasets released as slices: the same cases, other tables.
use rule score as score_slices with:
    output:
        RESULTS.slice_scores("{experiment}", "{fold}", "{evaluation}"),
    params:
        command="score-slices",
    log:
        RESULTS.evaluation_log("score_slices", "{experiment}", "{fold}", "{evaluation}"),
