"""Training: exact resume after an interruption, stale state ignored, the model file contract."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from glioseg import torch_files
from glioseg.config import training_settings, validate_config
from glioseg.manifest import read_dataset_info, read_manifest
from glioseg.models.model_file import MODEL_FORMAT, load_model, network_for
from glioseg.preprocess import preprocess_dataset
from glioseg.settings import InferenceSettings, SliceSelection, TrainingSettings
from glioseg.tables import TIMING_COLUMNS
from glioseg.training import checkpoint, loop
from glioseg.training.loop import FoldPaths, train_fold

from .test_config import SCHEMA

CPU = torch.device("cpu")


@pytest.fixture
def cache(tiny_cache):
    return tiny_cache


def settings(epochs: int = 3, **changes) -> TrainingSettings:
    config = validate_config({
        "seed": 5,
        "datasets": {"tiny": {"source": {"synthetic": {}}, "layout": "brats2021"}},
        "experiments": {"e": {"dataset": "tiny", "model": {"name": "unet", "params": {"channels": [4, 8], "strides": [2],
                                                                                      "num_res_units": 0}},
                              "epochs": epochs, "batch_size": 2, "patch_size": [16, 16, 16], "num_workers": 0,
                              **changes}},
    }, SCHEMA)
    return TrainingSettings.from_json(training_settings(config, "e"))


TRAIN, VAL = ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"], ["BraTS2021_00004", "BraTS2021_00005"]


def run(cache, root, spec) -> pd.DataFrame:
    paths = FoldPaths(cache=cache, model=root / "model.pt", history=root / "history.csv", state=root / "state")
    return train_fold(spec, paths, TRAIN, VAL, ["TC", "WT", "ET"], in_channels=4, device=CPU)


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_in_third_epoch(monkeypatch) -> None:
    """Make the training die (as on a kill) when its third epoch starts; the first two are saved."""
    real_epoch, calls = loop._train_epoch, {"n": 0}

    def killed_in_third_epoch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_epoch(*args)

    monkeypatch.setattr(loop, "_train_epoch", killed_in_third_epoch)


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_uninterrupted_weights(cache, tmp_path, monkeypatch):
    straight = run(cache, tmp_path / "straight", settings())

    with monkeypatch.context() as patch:
        kill_in_third_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            run(cache, tmp_path / "resumed", settings())
    assert torch_files.load(tmp_path / "resumed" / "state" / "last.pt")["epoch"] == 2
    assert not (tmp_path / "resumed" / "model.pt").exists()
    resumed = run(cache, tmp_path / "resumed", settings())

    a, b = torch_files.load(tmp_path / "straight" / "model.pt"), torch_files.load(tmp_path / "resumed" / "model.pt")
    assert same_weights(a["state_dict"], b["state_dict"])
    assert a["epoch"] == b["epoch"] and a["best_metric"] == b["best_metric"]
    last_a = torch_files.load(tmp_path / "straight" / "state" / "last.pt")["model"]
    last_b = torch_files.load(tmp_path / "resumed" / "state" / "last.pt")["model"]
    assert same_weights(last_a, last_b)
    columns = ["epoch", "train_loss", "val_dice_mean", "lr"]
    pd.testing.assert_frame_equal(straight[columns], resumed[columns])


@pytest.mark.slow
def test_state_from_other_settings_is_not_resumed(cache, tmp_path):
    run(cache, tmp_path / "a", settings(epochs=2, optimizer={"lr": 0.01}))
    fresh = run(cache, tmp_path / "b", settings(epochs=2))
    # Same folder as run "a", new settings: its state must be ignored, giving the fresh run's result.
    reused = run(cache, tmp_path / "a", settings(epochs=2))
    assert list(reused["epoch"]) == [1, 2]
    assert same_weights(torch_files.load(tmp_path / "b" / "model.pt")["state_dict"],
                        torch_files.load(tmp_path / "a" / "model.pt")["state_dict"])
    pd.testing.assert_frame_equal(fresh[["train_loss"]], reused[["train_loss"]])


def test_model_file_rebuilds_the_network_without_pickled_code(cache, tmp_path):
    history = run(cache, tmp_path, settings(epochs=2))
    model, payload = load_model(tmp_path / "model.pt", CPU)
    assert payload["format"] == MODEL_FORMAT and payload["regions"] == ["TC", "WT", "ET"]
    assert payload["epoch"] == int(history.loc[history["val_dice_mean"].idxmax(), "epoch"])
    assert model(torch.zeros(1, 4, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    assert list(pd.read_csv(tmp_path / "history.csv").columns) == [
        "epoch", "train_loss", "val_dice_TC", "val_dice_WT", "val_dice_ET", "val_dice_mean",
        "val_iou_TC", "val_iou_WT", "val_iou_ET", "val_iou_mean", "lr", "seconds",
        "data_seconds", "compute_seconds", "validation_seconds"]


def _signal_in_second_epochs_first_step(monkeypatch, send) -> None:
    from glioseg.losses import build_loss

    calls = {"n": 0}

    def signalling_loss(loss_spec):
        loss = build_loss(loss_spec)

        def forward(logits, target):
            calls["n"] += 1
            if calls["n"] == 3:  # the first of epoch 2's two steps
                send()
            return loss(logits, target)

        return forward

    monkeypatch.setattr(loop, "build_loss", signalling_loss)


def _signal_in_first_validation(monkeypatch, send) -> None:
    validate = loop.validate

    def signalling_validate(*args, **kwargs):
        send()
        return validate(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", signalling_validate)


def train_arguments(cache, root) -> list[str]:
    """The train command's arguments for a 3-epoch run validated every epoch, writing under ``root``."""
    splits = root / "folds.json"
    splits.parent.mkdir(parents=True, exist_ok=True)
    splits.write_text(json.dumps({"training": [{"fold": 1, "case": c} for c in TRAIN] + [{"fold": 0, "case": c} for c in VAL]}))
    spec = settings(epochs=3, validate_every=1)
    return ["train", "--cache", str(cache), "--splits", str(splits), "--fold", "0", "--settings", json.dumps(spec.to_json()),
            "--out-model", str(root / "model.pt"), "--out-history", str(root / "history.csv"), "--state", str(root / "state")]


