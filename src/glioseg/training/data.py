"""Training and validation data: patches read from the cache, then MONAI's random transforms.

A training sample reads only its patch (:class:`ReadPatchd`): the cache
(:mod:`glioseg.cache`) decompresses the chunks the patch touches, not the
case. A fraction of patches (``oversample_foreground``) is centred on a
random tumour voxel, as nnU-Net does and MONAI's ``RandCropByPosNegLabeld``
offers; the rest are placed uniformly.

Every sample's random draws (where the patch goes, flips, intensity) are a
pure function of the seed, the epoch and the sample's position in the epoch
(:class:`SeededDataset`), whichever loader worker makes it. So the batches do
not depend on the number of workers, and a training resumed after a kill,
even on a node with another CPU count, sees exactly the batches an
uninterrupted one would.

2D models train on axial slices (the last array axis) of the same 3D cache:
an item is a (case, slice) pair, chosen per epoch by label area (see
:func:`slice_items`), and only that slice is decompressed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    CastToTyped,
    Compose,
    MapTransform,
    RandAffined,
    RandFlipd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
    apply_transform,
)
from torch.utils.data import RandomSampler

from glioseg.cache import CaseReader, readers, unpack_regions
from glioseg.settings import Augmentation, SliceSelection

KEYS = ("image", "label")


def case_items(cache_dir: str | Path, cases: Sequence[str]) -> list[dict[str, Any]]:
    """One item per case: its name and its reader (properties.json is read once for all of them)."""
    return [{"case": case, "reader": reader} for case, reader in zip(cases, readers(cache_dir, cases))]


def _sample(item: Mapping[str, Any], image: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    return {"case": item["case"], "image": torch.from_numpy(image), "label": torch.from_numpy(np.ascontiguousarray(labels))}


def _fixed(item: Mapping[str, Any]) -> tuple[int, ...]:
    """The axial slice of a 2D item, as an index that drops the axis; nothing for a 3D item."""
    return (item["slice"],) if "slice" in item else ()


class ReadCased(MapTransform):
    """Read a whole case (or a 2D item's slice): the z-scored image (C, …) and region masks (R, …)."""

    def __init__(self) -> None:
        super().__init__(KEYS)

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        reader: CaseReader = item["reader"]
        where = (slice(None), slice(None), *_fixed(item)) if "slice" in item else None
        return _sample(item, reader.image(where), reader.labels(where))


class ReadPatchd(Randomizable, MapTransform):
    """Read one training patch of a case from the cache: placed at random, or centred on the tumour.

    Where the case (or slice) is smaller than the patch along an axis, all of
    that axis is read and :class:`~monai.transforms.SpatialPadd` pads it after.
    """

    def __init__(self, patch_size: Sequence[int], oversample_foreground: float) -> None:
        MapTransform.__init__(self, KEYS)
        self.patch_size = tuple(patch_size)
        self.oversample_foreground = oversample_foreground

    def _starts(self, shape: Sequence[int], centre: Sequence[int] | None) -> list[int]:
        starts = []
        for axis, (size, patch) in enumerate(zip(shape, self.patch_size)):
            room = max(size - patch, 0)
            start = int(self.R.randint(room + 1)) if centre is None else centre[axis] - patch // 2
            starts.append(min(max(start, 0), room))
        return starts

    def _centre(self, packed: np.ndarray) -> tuple[int, ...] | None:
        """A random tumour voxel of the case (any region), or None when it has none."""
        voxels = np.flatnonzero(packed)
        if voxels.size == 0:
            return None
        return tuple(int(i) for i in np.unravel_index(voxels[self.R.randint(voxels.size)], packed.shape))

    def randomize(self, data: Any = None) -> None:
        """The draws happen in :meth:`__call__`, which needs the case's shape and tumour first."""

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        reader: CaseReader = item["reader"]
        fixed = _fixed(item)
        centred = self.R.rand() < self.oversample_foreground
        packed = reader.packed_labels((slice(None), slice(None), *fixed) if fixed else None) if centred else None
        shape = packed.shape if packed is not None else reader.shape[: len(self.patch_size)]
        starts = self._starts(shape, self._centre(packed) if centred else None)
        window = tuple(slice(s, s + min(p, n)) for s, p, n in zip(starts, self.patch_size, shape))
        labels = reader.labels((*window, *fixed)) if packed is None else unpack_regions(packed[window], reader.region_count)
        return _sample(item, reader.image((*window, *fixed)), labels)


def train_transforms(patch_size: Sequence[int], augment: Augmentation, oversample_foreground: float = 0.0) -> Compose:
    """Read a patch (of a volume, or of a slice for a 2D patch), pad it to size, rotate and zoom it if asked, flips on
    each axis, intensity scale and shift."""
    flips = [RandFlipd(keys=KEYS, prob=augment.flip_prob, spatial_axis=axis) for axis in range(len(patch_size))]
    return Compose(
        [
            ReadPatchd(patch_size, oversample_foreground),
            SpatialPadd(keys=KEYS, spatial_size=patch_size),
            *rotate_and_zoom(len(patch_size), augment),
            *flips,
            RandScaleIntensityd(keys="image", factors=augment.scale_intensity, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=augment.shift_intensity, prob=1.0),
        ]
    )


def rotate_and_zoom(spatial_dims: int, augment: Augmentation) -> list[MapTransform]:
    """One random affine of the patch, image linear and region masks nearest, corners that come from outside filled with
    zeros (the background of a z-scored case); the masks keep their uint8 type, so augmented and plain samples batch
    together. Nothing when the settings ask for no rotation and no zoom."""
    spatial = augment.spatial
    if spatial is None or spatial.prob == 0 or (spatial.rotate_degrees == 0 and spatial.zoom == 0):
        return []
    angle = math.radians(spatial.rotate_degrees)
    return [
        RandAffined(keys=KEYS, prob=spatial.prob, rotate_range=(angle,) * (1 if spatial_dims == 2 else 3),
                    scale_range=(spatial.zoom,) * spatial_dims, mode=("bilinear", "nearest"), padding_mode="zeros"),
        CastToTyped(keys="label", dtype=np.uint8),
    ]


def eval_transforms() -> Compose:
    return Compose([ReadCased()])


def slice_areas(items: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Labelled pixels per axial slice of each case item (any region), read once per training."""
    return {item["case"]: (item["reader"].packed_labels() != 0).sum(axis=(0, 1)) for item in items}


def slice_items(cases: list[dict[str, Any]], areas: Mapping[str, np.ndarray], selection: SliceSelection,
                seed: int) -> list[dict[str, Any]]:
    """The slices one epoch of 2D training visits.

    A labelled slice is kept when its label area reaches ``min_label_area``
    pixels (study 3 left out the small slices at the tumour's top and
    bottom); an empty slice is kept with probability ``empty_rate``, drawn
    afresh each epoch from ``seed`` so that resuming stays exact.
    """
    rng = np.random.default_rng(seed)
    items = []
    for case in cases:
        area = areas[case["case"]]
        keep = (area >= max(selection.min_label_area, 1)) | ((area == 0) & (rng.random(area.shape) < selection.empty_rate))
        items += [{**case, "slice": int(z)} for z in np.flatnonzero(keep)]
    return items


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class SeededDataset(Dataset):
    """A dataset whose item ``i`` draws its random transforms from a seed of its own, made from ``(seed, i)``.

    MONAI seeds each loader worker once, so without this a sample's
    augmentation would depend on which worker made it and on how many there are.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], transform: Compose, seed: int) -> None:
        super().__init__(items, transform)
        self.seed = seed

    def _transform(self, index: int) -> Any:
        self.transform.set_random_state(seed=int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0]))
        return apply_transform(self.transform, self.data[index])


