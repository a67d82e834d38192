"""Preprocessing into the training cache: crop, normalise, labels to regions.

What the cache holds is read every epoch, so it is plain ``.npy`` (the format
chosen by measurement, see bench/cache_format.md): ``images/<case>.npy``
float32 (C, X, Y, Z) and ``labels/<case>.npy`` uint8 region masks (R, X, Y, Z).
``properties.json`` keeps, per case, what is needed to put a prediction back
into the original geometry (the original shape and the crop box) and how the
brain was told from the background; and for the whole cache a SHA-256
``digest`` of its contents, so a training can tell that its data changed
without re-reading gigabytes (:func:`cache_digest`).

The brain is what the crop box encloses and what the z-score is computed
over. A brain mask file from the layout decides it; otherwise the dataset's
``background`` rule: ``zero`` (skull-stripped data on a 0 background: voxels
nonzero in any channel) or ``mode`` (data distributed with a constant nonzero
background, e.g. already z-scored: voxels differing from their channel's most
frequent value in any channel).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.transforms import NormalizeIntensity
from monai.transforms.utils import generate_spatial_bounding_box
from tqdm import tqdm

from glioseg.atomic import atomic_dir, write_json
from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, labels_to_regions
from glioseg.manifest import DatasetInfo, image_column
from glioseg.nifti import load_image, read_image, read_label, read_mask, voxel_spacing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropBox:
    """A half-open box ``[start, stop)`` per spatial axis inside the original volume."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def to_json(self) -> dict:
        return {"start": list(self.start), "stop": list(self.stop)}

    @classmethod
    def from_json(cls, payload: dict) -> CropBox:
        return cls(tuple(payload["start"]), tuple(payload["stop"]))


def brain_box(image: np.ndarray, margin: int) -> CropBox:
    """The bounding box of voxels nonzero in any channel, grown by ``margin`` and kept inside the volume."""
    start, stop = generate_spatial_bounding_box(image, select_fn=lambda x: x != 0, margin=margin)
    shape = image.shape[1:]
    start = tuple(max(0, int(s)) for s in start)
    stop = tuple(min(n, int(e)) for n, e in zip(shape, stop))
    return CropBox(start, stop)


def crop(array: np.ndarray, box: CropBox) -> np.ndarray:
    """Crop the spatial axes of a channel-first array."""
    return array[(slice(None), *box.slices)]


def uncrop(array: np.ndarray, box: CropBox, shape: tuple[int, ...]) -> np.ndarray:
    """Put a (channel-first or plain) cropped array back into a zero volume of the original spatial shape."""
    lead = array.shape[: array.ndim - len(shape)]
    out = np.zeros((*lead, *shape), dtype=array.dtype)
    out[(*[slice(None)] * len(lead), *box.slices)] = array
    return out


BACKGROUNDS: tuple[str, ...] = ("zero", "mode")
"""The rules for finding the brain when the layout gives no brain mask (a dataset's ``preprocess → background``)."""

_NO_BRAIN = {
    "mask": "the brain mask is empty",
    "zero": "every modality is zero: no brain to crop to",
    "mode": "every voxel holds its channel's most frequent value: no brain to crop to",
}


