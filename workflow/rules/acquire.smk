# Getting each dataset onto disk: synthesise the sample or download it from Kaggle
# (login node: both are localrules), then extract the archive safely.


rule acquire:
    output:
        RESULTS.archive("{dataset}"),
    params:
        source=lambda w: canonical_json(DATASETS[w.dataset]["source"]),
        sha256=lambda w: sha256_option(w.dataset),
    log:
        RESULTS.acquire_log("{dataset}"),
    # Downloads go first: a rejected credential, an unknown slug or no network
    # should surface before an hour of another dataset's preprocessing.
    priority: 100
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} acquire --source {params.source:q} {params.sha256} --out {output}"


rule extract:
    input:
        archive_of,
    output:
        directory(RESULTS.raw("{dataset}")),
    params:
        sha256=lambda w: sha256_option(w.dataset) if source_path(w.dataset) else "",
    log:
        RESULTS.log("extract", "{dataset}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} extract --archive {input:q} {params.sha256} --out {output:q}"
