"""The pipeline on a real (one-node) SLURM cluster, through profiles/slurm.

1. The tiny study, one experiment: every job outside `localrules` runs as a
   SLURM job (grouped where the profile groups them), and the scores equal a
   local run's to the byte (training is deterministic on the CPU).
2. A training that cannot finish within its 1-minute limit: the walltime
   signal stops it with its state saved, Snakemake's retries resubmit it, it
   resumes, and the final model equals an uninterrupted run's, tensor for tensor.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter

import pandas as pd
import pytest
import torch
import yaml

from glioseg import torch_files
from glioseg.config import training_settings, validate_config

from .conftest import ROOT, environment, run_snakemake, slurm_state, snakemake_command

pytestmark = pytest.mark.slurm

TINY = ROOT / "tests" / "workflow" / "configs" / "tiny.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# What the tiny study runs on the cluster: manifest, split and preprocess share one
# SLURM job and the two score jobs another (profiles/slurm's groups); training and
# inference get a job per fold.
CLUSTER_JOBS = {"manifest": 1, "split": 1, "preprocess": 1, "train": 2, "infer": 2, "score": 2}
SLURM_SUBMISSIONS = 1 + 2 + 2 + 1


def test_tiny_study_runs_its_jobs_on_slurm_and_matches_a_local_run(slurm_cluster, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["experiments"] = {"unet_a": config["experiments"]["unet_a"]}
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    for folder in (on_slurm, local):
        folder.mkdir()
        (folder / "study.yaml").write_text(yaml.safe_dump(config))

    # The local reference runs beside the cluster run, which mostly waits on SLURM; niced,
    # so that it takes only the CPU the SLURM jobs leave.
    reference = subprocess.Popen(["nice", "-n", "19", *snakemake_command(local, local / "study.yaml", profile=False)],
                                 cwd=local, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = run_snakemake(on_slurm, on_slurm / "study.yaml")
    reference_output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_output[-3000:]
    assert result.returncode == 0, result.output[-5000:]
    print(f"tiny study on SLURM: {result.seconds:.0f} s")

    # Every job outside localrules was submitted, and ran inside a SLURM job.
    planned = Counter(re.findall(r"^\s*rule (\w+):", result.output, re.M))
    assert planned == CLUSTER_JOBS
    submitted = result.submitted()
    assert len(submitted) == len({jobid for jobid, _ in submitted}) == SLURM_SUBMISSIONS
    ran = Counter()
    for jobid, log in submitted:
        assert log.name == f"{jobid}.log" and log.is_file(), log
        assert slurm_state(jobid) == "COMPLETED"
        ran.update(re.findall(r"^\s*localrule (\w+):", log.read_text(), re.M))  # the job step's own Snakemake
    assert ran == CLUSTER_JOBS
    grouped = sorted(log.parent.name for _, log in submitted if log.parent.name.startswith("group_"))
    assert grouped == ["group_dataset_manifest_preprocess_split", "group_scores_score"]
    # ...and the login-node rules ran in the main process, not on the cluster.
    local_rules = set(re.findall(r"^localrule (\w+):", result.output, re.M))
    assert {"extract", "summarize", "plot_curves", "plot_boxplots", "plot_montage", "all"} <= local_rules
    assert not local_rules & set(CLUSTER_JOBS)

    # Same results as on one machine.
    for path in ["results/summary/scores.csv", "results/models/unet_a/fold0/history.csv"]:
        if path.endswith("history.csv"):  # the seconds column is a wall time
            frames = [pd.read_csv(root / path).drop(columns="seconds") for root in (on_slurm, local)]
            pd.testing.assert_frame_equal(*frames)
        else:
            assert (on_slurm / path).read_bytes() == (local / path).read_bytes()


# A training of about 65 s of CPU time (about 40 s fit in one attempt): two or three attempts.
# With runtime=1 (minutes) and signal_seconds=12, the train rule's timer sends
# glioseg SIGTERM 48 s into the job: after glioseg is listening (8..13 s into the
# job, measured on a loaded 2-core machine) and early enough for the save and the
# exit of the job's two nested Snakemakes (up to 5 s measured) before the kill at
# 60 s.
LONG = {
    "seed": 7,
    "datasets": {
        "tiny": {
            "source": {"synthetic": {"cases": 16, "shape": [48, 48, 32], "spacing": [2.0, 2.0, 2.0], "seed": 1}},
            "layout": "brats2021",
            "split": {"folds": 2, "seed": 0},
        }
    },
    "experiments": {
        "long": {
            "dataset": "tiny",
            "folds": [0],
            "model": {"name": "unet", "params": {"channels": [32, 64, 128], "strides": [2, 2], "num_res_units": 0}},
            "epochs": 80,
            "batch_size": 2,
            "patch_size": [48, 48, 32],
            "validate_every": 5,
            "resources": {"gpus": 0, "cpus": 1, "mem_mb": 2000, "runtime": 1, "signal_seconds": 12},
        }
    },
}
MODEL = "results/models/long/fold0/model.pt"


def test_training_stopped_by_the_walltime_signal_resumes_to_the_uninterrupted_model(slurm_cluster, tmp_path):
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(LONG))

    # The data, locally; then the reference training (the rule's own command, never
    # interrupted) beside the cluster run.
    prepared = run_snakemake(tmp_path, config_path, "results/splits/tiny/folds.json", "results/preprocessed/tiny",
                             profile=False, timeout=300)
    assert prepared.returncode == 0, prepared.output[-3000:]
    settings = training_settings(validate_config(LONG, SCHEMA), "long")
    reference = subprocess.Popen(
        ["nice", "-n", "19", "glioseg", "--threads", "1", "train", "--cache", "results/preprocessed/tiny", "--splits",
         "results/splits/tiny/folds.json", "--fold", "0", "--settings", json.dumps(settings, sort_keys=True),
         "--out-model", "reference/model.pt", "--out-history", "reference/history.csv", "--state", "reference/state"],
        cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    result = run_snakemake(tmp_path, config_path, "--retries", "4", MODEL, timeout=480)
    _, reference_errors = reference.communicate(timeout=300)
    assert reference.returncode == 0, reference_errors[-3000:]
    assert result.returncode == 0, result.output[-5000:]
    print(f"interrupted training on SLURM: {result.seconds:.0f} s, {len(result.submitted())} attempts")

    attempts = result.submitted()
    assert len(attempts) >= 2, "the training finished in one attempt: it should not fit in 1 minute"
    logs = [log.read_text() for _, log in attempts]
    assert "--signal" not in logs[0]  # no SLURM warning: it would reach the job step's Snakemake
    # Each attempt but the last was stopped by the rule's timer (not killed at the limit:
    # TIMEOUT), saved its state and exited 75 for the retry; none failed for another reason.
    assert [slurm_state(jobid) for jobid, _ in attempts] == ["FAILED"] * (len(attempts) - 1) + ["COMPLETED"]
    for text in logs[:-1]:
        assert "received SIGTERM: saving state" in text and "returned non-zero exit status 75" in text, text[-3000:]
    assert "resuming from" in logs[-1]

    history = pd.read_csv(tmp_path / "results/models/long/fold0/history.csv")
    assert list(history["epoch"]) == list(range(1, 81))
    expected = pd.read_csv(tmp_path / "reference/history.csv")
    pd.testing.assert_frame_equal(history.drop(columns="seconds"), expected.drop(columns="seconds"))

    resumed = torch_files.load(tmp_path / MODEL)["state_dict"]
    uninterrupted = torch_files.load(tmp_path / "reference/model.pt")["state_dict"]
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
