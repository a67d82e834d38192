"""One experiment on one fold: the epoch loop, validation, best-model selection, resume.

The run is a pure function of the settings, the fold and the seed: the model
is initialised from the seed, each epoch's batches from (seed, epoch), and the
full state is saved after every epoch, so a job killed at any point and run
again ends with exactly the weights of an uninterrupted run.

On a cluster a training outlives the partition's time limit. The train rule
sends glioseg SIGTERM shortly before the job's limit (docs/cluster.md); SIGTERM
or SIGUSR1 makes the loop save its state after the current step, mid-epoch if
need be (or right after the epoch's save, when it lands in a validation pass),
and stop with :class:`TrainingInterrupted`, so that the retried job resumes
exactly where this one stopped.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import get_track_meta, set_track_meta
from monai.metrics import DiceMetric, MeanIoU
from torch import nn
from tqdm import tqdm

from glioseg import torch_files
from glioseg.atomic import write_csv
from glioseg.cache import cache_digest
from glioseg.errors import GliosegError
from glioseg.inference import autocast, predict_masks
from glioseg.locks import exclusive_lock
from glioseg.losses import build_loss
from glioseg.models import on_epoch_start, training_loss
from glioseg.models.model_file import network_for, save_model
from glioseg.settings import InferenceSettings, TrainingSettings
from glioseg.tables import history_columns
from glioseg.training import checkpoint
from glioseg.training.data import (
    case_items,
    epoch_seed,
    eval_loader,
    loader_options,
    resolve_workers,
    slice_areas,
    slice_items,
    train_loader,
    train_transforms,
)
from glioseg.training.distributed import (
    World,
    any_rank,
    barrier,
    process_group,
    shard,
    validation_share,
    world_from_environment,
    wrap,
)
from glioseg.training.init_weights import load_configured_weights
from glioseg.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

def validation_window(settings: TrainingSettings) -> InferenceSettings:
    """The sliding window of validation during training: the training patch, overlap 0.25, Gaussian blending.

    Fixed here rather than taken from the experiment's ``inference`` section,
    so that tuning inference never invalidates a trained model.
    """
    return InferenceSettings(roi_size=settings.patch_size, overlap=0.25, sw_batch_size=4, blend="gaussian",
                             threshold=0.5, amp=settings.amp)


@dataclass(frozen=True)
class FoldPaths:
    """Where one fold's training reads and writes."""

    cache: Path
    model: Path
    history: Path
    state: Path
    init: Path | None = None
    """Weights to start from (``settings.init`` says how to read them); ignored when resuming."""

    @property
    def last(self) -> Path:
        return self.state / "last.pt"

    @property
    def best(self) -> Path:
        return self.state / "best.pt"


@dataclass
class Run:
    """Everything that changes while training, and what must be saved to resume."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    network: nn.Module
    """What the training steps call: the model, or DDP around it."""
    epoch: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    """Losses of the steps already taken in an epoch that was interrupted."""


STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving its state; running the job again resumes it."""


class TrainingDiverged(GliosegError):
    """The loss stopped being a number: nothing after that step is worth keeping, and nothing of it is saved."""


