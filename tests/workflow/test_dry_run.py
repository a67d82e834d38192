"""The DAG as planned from the config alone: shape, granularity, lint, config errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import CONFIGS, ROOT, Result, planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def test_default_config_plans_the_whole_study(workdir):
    jobs = planned_jobs(snakemake(workdir, "-n", configfile=ROOT / "config.yaml"))
    assert jobs == {
        "acquire": 1, "extract": 1, "manifest": 1, "split": 1, "preprocess": 1,
        "train": 5, "infer": 5, "score": 5,
        "summarize": 1, "plot_curves": 1, "plot_boxplots": 1, "plot_montage": 1, "all": 1,
        "profile": 1, "plot_dataset_montage": 1, "plot_histograms": 1, "embedding": 1, "describe_experiment": 1,
    }


def test_a_study_config_stands_alone_when_run_from_the_checkout_root():
    """The README's own command, from the repository root where config.yaml lies: the default study must not join in."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/local",
                           "--configfile", "configs/lgg-unet.yaml"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    result = Result(done.returncode, done.stdout, done.stderr)
    jobs = planned_jobs(result)
    assert jobs["train"] == 1 and jobs["acquire"] == 1 and jobs["stack_slices"] == 1
    assert "experiment=unet3d" not in result.output and "dataset=sample" not in result.output


