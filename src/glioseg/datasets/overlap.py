"""Cases shared between datasets, found by image content rather than by name.

BraTS 2021 re-releases the BraTS 2018–2020 cases under new names, and BraTS
2023 GLI re-releases 2021's. A model trained on one release and evaluated on
another is then partly evaluated on its training data. Names do not reveal
this, and neither do file hashes: releases recompress (``.nii`` / ``.nii.gz``),
change the data type (int16 / float32) and normalise intensities differently.

The fingerprint of a volume is built from what survives all of that:

* the **foreground**: every voxel that differs from the background value (the
  volume's most common value: 0 in skull-stripped BraTS images, ``b`` after a
  map ``a*x + b``). Any one-to-one intensity map keeps it.
* the **rank** of each foreground voxel's intensity among all foreground
  voxels, scaled to (-0.5, 0.5). Any increasing map (``a*x + b`` with
  ``a > 0``, but also clipping or gamma) keeps ranks; rounding to int16 only
  ties voxels of adjacent ranks, and tied voxels get their group's mean rank,
  so the rank sum of every tie group is unchanged.
* summed on a coarse grid of :data:`GRID` cells (about 1 cm cells on the
  240x240x155 BraTS grid) and divided by the cell volume, so a cell is zero
  outside the brain and a voxel flipping in or out of the foreground barely
  moves it; averaging about a thousand voxels per cell also drowns noise.
* high-pass filtered (the grid minus its Gaussian blur of one cell): brains in
  a common atlas share their outline and large-scale contrast, which would
  make every pair of scans look alike; the fine-scale remainder (sulci,
  ventricles, the tumour) is individual. It also damps smooth bias-field
  differences (a +-20% bias field still scores > 0.98).

The descriptor is that grid with zero mean and unit norm, so the dot product
of two descriptors is their Pearson correlation: about 1 for the same scan,
far lower for different scans (measured figures at :data:`THRESHOLD`). Comparing
datasets of N and M cases is one N x M matrix product per image shape.

One modality is fingerprinted per dataset, chosen by role (:data:`ROLES`, since
releases name modalities differently: ``flair`` / ``t2f``). FLAIR is the
default because the tumour and its edema, the most individual structures, are
brightest there. The label map is deliberately not used: it would double the
reads, annotations may be revised between releases, and the image alone
already separates same-scan from different-scan pairs widely.

Limits: volumes of different shapes are never matched, and the fingerprint
assumes the same voxel grid and orientation, so a resampled, re-registered,
flipped or cropped copy is not found (BraTS releases share the 240x240x155
SRI-24 grid). It assumes a constant background (skull-stripped images); noise
added to the background as well would change the foreground. Two scans of the
same patient at different times are different scans here.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from glioseg.atomic import atomic_path, write_csv
from glioseg.errors import GliosegError
from glioseg.manifest import DatasetInfo, image_column, read_dataset_info, read_manifest
from glioseg.nifti import read_volume
from glioseg.parallel import map_cases

log = logging.getLogger(__name__)

#: Cells per axis of the descriptor grid; 24*24*16 = 9216 floats per case.
GRID: tuple[int, int, int] = (24, 24, 16)
#: Width, in cells, of the blur subtracted to keep only individual detail.
HIGH_PASS_SIGMA = 1.0
#: Similarity at or above which two cases are reported as the same scan. The
#: same scan rescaled, retyped or rounded to int16 scores > 0.99, with noise of
#: 30% of the brain's intensity spread > 0.94; different synthetic scans scored
#: at most 0.60 over 2380 pairs at 48x48x32 and 0.35 at 96x96x64.
THRESHOLD = 0.8
#: Modality names that releases use for the same role (compared case-insensitively).
ROLES: dict[str, tuple[str, ...]] = {
    "flair": ("flair", "t2f", "t2flair", "t2_flair", "t2-flair"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post"),
    "t1": ("t1", "t1n", "t1w"),
    "t2": ("t2", "t2w"),
}
OVERLAP_COLUMNS = ["dataset_a", "case_a", "dataset_b", "case_b", "similarity"]
_SIZE = int(np.prod(GRID))
_FORMAT = "glioseg-overlap-fingerprints/1"  # bump whenever the descriptor changes
_MODE_SAMPLE = 100_000  # voxels sampled to find the background value
_CHUNK = 1024  # rows of the similarity matrix computed at once


def fingerprint_volume(volume: np.ndarray) -> np.ndarray:
    """A float32 descriptor of :data:`GRID` cells, unchanged by intensity maps ``a*x + b`` (``a > 0``) and dtype.

    Unit norm and zero mean, so ``fingerprint_volume(x) @ fingerprint_volume(y)``
    is a correlation. A volume without foreground (empty or constant) has an
    all-zero descriptor: it carries no identity and matches nothing.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    mask = volume != _background_value(volume)
    if not mask.any():
        return np.zeros(_SIZE, dtype=np.float32)
    grid = _cell_means(mask, _centred_ranks(volume[mask]))
    detail = grid - ndi.gaussian_filter(grid, HIGH_PASS_SIGMA, mode="constant")
    detail = detail.ravel() - detail.mean()
    norm = np.linalg.norm(detail)
    return (detail / norm if norm > 0 else detail).astype(np.float32)


