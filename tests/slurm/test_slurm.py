"""The pipeline on a real (one-node) SLURM cluster, through profiles/slurm.

1. The tiny study, one experiment: every job outside `localrules` runs as a
   SLURM job (grouped where the profile groups them), and the scores equal a
   local run's to the byte (training is deterministic on the CPU).
2. A training that cannot finish within its job's time limit (sized from the
   machine's measured speed): the walltime signal stops it with its state saved,
   Snakemake's retries resubmit it, it resumes, and the final model equals an
   uninterrupted run's, tensor for tensor.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from glioseg import torch_files
from glioseg.config import training_settings, validate_config
from glioseg.tables import TIMING_COLUMNS

from .conftest import (
    ROOT,
    environment,
    group_member_times,
    run_snakemake,
    slurm_job,
    slurm_state,
    snakemake_command,
)

pytestmark = pytest.mark.slurm

TINY = ROOT / "tests" / "workflow" / "configs" / "tiny.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# What the tiny study runs on the cluster: manifest, split and preprocess share one
# SLURM job and the two score jobs another (profiles/slurm's groups); training and
# inference get a job per fold; the dataset's profile (a data view that reads every
# raw case) one job of its own.
CLUSTER_JOBS = {"manifest": 1, "split": 1, "preprocess": 1, "train": 2, "infer": 2, "score": 2, "profile": 1}
SLURM_SUBMISSIONS = 1 + 2 + 2 + 1 + 1
# The two group jobs: their members, and what they reserve (CPUs, memory, minutes) with profiles/slurm's
# resources: the largest member's CPUs and memory (manifest and preprocess take the dataset's threads,
# 4 by default, capped at profiles/slurm-ci's 2 cores; preprocess 8000 MB) and the sum of the members'
# runtimes (manifest and split 60 min each, preprocess 240; a score 15).
DATASET_CPUS = 2
GROUP_MEMBERS = {
    "group_dataset_manifest_preprocess_split": {
        "rules": ["manifest", "split", "preprocess"],
        "reserved": (DATASET_CPUS, 8000, 360),
    },
    "group_scores_score": {"rules": ["score", "score"], "reserved": (1, 4000, 30)},
}


def test_tiny_study_runs_its_jobs_on_slurm_and_matches_a_local_run(slurm_cluster, tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["experiments"] = {"unet_a": config["experiments"]["unet_a"]}
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    for folder in (on_slurm, local):
        folder.mkdir()
        (folder / "study.yaml").write_text(yaml.safe_dump(config))

    # The cluster run first, then the local reference: one after the other, so that each has
    # the machine's two cores to itself and the printed times mean something.
    result = run_snakemake(on_slurm, on_slurm / "study.yaml")
    jobs = {jobid: slurm_job(jobid) for jobid, _ in result.submitted()}  # before squeue forgets them
    assert result.returncode == 0, result.output[-5000:]
    reference = run_snakemake(local, local / "study.yaml", profile=False, timeout=900)
    assert reference.returncode == 0, reference.output[-3000:]
    print(f"tiny study: {result.seconds:.0f} s on SLURM, {reference.seconds:.0f} s locally")
    states = {jobid: job.state for jobid, job in jobs.items()}

    # Every job outside localrules was submitted, and ran inside a SLURM job.
    planned = Counter(re.findall(r"^\s*rule (\w+):", result.output, re.M))
    assert planned == CLUSTER_JOBS
    submitted = result.submitted()
    assert len(submitted) == len({jobid for jobid, _ in submitted}) == SLURM_SUBMISSIONS
    ran = Counter()
    for jobid, log in submitted:
        assert log.name == f"{jobid}.log" and log.is_file(), log
        assert states[jobid] == "COMPLETED"
        ran.update(re.findall(r"^\s*localrule (\w+):", log.read_text(), re.M))  # the job step's own Snakemake
    assert ran == CLUSTER_JOBS
    grouped = {log.parent.name: jobid for jobid, log in submitted if log.parent.name.startswith("group_")}
    assert sorted(grouped) == ["group_dataset_manifest_preprocess_split", "group_scores_score"]
    # A group job's members ran one after another (plugin 2.8.0 starts its Snakemake with --jobs 1)
    # and the job reserved for that: the largest member's CPUs and memory, the sum of their runtimes.
    for name, expected in GROUP_MEMBERS.items():
        jobid = grouped[name]
        members = group_member_times((on_slurm / ".snakemake/slurm_logs" / name / f"{jobid}.log").read_text())
        assert sorted(rule for rule, _, _ in members) == sorted(expected["rules"]), members
        for (_, _, ended), (rule, started, _) in itertools.pairwise(members):
            assert started >= ended, f"{rule} started before the member before it ended: {members}"
        assert (jobs[jobid].cpus, jobs[jobid].memory, jobs[jobid].minutes) == expected["reserved"], jobs[jobid]
    # The test cluster supports the job step's CPU binding (TaskPlugin=task/affinity): no complaint in any log.
    assert not [log for _, log in submitted if "lacks support for cpu binding" in log.read_text()]
    # ...and the login-node rules ran in the main process, not on the cluster.
    local_rules = set(re.findall(r"^localrule (\w+):", result.output, re.M))
    assert {"extract", "summarize", "plot_curves", "plot_boxplots", "plot_montage", "all"} <= local_rules
    assert not local_rules & set(CLUSTER_JOBS)

    # Same results as on one machine.
    for path in ["results/summary/scores.csv", "results/models/unet_a/fold0/history.csv"]:
        if path.endswith("history.csv"):  # the timing columns are wall times
            frames = [pd.read_csv(root / path).drop(columns=list(TIMING_COLUMNS)) for root in (on_slurm, local)]
            pd.testing.assert_frame_equal(*frames)
        else:
            assert (on_slurm / path).read_bytes() == (local / path).read_bytes()


# The walltime test sizes its job from this machine's speed, measured just before it
# submits, inside a SLURM job step: fixed margins (1 minute, 12 s) left a loaded
# machine (load 5-8 on 2 cores) no time to train between a job's start and its
# signal, and the retries ran out. Measured outside SLURM, the speed can be far off a
# job's: each job step is a session of its own, and with the kernel's autogroup
# scheduling every session gets an equal share of the CPU, however many processes
# the others run (one measurement outside SLURM said 3.9 s an epoch, the job did 1.1).
#
# What a job of the train rule does: two nested Snakemakes start, then glioseg, which
# listens for SIGTERM from its start and trains; the rule's timer sends the signal
# `signal_seconds` before the job's end; glioseg finishes its step (or validation
# pass), saves and exits 75, and the Snakemakes exit before SLURM's kill at the limit.
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
            "epochs": 5,  # the calibration's; plan_walltime_job sets the job's
            "batch_size": 2,
            "patch_size": [48, 48, 32],
            "validate_every": 5,
            "resources": {"gpus": 0, "cpus": 1, "mem_mb": 2000, "runtime": 1, "signal_seconds": 12},
        }
    },
}
MODEL = "results/models/long/fold0/model.pt"
SIGNAL_FLOOR = 12  # s: the save and both Snakemakes' exit took up to 5 s on an idle machine
STARTUP_MARGIN = 2  # the signal comes no sooner than twice the measured time to glioseg's listening
TRAINING_FACTOR = 1.5  # the training is this much more than one job's time to its signal holds, at full speed
CPU_TIMED = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "usage = resource.getrusage(resource.RUSAGE_CHILDREN); print(usage.ru_utime + usage.ru_stime)")
MAX_CLUSTER_SECONDS = 3600  # the bound on a plan's cluster run: a slower machine is too busy for this test
FAILED = re.compile(r"SLURM-job '(\d+)' failed, SLURM status is: '(\w+)'")


@dataclass(frozen=True)
class Speed:
    """Seconds this machine takes, right now, for the parts of a train job."""

    snakemake: float  # one Snakemake start (parse, DAG): a SLURM job runs two before glioseg
    startup: float  # glioseg train's run less its epochs: imports, data, the final save
    epoch: float  # an epoch, on average
    longest_epoch: float  # one with a validation pass, which a signal may have to wait out
    cpu_share: float  # the training's CPU time over its wall time, at most 1: what the load left it

    @property
    def fastest_epoch(self) -> float:
        """An epoch with the CPU to itself: as fast as the job could train if the load went away."""
        return self.epoch * self.cpu_share

    @property
    def listening(self) -> float:
        """About how long into a job glioseg starts to listen for the signal."""
        return 2 * self.snakemake + self.startup


@dataclass(frozen=True)
class Plan:
    runtime: int  # minutes, the job's time limit
    signal_seconds: int
    epochs: int
    retries: int

    @property
    def timeout(self) -> int:
        """Seconds for the whole cluster run: every attempt to its limit, plus the plugin's status polling."""
        return (self.retries + 1) * (60 * self.runtime + 120) + 180


