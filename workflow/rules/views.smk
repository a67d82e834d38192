# Views of the data before training (issue 15): per dataset a profile and a modality montage,
# across datasets intensity histograms and a t-SNE embedding; and the numbers a paper reported
# beside the study's own. Every output is in `snakemake --report`, grouped per dataset.

rule profile:
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    output:
        table=report(
            RESULTS.profile("{dataset}"),
            caption="../report/profile.rst",
            category="Datasets",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "view": "profile, one row per case"},
        ),
        summary=report(
            RESULTS.profile_summary("{dataset}"),
            caption="../report/profile_summary.rst",
            category="Datasets",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "view": "profile at a glance"},
        ),
        features=RESULTS.case_features("{dataset}"),
    params:
        background=lambda w: DATASETS[w.dataset]["preprocess"]["background"],
    log:
        RESULTS.log("profile", "{dataset}"),
    resources:
        mem_mb=4000,
        runtime=240,
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} profile --manifest {input.csv} --info {input.info} --background {params.background}"
        " --out-csv {output.table} --out-html {output.summary} --out-features {output.features}"


rule plot_dataset_montage:
    input:
        csv=RESULTS.manifest_csv("{dataset}"),
        info=RESULTS.manifest_json("{dataset}"),
    output:
        report(
            RESULTS.dataset_montage("{dataset}"),
            caption="../report/dataset_montage.rst",
            category="Datasets",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "view": "modality montage"},
        ),
    params:
        case=montage_case_option,
        seed=VIEWS["montage"]["seed"],
    log:
        RESULTS.log("figures", "{dataset}_montage"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-dataset-montage --manifest {input.csv} --info {input.info} {params.case}"
        " --seed {params.seed} --out {output}"


rule plot_histograms:
    input:
        [RESULTS.case_features(dataset) for dataset in LABELLED],
    output:
        report(
            RESULTS.intensity_histograms(),
            caption="../report/intensity_histograms.rst",
            category="Datasets",
            subcategory="all datasets",
            labels={"dataset": "all", "view": "intensity histograms"},
        ),
    log:
        RESULTS.log("figures", "intensity_histograms"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-histograms --features {input} --out {output}"


rule embedding:
    input:
        features=[RESULTS.case_features(dataset) for dataset in embedded_datasets()],
        same_scans=embedding_same_scans(),
    output:
        csv=report(
            RESULTS.embedding_csv(),
            caption="../report/embedding_table.rst",
            category="Datasets",
            subcategory="all datasets",
            labels={"dataset": "all", "view": "t-SNE coordinates"},
        ),
        png=report(
            RESULTS.embedding_figure(),
            caption="../report/embedding.rst",
            category="Datasets",
            subcategory="all datasets",
            labels={"dataset": "all", "view": "t-SNE embedding"},
        ),
    params:
        settings=canonical_json({key: value for key, value in EMBEDDING.items() if key not in ("enabled", "datasets")}),
        same_scans=lambda w, input: cli_option("--same-scans", list(input.same_scans)),
    log:
        RESULTS.log("figures", "embedding"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} embed --features {input.features} {params.same_scans} --settings {params.settings:q}"
        " --out-csv {output.csv} --out-png {output.png}"


rule compare_published:
    input:
        RESULTS.summary_csv(),
    output:
        csv=report(
            RESULTS.published_csv(),
            caption="../report/published_table.rst",
            category="Scores",
        ),
        png=report(
            RESULTS.published_figure(),
            caption="../report/published.rst",
            category="Scores",
        ),
    params:
        published=canonical_json(PUBLISHED),
    log:
        RESULTS.log("figures", "published"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} compare-published --scores {input} --published {params.published:q}"
        " --out-csv {output.csv} --out-png {output.png}"
