"""The LGG ``kaggle_3m`` release (Kaggle ``mateuszbuda/lgg-mri-segmentation``): 2D slices stacked into volumes.

The release ships one folder per case,
``TCGA_<inst>_<patient>_<date>/TCGA_<inst>_<patient>_<date>_<n>.tif`` (256×256×3
uint8: pre-contrast, FLAIR, post-contrast; a sequence the scan lacked was
replaced by FLAIR upstream) with ``..._<n>_mask.tif`` beside each (256×256
uint8, 0/255: the FLAIR abnormality), slices numbered ``1..N`` (numerically:
10 comes after 9), and ``data.csv`` (genomic clusters and clinical data, one
row per patient, keyed by its ``Patient`` column).

:func:`stack_lgg` turns each case folder into NIfTI volumes, so that the
manifest, preprocessing, 3D scoring and per-patient Dice work on it unchanged
through the ``lgg_kaggle3m`` layout (:mod:`glioseg.datasets.layouts.lgg`).

Axis convention (the tifs carry no orientation header): a slice stored as a
``rows × columns`` array becomes the volume's ``(x, y)`` plane with
**x = column, y = row**, and slice ``n`` (1-based, as numbered in the file
name) is ``z = n - 1``. Hence ``volume[x, y, n - 1] == tif_n[y, x]``, i.e.
``volume[:, :, n - 1] == tif_n.T``; a 2D model reading axial slices gets the
tif back by transposing ``volume[:, :, k]``.
"""

from __future__ import annotations

import filecmp
import logging
import re
import struct
import warnings
import zlib
from collections import defaultdict
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from glioseg.atomic import atomic_dir, atomic_path
from glioseg.datasets.layouts.folders import case_folders, is_debris
from glioseg.datasets.layouts.lgg import LGG_CASE, LGG_MODALITIES
from glioseg.errors import GliosegError
from glioseg.parallel import map_cases

log = logging.getLogger(__name__)

#: The tifs carry no voxel spacing: volumes are written with unit spacing, so
#: distances downstream (e.g. HD95) are in pixels/slices, not millimetres. Their
#: orientation is the radiological display they were exported in (anterior up,
#: the patient's right on the left, slice numbers rising to the top of the head),
#: so x = column runs to the patient's left and y = row to the back: LPS voxel
#: order, as BraTS stores it, and viewers and glioseg's figures show the slices
#: as the tifs look.
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])

CHANNELS = len(LGG_MODALITIES)
METADATA = "data.csv"