def test_job_count_grows_per_fold_and_experiment_never_per_case(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["tiny"]["source"]["synthetic"]["cases"] = 400
    config["datasets"]["tiny"]["split"]["folds"] = 3
    config["experiments"]["unet_b"]["folds"] = [1]
    path = workdir / "big.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(workdir, "-n", configfile=path))
    assert jobs["preprocess"] == 1
    assert jobs["train"] == jobs["infer"] == jobs["score"] == 3 + 1
    assert jobs["plot_curves"] == jobs["plot_montage"] == 2


def test_lint_has_no_findings():
    result = snakemake(ROOT, "--lint", configfile=ROOT / "config.yaml")
    assert result.returncode == 0, result.output
    assert "Congratulations, your workflow is in a good condition!" in result.output
    assert "Lints for" not in result.output


def test_bad_config_fails_at_once_with_one_clear_message(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["experiments"]["unet_a"]["model"]["name"] = "unte"
    path = workdir / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", configfile=path)
    assert result.returncode != 0
    assert "experiments → unet_a → model → name: 'unte' is not one of ['unet', " in result.output
    assert "Traceback" not in result.output
    assert not (workdir / "results").exists()


def test_a_patch_the_network_cannot_divide_fails_the_dry_run_naming_the_key(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["experiments"]["unet_a"]["patch_size"] = [33, 33, 33]
    path = workdir / "patch.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", configfile=path)
    assert result.returncode != 0
    assert "experiment 'unet_a' cannot build its network (unet) for patch_size [33, 33, 33]" in result.output
    assert "change experiments → unet_a → patch_size" in result.output and "Traceback" not in result.output


def test_an_on_disk_folder_is_read_in_place(workdir, tiny_raw):
    folder = shutil.copytree(tiny_raw, workdir / "my_brats")
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["tiny"]["source"] = {"path": str(folder)}
    path = workdir / "disk.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(workdir, "-n", configfile=path))
    assert "acquire" not in jobs and "extract" not in jobs
    assert jobs["manifest"] == 1 and jobs["train"] == 4


def kaggle_config(workdir, tmp_home):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["tiny"]["source"] = {"kaggle": "someone/brats-mirror"}
    path = workdir / "kaggle.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_missing_kaggle_credentials_stop_the_run_before_any_job(workdir, tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    path = kaggle_config(workdir, home)
    dry = snakemake(workdir, "-n", configfile=path)
    assert planned_jobs(dry)["acquire"] == 1  # planning needs no credentials
    result = snakemake(workdir, configfile=path)
    assert result.returncode != 0
    assert "datasets ['tiny'] must be downloaded from Kaggle" in result.output
    assert "source: {path:" in result.output  # the on-disk alternative is offered
    assert not (workdir / "results").exists()
    assert not (home / ".kaggle").exists()


def test_cross_dataset_evaluation_plans_overlap_and_per_fold_jobs(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["other"] = {"source": {"synthetic": {"cases": 6, "shape": [48, 48, 32], "seed": 9}},
                                   "layout": "brats2021", "split": {"folds": 2}}
    config["experiments"]["unet_a"]["evaluate"] = [{"dataset": "other"}]
    config["experiments"]["unet_b"]["evaluate"] = [{"dataset": "other", "exclude_overlap": False}]
    path = workdir / "cross.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", configfile=path)
    jobs = planned_jobs(result)
    assert jobs["overlap"] == 1  # one table per (training, evaluated) dataset pair, shared by both experiments
    assert jobs["fingerprint"] == 2  # each dataset read once
    assert jobs["train"] == 4  # evaluating elsewhere trains nothing more
    assert jobs["infer"] == jobs["score"] == 4 + 4
    assert jobs["plot_montage"] == 4
    assert "--exclude results/overlap/tiny/other.csv" in result.output
    assert result.output.count("--subset all") == 2 * 4  # infer and score of the 4 cross-dataset evaluations


def test_an_unreachable_kaggle_stops_the_run_before_preprocessing(workdir, tmp_path_factory, monkeypatch):
    """Credentials are present but nothing answers (no network): the download runs first and fails clearly."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "0123456789abcdef")
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")  # http://localhost:80, where nothing listens
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["remote"] = {"source": {"kaggle": "someone/brats-mirror"}, "layout": "brats2021"}
    config["experiments"]["unet_a"]["evaluate"] = [{"dataset": "remote"}]
    path = workdir / "remote.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, configfile=path)
    assert result.returncode != 0
    log = (workdir / "results/downloads/remote/acquire.log").read_text()
    assert "someone/brats-mirror" in log and "source: {path:" in log
    assert "0123456789abcdef" not in log + result.output
    assert not (workdir / "results/preprocessed").exists() and not (workdir / "results/models").exists()


@pytest.mark.parametrize("gpus, launcher", [(1, "exec glioseg"), (4, "exec torchrun --standalone --nproc-per-node 4 -m glioseg")])
def test_the_train_rule_launches_one_process_per_gpu(gpus, launcher, tmp_path):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["experiments"]["unet_a"]["resources"]["gpus"] = gpus
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "-p", "--until", "train", configfile=path)
    assert result.returncode == 0, result.output[-3000:]
    assert f"{launcher} --log-file results/models/unet_a/fold0/train.log" in result.output


def test_an_experiment_can_keep_another_datasets_scans_out_of_its_folds(workdir):
    """BraTS 2021 holds BraTS 2018's scans: pre-training on it for BraTS 2018 must leave them out, in training and validation."""
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["later"] = {"source": {"synthetic": {"cases": 6, "shape": [48, 48, 32], "seed": 9}},
                                   "layout": "brats2021", "split": {"folds": 2}}
    config["experiments"]["unet_a"]["exclude_overlap_with"] = ["later"]
    path = workdir / "exclude.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", configfile=path)
    jobs = planned_jobs(result)
    assert jobs["overlap"] == 1 and jobs["fingerprint"] == 2 and jobs["train"] == 4
    excluded = "--exclude results/overlap/later/tiny.csv"
    commands = [line for line in result.output.splitlines() if excluded in line]
    assert sum(" train --cache " in line for line in commands) == 2  # unet_a's two folds, not unet_b's
    assert sum(" infer --model " in line for line in commands) == sum(" score --predictions " in line for line in commands) == 2


STUDIES = {"study1-swin-brats21-to-brats18.yaml": ({"profile": 2, "plot_dataset_montage": 2, "fingerprint": 2, "overlap": 1}, 28),
           "study2-medicalnet-resnet-brats19.yaml": ({"profile": 1, "plot_dataset_montage": 1}, 12),
           "brats-unet2d-family.yaml": ({"profile": 1, "plot_dataset_montage": 1}, 6),
           "lgg-unet.yaml": ({"profile": 1, "plot_dataset_montage": 1}, 2)}


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_config_plans_the_data_views_and_its_published_numbers(name, tmp_path):
    """Each dataset read from an (empty) folder, weights as placeholders: the plan alone, with the new stages in it."""
    config = yaml.safe_load((ROOT / "configs" / name).read_text())
    for dataset in config["datasets"].values():
        folder = tmp_path / "data"
        folder.mkdir(exist_ok=True)
        dataset["source"] = {"path": str(folder)}
    for spec in config["experiments"].values():
        checkpoint = spec.get("init", {}).get("checkpoint")
        if checkpoint:
            for fold in range(8):
                path = tmp_path / checkpoint.format(fold=fold)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"placeholder")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(tmp_path, "-n", "-p", configfile=path)
    jobs = planned_jobs(result)
    expected, entries = STUDIES[name]
    assert {rule: jobs.get(rule) for rule in expected} == expected
    assert jobs["plot_histograms"] == jobs["embedding"] == jobs["compare_published"] == jobs["summarize"] == 1
    assert result.output.count('"experiment": ') >= 2 * entries  # summarize and compare-published both get every entry
    if name.startswith("study1"):
        assert "--same-scans results/study1/overlap/brats2018/brats2021.csv" in result.output