class StopRequest:
    """Remembers a stop signal so the loop can finish its step and save before exiting."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum
        log.warning("received %s: saving state after this step, then stopping", signal.Signals(signum).name)

    def install(self) -> StopRequest:
        """Listen for the rest of the process: a command-line training that has finished and is exiting
        must not be killed by a walltime signal that arrives just then (the job would fail and rerun)."""
        for s in STOP_SIGNALS:
            signal.signal(s, self._handle)
        return self

    def settle(self) -> None:
        """Ignore stop signals from now on: the outcome is decided (complete, or saved and stopping).

        Python gives every handled signal its default action back as it starts to
        exit, before torch's teardown, and a walltime signal landing then would kill
        a finished training, fail its job and cost a retry (seen on SLURM). An
        ignored signal stays ignored through the exit.
        """
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)

    @contextlib.contextmanager
    def listening(self) -> Iterator[StopRequest]:
        """Listen within the block only, then restore the previous handlers (for trainings run in-process)."""
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        try:
            yield self.install()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _signal_name(stop: StopRequest) -> str:
    return signal.Signals(stop.signal).name if stop.signal is not None else "a signal to another process"


def _new_run(settings: TrainingSettings, in_channels: int, regions: list[str], device: torch.device) -> Run:
    torch.manual_seed(settings.seed)
    model = network_for(settings, in_channels, len(regions)).to(device)
    optimizer = build_optimizer(settings.optimizer, model.parameters())
    scheduler = build_scheduler(settings.scheduler, optimizer, settings.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and settings.amp)
    return Run(model, optimizer, scheduler, scaler, network=model)


def _save_state(run: Run, path: Path, identity: checkpoint.RunIdentity) -> None:
    torch_files.save(
        {
            "identity": identity.to_json(),
            "epoch": run.epoch,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "best_metric": run.best_metric,
            "best_epoch": run.best_epoch,
            "history": run.history,
            "epoch_losses": run.epoch_losses,
            "rng": checkpoint.rng_state(),
        },
        path,
    )


def _resume(run: Run, path: Path, identity: checkpoint.RunIdentity) -> bool:
    """Load the saved state into ``run`` if it belongs to this very run; report whether it did.

    A state saved by a run with other inputs is left to be overwritten by the
    fresh run's first epoch, and the log says which inputs changed.
    """
    if not path.exists():
        return False
    state = torch_files.load(path, hint="the saved training state is damaged: delete it to train this fold from its "
                                       "first epoch, or put back a copy of it.")
    if "identity" not in state:
        log.warning("starting afresh: %s was saved by an older glioseg that did not record its inputs", path)
        return False
    if changed := identity.changes(state["identity"]):
        log.warning("starting afresh: %s changed since %s was saved", " and ".join(changed), path)
        return False
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.best_metric, run.best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
    run.history, run.epoch_losses = list(state["history"]), list(state["epoch_losses"])
    checkpoint.restore_rng_state(state["rng"])
    log.info("resuming from %s after epoch %d and %d steps of the next (best validation metric %.4f at epoch %d)", path,
             run.epoch, len(run.epoch_losses), run.best_metric, run.best_epoch)
    return True


@dataclass
class EpochTime:
    """Where an epoch's training steps spent their time: waiting for a batch, or computing on it."""

    data: float = 0.0
    compute: float = 0.0

    @property
    def data_share(self) -> float:
        total = self.data + self.compute
        return self.data / total if total > 0 else 0.0


DATA_WAIT_WARNING = 0.10
"""The share of the training steps spent waiting for data above which the log says to give the loader more CPUs
(once the wait reaches a second: starting the loader's workers alone takes a fraction of one)."""


def _train_epoch(run: Run, loader, loss_fn: nn.Module, device: torch.device, amp: bool, stop: StopRequest,
                 save: Callable[[], None], world: World, state_path: Path) -> tuple[float, EpochTime]:
    """One pass over the loader; the steps an interrupted attempt already took are replayed, not retrained.

    Replaying draws those batches again (without training on them) so that
    the random transforms of the remaining batches match an uninterrupted run.
    A non-finite loss stops the run before anything of it is saved, so
    ``state_path`` keeps the last good epoch. The time is split into waiting
    for each batch and the step on it (which ends in a device sync, reading
    the loss).
    """
    run.model.train()
    spent = EpochTime()
    waiting = time.perf_counter()
    for index, batch in enumerate(loader):
        if index < len(run.epoch_losses):
            waiting = time.perf_counter()
            continue
        computing = time.perf_counter()
        spent.data += computing - waiting
        image, label = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
        run.optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = training_loss(run.model, run.network(image), label, loss_fn)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        value = float(loss.detach())
        if any_rank(not np.isfinite(value), world, device):
            raise TrainingDiverged(
                f"the training loss became {value} in epoch {run.epoch + 1}, step {index + 1}", path=state_path,
                hint=f"the state after epoch {run.epoch} is kept there. Check the learning rate (lower it), amp "
                     "(turn it off) and the loss; a changed setting trains the fold from its first epoch.")
        run.epoch_losses.append(value)
        if any_rank(stop.signal is not None, world, device):
            if world.is_main:
                save()
            raise TrainingInterrupted(f"stopped by {_signal_name(stop)} in epoch {run.epoch + 1} after "
                                      f"{len(run.epoch_losses)} steps; state saved")
        waiting = time.perf_counter()
        spent.compute += waiting - computing
    mean_loss = float(np.mean(run.epoch_losses))
    run.epoch_losses = []
    return mean_loss, spent