@pytest.fixture
def stop_handlers():
    """The CLI's train command listens for stop signals until its process exits: give pytest its handlers back."""
    saved = {s: signal.getsignal(s) for s in loop.STOP_SIGNALS}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.slow
@pytest.mark.parametrize(("when", "saved_epoch", "saved_steps"), [
    (_signal_in_second_epochs_first_step, 1, 1),  # stops after that step, mid-epoch
    (_signal_in_first_validation, 1, 0),  # stops after epoch 1's save, before epoch 2
])
def test_a_stop_signal_saves_exits_75_and_the_rerun_matches(cache, tmp_path, monkeypatch, stop_handlers, when, saved_epoch,
                                                            saved_steps):
    """The walltime signal arrives during a step or a validation; the CLI saves, exits 75, and the re-run resumes exactly."""
    from glioseg.cli import main
    from glioseg.commands.training import EXIT_RESUMABLE

    assert main(train_arguments(cache, tmp_path / "straight")) == 0

    with monkeypatch.context() as patch:
        when(patch, lambda: os.kill(os.getpid(), signal.SIGUSR1))
        assert main(train_arguments(cache, tmp_path / "resumed")) == EXIT_RESUMABLE
    state = torch_files.load(tmp_path / "resumed" / "state" / "last.pt")
    assert state["epoch"] == saved_epoch and len(state["epoch_losses"]) == saved_steps
    assert main(train_arguments(cache, tmp_path / "resumed")) == 0

    a, b = torch_files.load(tmp_path / "straight" / "model.pt"), torch_files.load(tmp_path / "resumed" / "model.pt")
    assert same_weights(a["state_dict"], b["state_dict"]) and a["epoch"] == b["epoch"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / "history.csv").drop(columns=list(TIMING_COLUMNS)),
                                  pd.read_csv(tmp_path / "resumed" / "history.csv").drop(columns=list(TIMING_COLUMNS)))


