"""Portable model bundles: an experiment's fold models with everything needed to apply them to new scans.

A bundle is one ``torch.save`` file (docs/formats.md, "bundles/"), read with
``weights_only=True``: each fold's weights, and as plain JSON-like metadata the
network spec (the training settings), the input modalities in channel order,
the preprocessing (crop margin, background rule, target spacing), the label convention, the
sliding-window settings, the training data's fingerprint (the cache digest)
and split, the config excerpt, the versions that wrote it and a SHA-256
checksum over all of it.

:func:`open_model` gives the same :class:`Bundle` for a bundle file and for an
experiment's folder in a results tree (``results/models/<experiment>``), so
``glioseg predict`` has one code path for both and ``glioseg export`` only
writes what it read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import glioseg
from glioseg.config import EXPERIMENT_RECORD_FORMAT
from glioseg.errors import GliosegError
from glioseg.formats import CACHE_FORMAT
from glioseg.labels import LabelConvention
from glioseg.manifest import DatasetInfo
from glioseg.paths import Results
from glioseg.settings import InferenceSettings, TrainingSettings
from glioseg.torch_files import load, save

BUNDLE_KIND = "glioseg-bundle"
BUNDLE_VERSION = 1
"""The bundle format this glioseg writes and the newest it reads."""

_EXPORT_HINT = "write it again with `glioseg export --model results/models/<experiment> --out <file>`."


@dataclass(frozen=True)
class Bundle:
    """An experiment's fold weights and metadata, from a bundle file or a results tree."""

    metadata: dict[str, Any]
    weights: dict[int, dict[str, torch.Tensor]]
    source: Path
    """Where it was read from, for messages."""

    @property
    def experiment(self) -> str:
        return self.metadata["experiment"]

    @property
    def dataset(self) -> DatasetInfo:
        """The training dataset: its name, layout, modalities in channel order and label convention."""
        stored = self.metadata["dataset"]
        convention = stored["label_convention"]
        return DatasetInfo(stored["name"], stored["layout"], tuple(stored["modalities"]), LabelConvention(
            name=convention["name"],
            members={region: frozenset(values) for region, values in convention["members"].items()},
            paint=tuple((region, int(value)) for region, value in convention["paint"]),
        ), stored.get("physical_spacing", True))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.metadata["modalities"])

    @property
    def regions(self) -> list[str]:
        return list(self.metadata["regions"])

    @property
    def brain_masks(self) -> bool:
        """Whether training found the brain by a brain-mask file per case (the layout's ``mask``) rather than by the
        background rule, so that new scans need theirs; ``False`` for bundles from before it was recorded."""
        return bool(self.metadata["preprocess"].get("brain_masks", False))

    @property
    def margin(self) -> int:
        return int(self.metadata["preprocess"]["margin"])

    @property
    def background(self) -> str:
        return self.metadata["preprocess"]["background"]

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """The spacing the training cache was resampled to; ``None`` (also for bundles from before it existed): none."""
        spacing = self.metadata["preprocess"].get("spacing")
        return tuple(spacing) if spacing is not None else None

    @property
    def inference(self) -> InferenceSettings:
        return InferenceSettings.from_json(self.metadata["inference"])

    @property
    def training(self) -> TrainingSettings:
        return TrainingSettings.from_json(self.metadata["training"])

    @property
    def folds(self) -> list[int]:
        return sorted(self.weights)

    def models(self, folds: Sequence[int], device: torch.device) -> list[torch.nn.Module]:
        """The networks of ``folds``, built from the spec and loaded with their weights, in eval mode on ``device``."""
        from glioseg.models.model_file import network_for

        unknown = [fold for fold in folds if fold not in self.weights]
        if unknown:
            raise GliosegError(f"the model has no fold {unknown[0]} (it has folds {self.folds})", path=self.source,
                               hint="choose one of its folds, or leave --fold out for the ensemble of all of them.")
        settings, networks = self.training, []
        for fold in folds:
            network = network_for(settings, len(self.modalities), len(self.regions))
            network.load_state_dict(self.weights[fold])
            networks.append(network.to(device).eval())
        return networks

    def checksum(self) -> str:
        return _checksum(self.metadata, self.weights)