def normalise(image: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """Z-score each channel over its brain voxels and set everything else to 0.

    ``brain`` is a boolean (X, Y, Z) mask shared by all channels, or ``None``
    for each channel's own nonzero voxels (skull-stripped data on a 0
    background). Statistics over background voxels would shift and squash the
    brain's intensities, the more so the larger the background.
    """
    if brain is None:
        return np.asarray(NormalizeIntensity(nonzero=True, channel_wise=True, dtype=np.float32)(image))
    inside = np.broadcast_to(brain, image.shape)
    out = np.zeros(image.shape, dtype=np.float32)
    for channel in range(image.shape[0]):
        voxels = inside[channel]
        if voxels.any():
            out[channel][voxels] = np.asarray(NormalizeIntensity(dtype=np.float32)(image[channel][voxels]))
    return out


def background_values(image: np.ndarray) -> np.ndarray:
    """Each channel's most frequent value: the background of a volume whose background is constant but not 0."""
    modes = []
    for channel in image:
        values, counts = np.unique(channel, return_counts=True)
        modes.append(values[np.argmax(counts)])
    return np.asarray(modes, dtype=image.dtype)


def find_brain(image: np.ndarray, mask: np.ndarray | None, background: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The brain as a boolean (X, Y, Z) mask, and how it was found (for properties.json).

    A mask from the layout wins over the ``background`` rule (see the module docstring).
    """
    if mask is not None:
        brain, found = mask, {"method": "mask"}
    elif background == "mode":
        values = background_values(image)
        brain = np.any(image != values.reshape(-1, *[1] * (image.ndim - 1)), axis=0)
        found = {"method": "mode", "background": [float(v) for v in values]}
    else:
        brain, found = np.any(image != 0, axis=0), {"method": "zero"}
    found["fraction"] = round(float(brain.mean()), 6)
    return brain, found


def keeps_whole_volume(box: CropBox, shape: tuple[int, ...]) -> bool:
    """Whether a crop box is the whole volume: then the crop found no background around the brain."""
    return all(a == 0 for a in box.start) and tuple(box.stop) == tuple(shape)


def load_case(row: pd.Series, modalities: tuple[str, ...]) -> np.ndarray:
    return np.stack([read_image(row[image_column(m)]) for m in modalities])


def _mask_of(row: pd.Series) -> np.ndarray | None:
    """The case's brain mask, when its manifest row names one."""
    path = row.get("mask", "")
    return read_mask(path) if isinstance(path, str) and path else None


def preprocess_case(row: pd.Series, modalities: tuple[str, ...], convention: LabelConvention, margin: int,
                    background: str = "zero") -> tuple[np.ndarray, np.ndarray, dict]:
    """Return the cropped normalised image, its region masks and the case's properties."""
    image = load_case(row, modalities)
    brain, found = find_brain(image, _mask_of(row), background)
    if not brain.any():
        where = row["mask"] if found["method"] == "mask" else row[image_column(modalities[0])]
        raise GliosegError(_NO_BRAIN[found["method"]], path=where, hint="check the case's files; remove the case if they are blank.")
    box = brain_box(brain[None], margin)
    label = read_label(row["label"])
    try:
        regions = labels_to_regions(label, convention)
    except ValueError as exc:
        raise GliosegError(str(exc), path=row["label"], hint="fix the label file or choose the dataset's right layout.") from None
    reference = load_image(row["label"])
    properties = {
        "original_shape": list(image.shape[1:]),
        "crop": box.to_json(),
        "spacing": list(voxel_spacing(reference)),
        "brain": found,
    }
    inside = None if found["method"] == "zero" else crop(brain[None], box)[0]
    return normalise(crop(image, box), inside), crop(regions, box), properties


def _add_case(digest: Any, case: str, image: np.ndarray, regions: np.ndarray, properties: Mapping[str, Any]) -> None:
    """Feed one case into the cache digest: its name, both arrays (dtype, shape, bytes) and its properties."""
    digest.update(case.encode("utf-8") + b"\0")
    for array in (image, regions):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode("ascii"))
        digest.update(memoryview(contiguous).cast("B"))
    digest.update(json.dumps(properties, sort_keys=True).encode("utf-8"))


def _warn_whole_volume(case: str, found: Mapping[str, Any]) -> None:
    log.warning(
        "%s: the brain (found by rule '%s') is %.1f%% of the volume, so the crop keeps the whole volume and the "
        "z-score may include background; if the data is not skull-stripped or its background is not 0, give brain "
        "masks (layout_options → mask) or set the dataset's preprocess → background: mode",
        case, found["method"], 100 * found["fraction"],
    )


def preprocess_dataset(manifest: pd.DataFrame, info: DatasetInfo, out_dir: str | Path, margin: int,
                       background: str = "zero") -> None:
    """Write the whole dataset's cache folder atomically, one progress step per case, and its content digest.

    ``background`` is the rule for cases without a brain mask (:data:`BACKGROUNDS`).
    """
    if background not in BACKGROUNDS:
        raise GliosegError(f"unknown background rule '{background}'", hint=f"use one of {list(BACKGROUNDS)}.")
    properties: dict[str, dict] = {}
    whole: list[str] = []
    digest = hashlib.sha256()
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for _, row in tqdm(manifest.iterrows(), total=len(manifest), desc=f"preprocessing {info.name}", unit="case"):
            case = row["case"]
            image, regions, props = preprocess_case(row, info.modalities, info.convention, margin, background)
            np.save(tmp / "images" / f"{case}.npy", image)
            np.save(tmp / "labels" / f"{case}.npy", regions)
            _add_case(digest, case, image, regions, props)
            properties[case] = props
            if keeps_whole_volume(CropBox.from_json(props["crop"]), tuple(props["original_shape"])):
                _warn_whole_volume(case, props["brain"])
                whole.append(case)
        write_json(tmp / "properties.json", {"dataset": info.to_json(), "regions": list(info.convention.regions),
                                             "background": background, "digest": digest.hexdigest(), "cases": properties})
    if whole:
        log.warning("%s: %d of %d cases kept their whole volume when cropped to the brain: %s", info.name, len(whole),
                    len(properties), ", ".join(whole))
    log.info("%s: %d cases preprocessed into %s (digest %s)", info.name, len(properties), out_dir, digest.hexdigest()[:12])


@dataclass(frozen=True)
class CacheProperties:
    """``properties.json``: what a cache's users need besides its arrays (one reader, :func:`read_cache_properties`)."""

    regions: list[str]
    modalities: list[str]
    cases: dict[str, dict]
    digest: str | None
    """None for a cache written before digests were stored."""


def read_cache_properties(cache_dir: str | Path) -> CacheProperties:
    """The cache's regions, modalities, per-case geometry and digest; a missing or damaged file is named."""
    path = Path(cache_dir) / "properties.json"
    try:
        properties = json.loads(path.read_text(encoding="utf-8"))
        return CacheProperties(regions=list(properties["regions"]), modalities=list(properties["dataset"]["modalities"]),
                               cases=properties["cases"], digest=properties.get("digest"))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise GliosegError(f"unreadable cache properties ({type(exc).__name__}: {exc})", path=path,
                           hint="re-run preprocessing for this dataset.") from None


def cache_digest(cache_dir: str | Path) -> str:
    """The SHA-256 of a cache's contents, as hex: equal digests mean equal training data.

    Read from ``properties.json``, where preprocessing stored it; a cache
    written before digests existed has it computed from its files the same
    way (every case's name, arrays and properties, in the order of
    ``properties.json``), which reads the whole cache once.
    """
    properties = read_cache_properties(cache_dir)
    if properties.digest is not None:
        return properties.digest
    digest = hashlib.sha256()
    for case, props in properties.cases.items():
        image_path, label_path = cached_paths(cache_dir, case)
        _add_case(digest, case, np.load(image_path, mmap_mode="r"), np.load(label_path, mmap_mode="r"), props)
    return digest.hexdigest()


def cached_paths(cache_dir: str | Path, case: str) -> tuple[Path, Path]:
    """The cached image and region-label files of one case."""
    root = Path(cache_dir)
    return root / "images" / f"{case}.npy", root / "labels" / f"{case}.npy"
