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
        """The networks of ``folds``, built from the spec and loaded with their weights, in eval mode on ``device``.

        Weights that do not fit the network the metadata describes (another
        architecture, modality or region count) or that are not finite are
        refused here, naming the fold, rather than failing in torch or
        predicting nothing: a checksum only proves the file is as written.
        """
        unknown = [fold for fold in folds if fold not in self.weights]
        if unknown:
            raise GliosegError(f"the model has no fold {unknown[0]} (it has folds {self.folds})", path=self.source,
                               hint="choose one of its folds, or leave --fold out for the ensemble of all of them.")
        return [self._network(fold).to(device).eval() for fold in folds]

    def _network(self, fold: int) -> torch.nn.Module:
        from glioseg.models.model_file import network_for

        hint = "export the experiment again from its results tree, or use a bundle that glioseg export wrote unchanged."
        try:
            network = network_for(self.training, len(self.modalities), len(self.regions))
        except (KeyError, TypeError, ValueError) as exc:
            raise GliosegError(f"the network its metadata describes cannot be built ({_reason(exc)})", path=self.source,
                               hint=hint) from None
        weights = self.weights[fold]
        broken = [name for name, tensor in weights.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
        if broken:
            raise GliosegError(f"fold {fold}'s weights hold NaN or infinite values ({', '.join(broken[:3])}"
                               f"{', …' if len(broken) > 3 else ''}): its training diverged or the file is damaged",
                               path=self.source, hint="leave the fold out with --fold, or train it again.")
        try:
            network.load_state_dict(weights)
        except RuntimeError as exc:
            raise GliosegError(f"fold {fold}'s weights do not fit the network its metadata describes "
                               f"({len(self.modalities)} modalities in, {len(self.regions)} regions out): "
                               f"{' '.join(str(exc).split())[:400]}", path=self.source, hint=hint) from None
        return network

    def check(self, hint: str) -> None:
        """Refuse, when it is opened, a model whose metadata predict could not use, saying what is wrong.

        The checksum only proves that a bundle is as it was written: one
        edited by hand and re-summed, or written by a damaged export, would
        otherwise fail in the middle of a run (a KeyError, a division by zero)
        or, worse, predict with a background rule that does not exist.
        """
        problem = _metadata_problem(self)
        if problem is not None:
            raise GliosegError(f"unusable model: {problem}", path=self.source, hint=hint)

    def checksum(self) -> str:
        return _checksum(self.metadata, self.weights)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _metadata_problem(bundle: Bundle) -> str | None:
    """What makes ``bundle``'s metadata unusable (each property predict reads, and their values), or ``None``."""
    from glioseg.preprocess import BACKGROUNDS, target_spacing

    try:
        modalities, regions, convention = bundle.modalities, bundle.regions, bundle.dataset.convention
        margin, background, training = bundle.metadata["preprocess"]["margin"], bundle.background, bundle.training
        target_spacing(bundle.spacing)
        inference, _ = bundle.inference, bundle.brain_masks
    except GliosegError as exc:
        return exc.problem
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"its metadata is incomplete or garbled ({_reason(exc)})"
    if not bundle.weights:
        return "it holds no fold models"
    if not modalities or not all(isinstance(m, str) and m for m in modalities) or len(set(modalities)) != len(modalities):
        return f"its modalities {list(modalities)} are not distinct names"
    if not regions or set(regions) - set(convention.regions):
        return f"its regions {regions} are not regions of its label convention {list(convention.regions)}"
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        return f"its crop margin {margin!r} is not a whole number of voxels"
    if background not in BACKGROUNDS:
        return f"its background rule {background!r} is none of {list(BACKGROUNDS)}"
    return inference_problem(inference, training.spatial_dims)


def inference_problem(settings: InferenceSettings, spatial_dims: int) -> str | None:
    """What is out of range in sliding-window ``settings`` for a ``spatial_dims``-D model, or ``None``: the config
    schema's limits, for settings that come from elsewhere (a bundle, predict's options)."""
    roi = settings.roi_size
    if len(roi) != spatial_dims or not all(_count(side) for side in roi):
        return f"roi_size {list(roi)} is not {spatial_dims} positive whole numbers (the model is {spatial_dims}D)"
    if not 0 <= settings.overlap < 1:
        return f"overlap {settings.overlap} is not in [0, 1)"
    if not _count(settings.sw_batch_size):
        return f"sw_batch_size {settings.sw_batch_size} is not a positive whole number"
    if not 0 < settings.threshold < 1:
        return f"threshold {settings.threshold} is not between 0 and 1"
    if settings.blend not in ("gaussian", "constant"):
        return f"blend {settings.blend!r} is neither 'gaussian' nor 'constant'"
    return None


def _count(value: Any) -> bool:
    """Whether ``value`` is a whole number of at least 1 (4.0 too: the config schema takes it for an integer)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer() and value >= 1


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
    """A JSON object from ``path``; a missing or unreadable file, or one that holds no object, is named with ``hint``."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GliosegError("file not found", path=path, hint=hint) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GliosegError(f"unreadable JSON ({type(exc).__name__}: {exc})", path=path, hint=hint) from None
    if not isinstance(payload, dict):
        raise GliosegError(f"holds a JSON {type(payload).__name__}, not the object glioseg writes", path=path, hint=hint)
    return payload


def _split_of(folds_json: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The split as case names only: each fold's validation cases and the held-out test cases."""
    try:
        folds: dict[str, list[str]] = {}
        for entry in folds_json.get("training", []):
            folds.setdefault(str(int(entry["fold"])), []).append(str(entry["case"]))
        return {"validation": {fold: sorted(cases) for fold, cases in sorted(folds.items(), key=lambda kv: int(kv[0]))},
                "test": sorted(str(entry["case"]) for entry in folds_json.get("testing", []))}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GliosegError(f"not a fold list glioseg writes ({_reason(exc)})", path=path,
                           hint="run the study's split step again (snakemake).") from None


def _versions() -> dict[str, str]:
    import monai

    return {"glioseg": glioseg.__version__, "monai": monai.__version__, "torch": torch.__version__.split("+")[0]}


def _brain_masks(properties: Mapping[str, Any]) -> bool:
    """Whether the cache found any case's brain by its mask file (properties.json's ``brain.method``)."""
    return any(case.get("brain", {}).get("method") == "mask" for case in properties.get("cases", {}).values())


_RECORD_KEYS: dict[str, type | tuple[type, ...]] = {"dataset": str, "folds": list, "preprocess": dict, "inference": dict,
                                                    "config": dict}


def _read_record(path: Path) -> dict[str, Any]:
    """The experiment's record, checked for the keys export reads, so that a damaged one is named, not a KeyError."""
    hint = f"write it again with `snakemake {path}` (the study's `snakemake` run writes it for every experiment)."
    record = _read_json(path, hint=hint)
    if record.get("format") != EXPERIMENT_RECORD_FORMAT:
        raise GliosegError(f"not an experiment record of this glioseg (format {record.get('format')!r})", path=path,
                           hint=hint)
    wrong = [key for key, kind in _RECORD_KEYS.items() if not isinstance(record.get(key), kind)]
    if not wrong and not all(isinstance(fold, int) and not isinstance(fold, bool) for fold in record["folds"]):
        wrong.append("folds (not fold numbers)")
    if not wrong and not isinstance(record["preprocess"].get("background"), str):
        wrong.append("preprocess → background")
    if wrong:
        raise GliosegError(f"damaged experiment record: {', '.join(wrong)} missing or of the wrong kind", path=path,
                           hint=hint)
    return record


def _experiment_dir(path: Path) -> Path:
    """``path``, checked to be an experiment's folder of a results tree: what export reads (a bundle is not)."""
    if path.is_dir():
        return path
    if path.is_file():
        raise GliosegError("export reads an experiment's folder of a results tree, and this is a file (already a bundle?)",
                           path=path, hint="give results/models/<experiment>; a bundle is copied as it is.")
    raise GliosegError("no such experiment folder", path=path,
                       hint="give an experiment's folder of a results tree, results/models/<experiment>.")


def _fold_model(path: Path, cache: Any, training: Mapping[str, Any] | None) -> dict[str, Any]:
    """A fold's model file, checked against the training cache and the other folds' settings."""
    payload = load(path, hint=f"train the fold first (`snakemake {path}`), or export only trained experiments.")
    if payload.get("format") != "glioseg-model/1":
        raise GliosegError(f"not a glioseg model file (format {payload.get('format')!r})", path=path,
                           hint="point at an experiment folder written by glioseg.")
    missing = sorted({"regions", "in_channels", "settings", "state_dict"} - set(payload))
    if missing:
        raise GliosegError(f"damaged model file: {', '.join(missing)} missing", path=path,
                           hint=f"train the fold again (`snakemake --forcerun {path}`).")
    if list(payload["regions"]) != cache.regions or payload["in_channels"] != len(cache.modalities):
        raise GliosegError(f"the model predicts {payload['regions']} from {payload['in_channels']} modalities, the "
                           f"cache has {cache.regions} from {cache.modalities}", path=path,
                           hint="run the study again (snakemake): the model is older than its training data.")
    if training is not None and payload["settings"] != training:
        raise GliosegError("the fold models were trained with different settings", path=path,
                           hint="run the study again (snakemake) so that every fold follows the config.")
    return payload


def _fold_entry(fold: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    best = payload.get("best_metric")
    return {"fold": fold, "epoch": int(payload.get("epoch", 0)),
            "best_metric": None if best is None or math.isnan(float(best)) else float(best)}


def _check_cache(cache_dir: Path, properties: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """The cache was preprocessed as the record (the config) says: the same background rule and spacing."""
    hint = "run the study again (snakemake) so that the cache and the models follow the config."
    preprocess = record["preprocess"]
    if properties.get("background") != preprocess["background"]:
        raise GliosegError(f"the cache was preprocessed with background rule {properties.get('background')!r}, the config "
                           f"now says {preprocess['background']!r}", path=cache_dir / "properties.json", hint=hint)
    if properties.get("spacing") != preprocess.get("spacing"):
        raise GliosegError(f"the cache was resampled to spacing {properties.get('spacing')}, the config now says "
                           f"{preprocess.get('spacing')}", path=cache_dir / "properties.json", hint=hint)


def from_results(experiment_dir: str | Path) -> Bundle:
    """The bundle of ``results/models/<experiment>``: its record, fold models, training cache's properties and split.

    The results folder is the experiment folder's grandparent, as
    :class:`glioseg.paths.Results` lays it out.
    """
    from glioseg.cache import read_cache_properties

    experiment_dir = _experiment_dir(Path(experiment_dir))
    results = Results(str(experiment_dir.parent.parent))
    experiment = experiment_dir.name
    record_path = Path(results.experiment_record(experiment))
    record = _read_record(record_path)
    dataset = record["dataset"]
    cache_dir = Path(results.preprocessed(dataset))
    cache = read_cache_properties(cache_dir)  # checks the format and names a missing or damaged file
    properties = _read_json(cache_dir / "properties.json", hint="preprocess the dataset again.")
    _check_cache(cache_dir, properties, record)
    splits_path = Path(results.folds(dataset))
    split = _split_of(_read_json(splits_path, hint="run the study's split step (snakemake)."), splits_path)
    weights, folds, training = {}, [], None
    for fold in record["folds"]:
        payload = _fold_model(Path(results.model(experiment, fold)), cache, training)
        training = payload["settings"]
        weights[fold] = dict(payload["state_dict"])
        folds.append(_fold_entry(fold, payload))
    if not weights:
        raise GliosegError("the experiment has no folds", path=record_path, hint="check the experiment's folds in the config.")
    metadata = {
        "experiment": experiment,
        "modalities": list(cache.modalities),
        "regions": list(cache.regions),
        "dataset": properties.get("dataset"),
        "preprocess": {**record["preprocess"], "cache_format": CACHE_FORMAT, "brain_masks": _brain_masks(properties)},
        "inference": record["inference"],
        "training": training,
        "folds": folds,
        "data": {"dataset": dataset, "digest": cache.digest, "split": split},
        "config": record["config"],
        "versions": _versions(),
    }
    bundle = Bundle(metadata, weights, experiment_dir)
    bundle.check(hint="run the study again (snakemake) so that its record, cache and models are whole and agree.")
    return bundle


# ---------------------------------------------------------------- the bundle file


def bundle_path(out: str | Path, experiment: str) -> Path:
    """Where export writes: ``out`` itself when it names a ``.pt`` file, else ``out/<experiment>.pt``."""
    out = Path(out)
    return out if out.suffix == ".pt" else out / f"{experiment}.pt"


def write_bundle(bundle: Bundle, out: str | Path) -> Path:
    """Write ``bundle`` as one file (atomically) and return its path."""
    path = bundle_path(out, bundle.experiment)
    if path.is_dir():
        raise GliosegError("is a folder, so the bundle cannot be written under this name", path=path,
                           hint="give --out a .pt file name that is not taken by a folder, or a folder to write "
                                f"{bundle.experiment}.pt into.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save({"kind": BUNDLE_KIND, "version": BUNDLE_VERSION, "metadata": bundle.metadata,
              "weights": {fold: dict(state) for fold, state in bundle.weights.items()}, "checksum": bundle.checksum()}, path)
    except OSError as exc:
        blocking = next((folder for folder in path.parents if folder.exists() and not folder.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking is not None else exc.strerror or str(exc)
        raise GliosegError(f"cannot write the bundle ({reason})", path=path,
                           hint="give --out a place you can write to (its folders must be folders, not files) with room "
                                "for the bundle; nothing was written.") from None
    return path


def read_bundle(path: str | Path) -> Bundle:
    """A bundle file, checked: its kind, a format version this glioseg reads, and its checksum."""
    path = Path(path)
    payload = load(path, hint=f"point --model at a bundle written by `glioseg export`, or {_EXPORT_HINT}")
    if payload.get("kind") != BUNDLE_KIND:
        raise GliosegError("not a glioseg model bundle", path=path,
                           hint="point --model at a bundle written by `glioseg export`, or at results/models/<experiment>.")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise GliosegError(f"damaged bundle: its format version is {version!r}, not a version glioseg writes", path=path,
                           hint=f"copy the bundle again from where it was exported, or {_EXPORT_HINT}")
    if version > BUNDLE_VERSION:
        raise GliosegError(f"the bundle has format version {version}, newer than this glioseg {glioseg.__version__} "
                           f"reads (up to {BUNDLE_VERSION})", path=path,
                           hint="update glioseg to the version that wrote the bundle (its metadata's versions → "
                                "glioseg), or export the experiment again with this one.")
    try:
        bundle = Bundle(dict(payload["metadata"]), {int(fold): dict(state) for fold, state in payload["weights"].items()},
                        path)
        checksum = bundle.checksum()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GliosegError(f"damaged bundle ({type(exc).__name__}: {exc})", path=path, hint=_EXPORT_HINT) from None
    if checksum != payload.get("checksum"):
        raise GliosegError("the bundle's checksum does not match its contents: the file is damaged or was edited",
                           path=path, hint=f"copy the bundle again from where it was exported, or {_EXPORT_HINT}")
    bundle.check(hint=f"copy the bundle again from where it was exported, or {_EXPORT_HINT}")
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