def _checksum(metadata: Mapping[str, Any], weights: Mapping[int, Mapping[str, torch.Tensor]]) -> str:
    """SHA-256 of the metadata as sorted-key JSON, then each fold's tensors: name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode("utf-8"))
    for fold in sorted(weights):
        digest.update(f"\0fold{fold}".encode("ascii"))
        for name in sorted(weights[fold]):
            tensor = weights[fold][name].detach().cpu().contiguous().reshape(-1)
            digest.update(f"\0{name}\0{tensor.dtype}{tuple(weights[fold][name].shape)}\0".encode())
            digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


# ---------------------------------------------------------------- from a results tree


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GliosegError("file not found", path=path, hint=hint) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise GliosegError(f"unreadable JSON ({type(exc).__name__}: {exc})", path=path, hint=hint) from None


def _split_of(folds_json: Mapping[str, Any]) -> dict[str, Any]:
    """The split as case names only: each fold's validation cases and the held-out test cases."""
    folds: dict[str, list[str]] = {}
    for entry in folds_json.get("training", []):
        folds.setdefault(str(entry["fold"]), []).append(entry["case"])
    return {"validation": {fold: sorted(cases) for fold, cases in sorted(folds.items(), key=lambda kv: int(kv[0]))},
            "test": sorted(entry["case"] for entry in folds_json.get("testing", []))}


def _versions() -> dict[str, str]:
    import monai

    return {"glioseg": glioseg.__version__, "monai": monai.__version__, "torch": torch.__version__.split("+")[0]}


def _brain_masks(properties: Mapping[str, Any]) -> bool:
    """Whether the cache found any case's brain by its mask file (properties.json's ``brain.method``)."""
    return any(case.get("brain", {}).get("method") == "mask" for case in properties.get("cases", {}).values())


def from_results(experiment_dir: str | Path) -> Bundle:
    """The bundle of ``results/models/<experiment>``: its record, fold models, training cache's properties and split.

    The results folder is the experiment folder's grandparent, as
    :class:`glioseg.paths.Results` lays it out.
    """
    experiment_dir = Path(experiment_dir)
    results = Results(str(experiment_dir.parent.parent))
    experiment = experiment_dir.name
    record_path = Path(results.experiment_record(experiment))
    record = _read_json(record_path, hint=f"write it with `snakemake {record_path}` (the study's `snakemake` run "
                                          "writes it for every experiment), then try again.")
    if record.get("format") != EXPERIMENT_RECORD_FORMAT:
        raise GliosegError(f"not an experiment record of this glioseg (format {record.get('format')!r})", path=record_path,
                           hint=f"write it again with `snakemake {record_path}`.")
    dataset = record["dataset"]
    cache_dir = Path(results.preprocessed(dataset))
    from glioseg.cache import read_cache_properties

    cache = read_cache_properties(cache_dir)  # checks the format and names a missing or damaged file
    properties = _read_json(cache_dir / "properties.json", hint="preprocess the dataset again.")
    if properties.get("background") != record["preprocess"]["background"]:
        raise GliosegError(f"the cache was preprocessed with background rule {properties.get('background')!r}, the config "
                           f"now says {record['preprocess']['background']!r}", path=cache_dir / "properties.json",
                           hint="run the study again (snakemake) so that the cache and the models follow the config.")
    if properties.get("spacing") != record["preprocess"].get("spacing"):
        raise GliosegError(f"the cache was resampled to spacing {properties.get('spacing')}, the config now says "
                           f"{record['preprocess'].get('spacing')}", path=cache_dir / "properties.json",
                           hint="run the study again (snakemake) so that the cache and the models follow the config.")
    splits = _read_json(Path(results.folds(dataset)), hint="run the study's split step (snakemake).")
    weights, folds, training = {}, [], None
    for fold in record["folds"]:
        path = Path(results.model(experiment, fold))
        payload = load(path, hint=f"train the fold first (`snakemake {path}`), or export only trained experiments.")
        if payload.get("format") != "glioseg-model/1":
            raise GliosegError(f"not a glioseg model file (format {payload.get('format')!r})", path=path,
                               hint="point at an experiment folder written by glioseg.")
        if list(payload["regions"]) != cache.regions or payload["in_channels"] != len(cache.modalities):
            raise GliosegError(f"the model predicts {payload['regions']} from {payload['in_channels']} modalities, the "
                               f"cache has {cache.regions} from {cache.modalities}", path=path,
                               hint="run the study again (snakemake): the model is older than its training data.")
        if training is not None and payload["settings"] != training:
            raise GliosegError("the fold models were trained with different settings", path=path,
                               hint="run the study again (snakemake) so that every fold follows the config.")
        training = payload["settings"]
        weights[int(fold)] = dict(payload["state_dict"])
        best = payload.get("best_metric")
        folds.append({"fold": int(fold), "epoch": int(payload.get("epoch", 0)),
                      "best_metric": None if best is None or math.isnan(float(best)) else float(best)})
    if not weights:
        raise GliosegError("the experiment has no folds", path=record_path, hint="check the experiment's folds in the config.")
    metadata = {
        "experiment": experiment,
        "modalities": list(cache.modalities),
        "regions": list(cache.regions),
        "dataset": properties["dataset"],
        "preprocess": {**record["preprocess"], "cache_format": CACHE_FORMAT, "brain_masks": _brain_masks(properties)},
        "inference": record["inference"],
        "training": training,
        "folds": folds,
        "data": {"dataset": dataset, "digest": cache.digest, "split": _split_of(splits)},
        "config": record["config"],
        "versions": _versions(),
    }
    return Bundle(metadata, weights, experiment_dir)