def plan_walltime_job(speed: Speed) -> Plan:
    """Margins in proportion to the measured speed, so that the test checks the mechanism, not the load.

    The signal leaves time for the longest uninterruptible stretch and both
    Snakemakes' exit; it comes well after glioseg listens, and is at most half the
    runtime (the train rule caps it so). The training is more than one job's time
    to the signal holds with the CPU to itself, so it cannot finish in one attempt
    even if the load goes away; retries allow for twice the attempts the measured
    speed needs.
    """
    signal = max(SIGNAL_FLOOR, math.ceil(2 * (speed.longest_epoch + speed.snakemake)))
    runtime = max(math.ceil((signal + STARTUP_MARGIN * speed.listening) / 60), math.ceil(2 * signal / 60))
    to_signal = 60 * runtime - signal
    epochs = max(10, math.ceil(TRAINING_FACTOR * to_signal / speed.fastest_epoch))
    attempts = math.ceil(epochs * speed.epoch / (to_signal - speed.listening))
    return Plan(runtime=runtime, signal_seconds=signal, epochs=epochs, retries=2 * attempts)


def _train_command(settings: dict, out: str) -> list[str]:
    """The train rule's glioseg command, outside Snakemake and SLURM, writing into ``out``."""
    return ["glioseg", "--threads", "1", "train", "--cache", "results/preprocessed/tiny", "--splits",
            "results/splits/tiny/folds.json", "--fold", "0", "--settings", json.dumps(settings, sort_keys=True),
            "--out-model", f"{out}/model.pt", "--out-history", f"{out}/history.csv", "--state", f"{out}/state"]


