"""NIfTI reading and writing with errors that name the file.

nibabel reports a truncated ``.nii.gz`` as a bare EOFError or zlib error from
deep inside gzip; here every such failure becomes a :class:`GliosegError` that
says which file is bad and what to do about it.

Images, labels and brain masks each have one reader here, shared by the
manifest, preprocessing and scoring, so that what the manifest accepts is
exactly what the later stages read: an image with a NaN voxel, a label of 1.5
or a mask of 0/255 is refused by the same check everywhere.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.atomic import atomic_path
from glioseg.errors import GliosegError

_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)
_REDOWNLOAD = ("replace the file with a good copy (for a dataset glioseg extracted: delete its extracted folder and "
               "archive under results/ and run again).")


def load_image(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI image, reading only its header."""
    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise GliosegError("file not found", path=path, hint="check the dataset folder; the manifest may be stale.") from None
    except _READ_ERRORS as exc:
        raise GliosegError(f"not a readable NIfTI image ({exc})", path=path, hint=_REDOWNLOAD) from None
    if len(image.shape) != 3:
        raise GliosegError(f"expected a 3D volume, found shape {image.shape}", path=path, hint="give one 3D volume per file.")
    dtype = image.get_data_dtype()
    if dtype.kind not in "biuf":  # complex or RGB voxels would be cast to a float silently (or fail deep in numpy)
        raise GliosegError(f"voxels of type {dtype} are not one real number each (complex or colour data)", path=path,
                           hint="save the volume with integer or float voxels, one number each (e.g. a scan's magnitude, "
                                "or a grey-scale conversion).")
    return image


def read_volume(path: str | Path, dtype: type | None = np.float32) -> np.ndarray:
    """Read a 3D volume's voxels as ``dtype`` (``None``: as stored, scaling applied); a truncated or corrupt file is named."""
    image = load_image(path)
    try:
        return np.asarray(image.dataobj, dtype=dtype)
    except _READ_ERRORS as exc:
        raise GliosegError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})", path=path, hint=_REDOWNLOAD) from None


def read_image(path: str | Path) -> np.ndarray:
    """An image's voxels as float32, refused when any is NaN or infinite.

    One such voxel turns every z-score of its channel, and then the training
    loss, into NaN; it is cheaper to name the file now than to debug a loss of
    nan hours later.
    """
    volume = read_volume(path, dtype=np.float32)
    finite = np.isfinite(volume)
    if not finite.all():
        raise GliosegError(f"image has {_non_finite_counts(volume[~finite])}", path=path,
                           hint="repair the image (e.g. re-export it from its source, with NaNs set to 0) or remove the case.")
    return volume


#: How far from a whole number a float label may be and still count as that number (float32 scaling noise).
INTEGRAL_TOLERANCE = 1e-4


def read_label(path: str | Path) -> np.ndarray:
    """A label map as integers, refused when a value is not a whole number.

    Casting a float label map to integers would truncate 1.5 to 1 and 4.6 to 4
    and silently change the regions; NaN would become -2147483648. Values within
    :data:`INTEGRAL_TOLERANCE` of an integer (float32 scaling noise) are rounded.
    """
    data = read_volume(path, dtype=None)
    if np.issubdtype(data.dtype, np.integer):
        return data
    hint = "labels are class numbers: save the label map with integer values (e.g. uint8), or check that this file is a label map."
    finite = np.isfinite(data)
    if not finite.all():
        raise GliosegError(f"label map has {_non_finite_counts(data[~finite])}", path=path, hint=hint)
    whole = np.rint(data)
    fractional = np.abs(data - whole) > INTEGRAL_TOLERANCE
    if fractional.any():
        values = np.unique(data[fractional])
        examples = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise GliosegError(f"label values are not whole numbers: {int(fractional.sum())} voxels hold values such as {examples}",
                           path=path, hint=hint)
    return whole.astype(np.int64)


def read_mask(path: str | Path) -> np.ndarray:
    """A brain mask as booleans; values other than 0 and 1 are refused (a resampled or 0/255 mask is ambiguous)."""
    data = read_label(path)
    values = np.unique(data)
    if not set(values.tolist()) <= {0, 1}:
        shown = ", ".join(str(v) for v in values[:6])
        raise GliosegError(f"brain mask values must be 0 and 1, found {shown}", path=path,
                           hint="save the brain mask as 0 (background) and 1 (brain), e.g. with (mask > 0) as uint8.")
    return data.astype(bool)


def _non_finite_counts(values: np.ndarray) -> str:
    """``values`` (all NaN or infinite) counted in words, e.g. '3 NaN voxels and 1 infinite voxel'."""
    nan = int(np.isnan(values).sum())
    inf = values.size - nan
    parts = [f"{n} {kind} voxel{'s' if n != 1 else ''}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n]
    return " and ".join(parts)


def voxel_spacing(image: nib.Nifti1Image) -> tuple[float, ...]:
    return tuple(float(z) for z in image.header.get_zooms()[:3])


def write_label_map(path: str | Path, labels: np.ndarray, reference: nib.Nifti1Image) -> None:
    """Write ``labels`` as uint8 in the reference image's geometry (affine, qform and sform codes)."""
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header)
    out.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    out.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))
