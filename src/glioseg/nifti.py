"""NIfTI reading and writing with errors that name the file.

nibabel reports a truncated ``.nii.gz`` as a bare EOFError or zlib error from
deep inside gzip; here every such failure becomes a :class:`GliosegError` that
says which file is bad and what to do about it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.atomic import atomic_path
from glioseg.errors import GliosegError

_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)
_REDOWNLOAD = "delete the dataset's extracted folder and archive under results/ and run again, or replace the file with a good copy."


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
    return image


def read_volume(path: str | Path, dtype: type = np.float32) -> np.ndarray:
    """Read a 3D volume's voxels as ``dtype``; a truncated or corrupt file is named in the error."""
    image = load_image(path)
    try:
        return np.asarray(image.dataobj, dtype=dtype)
    except _READ_ERRORS as exc:
        raise GliosegError(f"truncated or corrupt image data ({type(exc).__name__}: {exc})", path=path, hint=_REDOWNLOAD) from None


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