def _background_value(volume: np.ndarray) -> np.generic:
    """The most common value, from an evenly strided sample: background fills most of a skull-stripped volume.

    The sample positions depend only on the shape, so a rescaled copy finds
    the image of the same value.
    """
    flat = volume.ravel()
    values, counts = np.unique(flat[:: max(1, flat.size // _MODE_SAMPLE)], return_counts=True)
    return values[counts.argmax()]


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    """Mid-ranks scaled to (-0.5, 0.5) with mean 0; tied values share their group's mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - 0.5 * counts  # 0-based rank of each group's middle, + 0.5
    return (mid_rank / values.size - 0.5)[inverse]


def _cell_means(mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` (one per foreground voxel) in each grid cell, over the cell's full volume."""
    axes = [(np.arange(n) * g) // n for n, g in zip(mask.shape, GRID)]  # cell of each index, per axis
    i, j, k = np.nonzero(mask)
    cell = (axes[0][i] * GRID[1] + axes[1][j]) * GRID[2] + axes[2][k]
    sums = np.bincount(cell, weights=weights, minlength=_SIZE)
    sizes = np.einsum("a,b,c->abc", *(np.bincount(a, minlength=g) for a, g in zip(axes, GRID)))
    return sums.reshape(GRID) / np.maximum(sizes, 1)


def modality_for_role(info: DatasetInfo, role: str) -> str:
    """The dataset's name for ``role`` (``"flair"`` is ``t2f`` in BraTS 2023); an exact modality name is taken as is."""
    if role in info.modalities:
        return role
    aliases = ROLES.get(role.lower(), ())
    for modality in info.modalities:
        if modality.lower() in aliases:
            return modality
    raise GliosegError(
        f"dataset {info.name} has no {role} image (modalities: {', '.join(info.modalities)})",
        hint=f"pick a role it has ({', '.join(ROLES)}) or one of its modality names.",
    )


def fingerprint_manifest(manifest: pd.DataFrame, modality_column: str, *, threads: int = 1) -> pd.DataFrame:
    """One row per case: ``case``, ``shape`` (tuple) and ``descriptor``; one volume read per case.

    Cases are read ``threads`` at a time, in worker processes
    (:func:`glioseg.parallel.map_cases`), and come back in the manifest's
    order. Bad files raise one :class:`GliosegError` naming each case and file.
    """
    if modality_column not in manifest.columns:
        images = [c for c in manifest.columns if c.startswith("image_")]
        raise GliosegError(f"manifest has no column {modality_column!r} (images: {', '.join(images)})")
    cases = list(zip(manifest["case"], manifest[modality_column]))
    found = map_cases(_fingerprint_case, cases, threads=threads, desc=f"fingerprinting {modality_column}",
                      name=lambda case: case[0])
    rows = [{"case": case, "shape": shape, "descriptor": descriptor} for (case, _), (shape, descriptor) in zip(cases, found)]
    return pd.DataFrame(rows, columns=["case", "shape", "descriptor"])


def _fingerprint_case(case: tuple[str, str]) -> tuple[tuple[int, ...], np.ndarray]:
    """The shape and descriptor of one ``(case, path)``."""
    volume = read_volume(case[1])
    return volume.shape, fingerprint_volume(volume)


def find_overlap(a: pd.DataFrame, b: pd.DataFrame, *, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Pairs ``case_a, case_b, similarity`` of fingerprints (from :func:`fingerprint_manifest`) that are the same scan.

    Only cases of equal shape are compared. Every pair at or above
    ``threshold`` is listed, so a case duplicated within ``b`` appears once
    per copy. Sorted by ``case_a``, then ``case_b``.
    """
    shapes = sorted(set(a["shape"]) & set(b["shape"]))
    pairs = [pair for shape in shapes for pair in _matches(_of_shape(a, shape), _of_shape(b, shape), threshold)]
    found = pd.DataFrame(pairs, columns=["case_a", "case_b", "similarity"])
    return found.sort_values(["case_a", "case_b"], ignore_index=True).astype({"similarity": float})


def _of_shape(frame: pd.DataFrame, shape: tuple[int, ...]) -> pd.DataFrame:
    return frame[[s == shape for s in frame["shape"]]]


def _matches(a: pd.DataFrame, b: pd.DataFrame, threshold: float) -> list[tuple[str, str, float]]:
    """All pairs at or above threshold, one block of rows of the correlation matrix at a time (bounded memory)."""
    da, db = np.stack(a["descriptor"].to_list()), np.stack(b["descriptor"].to_list())
    cases_a, cases_b = a["case"].to_numpy(), b["case"].to_numpy()
    found = []
    for start in range(0, len(da), _CHUNK):
        similarity = np.clip(da[start:start + _CHUNK] @ db.T, -1.0, 1.0)
        rows, cols = np.nonzero(similarity >= threshold)
        found += [(cases_a[start + r], cases_b[c], float(similarity[r, c])) for r, c in zip(rows, cols)]
    return found


def write_overlap(path: str | Path, pairs: pd.DataFrame, dataset_a: str, dataset_b: str) -> None:
    """Write ``dataset_a, case_a, dataset_b, case_b, similarity`` (atomically; header only when nothing overlaps)."""
    table = pairs.assign(dataset_a=dataset_a, dataset_b=dataset_b, similarity=pairs["similarity"].round(4))
    write_csv(path, table[OVERLAP_COLUMNS])


# ---------------------------------------------------- Snakemake rule entry points
#
# Fingerprinting reads every case (minutes for a full BraTS release), comparing
# takes a fraction of a second, so the two are separate rules: each dataset is
# fingerprinted once and its file reused for every pair of datasets.


@dataclass(frozen=True)
class Fingerprints:
    """One dataset's fingerprints as stored between the two rules."""

    dataset: str
    role: str
    frame: pd.DataFrame


def fingerprint_dataset(manifest_csv: str | Path, info_json: str | Path, out_npz: str | Path, *, role: str = "flair",
                        threads: int = 1) -> None:
    """Rule ``fingerprint``: a manifest and its sidecar to ``out_npz``, using the dataset's image for ``role``.

    The file is the same bytes for the same cases, whatever ``threads`` is and whenever it is written.
    """
    info = read_dataset_info(info_json)
    modality = modality_for_role(info, role)
    frame = fingerprint_manifest(read_manifest(manifest_csv), image_column(modality), threads=threads)
    _write_npz(out_npz, {
        "format": np.array(_FORMAT),
        "dataset": np.array(info.name),
        "role": np.array(_role_of(modality)),
        "case": np.array(frame["case"].to_list(), dtype=str),
        "shape": np.array(frame["shape"].to_list(), dtype=np.int64).reshape(-1, 3),
        "descriptor": np.array(frame["descriptor"].to_list(), dtype=np.float32).reshape(len(frame), _SIZE),
    })


def _write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` (uncompressed, no pickles), atomically and byte-reproducibly.

    ``np.savez`` stamps each member with the time of writing, so two runs never
    gave the same bytes; here every member carries a fixed date.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.create_system = 3  # Unix, whatever the host
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


def _role_of(modality: str) -> str:
    """The role a modality plays (``t2f`` -> ``flair``); a name outside :data:`ROLES` is its own role."""
    return next((role for role, aliases in ROLES.items() if modality.lower() in aliases), modality)


def read_fingerprints(path: str | Path) -> Fingerprints:
    """Fingerprints written by :func:`fingerprint_dataset`."""
    with np.load(path, allow_pickle=False) as data:
        if str(data["format"]) != _FORMAT:
            raise GliosegError(f"fingerprints in format {data['format']}, expected {_FORMAT}", path=path,
                               hint="delete the file and re-run the fingerprint step.")
        frame = pd.DataFrame({"case": data["case"].tolist(), "shape": [tuple(int(n) for n in s) for s in data["shape"]],
                              "descriptor": list(data["descriptor"])})
        return Fingerprints(str(data["dataset"]), str(data["role"]), frame)


def overlap_datasets(fingerprints_a: str | Path, fingerprints_b: str | Path, out_csv: str | Path, *,
                     threshold: float = THRESHOLD) -> pd.DataFrame:
    """Rule ``overlap``: two fingerprint files to the overlap CSV; returns the pairs written.

    Both must fingerprint the same role: a FLAIR never matches a T1 of the
    same scan, so a mix-up would silently report no overlap at all.
    """
    a, b = read_fingerprints(fingerprints_a), read_fingerprints(fingerprints_b)
    if a.role != b.role:
        raise GliosegError(f"{a.dataset} was fingerprinted on its {a.role} image but {b.dataset} on its {b.role} image",
                           path=fingerprints_b, hint="fingerprint both datasets with the same role.")
    pairs = find_overlap(a.frame, b.frame, threshold=threshold)
    write_overlap(out_csv, pairs, a.dataset, b.dataset)
    if len(pairs):
        log.warning("%d case pairs of %s and %s are the same scan (listed in %s)", len(pairs), a.dataset, b.dataset, out_csv)
    return pairs
