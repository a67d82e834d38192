"""The results folder's layout: every path a stage writes, spelled once (docs/formats.md).

``Results(root)`` answers each path from its parts. A part is a value
(``results.model("unet", 0)``) or a Snakemake wildcard
(``results.model("{experiment}", "{fold}")``), so the rules build their
patterns, and Python its paths, from the same methods. Nothing heavy is
imported here: the Snakefile reads this module at every start.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The fold part of an evaluation's outputs made by the average of every fold model.
ENSEMBLE = "ensemble"

Part = str | int


def _fold_folder(fold: Part) -> str:
    """``fold<k>`` for one fold model's outputs, ``ensemble`` for the average of all of them."""
    return ENSEMBLE if fold == ENSEMBLE else f"fold{fold}"


@dataclass(frozen=True)
class Results:
    """The paths under one results folder (``config["results"]``), stage by stage."""

    root: str

    # Acquire: the archive, and the extracted dataset (stacked into volumes for 2D-slice releases).

    def archive(self, dataset: Part) -> str:
        return f"{self.root}/downloads/{dataset}/{dataset}.zip"

    def acquire_log(self, dataset: Part) -> str:
        return f"{self.root}/downloads/{dataset}/acquire.log"

    def raw(self, dataset: Part) -> str:
        return f"{self.root}/raw/{dataset}"

    def volumes(self, dataset: Part) -> str:
        return f"{self.root}/volumes/{dataset}"

    # Per dataset: the manifest, the split, the preprocessed cache, the scan fingerprints.

    def manifest_csv(self, dataset: Part) -> str:
        return f"{self.root}/manifests/{dataset}.csv"

    def manifest_json(self, dataset: Part) -> str:
        return f"{self.root}/manifests/{dataset}.json"

    def manifest_log(self, dataset: Part) -> str:
        return f"{self.root}/manifests/{dataset}.log"

    def folds(self, dataset: Part) -> str:
        return f"{self.root}/splits/{dataset}/folds.json"

    def split_table(self, dataset: Part) -> str:
        return f"{self.root}/splits/{dataset}/splits.csv"

    def split_log(self, dataset: Part) -> str:
        return f"{self.root}/splits/{dataset}/split.log"

    def given_split(self, dataset: Part) -> str:
        """The split file a dataset's ``split: {file: …}`` gave, copied under its own name into this folder."""
        return f"{self.root}/splits/{dataset}/given"

    def preprocessed(self, dataset: Part) -> str:
        return f"{self.root}/preprocessed/{dataset}"

    def fingerprints(self, dataset: Part) -> str:
        return f"{self.root}/fingerprints/{dataset}.npz"

    def shared_scans(self, train: Part, evaluated: Part) -> str:
        """The cases of dataset ``evaluated`` that are the same scans as cases of dataset ``train``."""
        return f"{self.root}/overlap/{train}/{evaluated}.csv"

    def nnunet_raw(self, dataset_id: Part, dataset: Part) -> str:
        """The dataset exported as an nnU-Net raw dataset (``Dataset<id>_<dataset>``, id in three digits) with its folds."""
        return f"{self.root}/nnunet_raw/Dataset{dataset_id}_{dataset}"

    # Per dataset, the data views (before any training): profile, per-case features, montage.

    def profile(self, dataset: Part) -> str:
        """One row per case: shape, spacing, intensity percentiles in the brain, label volumes, outlier flags."""
        return f"{self.root}/views/{dataset}/profile.csv"

    def profile_summary(self, dataset: Part) -> str:
        return f"{self.root}/views/{dataset}/profile.html"

    def case_features(self, dataset: Part) -> str:
        """Per case and modality: intensity quantiles in the brain and the feature vector the embedding reads."""
        return f"{self.root}/views/{dataset}/features.npz"

    def dataset_montage(self, dataset: Part) -> str:
        return f"{self.root}/views/{dataset}/montage.png"

    # Across datasets: intensity histograms and the t-SNE embedding of the cases.

    def intensity_histograms(self) -> str:
        return f"{self.root}/views/intensity_histograms.png"

    def embedding_csv(self) -> str:
        return f"{self.root}/views/embedding.csv"

    def embedding_figure(self) -> str:
        return f"{self.root}/views/embedding.png"

    # Per (experiment, fold): the trained model.

    def _fold_dir(self, experiment: Part, fold: Part) -> str:
        return f"{self.root}/models/{experiment}/fold{fold}"

    def model(self, experiment: Part, fold: Part) -> str:
        return f"{self._fold_dir(experiment, fold)}/model.pt"

    def history(self, experiment: Part, fold: Part) -> str:
        return f"{self._fold_dir(experiment, fold)}/history.csv"

    def state(self, experiment: Part, fold: Part) -> str:
        """The resumable training state: not a Snakemake output, so that a killed job keeps it."""
        return f"{self._fold_dir(experiment, fold)}/state"

    def train_log(self, experiment: Part, fold: Part) -> str:
        return f"{self._fold_dir(experiment, fold)}/train.log"

    def import_log(self, experiment: Part, fold: Part) -> str:
        return f"{self._fold_dir(experiment, fold)}/import.log"

    def experiment_record(self, experiment: Part) -> str:
        """What predict and export need beside the fold models: preprocessing, sliding window, config excerpt."""
        return f"{self.root}/models/{experiment}/experiment.json"

    def bundle(self, experiment: Part) -> str:
        """The experiment's portable model bundle (``glioseg export``)."""
        return f"{self.root}/bundles/{experiment}.pt"

    # Per (experiment, fold or ENSEMBLE, evaluation): predictions and scores.

    def predictions(self, experiment: Part, fold: Part, evaluation: Part) -> str:
        return f"{self.root}/predictions/{experiment}/{_fold_folder(fold)}/{evaluation}"

    def scores(self, experiment: Part, fold: Part, evaluation: Part) -> str:
        return f"{self.root}/scores/{experiment}/{_fold_folder(fold)}/{evaluation}.csv"

    def slice_scores(self, experiment: Part, fold: Part, evaluation: Part) -> str:
        return f"{self.root}/slice_scores/{experiment}/{_fold_folder(fold)}/{evaluation}.csv"

    # Per (experiment, dataset) of the config's ``predict`` section: label maps for a challenge, never scored.

    def submission(self, experiment: Part, dataset: Part) -> str:
        """``<case>.nii.gz`` for every case of the dataset (usually an unlabelled one), and nothing else: submission-ready."""
        return f"{self.root}/submissions/{experiment}/{dataset}"

    def submission_record(self, experiment: Part, dataset: Part) -> str:
        """What made a submission folder (model checksum, folds, sliding window, labels): ``glioseg predict``'s run record."""
        return f"{self.root}/submissions/{experiment}/{dataset}.json"

    # The study: summary tables and figures.

    def summary_csv(self) -> str:
        return f"{self.root}/summary/scores.csv"

    def summary_md(self) -> str:
        return f"{self.root}/summary/summary.md"

    def published_csv(self) -> str:
        """Numbers a study's paper reported beside glioseg's own for the same experiment, metric and region."""
        return f"{self.root}/summary/published.csv"

    def published_figure(self) -> str:
        return f"{self.root}/figures/published.png"

    def training_curves(self, experiment: Part) -> str:
        return f"{self.root}/figures/{experiment}/training_curves.png"

    def score_boxplots(self) -> str:
        return f"{self.root}/figures/score_boxplots.png"

    def montage(self, experiment: Part, evaluation: Part) -> str:
        return f"{self.root}/figures/{experiment}/montage_{evaluation}.png"

    def gallery(self, experiment: Part, evaluation: Part) -> str:
        return f"{self.root}/figures/{experiment}/gallery_{evaluation}.png"

    # Logs of the steps whose outputs have no folder of their own to hold them.

    def log(self, step: str, *parts: Part) -> str:
        """``logs/<step>/<part>/…/<last part>.log``, or ``logs/<step>.log`` without parts."""
        return "/".join([f"{self.root}/logs", step, *map(str, parts)]) + ".log"

    def evaluation_log(self, step: str, experiment: Part, fold: Part, evaluation: Part) -> str:
        return self.log(step, experiment, _fold_folder(fold), evaluation)