def loader_options(num_workers: int, device: torch.device) -> dict[str, Any]:
    """Worker processes and page-locked memory on CUDA (for non-blocking copies); each worker prefetches torch's default
    two batches."""
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda"}


def train_loader(items: list[dict], transforms: Compose, batch_size: int, seed: int, epoch: int,
                 options: Mapping[str, Any]) -> DataLoader:
    """One epoch's loader: its order and every sample's randomness come from ``(seed, epoch)`` alone."""
    seed = epoch_seed(seed, epoch)
    dataset = SeededDataset(items, transforms, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
        drop_last=len(items) > batch_size,
        generator=torch.Generator().manual_seed(seed + 1),  # MONAI and torch draw worker seeds from it: not the order
        **options,
    )


def eval_loader(items: list[dict], options: Mapping[str, Any]) -> DataLoader:
    """Whole validation cases, one at a time; its workers live as long as the training (nothing random to reseed)."""
    persistent = {"persistent_workers": True} if options.get("num_workers", 0) > 0 else {}
    return DataLoader(Dataset(items, eval_transforms()), batch_size=1, shuffle=False, **options, **persistent)


def resolve_workers(num_workers: int | str, threads: int | None) -> int:
    """``auto``: one loader worker per CPU of the job beyond the one that trains, at most 8; 0 on a 1-CPU job."""
    if num_workers != "auto":
        return int(num_workers)
    return max(0, min((threads or 1) - 1, 8))
