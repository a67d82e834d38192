"""The results layout: one spelling of every path, the same in the rules, the package and docs/formats.md."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glioseg.config import init_source
from glioseg.paths import ENSEMBLE, Results

FORMATS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"

# (method, parts, the path as docs/formats.md's "The results folder" writes it); folders end in "/".
LAYOUT = [
    ("archive", ("<dataset>",), "downloads/<dataset>/<dataset>.zip"),
    ("acquire_log", ("<dataset>",), "downloads/<dataset>/acquire.log"),
    ("raw", ("<dataset>",), "raw/<dataset>/"),
    ("volumes", ("<dataset>",), "volumes/<dataset>/"),
    ("manifest_csv", ("<dataset>",), "manifests/<dataset>.csv"),
    ("manifest_json", ("<dataset>",), "manifests/<dataset>.json"),
    ("manifest_log", ("<dataset>",), "manifests/<dataset>.log"),
    ("folds", ("<dataset>",), "splits/<dataset>/folds.json"),
    ("split_table", ("<dataset>",), "splits/<dataset>/splits.csv"),
    ("split_log", ("<dataset>",), "splits/<dataset>/split.log"),
    ("given_split", ("<dataset>",), "splits/<dataset>/given/"),
    ("preprocessed", ("<dataset>",), "preprocessed/<dataset>/"),
    ("fingerprints", ("<dataset>",), "fingerprints/<dataset>.npz"),
    ("shared_scans", ("<train>", "<evaluated>"), "overlap/<train>/<evaluated>.csv"),
    ("nnunet_raw", ("<id>", "<dataset>"), "nnunet_raw/Dataset<id>_<dataset>/"),
    ("profile", ("<dataset>",), "views/<dataset>/profile.csv"),
    ("profile_summary", ("<dataset>",), "views/<dataset>/profile.html"),
    ("case_features", ("<dataset>",), "views/<dataset>/features.npz"),
    ("dataset_montage", ("<dataset>",), "views/<dataset>/montage.png"),
    ("intensity_histograms", (), "views/intensity_histograms.png"),
    ("embedding_csv", (), "views/embedding.csv"),
    ("embedding_figure", (), "views/embedding.png"),
    ("model", ("<experiment>", "<k>"), "models/<experiment>/fold<k>/model.pt"),
    ("history", ("<experiment>", "<k>"), "models/<experiment>/fold<k>/history.csv"),
    ("state", ("<experiment>", "<k>"), "models/<experiment>/fold<k>/state/"),
    ("train_log", ("<experiment>", "<k>"), "models/<experiment>/fold<k>/train.log"),
    ("import_log", ("<experiment>", "<k>"), "models/<experiment>/fold<k>/import.log"),
    ("experiment_record", ("<experiment>",), "models/<experiment>/experiment.json"),
    ("bundle", ("<experiment>",), "bundles/<experiment>.pt"),
    ("predictions", ("<experiment>", "<k>", "<evaluation>"), "predictions/<experiment>/fold<k>/<evaluation>/"),
    ("predictions", ("<experiment>", ENSEMBLE, "<evaluation>"), "predictions/<experiment>/ensemble/<evaluation>/"),
    ("scores", ("<experiment>", "<k>", "<evaluation>"), "scores/<experiment>/fold<k>/<evaluation>.csv"),
    ("scores", ("<experiment>", ENSEMBLE, "<evaluation>"), "scores/<experiment>/ensemble/<evaluation>.csv"),
    ("slice_scores", ("<experiment>", "<k>", "<evaluation>"), "slice_scores/<experiment>/fold<k>/<evaluation>.csv"),
    ("submission", ("<experiment>", "<dataset>"), "submissions/<experiment>/<dataset>/"),
    ("submission_record", ("<experiment>", "<dataset>"), "submissions/<experiment>/<dataset>.json"),
    ("summary_csv", (), "summary/scores.csv"),
    ("summary_md", (), "summary/summary.md"),
    ("published_csv", (), "summary/published.csv"),
    ("training_curves", ("<experiment>",), "figures/<experiment>/training_curves.png"),
    ("score_boxplots", (), "figures/score_boxplots.png"),
    ("published_figure", (), "figures/published.png"),
    ("montage", ("<experiment>", "<evaluation>"), "figures/<experiment>/montage_<evaluation>.png"),
    ("gallery", ("<experiment>", "<evaluation>"), "figures/<experiment>/gallery_<evaluation>.png"),
    ("log", ("<step>", "<dataset>"), "logs/<step>/<dataset>.log"),
    ("log", ("<step>", "<experiment>"), "logs/<step>/<experiment>.log"),
    ("log", ("export_nnunet", "Dataset<id>_<dataset>"), "logs/export_nnunet/Dataset<id>_<dataset>.log"),
    ("log", ("overlap", "<train>", "<evaluated>"), "logs/overlap/<train>/<evaluated>.log"),
    ("log", ("predict", "<experiment>", "<dataset>"), "logs/predict/<experiment>/<dataset>.log"),
    ("evaluation_log", ("<step>", "<experiment>", "<k>", "<evaluation>"), "logs/<step>/<experiment>/fold<k>/<evaluation>.log"),
    ("log", ("summarize",), "logs/summarize.log"),
    ("log", ("figures", "<figure>"), "logs/figures/<figure>.log"),
]


def documented_layout() -> list[str]:
    """The paths of formats.md's "The results folder" block, without their comments."""
    section = FORMATS.read_text().split("## The results folder", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return [line.split()[0] for line in block.splitlines()]


@pytest.mark.parametrize("method, parts, documented", LAYOUT)
def test_every_path_is_spelled_as_documented(method, parts, documented):
    assert getattr(Results("results"), method)(*parts) == f"results/{documented.rstrip('/')}"


def test_formats_md_lists_exactly_these_paths():
    assert documented_layout() == [documented for _, _, documented in LAYOUT]


def test_every_path_of_the_layout_is_checked():
    methods = {name for name, _ in inspect.getmembers(Results, inspect.isfunction) if not name.startswith("_")}
    assert methods == {method for method, _, _ in LAYOUT}


@pytest.mark.parametrize("method, parts, documented", LAYOUT)
def test_wildcards_give_the_rule_pattern_of_the_same_path(method, parts, documented):
    """What the rules do: a pattern from wildcards, filled in by Snakemake, is the path Python gets from the values."""
    results = Results("results")
    names = [f"part{index}" for index in range(len(parts))]
    wildcards = [part if part == ENSEMBLE else f"{{{name}}}" for part, name in zip(parts, names)]
    values = [part if part == ENSEMBLE else value for part, value in zip(parts, ["unet", 0, "sample+test", "x"])]
    pattern = getattr(results, method)(*wildcards)
    assert pattern.format(**dict(zip(names, values))) == getattr(results, method)(*values)


def test_a_fold_may_start_from_another_experiments_model():
    config = {"results": "results/study", "experiments": {
        "child": {"init": {"experiment": "parent"}},
        "pinned": {"init": {"experiment": "parent", "fold": 2}},
        "scratch": {},
    }}
    results = Results("results/study")
    assert init_source(config, "child", 1) == results.model("parent", 1) == "results/study/models/parent/fold1/model.pt"
    assert init_source(config, "pinned", 1) == results.model("parent", 2)
    assert init_source(config, "scratch", 1) is None


def test_importing_the_layout_loads_nothing_heavy():
    """The Snakefile imports it at every start, on login nodes too."""
    probe = "import sys, glioseg.paths\nprint(sorted({'torch', 'monai', 'numpy', 'pandas', 'nibabel'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
