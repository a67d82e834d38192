# Per dataset: manifest (validated cases), patient-level folds, preprocessed cache, and the
# scan fingerprints that find cases two datasets share. Rules that work case by case run the
# dataset's `threads` cases at a time (worker processes; the outputs do not depend on it).


rule stack_slices:
    # 2D-slice releases (LGG kaggle_3m tifs) become one NIfTI volume per modality, so the
    # manifest and everything after it work unchanged; raw_dir() points the manifest here.
    input:
        lambda w: extracted_dir(w.dataset),
    output:
        directory(RESULTS.volumes("{dataset}")),
    log:
        RESULTS.log("stack_slices", "{dataset}"),
    threads: dataset_threads
    resources:
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} stack-slices --raw {input:q} --out {output:q}"


rule manifest:
    input:
        lambda w: raw_dir(w.dataset),
    output:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    params:
        layout=layout_arguments,  # and --unlabelled for a dataset with labelled: false
        options=lambda w: canonical_json(DATASETS[w.dataset].get("layout_options", {})),
    log:
        RESULTS.manifest_log("{dataset}"),
    threads: dataset_threads
    resources:
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} manifest --raw {input:q} --layout {params.layout} --layout-options {params.options:q}"
        " --dataset {wildcards.dataset}"
        " --out-csv {output.csv} --out-json {output.info}"


rule split:
    wildcard_constraints:
        dataset=name_pattern(DRAWN_SPLITS),
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    output:
        folds=RESULTS.folds("{dataset}"),
        table=RESULTS.split_table("{dataset}"),
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
        RESULTS.split_log("{dataset}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} split --manifest {input.csv} --info {input.info} --folds {params.folds}"
        " --test-fraction {params.test_fraction} --seed {params.seed} {params.holdout}"
        " --out-json {output.folds} --out-csv {output.table}"


rule given_split:
    # A split the user brings (split: {file: …}): checked against the manifest, written as the
    # same folds.json and splits.csv, and copied beside them. The file is an input, so editing
    # it re-runs the split and everything that reads it.
    wildcard_constraints:
        dataset=name_pattern(GIVEN_SPLITS),
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
        given=given_split_file,
    output:
        folds=RESULTS.folds("{dataset}"),
        table=RESULTS.split_table("{dataset}"),
        given=directory(RESULTS.given_split("{dataset}")),
    log:
        RESULTS.split_log("{dataset}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} split --manifest {input.csv} --info {input.info} --given {input.given:q}"
        " --given-copy {output.given} --out-json {output.folds} --out-csv {output.table}"


rule export_nnunet:
    # The dataset as an nnU-Net raw dataset (export_nnunet: <id>), with glioseg's folds in
    # splits_final.json, so that nnU-Net trains and validates on exactly the same cases.
    wildcard_constraints:
        nnunet_id=r"\d{3}",
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
        splits=RESULTS.folds("{dataset}"),
    output:
        directory(RESULTS.nnunet_raw("{nnunet_id}", "{dataset}")),
    params:
        validation_folds=validation_folds_of,
    log:
        RESULTS.log("export_nnunet", "Dataset{nnunet_id}_{dataset}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} export-nnunet --manifest {input.csv} --info {input.info} --splits {input.splits}"
        " --validation-folds {params.validation_folds} --out {output}"


rule preprocess:
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    output:
        directory(RESULTS.preprocessed("{dataset}")),
    params:
        margin=lambda w: DATASETS[w.dataset]["preprocess"]["margin"],
        background=background_arguments,  # and --spacing, when the dataset is resampled
        cache_format=CACHE_FORMAT,  # a new cache format rebuilds old caches
    log:
        RESULTS.log("preprocess", "{dataset}"),
    threads: dataset_threads
    resources:
        cpus_per_task=lambda wildcards, threads: threads,
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} preprocess --manifest {input.csv} --info {input.info}"
        " --margin {params.margin} --background {params.background} --out {output}"


rule fingerprint:
    # One content descriptor per case, computed once per dataset for every pair it is part of:
    # cases of two datasets that are the same scan under other names (BraTS 2021 holds
    # BraTS 2018's) are found by their content.
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    output:
        RESULTS.fingerprints("{dataset}"),
    log:
        RESULTS.log("fingerprint", "{dataset}"),
    threads: dataset_threads
    resources:
        cpus_per_task=lambda wildcards, threads: threads,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} --threads {threads} fingerprint --manifest {input.csv} --info {input.info} --out {output}"


rule overlap:
    # The table of the evaluated dataset's cases that are the same scans as the training
    # dataset's: what `exclude_overlap` and `exclude_overlap_with` leave out.
    input:
        train=RESULTS.fingerprints("{train}"),
        evaluated=RESULTS.fingerprints("{evaluated}"),
    output:
        RESULTS.shared_scans("{train}", "{evaluated}"),
    log:
        RESULTS.log("overlap", "{train}", "{evaluated}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} overlap --train {input.train} --evaluated {input.evaluated} --out {output}"
