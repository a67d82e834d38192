"""Training and validation data: MONAI dictionary transforms over the cache.

Random transforms are seeded through MONAI's DataLoader, which draws their
seeds from the loader's generator; a new loader per epoch with a generator
seeded from (seed, epoch) makes every epoch's batches a pure function of the
seed and the epoch number, which is what makes resuming exact.

2D models train on axial slices (the last array axis) of the same 3D cache:
an item is a (case, slice) pair, chosen per epoch by label area (see
:func:`slice_items`), and the slice is read through a memory map so that an
epoch never loads whole volumes it does not need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.data.image_reader import NumpyReader
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from glioseg.preprocess import cached_paths
from glioseg.settings import Augmentation, SliceSelection

KEYS = ("image", "label")


def case_items(cache_dir: str | Path, cases: Sequence[str]) -> list[dict[str, str]]:
    items = []
    for case in cases:
        image, label = cached_paths(cache_dir, case)
        items.append({"case": case, "image": str(image), "label": str(label)})
    return items


def _load() -> list:
    return [
        LoadImaged(keys=KEYS, reader=NumpyReader(channel_dim=0), image_only=True),
        EnsureTyped(keys=KEYS, dtype=(torch.float32, torch.uint8), track_meta=False),
    ]


class LoadSliced(MapTransform):
    """Read one axial slice (``item["slice"]``) of cached ``(C, X, Y, Z)`` arrays as ``(C, X, Y)`` tensors."""

    def __init__(self, keys: Sequence[str] = KEYS) -> None:
        super().__init__(keys)

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(item)
        for key in self.key_iterator(out):
            out[key] = torch.from_numpy(np.ascontiguousarray(np.load(item[key], mmap_mode="r")[..., item["slice"]]))
        out["image"], out["label"] = out["image"].float(), out["label"].to(torch.uint8)
        return out


def _load_for(spatial_dims: int) -> list:
    return _load() if spatial_dims == 3 else [LoadSliced()]


def train_transforms(patch_size: Sequence[int], augment: Augmentation) -> Compose:
    """Read (a volume, or a slice for a 2D patch), pad to the patch, random crop, flips on each axis, intensity scale and shift."""
    flips = [RandFlipd(keys=KEYS, prob=augment.flip_prob, spatial_axis=axis) for axis in range(len(patch_size))]
    return Compose(
        [
            *_load_for(len(patch_size)),
            SpatialPadd(keys=KEYS, spatial_size=patch_size),
            RandSpatialCropd(keys=KEYS, roi_size=patch_size, random_size=False),
            *flips,
            RandScaleIntensityd(keys="image", factors=augment.scale_intensity, prob=1.0),
            RandShiftIntensityd(keys="image", offsets=augment.shift_intensity, prob=1.0),
        ]
    )


def eval_transforms() -> Compose:
    return Compose(_load())


def slice_areas(cache_dir: str | Path, cases: Sequence[str]) -> dict[str, np.ndarray]:
    """Labelled pixels per axial slice of each case (any region), read once per training."""
    areas = {}
    for case in cases:
        _, label = cached_paths(cache_dir, case)
        areas[case] = np.load(label, mmap_mode="r").any(axis=0).sum(axis=(0, 1))
    return areas


def slice_items(cases: list[dict[str, str]], areas: Mapping[str, np.ndarray], selection: SliceSelection,
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


def train_loader(items: list[dict], transforms: Compose, batch_size: int, num_workers: int, seed: int, epoch: int) -> DataLoader:
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return DataLoader(
        Dataset(items, transforms),
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(items) > batch_size,
        num_workers=num_workers,
        generator=generator,
    )


def eval_loader(items: list[dict], num_workers: int) -> DataLoader:
    return DataLoader(Dataset(items, eval_transforms()), batch_size=1, shuffle=False, num_workers=num_workers)