_SLICE = re.compile(r"^(?P<case>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_REPLACE = "replace the file with a good copy from the dataset archive (or re-extract it) and run again."


def read_tif(path: Path) -> np.ndarray:
    """Decode one tif with Pillow (LZW included, no imagecodecs needed); an unreadable or truncated file is named.

    A slice is one page: Pillow reads a multi-page tif's first page only, so a stack saved as one file would
    otherwise pass as one slice, the rest of it silently dropped.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns before it raises on truncated files; the error says it all
            with Image.open(path) as image:
                pages = getattr(image, "n_frames", 1)
                if pages > 1:
                    raise GliosegError(f"the tif holds {pages} pages; a slice is one page", path=path,
                                       hint="save each slice as a tif of its own, <case>_<n>.tif, as the kaggle_3m release does.")
                return np.asarray(image)
    except _READ_ERRORS as exc:
        raise GliosegError(f"unreadable or truncated tif ({type(exc).__name__}: {exc})", path=path, hint=_REPLACE) from None


def _slice_files(folder: Path, *, masks: bool = True) -> tuple[list[Path], list[Path]]:
    """A case folder's images and masks, each in slice order ``1..N``; an unpaired file or a gap is an error.

    Without ``masks`` (new scans to predict) the masks, if any, are neither required nor returned.
    """
    images: dict[int, Path] = {}
    mask_files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in (".tif", ".tiff"):
            continue
        found = _SLICE.match(path.name)
        if found is None or found["case"] != folder.name:
            raise GliosegError(
                f"not a slice of case {folder.name} (expected {folder.name}_<n>.tif or {folder.name}_<n>_mask.tif)",
                path=path,
                hint="move or rename the file; every tif in a case folder must be one of its slices or masks.",
            )
        table = mask_files if found["mask"] else images
        number = int(found["number"])
        if number in table:
            raise GliosegError(f"slice {number} appears twice, also as {table[number].name}", path=path,
                               hint="keep one file per slice number.")
        table[number] = path
    if not images:
        held = f"{len(mask_files)} masks but no image slices ({folder.name}_<n>.tif)" if mask_files else "no slices"
        raise GliosegError(f"case folder holds {held}", path=folder,
                           hint="remove the folder, or restore its image tifs from the archive.")
    if not masks:
        return _in_order(folder, images), []
    unmasked, orphaned = sorted(images.keys() - mask_files.keys()), sorted(mask_files.keys() - images.keys())
    if unmasked:
        number = unmasked[0]
        raise GliosegError(f"slice {number} has no mask ({folder.name}_{number}_mask.tif is missing)", path=images[number], hint=_REPLACE)
    if orphaned:
        number = orphaned[0]
        raise GliosegError(f"mask {number} has no image ({folder.name}_{number}.tif is missing)", path=mask_files[number],
                           hint=_REPLACE)
    ordered = _in_order(folder, images)
    return ordered, [mask_files[n] for n in sorted(images)]


def _in_order(folder: Path, images: dict[int, Path]) -> list[Path]:
    """The images in slice order ``1..N``; a gap in the numbering is an error."""
    numbers = sorted(images)
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise GliosegError(f"slice numbering has a gap: slices {shown} of 1..{numbers[-1]} are missing", path=folder,
                           hint="restore the missing slices from the archive; a volume cannot be stacked with holes.")
    return [images[n] for n in numbers]


def _check_shape(array: np.ndarray, expected: tuple[int, ...], path: Path, what: str) -> None:
    if array.dtype != np.uint8 or array.shape != expected:
        raise GliosegError(
            f"{what} has shape {array.shape} and type {array.dtype}, expected {expected} uint8",
            path=path,
            hint=f"every image of a case must be rows×columns×{CHANNELS} uint8 (pre-contrast, FLAIR, post-contrast) "
                 "and every mask rows×columns uint8, all of one size; replace the file with the release's.",
        )


def _read_image(path: Path, plane: tuple[int, int] | None = None) -> np.ndarray:
    """One image slice, rows × columns × 3; ``plane`` (rows, columns) defaults to this slice's own."""
    image = read_tif(path)
    _check_shape(image, (*(plane or image.shape[:2]), CHANNELS), path, "image")
    return image


def _read_mask(path: Path, plane: tuple[int, int]) -> np.ndarray:
    """A mask as labels: 255 → 1, 0 → 0; anything else is an error (a resampled or JPEG-damaged mask)."""
    mask = read_tif(path)
    _check_shape(mask, plane, path, "mask")
    bad = sorted(int(v) for v in np.unique(mask) if v not in (0, 255))
    if bad:
        raise GliosegError(f"mask values {bad[:10]} are neither 0 nor 255", path=path,
                           hint="masks must be binary 0/255; replace the file with the release's copy.")
    return (mask == 255).astype(np.uint8)


def _stack_images(image_paths: list[Path]) -> np.ndarray:
    """The slices as uint8 ``(X, Y, N, 3)`` (x = column, y = row), all of the first one's size."""
    first = _read_image(image_paths[0])
    plane = first.shape[:2]
    return np.stack([first] + [_read_image(p, plane) for p in image_paths[1:]], axis=-2).swapaxes(0, 1)


def stack_case(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One case folder as ``(images, label)``: uint8 ``(X, Y, N, 3)`` and uint8 ``(X, Y, N)`` (x = column, y = row)."""
    image_paths, mask_paths = _slice_files(folder)
    images = _stack_images(image_paths)
    plane = images.shape[1::-1]  # (rows, columns)
    label = np.stack([_read_mask(p, plane) for p in mask_paths], axis=-1)  # (row, col, N)
    return images, label.swapaxes(0, 1)


def stack_scans(folder: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """New scans to predict: a case folder's slices, masks ignored, as ``glioseg predict`` gives them to a model
    trained on this release: the (C, X, Y, N) float32 image, channels in :data:`LGG_MODALITIES` order, exactly as
    the stacked volumes read back, and the first modality's volume (its geometry is the prediction's)."""
    images = _stack_images(_slice_files(folder, masks=False)[0])
    return np.moveaxis(images, -1, 0).astype(np.float32), volume_image(images[..., 0])


def holds_slices(folder: Path) -> bool:
    """Whether ``folder`` holds slices of its own case (``<folder>_<n>.tif``): a case folder of new scans."""
    return any((found := _SLICE.match(p.name)) and found["case"] == folder.name and not found["mask"]
               for p in folder.iterdir() if p.is_file())


def slice_count(folder: Path) -> int:
    """How many slices a case folder holds (its masks aside): ``glioseg predict`` writes one mask per slice."""
    return len(_slice_files(folder, masks=False)[0])


def write_slice_masks(labels: np.ndarray, out: Path, case: str) -> None:
    """A prediction ``(X, Y, N)`` of a stacked case as the release's masks: ``out/<case>_<n>_mask.tif`` per slice,
    rows × columns uint8, 255 where any label is, 0 elsewhere (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    for index in range(labels.shape[-1]):
        mask = np.where(labels[:, :, index].T > 0, 255, 0).astype(np.uint8)
        with atomic_path(out / f"{case}_{index + 1}_mask.tif") as tmp:
            Image.fromarray(mask).save(tmp, format="TIFF")


def _stack_into(folder: Path, out: Path) -> None:
    """Stack one case folder into ``out/<case>/``: one volume per modality and the label."""
    images, label = stack_case(folder)
    case_dir = out / folder.name
    case_dir.mkdir()
    for channel, modality in enumerate(LGG_MODALITIES):
        _save(images[..., channel], case_dir / f"{folder.name}_{modality}.nii.gz")
    _save(label, case_dir / f"{folder.name}_seg.nii.gz")


def volume_image(array: np.ndarray) -> nib.Nifti1Image:
    """A stacked volume as the NIfTI image it is written as: uint8, :data:`AFFINE`."""
    return nib.Nifti1Image(np.ascontiguousarray(array, dtype=np.uint8), AFFINE)


def _save(array: np.ndarray, path: Path) -> None:
    nib.save(volume_image(array), str(path))


def _same_files(a: Path, b: Path) -> bool:
    """Whether two case folders hold the same file names with the same sizes (the cheap duplicate check)."""
    def listing(folder: Path) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    return listing(a) == listing(b)


def _unique_folders(root: Path) -> list[Path]:
    """Case folders by case id, sorted. The Kaggle archive ships ``kaggle_3m/`` twice (again under
    ``lgg-mri-segmentation/``): identical copies are read once (the shallowest), differing ones are an error."""
    by_case: dict[str, list[Path]] = defaultdict(list)
    for folder in case_folders(root, LGG_CASE):
        by_case[folder.name].append(folder)
    chosen = []
    for case, folders in sorted(by_case.items()):
        folders.sort(key=lambda p: (len(p.parts), str(p)))
        for other in folders[1:]:
            if not _same_files(folders[0], other):
                raise GliosegError(
                    f"case {case} is found twice with different files: {folders[0]} and {other}",
                    path=root,
                    hint="keep a single copy of each case folder under the dataset folder.",
                )
        if len(folders) > 1:
            log.info("%s: %d identical copies, reading %s", case, len(folders), folders[0])
        chosen.append(folders[0])
    return chosen


def _metadata(root: Path) -> Path | None:
    """The release's ``data.csv`` (any depth); duplicate copies must be identical. ``None`` when absent."""
    found = sorted((p for p in root.rglob(METADATA) if p.is_file() and not is_debris(p, root)), key=lambda p: (len(p.parts), str(p)))
    for other in found[1:]:
        if not filecmp.cmp(found[0], other, shallow=False):
            raise GliosegError(f"two different {METADATA} files: {found[0]} and {other}", path=root,
                               hint=f"keep the release's {METADATA} only.")
    return found[0] if found else None


def stack_lgg(raw_root: str | Path, out_root: str | Path, *, threads: int = 1) -> None:
    """Stack every case folder under ``raw_root`` into NIfTI volumes under ``out_root``.

    Writes ``out_root/<case>/<case>_{pre,flair,post}.nii.gz`` (uint8, shape
    ``columns × rows × N``: x = column, y = row, z = slice number - 1, so
    ``volume[:, :, k]`` is slice ``k + 1`` transposed) and ``<case>_seg.nii.gz``
    (uint8: mask 255 → 1, 0 → 0), and copies ``data.csv`` to ``out_root/data.csv``
    (a warning, not an error, when the release's is missing: it is metadata).

    The affine is :data:`AFFINE`: the tifs carry no spacing, so voxels are
    1 × 1 × 1 "mm" by convention only and HD95 downstream is in pixels; the
    orientation is the one the tifs are displayed in. Case folders are found at any depth (``__MACOSX`` and hidden folders
    skipped); identical duplicate copies are read once. The whole ``out_root``
    is written atomically: on any error (an unpaired slice or mask, a gap in
    the numbering, a wrong shape or channel count, a mask value other than
    0/255, an unreadable tif) a :class:`GliosegError` names the file and
    ``out_root`` is left as it was; every case is tried first, and the error
    lists each broken case with its file.

    Cases are stacked ``threads`` at a time, in worker processes
    (:func:`glioseg.parallel.map_cases`); the files are the same whatever
    ``threads`` is.
    """
    raw, out = Path(raw_root), Path(out_root)
    if not raw.is_dir():
        raise GliosegError("LGG dataset folder not found", path=raw,
                           hint="extract the kaggle_3m archive first, or fix the dataset's source path.")
    if out.resolve().is_relative_to(raw.resolve()):
        raise GliosegError("the output folder lies inside the raw dataset folder", path=out,
                           hint="write the stacked volumes outside the raw folder.")
    folders = _unique_folders(raw)
    if not folders:
        raise GliosegError("no LGG case folders (TCGA_<inst>_<patient>_<date>) found", path=raw,
                           hint="check that this is the kaggle_3m release of mateuszbuda/lgg-mri-segmentation.")
    metadata = _metadata(raw)
    if metadata is None:
        log.warning("%s: no %s found; the manifest will have no clinical columns", raw, METADATA)
    with atomic_dir(out) as tmp:
        map_cases(partial(_stack_into, out=tmp), folders, threads=threads, desc="stacking LGG slices",
                  name=lambda folder: folder.name)
        if metadata is not None:
            (tmp / METADATA).write_bytes(metadata.read_bytes())
    log.info("%s: %d cases stacked into %s", raw, len(folders), out)
