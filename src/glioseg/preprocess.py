"""Preprocessing into the training cache: crop, normalise, labels to regions.

What the cache holds is read every epoch, so it is plain ``.npy`` (the format
chosen by measurement, see bench/cache_format.md): ``images/<case>.npy``
float32 (C, X, Y, Z) and ``labels/<case>.npy`` uint8 region masks (R, X, Y, Z).
``properties.json`` keeps, per case, what is needed to put a prediction back
into the original geometry: the original shape and the crop box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from monai.transforms import NormalizeIntensity
from monai.transforms.utils import generate_spatial_bounding_box
from tqdm import tqdm

from glioseg.atomic import atomic_dir, write_json
from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, labels_to_regions
from glioseg.manifest import DatasetInfo, image_column
from glioseg.nifti import load_image, read_volume, voxel_spacing

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


def normalise(image: np.ndarray) -> np.ndarray:
    """Z-score each channel over its nonzero (brain) voxels; background stays 0."""
    return np.asarray(NormalizeIntensity(nonzero=True, channel_wise=True, dtype=np.float32)(image))


def load_case(row: pd.Series, modalities: tuple[str, ...]) -> np.ndarray:
    return np.stack([read_volume(row[image_column(m)]) for m in modalities])


def preprocess_case(row: pd.Series, modalities: tuple[str, ...], convention: LabelConvention, margin: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return the cropped normalised image, its region masks and the case's properties."""
    image = load_case(row, modalities)
    if not np.any(image):
        raise GliosegError("every modality is zero: no brain to crop to", path=row[image_column(modalities[0])],
                           hint="check the case's files; remove the case if they are blank.")
    box = brain_box(image, margin)
    label = read_volume(row["label"], dtype=np.int32)
    try:
        regions = labels_to_regions(label, convention)
    except ValueError as exc:
        raise GliosegError(str(exc), path=row["label"], hint="fix the label file or choose the dataset's right layout.") from None
    reference = load_image(row["label"])
    properties = {
        "original_shape": list(image.shape[1:]),
        "crop": box.to_json(),
        "spacing": list(voxel_spacing(reference)),
    }
    return normalise(crop(image, box)), crop(regions, box), properties


def preprocess_dataset(manifest: pd.DataFrame, info: DatasetInfo, out_dir: str | Path, margin: int) -> None:
    """Write the whole dataset's cache folder atomically, one progress step per case."""
    properties: dict[str, dict] = {}
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for _, row in tqdm(manifest.iterrows(), total=len(manifest), desc=f"preprocessing {info.name}", unit="case"):
            image, regions, props = preprocess_case(row, info.modalities, info.convention, margin)
            np.save(tmp / "images" / f"{row['case']}.npy", image)
            np.save(tmp / "labels" / f"{row['case']}.npy", regions)
            properties[row["case"]] = props
        write_json(tmp / "properties.json", {"dataset": info.to_json(), "regions": list(info.convention.regions), "cases": properties})
    log.info("%s: %d cases preprocessed into %s", info.name, len(properties), out_dir)


def cached_paths(cache_dir: str | Path, case: str) -> tuple[Path, Path]:
    """The cached image and region-label files of one case."""
    root = Path(cache_dir)
    return root / "images" / f"{case}.npy", root / "labels" / f"{case}.npy"