def test_views_can_be_left_out(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["views"] = {"enabled": False}
    path = workdir / "noviews.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(workdir, "-n", configfile=path))
    assert not {"profile", "plot_dataset_montage", "plot_histograms", "embedding", "compare_published"} & set(jobs)


def test_published_numbers_for_an_unknown_experiment_fail_at_once(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["published"] = {"unet_c": [{"metric": "dice", "region": "WT", "value": 0.9, "source": "a paper"}]}
    path = workdir / "published.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", configfile=path)
    assert result.returncode != 0
    assert "published numbers are given for experiment 'unet_c'" in result.output and "Traceback" not in result.output


def test_a_given_split_file_sets_the_folds_and_is_an_input_of_its_split_job(workdir):
    """split: {file: …}: its folds (3 here) are planned from the file, and the split job reads and copies it."""
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    (workdir / "my_split.csv").write_text("case,fold\n" + "".join(f"BraTS2021_{i:05d},{i % 3}\n" for i in range(8)))
    config["datasets"]["tiny"]["split"] = {"file": "my_split.csv"}
    path = workdir / "given.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", configfile=path)
    jobs = planned_jobs(result)
    assert jobs["given_split"] == 1 and "split" not in jobs
    assert jobs["train"] == jobs["infer"] == jobs["score"] == 2 * 3
    assert "--given my_split.csv --given-copy results/splits/tiny/given" in result.output


def test_the_bundles_target_exports_every_experiment_after_its_folds(workdir):
    """`snakemake bundles`: one export per experiment, reading its record, every fold model, the cache and the split."""
    result = snakemake(workdir, "-n", "-p", "bundles", configfile=CONFIGS / "tiny.yaml")
    jobs = planned_jobs(result)
    assert jobs["export"] == jobs["describe_experiment"] == 2 and jobs["train"] == 4
    assert "infer" not in jobs and "score" not in jobs
    assert "export --model results/models/unet_a --out results/bundles/unet_a.pt" in result.output


