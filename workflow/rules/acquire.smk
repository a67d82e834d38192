# Getting each dataset onto disk: synthesise the sample or take the user's archive,
# then extract it safely. Both run on the login node (localrules).


rule synthesize:
    output:
        f"{R}/downloads/{{dataset}}/{{dataset}}.zip",
    params:
        spec=lambda w: canonical_json(DATASETS[w.dataset]["source"]["synthetic"]),
    log:
        f"{R}/downloads/{{dataset}}/synthesize.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} synthesize --spec {params.spec:q} --out {output}"


rule extract:
    input:
        archive_of,
    output:
        directory(f"{R}/raw/{{dataset}}"),
    log:
        f"{R}/logs/extract/{{dataset}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} extract --archive {input:q} --out {output:q}"