def _warn_data_wait(epoch: int, spent: EpochTime, num_workers: int) -> None:
    if spent.data_share > DATA_WAIT_WARNING and spent.data >= 1.0:
        log.warning("epoch %d: the training steps waited for data %.0f%% of the time (%.1f s of %.1f s) with %d loader "
                    "workers; give the job more CPUs (resources: cpus) or set num_workers higher", epoch,
                    100 * spent.data_share, spent.data, spent.data + spent.compute, num_workers)


def validate(model: nn.Module, loader, settings: TrainingSettings, device: torch.device) -> dict[str, np.ndarray]:
    """Mean Dice and IoU per region over the validation volumes (empty truth and prediction count as 1).

    2D models are validated on whole volumes too, slice by slice, so that
    their numbers compare with 3D models'. Under DDP each process predicts
    its share of the cases and MONAI's metrics gather the per-case scores
    from every process, so all agree on the mean.
    """
    metrics = {"dice": DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=False),
               "iou": MeanIoU(include_background=True, reduction="mean_batch", ignore_empty=False)}
    window = validation_window(settings)
    for batch in loader:
        masks = predict_masks(model, batch["image"], window, device).float().cpu()
        for metric in metrics.values():
            metric(y_pred=masks, y=batch["label"].float())
    return {name: metric.aggregate().numpy() for name, metric in metrics.items()}


def _epoch_items(train_items: list[dict], areas: Mapping[str, np.ndarray] | None, settings: TrainingSettings, epoch: int,
                 world: World) -> list[dict]:
    """This process's items of one epoch: cases (3D), or the slices selected from them (2D)."""
    seed = epoch_seed(settings.seed, epoch)
    items = train_items if areas is None else slice_items(train_items, areas, settings.slices, seed)
    return shard(items, world, seed)


def train_fold(settings: TrainingSettings, paths: FoldPaths, train_cases: list[str], val_cases: list[str], regions: list[str],
               in_channels: int, device: torch.device | None = None, stop: StopRequest | None = None) -> pd.DataFrame:
    """Train (or resume) one fold, then write the best model and the per-epoch history.

    Under torchrun each process trains on its share of the cases (torch DDP);
    rank 0 validates and writes. Raises :class:`TrainingInterrupted` after
    saving the state when a stop signal arrives: one that ``stop`` (installed
    by the caller) records, or, without it, one caught during this call.
    """
    world = world_from_environment()
    device = device or world.device()
    with contextlib.ExitStack() as scope:
        if world.is_main:
            scope.enter_context(_state_lock(paths, settings))
        stop = stop or scope.enter_context(StopRequest().listening())
        scope.enter_context(process_group(world, device))
        scope.enter_context(_plain_tensors())
        return _train_fold(settings, paths, train_cases, val_cases, regions, in_channels, device, stop, world)


@contextlib.contextmanager
def _plain_tensors() -> Iterator[None]:
    """Plain tensors through the transforms while training (nothing here inverts them, and MONAI's metadata costs ~10 %
    of a sample), and MONAI's setting back after, for whatever the process runs next."""
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def _state_lock(paths: FoldPaths, settings: TrainingSettings) -> contextlib.AbstractContextManager[bool]:
    """One training per state folder: two would overwrite each other's last.pt and best.pt."""
    return exclusive_lock(paths.state / "lock", f"training {settings.name}", subject=paths.state,
                          busy="another training of this fold is running",
                          hint="wait for it to finish, or stop it (kill that process, or scancel its SLURM job) and "
                               "run this one again.")


