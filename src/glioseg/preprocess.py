"""Preprocessing into the training cache: crop to the brain, z-score statistics, labels to regions.

What the cache holds and how it is read is :mod:`glioseg.cache`'s business;
here is what goes into it. ``properties.json`` keeps, per case, what is
needed to put a prediction back into the original geometry (the original
shape and the crop box), how the brain was told from the background and the
z-score of each channel; and for the whole cache a SHA-256 ``digest`` of its
contents, so a training can tell that its data changed without re-reading
gigabytes.

The brain is what the crop box encloses and what the z-score is computed
over. A brain mask file from the layout decides it; otherwise the dataset's
``background`` rule: ``zero`` (skull-stripped data on a 0 background: voxels
nonzero in any channel) or ``mode`` (data distributed with a constant nonzero
background, e.g. already z-scored: voxels differing from their channel's most
frequent value in any channel).

With a target ``spacing`` (a dataset's ``preprocess → spacing``), the crop
is then resampled to it (:mod:`glioseg.resample`): cropping first, as nnU-Net
does, resamples only the brain. The z-score statistics are those of the
resampled image over the resampled brain, which is what the reader applies.

Cases are independent, so they run in parallel over ``threads`` processes;
the cache is the same whatever their number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.transforms.utils import generate_spatial_bounding_box

from glioseg.atomic import atomic_dir, write_json
from glioseg.cache import CACHE_FORMAT, Normalisation, pack_regions, storage_dtype, write_case
from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, labels_to_regions
from glioseg.manifest import DatasetInfo, image_column
from glioseg.nifti import load_image, read_image, read_label, read_mask, voxel_spacing
from glioseg.parallel import map_cases
from glioseg.resample import resampled_shape, resize, resize_masks

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


@dataclass(frozen=True)
class CaseGeometry:
    """Where a cached or prepared case's crop lies in its original volume: what puts a prediction back.

    The one inverse of preprocessing, used by the infer stage and by
    ``glioseg predict`` alike: probabilities on the network's grid are
    resampled back to the crop's shape (when the case was resampled), then
    thresholded by the caller, then placed into the original volume.
    """

    box: CropBox
    original_shape: tuple[int, ...]

    @property
    def crop_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.box.start, self.box.stop))

    def to_crop(self, probabilities: np.ndarray) -> np.ndarray:
        """(R, …) probabilities on the network's grid → on the crop's grid (linear); unchanged when they already are."""
        return resize(probabilities, self.crop_shape)

    def place(self, array: np.ndarray) -> np.ndarray:
        """A (channel-first or plain) array on the crop's grid → the original volume, 0 outside the crop."""
        return uncrop(array, self.box, self.original_shape)

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> CaseGeometry:
        """The geometry of a case's entry in the cache's properties.json."""
        return cls(CropBox.from_json(properties["crop"]), tuple(properties["original_shape"]))


BACKGROUNDS: tuple[str, ...] = ("zero", "mode")
"""The rules for finding the brain when the layout gives no brain mask (a dataset's ``preprocess → background``)."""

_NO_BRAIN = {
    "mask": "the brain mask is empty",
    "zero": "every modality is zero: no brain to crop to",
    "mode": "every voxel holds its channel's most frequent value: no brain to crop to",
}


