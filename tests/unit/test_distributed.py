"""Data-parallel training: the shares of an epoch, and two real processes under torchrun (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from glioseg import torch_files
from glioseg.models.model_file import load_model
from glioseg.settings import TrainingSettings
from glioseg.training.distributed import (
    World,
    shard,
    validation_share,
    world_from_environment,
)

from .test_training import TRAIN, VAL, cache, settings  # noqa: F401  (cache is a fixture)


def test_a_world_of_one_trains_on_every_item_in_order():
    assert shard(list("abcde"), World(), seed=3) == list("abcde")


def test_shares_are_equal_disjoint_and_drawn_afresh_each_epoch():
    items = list(range(11))
    shares = [shard(items, World(rank=r, size=3), seed=7) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert len(set().union(*shares)) == 9  # disjoint; two items sit this epoch out
    assert shard(items, World(rank=0, size=3), seed=8) != shares[0]


def test_the_world_comes_from_torchruns_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = world_from_environment()
    assert (world.rank, world.size, world.local_rank, world.is_main, world.is_distributed) == (3, 4, 1, False, True)


def torchrun_training(cache, root: Path, spec: TrainingSettings) -> list[str]:  # noqa: F811
    """The train rule's command for `gpus: 2`: two processes under torchrun (gloo on the CPU)."""
    splits = root / "folds.json"
    splits.write_text(json.dumps({"training": [{"fold": 1, "case": c} for c in TRAIN] + [{"fold": 0, "case": c} for c in VAL]}))
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "glioseg",
            "--log-file", str(root / "train.log"), "train", "--cache", str(cache), "--splits", str(splits), "--fold", "0",
            "--settings", json.dumps(spec.to_json()), "--out-model", str(root / "model.pt"),
            "--out-history", str(root / "history.csv"), "--state", str(root / "state")]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.slow
def test_two_processes_train_one_model_with_ddp(cache, tmp_path):  # noqa: F811
    log = tmp_path / "train.log"
    done = subprocess.run(torchrun_training(cache, tmp_path, settings(epochs=2, batch_size=1, validate_every=1)),
                          capture_output=True,
                          text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    text = log.read_text()
    assert "(process 0 of 2)" in text and "(process 1 of 2)" in text
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and history["val_dice_mean"].between(0, 1).all()
    state = torch_files.load(tmp_path / "state" / "last.pt")
    assert not any(key.startswith("module.") for key in state["model"])  # saved without DDP's wrapper
    model, payload = load_model(tmp_path / "model.pt", torch.device("cpu"))
    assert payload["settings"]["batch_size"] == 1
    assert model(torch.zeros(1, 4, 16, 16, 16)).shape == (1, 3, 16, 16, 16)



def test_validation_cases_are_dealt_out_and_no_process_is_left_without_one():
    cases = ["a", "b", "c"]
    assert [validation_share(cases, World(rank=r, size=2)) for r in range(2)] == [["a", "c"], ["b"]]
    assert [validation_share(cases, World(rank=r, size=4)) for r in range(4)] == [["a"], ["b"], ["c"], ["a"]]
    assert validation_share(cases, World()) == cases


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_the_state_and_the_rerun_resumes_it(cache, tmp_path):  # noqa: F811
    """The walltime path with `gpus > 1`: the train rule's timer signals torchrun, which passes SIGTERM to its workers."""
    command, log = torchrun_training(cache, tmp_path, settings(epochs=12, batch_size=1)), tmp_path / "train.log"
    launched = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    deadline = time.monotonic() + 240
    while not (log.exists() and "epoch 2:" in log.read_text()):
        assert launched.poll() is None and time.monotonic() < deadline, "torchrun ended or stalled before epoch 2"
        time.sleep(0.2)
    launched.send_signal(signal.SIGTERM)
    output, _ = launched.communicate(timeout=120)
    assert launched.returncode != 0, output[-3000:]  # so that Snakemake's retries run it again
    assert not (tmp_path / "model.pt").exists()
    stopped = torch_files.load(tmp_path / "state" / "last.pt")
    assert 2 <= stopped["epoch"] < 12, output[-3000:]
    assert log.read_text().count("received SIGTERM: saving state") == 2  # both workers

    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resuming from {tmp_path / 'state' / 'last.pt'} after epoch {stopped['epoch']}" in log.read_text()
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 13))
    assert history["train_loss"].head(stopped["epoch"]).tolist() == [row["train_loss"] for row in stopped["history"]]
