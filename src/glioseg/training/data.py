"""Training and validation data: MONAI dictionary transforms over the cache.

Random transforms are seeded through MONAI's DataLoader, which draws their
seeds from the loader's generator; a new loader per epoch with a generator
seeded from (seed, epoch) makes every epoch's batches a pure function of the
seed and the epoch number, which is what makes resuming exact.
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
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from glioseg.preprocess import cached_paths

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


def train_transforms(patch_size: Sequence[int], augment: Mapping[str, Any]) -> Compose:
    """Pad to the patch, random crop, flips on each axis, random intensity scale and shift."""
    flips = [RandFlipd(keys=KEYS, prob=augment["flip_prob"], spatial_axis=axis) for axis in range(len(patch_size))]
    return Compose(
        [
            *_load(),
            SpatialPadd(keys=KEYS, spatial_size=patch_size),
            RandSpatialCropd(keys=KEYS, roi_size=patch_size, random_size=False),
            *flips,
            RandScaleIntensityd(keys="image", factors=augment["scale_intensity"], prob=1.0),
            RandShiftIntensityd(keys="image", offsets=augment["shift_intensity"], prob=1.0),
        ]
    )


def eval_transforms() -> Compose:
    return Compose(_load())


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