def _measure_speed(workdir: Path, config_path: Path, settings: dict) -> Speed:
    """Time a Snakemake start (a dry run of the target) and a 5-epoch run of the same training (its wall
    and CPU time), each in a SLURM job step like the train job's, here and now.

    The dry run is in Snakemake's remote mode, as a job's Snakemakes start: the main process alone also
    checks every network (torch and MONAI imported, the model built), which took 8.6 s against 2.8 s,
    and made the plan ask for 2-minute jobs where 1-minute jobs hold the same margins.
    """
    dry_run = snakemake_command(workdir, config_path, "-n", "--mode", "remote", MODEL, profile=False)
    snakemake_seconds, _ = _in_job_step(workdir, dry_run)
    wall, output = _in_job_step(workdir, [sys.executable, "-c", CPU_TIMED, *_train_command(settings, "calibration")])
    cpu = float(output.split()[-1])
    epochs = pd.read_csv(workdir / "calibration/history.csv")["seconds"]
    return Speed(snakemake=snakemake_seconds, startup=float(wall - epochs.sum()), epoch=float(epochs.mean()),
                 longest_epoch=float(epochs.max()), cpu_share=min(1.0, cpu / wall))


def _in_job_step(workdir: Path, command: list[str]) -> tuple[float, str]:
    """Run ``command`` with srun as the train job would (1 CPU); return its wall seconds and its stdout."""
    started = time.monotonic()
    done = subprocess.run(["srun", "--time", "10", "--cpus-per-task", "1", "--mem", "2000", *command], cwd=workdir,
                          env=environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return time.monotonic() - started, done.stdout


def _with_plan(config: dict, plan: Plan) -> dict:
    experiment = config["experiments"]["long"]
    resources = dict(experiment["resources"], runtime=plan.runtime, signal_seconds=plan.signal_seconds)
    experiments = {"long": dict(experiment, epochs=plan.epochs, resources=resources)}
    return dict(config, experiments=experiments)


def test_training_stopped_by_the_walltime_signal_resumes_to_the_uninterrupted_model(slurm_cluster, tmp_path):
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(LONG))

    # The data, locally; then this machine's speed, and the job sized from it.
    prepared = run_snakemake(tmp_path, config_path, "results/splits/tiny/folds.json", "results/preprocessed/tiny",
                             profile=False, timeout=300)
    assert prepared.returncode == 0, prepared.output[-3000:]
    speed = _measure_speed(tmp_path, config_path, training_settings(validate_config(LONG, SCHEMA), "long"))
    plan = plan_walltime_job(speed)
    print(f"measured {speed}; planned {plan}")
    assert plan.timeout <= MAX_CLUSTER_SECONDS, f"this machine is too busy for the walltime test now: {speed}, {plan}"
    config = _with_plan(LONG, plan)
    config_path.write_text(yaml.safe_dump(config))

    result = run_snakemake(tmp_path, config_path, "--retries", str(plan.retries), MODEL, timeout=plan.timeout)
    attempts = result.submitted()
    last_state = slurm_state(attempts[-1][0]) if attempts else "none submitted"  # before squeue forgets it
    assert result.returncode == 0, f"{speed}\n{plan}\n{result.output[-5000:]}"
    print(f"interrupted training on SLURM: {result.seconds:.0f} s, {len(attempts)} attempts")

    # The reference training (the rule's own command, never interrupted), after the cluster run: beside it,
    # it would take CPU from the jobs the plan was sized for.
    settings = training_settings(validate_config(config, SCHEMA), "long")
    reference = subprocess.run(_train_command(settings, "reference"), cwd=tmp_path, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               timeout=300 + 8 * (speed.startup + plan.epochs * speed.epoch))
    assert reference.returncode == 0, reference.stderr[-3000:]

    assert len(attempts) >= 2, f"the training finished in one attempt: {speed}, {plan}"
    logs = [log.read_text() for _, log in attempts]
    assert "--signal" not in logs[0]  # no SLURM warning: it would reach the job step's Snakemake
    # Each attempt but the last was stopped by the rule's timer (not killed at the limit:
    # TIMEOUT), saved its state and exited 75 for the retry; none failed for another reason.
    # The plugin reports each failure's state as it sees it: squeue forgets finished jobs
    # after MinJobAge (300 s), sooner than a run of long attempts ends.
    failed = dict(FAILED.findall(result.output))
    assert [failed.get(jobid) for jobid, _ in attempts[:-1]] == ["FAILED"] * (len(attempts) - 1)
    assert attempts[-1][0] not in failed and last_state == "COMPLETED"
    for text in logs[:-1]:
        assert "received SIGTERM: saving state" in text and "returned non-zero exit status 75" in text, text[-3000:]
    assert "resuming from" in logs[-1]

    history = pd.read_csv(tmp_path / "results/models/long/fold0/history.csv")
    assert list(history["epoch"]) == list(range(1, plan.epochs + 1))
    expected = pd.read_csv(tmp_path / "reference/history.csv")
    pd.testing.assert_frame_equal(history.drop(columns=list(TIMING_COLUMNS)), expected.drop(columns=list(TIMING_COLUMNS)))

    resumed = torch_files.load(tmp_path / MODEL)["state_dict"]
    uninterrupted = torch_files.load(tmp_path / "reference/model.pt")["state_dict"]
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