# ---------------------------------------------------------------- the bundle file


def bundle_path(out: str | Path, experiment: str) -> Path:
    """Where export writes: ``out`` itself when it names a ``.pt`` file, else ``out/<experiment>.pt``."""
    out = Path(out)
    return out if out.suffix == ".pt" else out / f"{experiment}.pt"


def write_bundle(bundle: Bundle, out: str | Path) -> Path:
    """Write ``bundle`` as one file (atomically) and return its path."""
    path = bundle_path(out, bundle.experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    save({"kind": BUNDLE_KIND, "version": BUNDLE_VERSION, "metadata": bundle.metadata,
          "weights": {fold: dict(state) for fold, state in bundle.weights.items()}, "checksum": bundle.checksum()}, path)
    return path


def read_bundle(path: str | Path) -> Bundle:
    """A bundle file, checked: its kind, a format version this glioseg reads, and its checksum."""
    path = Path(path)
    payload = load(path, hint=f"point --model at a bundle written by `glioseg export`, or {_EXPORT_HINT}")
    if payload.get("kind") != BUNDLE_KIND:
        raise GliosegError("not a glioseg model bundle", path=path,
                           hint="point --model at a bundle written by `glioseg export`, or at results/models/<experiment>.")
    version = payload.get("version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise GliosegError(f"the bundle has format version {version}, newer than this glioseg {glioseg.__version__} "
                           f"reads (up to {BUNDLE_VERSION})", path=path,
                           hint="update glioseg to the version that wrote the bundle (its metadata's versions → "
                                "glioseg), or export the experiment again with this one.")
    try:
        bundle = Bundle(dict(payload["metadata"]), {int(fold): dict(state) for fold, state in payload["weights"].items()},
                        path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GliosegError(f"damaged bundle ({type(exc).__name__}: {exc})", path=path, hint=_EXPORT_HINT) from None
    if bundle.checksum() != payload.get("checksum"):
        raise GliosegError("the bundle's checksum does not match its contents: the file is damaged or was edited",
                           path=path, hint=f"copy the bundle again from where it was exported, or {_EXPORT_HINT}")
    return bundle


def open_model(path: str | Path) -> Bundle:
    """What ``--model`` names: a bundle file, a folder holding one bundle, or ``results/models/<experiment>``."""
    path = Path(path)
    if path.is_file():
        return read_bundle(path)
    if not path.is_dir():
        raise GliosegError("no such model", path=path,
                           hint="give a bundle file (glioseg export) or a results/models/<experiment> folder.")
    if (path / "experiment.json").is_file() or any(child.name.startswith("fold") for child in path.iterdir()):
        return from_results(path)
    bundles = sorted(path.glob("*.pt"))
    if len(bundles) == 1:
        return read_bundle(bundles[0])
    raise GliosegError(f"the folder holds {len(bundles)} .pt files, not one bundle or an experiment's fold models", path=path,
                       hint="give the bundle file itself, or a results/models/<experiment> folder.")
