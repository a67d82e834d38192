# Per dataset: manifest (validated cases), patient-level folds, preprocessed cache.


rule stack_slices:
    # 2D-slice releases (LGG kaggle_3m tifs) become one NIfTI volume per modality, so the
    # manifest and everything after it work unchanged; raw_dir() points the manifest here.
    input:
        lambda w: extracted_dir(w.dataset),
    output:
        directory(f"{R}/volumes/{{dataset}}"),
    log:
        f"{R}/logs/stack_slices/{{dataset}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} stack-slices --raw {input:q} --out {output:q}"


rule manifest:
    input:
        lambda w: raw_dir(w.dataset),
    output:
        csv=f"{R}/manifests/{{dataset}}.csv",
        info=f"{R}/manifests/{{dataset}}.json",
    params:
        layout=lambda w: DATASETS[w.dataset]["layout"],
        options=lambda w: canonical_json(DATASETS[w.dataset].get("layout_options", {})),
    log:
        f"{R}/manifests/{{dataset}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} manifest --raw {input:q} --layout {params.layout} --layout-options {params.options:q}"
        " --dataset {wildcards.dataset}"
        " --out-csv {output.csv} --out-json {output.info}"


rule split:
    input:
        csv=f"{R}/manifests/{{dataset}}.csv",
        info=f"{R}/manifests/{{dataset}}.json",
    output:
        folds=f"{R}/splits/{{dataset}}/folds.json",
        table=f"{R}/splits/{{dataset}}/splits.csv",
    params:
        folds=lambda w: DATASETS[w.dataset]["split"]["folds"],
        test_fraction=lambda w: DATASETS[w.dataset]["split"]["test_fraction"],
        seed=lambda w: DATASETS[w.dataset]["split"]["seed"],
        holdout=lambda w: (
            f"--holdout {split['val_patients']} {split.get('test_patients', 0)}"
            if "val_patients" in (split := DATASETS[w.dataset]["split"])
            else ""
        ),
    log:
        f"{R}/splits/{{dataset}}/split.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} split --manifest {input.csv} --info {input.info} --folds {params.folds}"
        " --test-fraction {params.test_fraction} --seed {params.seed} {params.holdout}"
        " --out-json {output.folds} --out-csv {output.table}"


rule preprocess:
    input:
        csv=f"{R}/manifests/{{dataset}}.csv",
        info=f"{R}/manifests/{{dataset}}.json",
    output:
        directory(f"{R}/preprocessed/{{dataset}}"),
    params:
        margin=lambda w: DATASETS[w.dataset]["preprocess"]["margin"],
        background=lambda w: DATASETS[w.dataset]["preprocess"]["background"],
    log:
        f"{R}/logs/preprocess/{{dataset}}.log",
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} preprocess --manifest {input.csv} --info {input.info}"
        " --margin {params.margin} --background {params.background} --out {output}"
