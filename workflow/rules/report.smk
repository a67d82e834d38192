# Study-level outputs: the score tables and the figures, all in `snakemake --report`.


rule summarize:
    input:
        score_files(),
    output:
        csv=report(
            f"{R}/summary/scores.csv",
            caption="../report/scores.rst",
            category="Scores",
        ),
        md=report(
            f"{R}/summary/summary.md",
            caption="../report/summary.rst",
            category="Scores",
        ),
    log:
        f"{R}/logs/summarize.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} summarize --scores {input} --out-csv {output.csv} --out-md {output.md}"


rule plot_curves:
    input:
        lambda w: [
            f"{R}/models/{w.experiment}/fold{fold}/history.csv"
            for fold in experiment_folds(config, w.experiment)
        ],
    output:
        report(
            f"{R}/figures/{{experiment}}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="{experiment}",
        ),
    params:
        histories=lambda w: " ".join(
            f"{fold}={R}/models/{w.experiment}/fold{fold}/history.csv"
            for fold in experiment_folds(config, w.experiment)
        ),
    log:
        f"{R}/logs/figures/{{experiment}}_training_curves.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-curves --history {params.histories} --title {wildcards.experiment} --out {output}"


rule plot_boxplots:
    input:
        f"{R}/summary/scores.csv",
    output:
        report(
            f"{R}/figures/score_boxplots.png",
            caption="../report/score_boxplots.rst",
            category="Scores",
        ),
    log:
        f"{R}/logs/figures/score_boxplots.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-boxplots --scores {input} --out {output}"


rule plot_montage:
    input:
        scores=lambda w: [
            f"{R}/scores/{w.experiment}/fold{fold}/{w.evaluation}.csv"
            for fold in experiment_folds(config, w.experiment)
        ],
        predictions=lambda w: [
            f"{R}/predictions/{w.experiment}/fold{fold}/{w.evaluation}"
            for fold in experiment_folds(config, w.experiment)
        ],
        csv=lambda w: f"{R}/manifests/{evaluated_dataset(w)}.csv",
    output:
        report(
            f"{R}/figures/{{experiment}}/montage_{{evaluation}}.png",
            caption="../report/montage.rst",
            category="Cases",
            subcategory="{experiment}",
        ),
    params:
        predictions=lambda w: " ".join(
            f"{fold}={R}/predictions/{w.experiment}/fold{fold}/{w.evaluation}"
            for fold in experiment_folds(config, w.experiment)
        ),
    log:
        f"{R}/logs/figures/{{experiment}}_montage_{{evaluation}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-montage --scores {input.scores} --manifest {input.csv}"
        " --predictions {params.predictions} --out {output}"


rule plot_gallery:
    input:
        slice_scores=lambda w: [
            f"{R}/slice_scores/{w.experiment}/fold{fold}/{w.evaluation}.csv"
            for fold in experiment_folds(config, w.experiment)
        ],
        predictions=lambda w: [
            f"{R}/predictions/{w.experiment}/fold{fold}/{w.evaluation}"
            for fold in experiment_folds(config, w.experiment)
        ],
        csv=lambda w: f"{R}/manifests/{evaluated_dataset(w)}.csv",
    output:
        report(
            f"{R}/figures/{{experiment}}/gallery_{{evaluation}}.png",
            caption="../report/gallery.rst",
            category="Cases",
            subcategory="{experiment}",
        ),
    params:
        predictions=lambda w: " ".join(
            f"{fold}={R}/predictions/{w.experiment}/fold{fold}/{w.evaluation}"
            for fold in experiment_folds(config, w.experiment)
        ),
    log:
        f"{R}/logs/figures/{{experiment}}_gallery_{{evaluation}}.log",
    conda:
        "../../envs/glioseg.yaml"
    shell:
        "glioseg --log {log} plot-gallery --slice-scores {input.slice_scores} --manifest {input.csv}"
        " --predictions {params.predictions} --out {output}"