def normalise(image: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """Z-score each channel over its brain voxels and set everything else to 0, as the cache's readers see it.

    ``brain`` is a boolean (X, Y, Z) mask shared by all channels, or ``None``
    for each channel's own nonzero voxels (skull-stripped data on a 0
    background). Statistics over background voxels would shift and squash the
    brain's intensities, the more so the larger the background.
    """
    return Normalisation.of(image, brain).apply(image, brain)


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


@dataclass(frozen=True)
class PreprocessedCase:
    """One case as the cache stores it: the cropped image in its storage dtype (not yet z-scored), regions, brain."""

    image: np.ndarray
    regions: np.ndarray
    brain: np.ndarray | None
    """The cropped brain mask, when it is not each channel's nonzero voxels."""
    properties: dict[str, Any]


@dataclass(frozen=True)
class BrainCrop:
    """A case's modalities cropped to its brain: what the cache stores, and what the z-score needs."""

    image: np.ndarray
    """The crop (C, X, Y, Z) in its storage dtype, not z-scored."""
    brain: np.ndarray | None
    """The cropped brain mask, when it is not each channel's nonzero voxels."""
    box: CropBox
    found: dict[str, Any]
    """How the brain was found, as properties.json's ``brain``."""
    normalisation: Normalisation


def crop_to_brain(image: np.ndarray, mask: np.ndarray | None, background: str, margin: int,
                  where: str | Path | None = None, spacing: Sequence[float] | None = None,
                  case_spacing: Sequence[float] | None = None) -> BrainCrop:
    """The one crop, resampling and z-score rule of training cases (:func:`preprocess_case`) and new cases
    (:func:`prepare_image`).

    ``where`` is the file an empty brain is reported against; ``spacing``, when
    given, the target spacing the crop of ``case_spacing`` voxels is resampled to.
    """
    if spacing is not None and case_spacing is None:
        raise ValueError("resampling to a spacing needs the case's own spacing (case_spacing)")
    brain, found = find_brain(image, mask, background)
    if not brain.any():
        raise GliosegError(_NO_BRAIN[found["method"]], path=where, hint="check the case's files; leave the case out if they are blank.")
    box = brain_box(brain[None], margin)
    inside = None if found["method"] == "zero" else crop(brain[None], box)[0]
    cropped = crop(image, box)
    if spacing is not None:
        shape = resampled_shape(cropped.shape[1:], case_spacing, spacing)
        _check_growth(cropped.shape[1:], shape, case_spacing, spacing, where)
        cropped = resize(cropped, shape)
        inside = None if inside is None else resize_masks(inside[None], shape)[0].astype(bool)
    return BrainCrop(cropped.astype(storage_dtype(cropped)), inside, box, found, Normalisation.of(cropped, inside))


MAX_RESAMPLING_GROWTH = 64
"""How many times its voxels a crop may grow by resampling (4× finer on every axis): more is a spacing in the
wrong unit far more often than a wish, and would fill the memory before it failed."""


def _check_growth(shape: Sequence[int], resampled: Sequence[int], case_spacing: Sequence[float], spacing: Sequence[float],
                  where: str | Path | None) -> None:
    growth = math.prod(resampled) / math.prod(shape)
    if growth > MAX_RESAMPLING_GROWTH:
        raise GliosegError(
            f"resampling this case from spacing {list(case_spacing)} to {list(spacing)} would multiply its "
            f"{math.prod(shape):,} voxels by {growth:,.0f}", path=where,
            hint="give preprocess → spacing in the images' unit (mm for NIfTI; pixels for the LGG stacks); "
                 f"glioseg refuses more than {MAX_RESAMPLING_GROWTH}× the voxels.")


def preprocess_case(row: pd.Series, modalities: tuple[str, ...], convention: LabelConvention, margin: int,
                    background: str = "zero", spacing: Sequence[float] | None = None) -> PreprocessedCase:
    """Crop one case to its brain, resample it to ``spacing`` if given, and compute its z-score statistics and
    region masks."""
    image = load_case(row, modalities)
    mask = _mask_of(row)
    own = voxel_spacing(load_image(row["label"]))
    cropped = crop_to_brain(image, mask, background, margin,
                            where=row["mask"] if mask is not None else row[image_column(modalities[0])],
                            spacing=spacing, case_spacing=own)
    label = read_label(row["label"])
    try:
        regions = labels_to_regions(label, convention)
    except ValueError as exc:
        raise GliosegError(str(exc), path=row["label"], hint="fix the label file or choose the dataset's right layout.") from None
    properties = {
        "original_shape": list(image.shape[1:]),
        "crop": cropped.box.to_json(),
        **({"resampled_shape": list(cropped.image.shape[1:])} if spacing is not None else {}),
        "spacing": list(own),
        "brain": cropped.found,
        "normalisation": cropped.normalisation.to_json(),
    }
    regions = resize_masks(crop(regions, cropped.box), cropped.image.shape[1:])
    return PreprocessedCase(cropped.image, regions, cropped.brain, properties)


def case_digest(case: str, cached: PreprocessedCase) -> str:
    """The SHA-256 of one case as cached: its name, arrays (dtype, shape, bytes) and properties."""
    digest = hashlib.sha256(case.encode("utf-8") + b"\0")
    arrays = [cached.image, pack_regions(cached.regions)] + ([cached.brain.astype(np.uint8)] if cached.brain is not None else [])
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode("ascii"))
        digest.update(memoryview(contiguous).cast("B"))
    digest.update(json.dumps(cached.properties, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


def _warn_whole_volume(case: str, found: Mapping[str, Any]) -> None:
    log.warning(
        "%s: the brain (found by rule '%s') is %.1f%% of the volume, so the crop keeps the whole volume and the "
        "z-score may include background; if the data is not skull-stripped or its background is not 0, give brain "
        "masks (layout_options → mask) or set the dataset's preprocess → background: mode",
        case, found["method"], 100 * found["fraction"],
    )


@dataclass(frozen=True)
class _CaseJob:
    """What a worker process needs to preprocess one case into the cache folder being built (picklable)."""

    out: Path
    modalities: tuple[str, ...]
    convention: LabelConvention
    margin: int
    background: str
    spacing: tuple[float, ...] | None

    def __call__(self, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
        cached = preprocess_case(pd.Series(row), self.modalities, self.convention, self.margin, self.background,
                                 self.spacing)
        write_case(self.out, row["case"], cached.image, cached.regions, cached.brain)
        return cached.properties, case_digest(row["case"], cached)


def target_spacing(spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    """A dataset's ``preprocess → spacing`` as floats, checked: three positive numbers, or ``None`` (no resampling)."""
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise GliosegError(f"the target spacing {list(spacing)} is not three positive numbers",
                           hint="give the spacing as [x, y, z] (mm, or voxels for datasets without physical spacing).")
    return values


def preprocess_dataset(manifest: pd.DataFrame, info: DatasetInfo, out_dir: str | Path, margin: int,
                       background: str = "zero", threads: int = 1, spacing: Sequence[float] | None = None) -> None:
    """Write the whole dataset's cache folder atomically, cases in parallel over ``threads`` processes, and its digest.

    ``background`` is the rule for cases without a brain mask (:data:`BACKGROUNDS`);
    ``spacing`` the target spacing each crop is resampled to (``None``: none, and
    the cache is exactly what it was before resampling existed).
    The digest combines the cases' digests in manifest order, so it does not
    depend on which process finished first.
    """
    if background not in BACKGROUNDS:
        raise GliosegError(f"unknown background rule '{background}'", hint=f"use one of {list(BACKGROUNDS)}.")
    spacing = target_spacing(spacing)
    rows = manifest.to_dict("records")
    with atomic_dir(out_dir) as tmp:
        job = _CaseJob(tmp, info.modalities, info.convention, margin, background, spacing)
        results = map_cases(job, rows, threads=threads, desc=f"preprocessing {info.name}", name=lambda row: row["case"])
        properties = {row["case"]: props for row, (props, _) in zip(rows, results)}
        digest = hashlib.sha256("".join(f"{row['case']}:{d}\n" for row, (_, d) in zip(rows, results)).encode("utf-8"))
        write_json(tmp / "properties.json", {"format": CACHE_FORMAT, "dataset": info.to_json(),
                                             "regions": list(info.convention.regions), "background": background,
                                             **({"spacing": list(spacing)} if spacing is not None else {}),
                                             "digest": digest.hexdigest(), "cases": properties})
    whole = [case for case, props in properties.items()
             if keeps_whole_volume(CropBox.from_json(props["crop"]), tuple(props["original_shape"]))]
    for case in whole:
        _warn_whole_volume(case, properties[case]["brain"])
    if whole:
        log.warning("%s: %d of %d cases kept their whole volume when cropped to the brain: %s", info.name, len(whole),
                    len(properties), ", ".join(whole))
    log.info("%s: %d cases preprocessed into %s (digest %s)", info.name, len(properties), out_dir, digest.hexdigest()[:12])



@dataclass(frozen=True)
class PreparedImage:
    """A new case's modalities as a network sees them, and where to put its prediction back (``glioseg predict``)."""

    image: np.ndarray
    """The float32 z-scored crop (C, X, Y, Z), equal to what the cache's reader gives for the same files."""
    box: CropBox
    original_shape: tuple[int, ...]
    brain: dict[str, Any]
    """How the brain was found, as properties.json's ``brain``."""

    @property
    def geometry(self) -> CaseGeometry:
        """What puts the prediction back into the case's volume, as the infer stage does for a cached case."""
        return CaseGeometry(self.box, self.original_shape)


def prepare_image(image: np.ndarray, margin: int, background: str = "zero", mask: np.ndarray | None = None,
                  spacing: Sequence[float] | None = None, case_spacing: Sequence[float] | None = None) -> PreparedImage:
    """Crop, resample (to ``spacing``, from the case's ``case_spacing``) and z-score a (C, X, Y, Z) image of a case
    without a label, exactly as :func:`preprocess_case` and the cache's reader do for a training case
    (:func:`crop_to_brain`)."""
    cropped = crop_to_brain(image, mask, background, margin, spacing=target_spacing(spacing), case_spacing=case_spacing)
    return PreparedImage(cropped.normalisation.apply(cropped.image, cropped.brain), cropped.box, tuple(image.shape[1:]),
                         cropped.found)
