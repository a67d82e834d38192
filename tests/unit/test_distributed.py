"""Data-parallel training: the shares of an epoch, and two real processes under torchrun (gloo on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from glioseg.training import checkpoint
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


def test_two_processes_train_one_model_with_ddp(cache, tmp_path):  # noqa: F811
    splits = tmp_path / "folds.json"
    splits.write_text(json.dumps({"training": [{"fold": 1, "case": c} for c in TRAIN] + [{"fold": 0, "case": c} for c in VAL]}))
    spec = settings(epochs=2, batch_size=1)
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "train.log"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "glioseg",
         "--log-file", str(log), "train", "--cache", str(cache), "--splits", str(splits), "--fold", "0",
         "--settings", json.dumps(spec), "--out-model", str(tmp_path / "model.pt"),
         "--out-history", str(tmp_path / "history.csv"), "--state", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    text = log.read_text()
    assert "(process 0 of 2)" in text and "(process 1 of 2)" in text
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and history["val_dice_mean"].between(0, 1).all()
    state = checkpoint.load(tmp_path / "state" / "last.pt")
    assert not any(key.startswith("module.") for key in state["model"])  # saved without DDP's wrapper
    model, payload = checkpoint.load_model(tmp_path / "model.pt", torch.device("cpu"))
    assert payload["settings"]["batch_size"] == 1
    assert model(torch.zeros(1, 4, 16, 16, 16)).shape == (1, 3, 16, 16, 16)



def test_validation_cases_are_dealt_out_and_no_process_is_left_without_one():
    cases = ["a", "b", "c"]
    assert [validation_share(cases, World(rank=r, size=2)) for r in range(2)] == [["a", "c"], ["b"]]
    assert [validation_share(cases, World(rank=r, size=4)) for r in range(4)] == [["a"], ["b"], ["c"], ["a"]]
    assert validation_share(cases, World()) == cases
