"""Resampling a cropped case to a dataset's target spacing, and a prediction back (a dataset's ``preprocess → spacing``).

Linear interpolation throughout, with MONAI's ``Resize`` on an explicit
shape: the resampled grid covers the same extent as the crop (voxel corners
aligned, ``align_corners=False``, as nnU-Net's ``skimage`` resize), so the
inverse is a resize back to the crop's shape. Images are interpolated as they
are; masks (the regions, the brain) one by one and thresholded at 0.5, as
nnU-Net resamples each label of a segmentation; predictions go back as
probabilities, thresholded only in the original grid (docs/decisions.md,
"Resampling").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import Resize
from monai.utils import convert_to_numpy

MASK_THRESHOLD = 0.5
"""An interpolated mask voxel at or above this is inside (nnU-Net's rule for resampled segmentations)."""


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The shape of ``shape`` voxels of ``spacing`` resampled to ``target``: round(n · spacing / target), at least 1.

    An axis whose spacing already is the target keeps its length exactly, whatever rounding would say.
    """
    return tuple(int(n) if np.isclose(s, t) else max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A channel-first array linearly interpolated to spatial ``shape``, as float32; the array itself when it has it."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    resized = Resize(spatial_size=tuple(shape), mode="trilinear", align_corners=False, anti_aliasing=False)(array)
    return convert_to_numpy(resized, dtype=np.float32)


def resize_masks(masks: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Channel-first binary masks interpolated to ``shape`` each on its own and thresholded at 0.5, as uint8.

    Linear interpolation is monotone, so masks nested before (ET ⊂ TC ⊂ WT)
    stay nested; the threshold keeps each one binary.
    """
    if tuple(masks.shape[1:]) == tuple(shape):
        return masks
    return (resize(masks.astype(np.float32), shape) >= MASK_THRESHOLD).astype(np.uint8)