@pytest.mark.slow
def test_a_stop_signal_after_the_last_epoch_leaves_the_finished_training_alone(cache, tmp_path):
    """The walltime timer can fire while a finished training's process exits; that must not fail the job.

    Once right after the training, and once more while the interpreter tears its
    modules down, after Python has given signals their default action back (a
    SLURM job failed so). In a subprocess, since either would end the test process.
    """
    script = (
        "import os, signal, sys\n"
        "from glioseg.cli import main\n"
        "from glioseg.training import loop\n"
        "train_fold = loop.train_fold\n"
        "def train_then_signal(*args, **kwargs):\n"
        "    history = train_fold(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return history\n"
        "class SignalAtTeardown:\n"
        "    def __del__(self, kill=os.kill, pid=os.getpid(), term=signal.SIGTERM):\n"
        "        kill(pid, term)\n"
        "loop.train_fold = train_then_signal\n"
        "teardown = SignalAtTeardown()\n"
        "sys.exit(main(['--log-file', sys.argv[1], *sys.argv[2:]]))\n"
    )
    log = tmp_path / "train.log"
    done = subprocess.run([sys.executable, "-c", script, str(log), *train_arguments(cache, tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the stop signal came after the last epoch" in log.read_text()
    assert load_model(tmp_path / "model.pt", CPU)[1]["epoch"] >= 1
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("model", [{"name": "segresnet_vae", "params": {"init_filters": 8}},
                                   {"name": "dynunet", "params": {"filters": [4, 8, 16, 32]}}])
def test_models_that_need_the_patch_size_train_and_reload(cache, tmp_path, model):
    spec = dataclasses.replace(settings(epochs=1), model=model, patch_size=(32, 32, 32))
    run(cache, tmp_path, spec)
    rebuilt, _payload = load_model(tmp_path / "model.pt", CPU)
    assert rebuilt(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def run_from(cache, root, spec, init) -> pd.DataFrame:
    paths = FoldPaths(cache=cache, model=root / "model.pt", history=root / "history.csv", state=root / "state", init=init)
    return train_fold(spec, paths, TRAIN, VAL, ["TC", "WT", "ET"], in_channels=4, device=CPU)


def close_weights(a, b, atol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


def test_training_starts_from_init_weights_and_a_changed_init_invalidates_saved_state(cache, tmp_path, caplog):
    run(cache, tmp_path / "parent", settings(epochs=2, optimizer={"lr": 0.01}))
    parent = torch_files.load(tmp_path / "parent" / "model.pt")["state_dict"]
    # A learning rate of 1e-9 barely moves the weights: the child must end where its init put it.
    still = settings(epochs=1, optimizer={"lr": 1e-9}, init={"checkpoint": "parent/model.pt"})
    with caplog.at_level("INFO"):
        run_from(cache, tmp_path / "child", still, tmp_path / "parent" / "model.pt")
    assert "initial weights from" in caplog.text and "loaded" in caplog.text
    child = torch_files.load(tmp_path / "child" / "model.pt")["state_dict"]
    assert close_weights(child, parent, atol=1e-6)
    scratch = run(cache, tmp_path / "scratch", still)
    assert not close_weights(torch_files.load(tmp_path / "scratch" / "model.pt")["state_dict"], parent, atol=1e-3)
    assert len(scratch) == 1

    # The parent is retrained with other weights: the child's saved state belongs to the old init and is not resumed.
    run(cache, tmp_path / "parent", settings(epochs=2, optimizer={"lr": 0.02}))
    caplog.clear()
    with caplog.at_level("INFO"):
        run_from(cache, tmp_path / "child", settings(epochs=1, optimizer={"lr": 1e-9}, init={"checkpoint": "parent/model.pt"}),
                 tmp_path / "parent" / "model.pt")
    assert "starting afresh: the initial weights changed" in caplog.text and "resuming" not in caplog.text
    assert close_weights(torch_files.load(tmp_path / "child" / "model.pt")["state_dict"],
                         torch_files.load(tmp_path / "parent" / "model.pt")["state_dict"], atol=1e-6)


@pytest.mark.slow
def test_a_step_schedule_decays_the_learning_rate_every_step_size_epochs(cache, tmp_path):
    history = run(cache, tmp_path, settings(epochs=4, optimizer={"name": "adam", "lr": 0.01},
                                            scheduler={"name": "step", "step_size": 2, "gamma": 0.1}))
    assert history["lr"].tolist() == pytest.approx([0.01, 0.01, 0.001, 0.001])


@pytest.mark.slow
def test_a_2d_model_trains_on_slices_and_predicts_whole_volumes(cache, tmp_path):
    from glioseg.inference import predict_probabilities

    spec = settings(epochs=2, validate_every=1, batch_size=4, patch_size=[32, 32], select="iou",
                    slices={"min_label_area": 5, "empty_rate": 0.2},
                    model={"name": "unet", "params": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0}})
    history = run(cache, tmp_path, spec)
    assert history["val_iou_mean"].between(0, 1).all() and history["val_dice_mean"].between(0, 1).all()
    assert (history["val_dice_mean"] >= history["val_iou_mean"]).all()  # Dice ≥ IoU for every case, so for the means
    model, payload = load_model(tmp_path / "model.pt", CPU)
    assert payload["epoch"] == int(history.loc[history["val_iou_mean"].idxmax(), "epoch"])
    assert model(torch.zeros(2, 4, 32, 32)).shape == (2, 3, 32, 32)  # a 2D network
    volume = torch.randn(1, 4, 40, 36, 20)
    window = InferenceSettings(roi_size=(32, 32), overlap=0.25, sw_batch_size=4, blend="gaussian", threshold=0.5, amp=False)
    probabilities = predict_probabilities(model, volume, window, CPU)
    assert probabilities.shape == (1, 3, 40, 36, 20)
    one_slice = predict_probabilities(model, volume[..., 7], window, CPU)
    torch.testing.assert_close(probabilities[..., 7], one_slice)  # slice k of the volume is the prediction of slice k


def test_slice_selection_keeps_large_labelled_slices_and_samples_empty_ones():
    from glioseg.training.data import slice_items

    areas = {"a": np.array([0, 0, 3, 40, 90, 2, 0, 0, 0, 0])}
    cases = [{"case": "a", "image": "a.npy", "label": "a_seg.npy"}]

    def chosen(min_area, rate, seed=0):
        return [item["slice"] for item in slice_items(cases, areas, SliceSelection(min_area, rate), seed)]

    assert chosen(0, 1.0) == list(range(10))
    assert chosen(0, 0.0) == [2, 3, 4, 5]
    assert chosen(10, 0.0) == [3, 4]
    draws = [chosen(10, 0.5, seed) for seed in range(40)]
    assert all({3, 4} <= set(d) for d in draws)
    empty_kept = np.mean([len(d) - 2 for d in draws]) / 7
    assert 0.3 < empty_kept < 0.7
    assert chosen(10, 0.5, seed=3) == chosen(10, 0.5, seed=3)  # a pure function of the seed


@pytest.mark.slow
def test_changed_data_starts_a_fresh_training_and_says_why(cache, tiny_manifest, tmp_path, caplog):
    """Same settings, same folds, other preprocessing: the saved state belongs to other data and must not be resumed."""
    csv, info_json = tiny_manifest
    other = tmp_path / "cache_margin4"
    preprocess_dataset(read_manifest(csv), read_dataset_info(info_json), other, margin=4)
    run(cache, tmp_path / "fold", settings(epochs=2))
    fresh = run(other, tmp_path / "fresh", settings(epochs=2))
    with caplog.at_level("INFO"):
        again = run(other, tmp_path / "fold", settings(epochs=2))
    assert "starting afresh: the preprocessed data (the cache's digest) changed" in caplog.text
    assert "resuming" not in caplog.text and list(again["epoch"]) == [1, 2]
    assert same_weights(torch_files.load(tmp_path / "fresh" / "model.pt")["state_dict"],
                        torch_files.load(tmp_path / "fold" / "model.pt")["state_dict"])
    pd.testing.assert_frame_equal(fresh[["train_loss"]], again[["train_loss"]])


def test_the_run_identity_names_each_input_that_changed():
    base = settings(epochs=2)
    model = network_for(base, 4, 3)
    identity = checkpoint.run_identity(base, TRAIN, VAL, data_digest="d1", init_digest="", model=model)
    assert identity.changes(identity.to_json()) == []
    wider = settings(epochs=2, model={"name": "unet", "params": {"channels": [4, 16], "strides": [2], "num_res_units": 0}})
    other = checkpoint.run_identity(wider, TRAIN[1:], VAL, data_digest="d2", init_digest="",
                                    model=network_for(wider, 4, 3))
    assert other.changes(identity.to_json()) == [
        "the experiment's training settings", "the fold's training or validation cases",
        "the preprocessed data (the cache's digest)", "the network the code builds (parameter names and shapes)"]
    same_config_other_code = checkpoint.run_identity(base, TRAIN, VAL, data_digest="d1", init_digest="",
                                                     model=network_for(wider, 4, 3))
    assert same_config_other_code.changes(identity.to_json()) == ["the network the code builds (parameter names and shapes)"]


def test_history_is_written_after_every_epoch(cache, tmp_path, monkeypatch):
    kill_in_third_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(cache, tmp_path, settings(epochs=3, validate_every=1))
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and history["val_dice_mean"].notna().all()
    assert not (tmp_path / "model.pt").exists()


def test_history_splits_each_epochs_time_and_validates_every_n_epochs_and_the_last(cache, tmp_path):
    history = run(cache, tmp_path, settings(epochs=5, validate_every=2))
    validated = history["val_dice_mean"].notna()
    assert history.loc[validated, "epoch"].tolist() == [2, 4, 5]
    assert (history["compute_seconds"] > 0).all() and (history["data_seconds"] > 0).all()
    assert (history.loc[validated, "validation_seconds"] > 0).all() and (history.loc[~validated, "validation_seconds"] == 0).all()
    parts = history[["data_seconds", "compute_seconds", "validation_seconds"]].sum(axis=1)
    assert (parts <= history["seconds"]).all()
    best = torch_files.load(tmp_path / "state" / "best.pt")
    assert best["epoch"] == int(history.loc[history["val_dice_mean"].idxmax(), "epoch"])  # chosen among validated epochs


def test_a_long_wait_for_data_is_logged_with_what_to_do(caplog):
    caplog.set_level(logging.WARNING, logger="glioseg.training.loop")
    loop._warn_data_wait(3, loop.EpochTime(data=0.5, compute=10.0), 0)  # 5 %: fine
    loop._warn_data_wait(4, loop.EpochTime(data=3.0, compute=7.0), 1)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["epoch 4: the training steps waited for data 30% of the time (3.0 s of 10.0 s) with 1 loader workers; "
                        "give the job more CPUs (resources: cpus) or set num_workers higher"]


def test_a_non_finite_loss_stops_the_training_and_keeps_the_last_good_state(cache, tmp_path, monkeypatch):
    from glioseg.losses import build_loss

    calls = {"n": 0}

    def diverging_loss(loss_spec):
        loss = build_loss(loss_spec)

        def forward(logits, target):
            calls["n"] += 1
            value = loss(logits, target)
            return value * float("nan") if calls["n"] == 4 else value  # epoch 2's second step

        return forward

    monkeypatch.setattr(loop, "build_loss", diverging_loss)
    with pytest.raises(loop.TrainingDiverged) as caught:
        run(cache, tmp_path, settings(epochs=3))
    message = str(caught.value)
    assert "the training loss became nan in epoch 2, step 2" in message and str(tmp_path / "state" / "last.pt") in message
    assert "the state after epoch 1 is kept" in message
    state = torch_files.load(tmp_path / "state" / "last.pt")
    assert state["epoch"] == 1 and state["epoch_losses"] == []
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "model.pt").exists()


def test_a_second_training_of_the_same_fold_fails_at_once_naming_the_first(cache, tmp_path):
    from glioseg.errors import GliosegError
    from glioseg.locks import exclusive_lock

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from glioseg.locks import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], 'training e', busy='busy', hint='wait'):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(120)\n",
         str(tmp_path / "state" / "lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(GliosegError) as caught:
            run(cache, tmp_path, settings(epochs=1))
        assert f"another training of this fold is running (training e: host {socket.gethostname()}, pid {holder.pid}" \
            in str(caught.value)
        assert not (tmp_path / "state" / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(tmp_path / "state" / "lock", "a test", busy="busy", hint="none") as locked:
        assert locked  # a killed holder leaves no stale lock
    assert list(run(cache, tmp_path, settings(epochs=1))["epoch"]) == [1]


def test_a_damaged_state_file_is_named_with_what_to_do(cache, tmp_path):
    from glioseg.errors import GliosegError

    run(cache, tmp_path, settings(epochs=1))
    last = tmp_path / "state" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(GliosegError) as caught:
        run(cache, tmp_path, settings(epochs=2))
    assert str(last) in str(caught.value) and "truncated or corrupt" in str(caught.value)
    assert "delete it to train this fold from its first epoch" in str(caught.value)


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_model_file_that_needs_code_is_refused_without_advice_to_load_it_anyway(tmp_path):
    from glioseg.errors import GliosegError

    path = tmp_path / "model.pt"
    torch.save({"format": MODEL_FORMAT, "hook": _Payload()}, path)
    with pytest.raises(GliosegError) as caught:
        load_model(path, CPU)
    assert str(path) in str(caught.value) and "refused" in str(caught.value)
    assert "weights_only=False" not in str(caught.value) and "False" not in str(caught.value)


def test_training_uses_plain_tensors_and_leaves_monais_metadata_setting_as_it_found_it(cache, tmp_path, monkeypatch):
    from monai.data import get_track_meta

    seen, real_epoch = [], loop._train_epoch

    def recording_epoch(*args):
        seen.append(get_track_meta())
        return real_epoch(*args)

    monkeypatch.setattr(loop, "_train_epoch", recording_epoch)
    assert get_track_meta()
    run(cache, tmp_path, settings(epochs=1))
    assert seen == [False] and get_track_meta()
