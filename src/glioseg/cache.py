"""The preprocessed cache on disk: compact, and readable one training patch at a time.

Per case, three chunked, compressed blosc2 arrays (``.b2nd``, the container
nnU-Net v2 moved to for the same reason), written by preprocessing and read
by training, validation and inference through :class:`CaseReader`:

- ``images/<case>.b2nd``: the cropped modalities (C, X, Y, Z) in the
  narrowest dtype that holds their values exactly (uint8 or int16 for the
  integer scans of BraTS and LGG, float32 otherwise). The z-score is not
  baked in: each channel's mean and standard deviation over the brain are
  stored in properties.json and applied to what is read. Storing the scanner's
  integers rather than float32 z-scores makes the cache lossless and about the
  size of the gzipped NIfTI files (bench/results/data_path.md).
- ``labels/<case>.b2nd``: the region masks (R, X, Y, Z) packed as bits of one
  uint8 volume (region r is bit r), which compresses to almost nothing.
- ``brains/<case>.b2nd``: the brain mask (X, Y, Z), only when the brain was
  found by a mask file or the ``mode`` rule; under the ``zero`` rule each
  channel's own nonzero voxels are its brain, as MONAI's
  ``NormalizeIntensity(nonzero=True)`` has it.

Chunks of (1, 128, 128, 32) voxels in blocks of (1, 32, 32, 8) let a 128³
patch or one axial slice be decompressed without the rest of the case
(measured in bench/results/data_path.md). The format has a number,
:data:`CACHE_FORMAT`, stored in properties.json; a cache of another number is
refused with a message to preprocess again, and the preprocess rule takes the
number as a parameter, so Snakemake rebuilds old caches by itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from glioseg.errors import GliosegError
from glioseg.formats import CACHE_FORMAT

SUFFIX = ".b2nd"
CHUNKS = (128, 128, 32)
BLOCKS = (32, 32, 8)
MAX_REGIONS = 8
"""Regions are bits of one uint8 label volume."""

_INTEGER_DTYPES = (np.uint8, np.int16, np.uint16, np.int32)

Region = tuple[slice | int, ...]
"""Which voxels to read: one slice or index per spatial axis (an index drops the axis)."""


def storage_dtype(image: np.ndarray) -> np.dtype:
    """The narrowest dtype that holds every value of ``image`` exactly: an integer type when they are whole, else float32."""
    if image.size == 0 or not np.all(np.isfinite(image)):
        return np.dtype(np.float32)
    low, high = float(image.min()), float(image.max())
    if np.array_equal(image, np.round(image)):
        for dtype in _INTEGER_DTYPES:
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return np.dtype(dtype)
    return np.dtype(np.float32)


@dataclass(frozen=True)
class Normalisation:
    """Each channel's z-score over its brain voxels; voxels outside the brain become 0.

    ``shared_brain`` says whether the brain is one mask for all channels (a
    mask file, or the ``mode`` rule) or each channel's own nonzero voxels
    (skull-stripped data on a 0 background).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    shared_brain: bool

    @classmethod
    def of(cls, image: np.ndarray, brain: np.ndarray | None) -> Normalisation:
        """Statistics in float64 over the brain; a channel without brain voxels, or constant there, gets std 1."""
        means, stds = [], []
        for channel in image:
            voxels = channel[brain] if brain is not None else channel[channel != 0]
            mean = float(voxels.mean(dtype=np.float64)) if voxels.size else 0.0
            std = float(voxels.std(dtype=np.float64)) if voxels.size else 0.0
            means.append(mean)
            stds.append(std if std > 0 else 1.0)
        return cls(tuple(means), tuple(stds), brain is not None)

    def apply(self, image: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
        """The z-scored float32 image; ``brain`` (X, Y, Z, or the same region as ``image``) when ``shared_brain``."""
        scored = image.astype(np.float32)  # a copy: the steps below work in place, channel by channel, in float32
        outside = ~brain if self.shared_brain else None
        for channel, raw, mean, std in zip(scored, image, self.mean, self.std):
            channel -= np.float32(mean)
            channel *= np.float32(1 / std)
            channel[outside if outside is not None else raw == 0] = 0
        return scored

    def to_json(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "shared_brain": self.shared_brain}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Normalisation:
        return cls(tuple(payload["mean"]), tuple(payload["std"]), bool(payload["shared_brain"]))


def pack_regions(regions: np.ndarray) -> np.ndarray:
    """(R, X, Y, Z) 0/1 masks → one uint8 volume with region r in bit r."""
    if regions.shape[0] > MAX_REGIONS:
        raise GliosegError(f"{regions.shape[0]} regions do not fit the cache's {MAX_REGIONS} label bits",
                           hint="use a label convention with at most 8 regions.")
    packed = np.zeros(regions.shape[1:], dtype=np.uint8)
    for bit, mask in enumerate(regions):
        packed |= (mask.astype(bool).astype(np.uint8) << bit)
    return packed


def unpack_regions(packed: np.ndarray, count: int) -> np.ndarray:
    """The inverse of :func:`pack_regions`: (R, …) uint8 0/1 masks."""
    bits = np.arange(count, dtype=np.uint8).reshape(-1, *[1] * packed.ndim)
    return (packed[None] >> bits) & np.uint8(1)


def _chunking(shape: tuple[int, ...], lead: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunks and blocks for an array of ``shape`` with ``lead`` leading per-channel axes of length 1 in each chunk."""
    spatial = shape[lead:]
    chunks = tuple(min(c, n) for c, n in zip(CHUNKS, spatial))
    blocks = tuple(min(b, c) for b, c in zip(BLOCKS, chunks))
    return (1,) * lead + chunks, (1,) * lead + blocks


def _write_array(path: Path, array: np.ndarray, lead: int) -> None:
    chunks, blocks = _chunking(array.shape, lead)
    blosc2.asarray(np.ascontiguousarray(array), urlpath=str(path), mode="w", chunks=chunks, blocks=blocks,
                   cparams={"codec": blosc2.Codec.LZ4, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1})


@dataclass(frozen=True)
class CasePaths:
    """Where one case's arrays live in a cache folder."""

    image: Path
    labels: Path
    brain: Path

    @classmethod
    def of(cls, cache_dir: str | Path, case: str) -> CasePaths:
        root = Path(cache_dir)
        return cls(root / "images" / f"{case}{SUFFIX}", root / "labels" / f"{case}{SUFFIX}", root / "brains" / f"{case}{SUFFIX}")


def write_case(cache_dir: str | Path, case: str, image: np.ndarray, regions: np.ndarray, brain: np.ndarray | None) -> None:
    """Write one case's arrays (``image`` already in its storage dtype) into a cache folder being built."""
    paths = CasePaths.of(cache_dir, case)
    for folder in {paths.image.parent, paths.labels.parent} | ({paths.brain.parent} if brain is not None else set()):
        folder.mkdir(exist_ok=True)
    _write_array(paths.image, image, lead=1)
    _write_array(paths.labels, pack_regions(regions), lead=0)
    if brain is not None:
        _write_array(paths.brain, brain.astype(np.uint8), lead=0)


def _open(path: Path) -> Any:
    """The array at ``path``, opened once per version of the file (opening costs as much as reading a small patch)."""
    try:
        return _open_version(str(path), path.stat().st_mtime_ns)
    except (OSError, RuntimeError, ValueError) as exc:
        raise GliosegError(f"unreadable cache array ({type(exc).__name__}: {exc})", path=path,
                           hint="re-run preprocessing for this dataset (delete its preprocessed folder).") from None


@functools.lru_cache(maxsize=512)
def _open_version(path: str, modified_ns: int) -> Any:
    return blosc2.open(path, mode="r", dparams={"nthreads": 1})


@dataclass(frozen=True)
class CaseReader:
    """One cached case, read whole or one region at a time; cheap to create and to send to loader workers."""

    paths: CasePaths
    normalisation: Normalisation
    region_count: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The cropped case's spatial shape."""
        return tuple(_open(self.paths.labels).shape)

    def image(self, region: Region | None = None) -> np.ndarray:
        """The z-scored float32 image (C, …) of ``region`` (all of it by default)."""
        where = region if region is not None else (slice(None),) * 3
        raw = np.asarray(_open(self.paths.image)[(slice(None), *where)])
        brain = np.asarray(_open(self.paths.brain)[where]).astype(bool) if self.normalisation.shared_brain else None
        return self.normalisation.apply(raw, brain)

    def packed_labels(self, region: Region | None = None) -> np.ndarray:
        """The region bits (X, Y, Z) of ``region``: cheap, for finding where the tumour is."""
        return np.asarray(_open(self.paths.labels)[region if region is not None else (slice(None),) * 3])

    def labels(self, region: Region | None = None) -> np.ndarray:
        """The region masks (R, …) uint8 of ``region``."""
        return unpack_regions(self.packed_labels(region), self.region_count)


def reader(cache_dir: str | Path, case: str, properties: Mapping[str, Any], region_count: int) -> CaseReader:
    """The reader of ``case`` from its entry in properties.json."""
    return CaseReader(CasePaths.of(cache_dir, case), Normalisation.from_json(properties["normalisation"]), region_count)


def readers(cache_dir: str | Path, cases: Sequence[str]) -> list[CaseReader]:
    """Readers of several cases, reading properties.json once; a case missing from the cache is an error."""
    properties = read_cache_properties(cache_dir)
    missing = [case for case in cases if case not in properties.cases]
    if missing:
        raise GliosegError(f"cases {missing} are not in the preprocessed cache", path=cache_dir,
                           hint="re-run preprocessing for this dataset (its manifest changed).")
    return [reader(cache_dir, case, properties.cases[case], len(properties.regions)) for case in cases]


@dataclass(frozen=True)
class CacheProperties:
    """``properties.json``: what a cache's users need besides its arrays (one reader, :func:`read_cache_properties`)."""

    regions: list[str]
    modalities: list[str]
    cases: dict[str, dict]
    digest: str
    """The SHA-256 of the cache's contents: equal digests mean equal training data."""


def read_cache_properties(cache_dir: str | Path) -> CacheProperties:
    """The cache's regions, modalities, per-case geometry and digest; a missing, damaged or outdated file is named."""
    path = Path(cache_dir) / "properties.json"
    try:
        properties = json.loads(path.read_text(encoding="utf-8"))
        found = properties.get("format", 1)
        if found != CACHE_FORMAT:
            raise GliosegError(f"the cache has format {found}, this glioseg reads format {CACHE_FORMAT}", path=path,
                               hint="preprocess the dataset again (Snakemake does so by itself; by hand, delete the "
                                    "preprocessed folder and run `glioseg preprocess`).")
        return CacheProperties(regions=list(properties["regions"]), modalities=list(properties["dataset"]["modalities"]),
                               cases=properties["cases"], digest=properties["digest"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise GliosegError(f"unreadable cache properties ({type(exc).__name__}: {exc})", path=path,
                           hint="re-run preprocessing for this dataset.") from None


def cache_digest(cache_dir: str | Path) -> str:
    """The cache's content digest, which preprocessing stored in properties.json (no array is read)."""
    return read_cache_properties(cache_dir).digest
