# Study-level outputs: the score tables and the figures, all in `snakemake --report`.

# What the figures of an experiment's evaluation read of each fold.
FOLD_PREDICTIONS = RESULTS.predictions("{experiment}", "{fold}", "{evaluation}")


rule summarize:
    input:
        score_files(),
    output:
        csv=report(
            RESULTS.summary_csv(),
            caption="../report/scores.rst",
            category="Scores",
        ),
        md=report(
            RESULTS.summary_md(),
            caption="../report/summary.rst",
            category="Scores",
        ),
    params:
        published=published_option(),  # numbers a paper reported, printed beside the study's (views.smk)
    log:
        RESULTS.log("summarize"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} summarize --scores {input} --out-csv {output.csv} --out-md {output.md} {params.published}"


rule plot_curves:
    input:
        each_fold(RESULTS.history("{experiment}", "{fold}")),
    output:
        report(
            RESULTS.training_curves("{experiment}"),
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="{experiment}",
        ),
    params:
        histories=each_fold_option(RESULTS.history("{experiment}", "{fold}")),
    log:
        RESULTS.log("figures", "{experiment}_training_curves"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-curves --history {params.histories} --title {wildcards.experiment} --out {output}"


rule plot_boxplots:
    input:
        RESULTS.summary_csv(),
    output:
        report(
            RESULTS.score_boxplots(),
            caption="../report/score_boxplots.rst",
            category="Scores",
        ),
    log:
        RESULTS.log("figures", "score_boxplots"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-boxplots --scores {input} --out {output}"


rule plot_montage:
    input:
        scores=each_fold(RESULTS.scores("{experiment}", "{fold}", "{evaluation}")),
        predictions=each_fold(FOLD_PREDICTIONS),
        csv=evaluated_manifest,
    output:
        report(
            RESULTS.montage("{experiment}", "{evaluation}"),
            caption="../report/montage.rst",
            category="Cases",
            subcategory="{experiment}",
        ),
    params:
        predictions=each_fold_option(FOLD_PREDICTIONS),
    log:
        RESULTS.log("figures", "{experiment}_montage_{evaluation}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-montage --scores {input.scores} --manifest {input.csv}"
        " --predictions {params.predictions} --out {output}"


rule plot_gallery:
    input:
        slice_scores=each_fold(RESULTS.slice_scores("{experiment}", "{fold}", "{evaluation}")),
        predictions=each_fold(FOLD_PREDICTIONS),
        csv=evaluated_manifest,
    output:
        report(
            RESULTS.gallery("{experiment}", "{evaluation}"),
            caption="../report/gallery.rst",
            category="Cases",
            subcategory="{experiment}",
        ),
    params:
        predictions=each_fold_option(FOLD_PREDICTIONS),
    log:
        RESULTS.log("figures", "{experiment}_gallery_{evaluation}"),
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-gallery --slice-scores {input.slice_scores} --manifest {input.csv}"
        " --predictions {params.predictions} --out {output}"