def _train_fold(settings: TrainingSettings, paths: FoldPaths, train_cases: list[str], val_cases: list[str], regions: list[str],
                in_channels: int, device: torch.device, stop: StopRequest, world: World) -> pd.DataFrame:
    run = _new_run(settings, in_channels, regions, device)
    identity = checkpoint.run_identity(settings, train_cases, val_cases, data_digest=cache_digest(paths.cache),
                                       init_digest=checkpoint.file_digest(paths.init) if paths.init else "",
                                       model=run.model)
    if not _resume(run, paths.last, identity) and paths.init is not None:
        load_configured_weights(run.model, paths.init, settings)
    run.network = wrap(run.model, world, device)
    loss_fn = build_loss(settings.loss)
    transforms = train_transforms(settings.patch_size, settings.augment, settings.oversample_foreground)
    train_items = case_items(paths.cache, train_cases)
    areas = slice_areas(train_items) if settings.spatial_dims == 2 else None
    num_workers = resolve_workers(settings.num_workers, torch.get_num_threads() // world.size)  # torchrun: the job's CPUs shared
    options = loader_options(num_workers, device)
    val_loader = eval_loader(case_items(paths.cache, validation_share(val_cases, world)), options)
    log.info("training %s on %s%s: %d train / %d validation cases, epochs %d..%d", settings.name, device,
             f" (process {world.rank} of {world.size})" if world.is_distributed else "", len(train_cases), len(val_cases),
             run.epoch + 1, settings.epochs)
    bar = tqdm(range(run.epoch + 1, settings.epochs + 1), desc=settings.name, unit="epoch", initial=run.epoch,
               total=settings.epochs, disable=not world.is_main)
    for epoch in bar:
        on_epoch_start(run.model, epoch)
        started = time.perf_counter()
        items = _epoch_items(train_items, areas, settings, epoch, world)
        loader = train_loader(items, transforms, settings.batch_size, settings.seed + world.rank, epoch, options)
        loss, spent = _train_epoch(run, loader, loss_fn, device, settings.amp, stop, lambda: _save_state(run, paths.last, identity),
                                   world, paths.last)
        _warn_data_wait(epoch, spent, num_workers)
        row: dict[str, float] = {"epoch": epoch, "train_loss": loss, "lr": run.optimizer.param_groups[0]["lr"],
                                 "data_seconds": spent.data, "compute_seconds": spent.compute}
        run.scheduler.step()
        row["validation_seconds"] = 0.0
        if epoch % settings.validate_every == 0 or epoch == settings.epochs:
            validating = time.perf_counter()
            for name, values in validate(run.model, val_loader, settings, device).items():
                row.update({f"val_{name}_{r}": float(v) for r, v in zip(regions, values)})
                row[f"val_{name}_mean"] = float(values.mean())
            if row[f"val_{settings.select}_mean"] > run.best_metric:
                run.best_metric, run.best_epoch = row[f"val_{settings.select}_mean"], epoch
                if world.is_main:
                    torch_files.save({"model": run.model.state_dict(), "epoch": epoch, "metric": run.best_metric}, paths.best)
            row["validation_seconds"] = time.perf_counter() - validating
        row["seconds"] = time.perf_counter() - started
        run.epoch = epoch
        run.history.append(row)
        if world.is_main:
            _save_state(run, paths.last, identity)
            _write_history(run, paths, regions)
        barrier(world)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", dice=f"{row.get('val_dice_mean', float('nan')):.3f}")
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
        if epoch < settings.epochs and any_rank(stop.signal is not None, world, device):
            # A signal during validation: the state is saved, so stop now, not a step into the next epoch.
            raise TrainingInterrupted(f"stopped by {_signal_name(stop)} after epoch {epoch}; state saved")
    if not world.is_main:
        return pd.DataFrame(run.history)
    return _finish(run, settings, paths, regions, in_channels)


def _write_history(run: Run, paths: FoldPaths, regions: list[str]) -> pd.DataFrame:
    """Every epoch, so a running training can be watched (``plot-curves`` reads it as it grows)."""
    history = pd.DataFrame(run.history).reindex(columns=history_columns(regions))
    write_csv(paths.history, history)
    return history


def _finish(run: Run, settings: TrainingSettings, paths: FoldPaths, regions: list[str], in_channels: int) -> pd.DataFrame:
    best = torch_files.load(paths.best)
    save_model(paths.model, best["model"], settings, regions, in_channels, epoch=best["epoch"],
                          best_metric=best["metric"])
    history = _write_history(run, paths, regions)
    log.info("best mean validation %s %.4f at epoch %d → %s", settings.select, run.best_metric, run.best_epoch, paths.model)
    return history