def test_nnunet_datasets_in_and_out_and_external_predictions_are_planned(workdir):
    """An nnU-Net raw dataset read in place with its own splits_final.json, the sample exported for nnU-Net, and an
    experiment whose predictions another tool made: imported per fold instead of inferred, scored and plotted alike."""
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    nnunet = workdir / "nnUNet_raw" / "Dataset501_Brains"
    (nnunet / "imagesTr").mkdir(parents=True)
    (nnunet / "dataset.json").write_text('{"channel_names": {"0": "FLAIR"}, "labels": {"background": 0, "tumor": 1}}')
    (nnunet / "splits_final.json").write_text(
        '[{"train": ["b", "c"], "val": ["a"]}, {"train": ["a", "c"], "val": ["b"]}, {"train": ["a", "b"], "val": ["c"]}]')
    config["datasets"]["tiny"]["export_nnunet"] = 502
    config["datasets"]["brains"] = {"source": {"path": str(nnunet)}, "layout": "nnunet",
                                    "split": {"file": str(nnunet / "splits_final.json")}}
    config["experiments"]["on_brains"] = {**config["experiments"]["unet_a"], "dataset": "brains"}
    for fold in (0, 1):
        (workdir / "theirs" / f"fold_{fold}" / "tiny").mkdir(parents=True)
    config["experiments"]["nnunet"] = {"dataset": "tiny", "external": {"predictions": "theirs/fold_{fold}/{evaluation}",
                                                                       "label_map": {3: 4}}}
    path = workdir / "nnunet.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", configfile=path)
    jobs = planned_jobs(result)
    assert jobs["export_nnunet"] == 1 and jobs["import_predictions"] == 2 and jobs["given_split"] == 1
    assert jobs["train"] == 2 + 2 + 3 and jobs["infer"] == 7 and jobs["score"] == 7 + 2
    assert jobs["plot_montage"] == 4 and jobs["plot_curves"] == 3  # the external experiment has montages, no curves
    assert "export-nnunet --manifest results/manifests/tiny.csv" in result.output
    assert "--validation-folds 2 --out results/nnunet_raw/Dataset502_tiny" in result.output
    assert "import-predictions --source theirs/fold_1/tiny" in result.output and """--label-map '{"3": 4}'""" in result.output


def test_an_unlabelled_dataset_is_predicted_into_a_submission_folder_and_never_scored(workdir):
    """labelled: false and the predict section: a manifest without labels, one predict job per entry (ensemble by
    default), nothing split, preprocessed, profiled or scored for it."""
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    (workdir / "validation").mkdir()
    config["datasets"]["val"] = {"source": {"path": str(workdir / "validation")}, "layout": "brats2021", "labelled": False}
    config["predict"] = [{"experiment": "unet_a", "dataset": "val"},
                         {"experiment": "unet_b", "dataset": "val", "ensemble": False, "fold": 1, "labels": "brats2023"}]
    path = workdir / "unlabelled.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", configfile=path)
    jobs = planned_jobs(result)
    assert jobs["predict_dataset"] == 2 and jobs["manifest"] == 2
    assert jobs["split"] == jobs["preprocess"] == jobs["profile"] == 1  # the training dataset's only
    assert jobs["train"] == jobs["infer"] == jobs["score"] == 4  # the folds' own validation cases, nothing for val
    for never in ("results/splits/val", "results/preprocessed/val", "results/views/val", "val+test",
                  "results/predictions/unet_a/ensemble", "results/scores/unet_a/fold0/val"):
        assert never not in result.output, never
    assert "--layout brats2021 --unlabelled --layout-options '{}' --dataset val" in result.output
    assert ("predict --model results/models/unet_a --manifest results/manifests/val.csv --info results/manifests/val.json"
            "  --record results/submissions/unet_a/val.json --output results/submissions/unet_a/val") in result.output
    assert "--fold 1 --labels brats2023 --record results/submissions/unet_b/val.json" in result.output
    assert "--dataset tiny --out-csv" in result.output and "--layout brats2021 --layout-options" in result.output


def test_training_or_scoring_an_unlabelled_dataset_fails_at_once(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["datasets"]["val"] = {"source": {"path": "validation"}, "layout": "brats2021", "labelled": False}
    config["experiments"]["unet_a"]["evaluate"] = [{"dataset": "val"}]
    path = workdir / "scored.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", configfile=path)
    assert result.returncode != 0 and "Traceback" not in result.output
    assert "dataset 'val' has no labels (labelled: false), but experiment 'unet_a' is scored on it" in result.output


def test_a_dataset_s_spacing_reaches_the_preprocess_command_only_when_set(workdir):
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    result = snakemake(workdir, "-n", "-p", configfile=CONFIGS / "tiny.yaml")
    assert "--background zero --out" in result.output and "--spacing" not in result.output
    config["datasets"]["tiny"].setdefault("preprocess", {})["spacing"] = [2, 2, 1.5]
    path = workdir / "resampled.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", configfile=path)
    assert result.returncode == 0, result.output
    assert "--background zero --spacing 2.0 2.0 1.5 --out" in result.output
