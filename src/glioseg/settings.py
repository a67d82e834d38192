"""Typed settings: what a training job and an inference job read from the config.

The validated config reaches a job as JSON (a Snakemake param, or a model
file's record of how it was trained); each job turns it into one frozen object
here, once, so a misspelt setting is an error where the object is built, not
a ``KeyError`` hours into a training, and an editor can follow every use.
Registry-specific sections (a model's, loss's, optimiser's or scheduler's
``params``) stay mappings: their keys belong to the registered component and
the config schema checks them per component.

``to_json`` gives back exactly the mapping ``from_json`` read, so the JSON a
model file stores, and the digest a training's identity takes of it, are the
same whether written from a config or from these objects. No heavy imports:
the CLI parses settings before it loads torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from glioseg.errors import GliosegError


def _build(cls: type, payload: Mapping[str, Any], what: str) -> Any:
    """``cls(**payload)``, with a message that names the settings and the keys that do not fit."""
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    unknown, missing = sorted(set(payload) - names), sorted(required - set(payload))
    if unknown or missing:
        problems = ([f"unknown {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else [])
        raise GliosegError(f"{what} settings do not fit this glioseg: {'; '.join(problems)}",
                           hint="pass the settings glioseg's config module writes (the Snakemake rule does), or "
                                "retrain a model file written by another glioseg version.")
    return cls(**payload)


@dataclass(frozen=True)
class SpatialAugmentation:
    """A random rotation and zoom of the patch (Buda et al.'s and nnU-Net's augmentation), with probability ``prob``."""

    prob: float
    rotate_degrees: float
    """The largest rotation, each way, about each axis (in the slice plane alone for a 2D model)."""
    zoom: float
    """The largest relative zoom each way along each axis: 0.1 zooms by 0.9–1.1."""


@dataclass(frozen=True)
class Augmentation:
    """Random flips per axis, then intensity scale and shift (the Swin UNETR study's recipe), after an optional random
    rotation and zoom (``spatial``).

    ``spatial`` is absent from the settings unless the config sets it, so a training
    without it has the settings it had before it existed, and keeps its cached model.
    """

    flip_prob: float
    scale_intensity: float
    shift_intensity: float
    spatial: SpatialAugmentation | None = None

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Augmentation:
        values = dict(payload)
        if values.get("spatial") is not None:
            values["spatial"] = _build(SpatialAugmentation, values["spatial"], "spatial augmentation")
        return _build(cls, values, "augmentation")

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        if self.spatial is None:
            del payload["spatial"]
        return payload


@dataclass(frozen=True)
class SliceSelection:
    """Which axial slices a 2D model trains on each epoch."""

    min_label_area: int
    empty_rate: float


@dataclass(frozen=True)
class InitSpec:
    """Where a training's first weights come from: a checkpoint file or another experiment's fold model."""

    format: str = "auto"
    min_fraction: float = 0.5
    checkpoint: str | None = None
    experiment: str | None = None
    fold: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


@dataclass(frozen=True)
class TrainingSettings:
    """One experiment's training recipe, as a fold's training job receives it."""

    name: str
    dataset: str
    seed: int
    model: Mapping[str, Any]
    loss: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    epochs: int
    batch_size: int
    patch_size: tuple[int, ...]
    slices: SliceSelection
    select: Literal["dice", "iou"]
    validate_every: int
    num_workers: int | Literal["auto"]
    """Loader worker processes; ``auto`` follows the job's CPUs (:func:`glioseg.training.data.resolve_workers`)."""
    amp: bool
    augment: Augmentation
    exclude_overlap_with: tuple[str, ...] = ()
    init: InitSpec | None = None
    oversample_foreground: float = 0.0
    """The fraction of training patches centred on a tumour voxel; the rest are placed uniformly."""

    @property
    def spatial_dims(self) -> int:
        """2 for a slice model, 3 for a volume model: the patch decides."""
        return len(self.patch_size)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> TrainingSettings:
        values = dict(payload)
        values["patch_size"] = tuple(values.get("patch_size", ()))
        values["exclude_overlap_with"] = tuple(values.get("exclude_overlap_with", ()))
        values["slices"] = _build(SliceSelection, values.get("slices", {}), "slice selection")
        values["augment"] = Augmentation.from_json(values.get("augment", {}))
        if values.get("init") is not None:
            values["init"] = _build(InitSpec, values["init"], "init")
        return _build(cls, values, "training")

    def to_json(self) -> dict[str, Any]:
        payload = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        payload.update(patch_size=list(self.patch_size), exclude_overlap_with=list(self.exclude_overlap_with),
                       slices=dataclasses.asdict(self.slices), augment=self.augment.to_json(),
                       model=dict(self.model), loss=dict(self.loss), optimizer=dict(self.optimizer),
                       scheduler=dict(self.scheduler))
        if self.init is None:
            del payload["init"]
        else:
            payload["init"] = self.init.to_json()
        return payload


@dataclass(frozen=True)
class InferenceSettings:
    """The sliding window an experiment predicts with."""

    roi_size: tuple[int, ...]
    overlap: float
    sw_batch_size: int
    blend: Literal["gaussian", "constant"]
    threshold: float
    amp: bool = True
    tta: bool = False

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> InferenceSettings:
        return _build(cls, {**payload, "roi_size": tuple(payload.get("roi_size", ()))}, "inference")

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "roi_size": list(self.roi_size)}

