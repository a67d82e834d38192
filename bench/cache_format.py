"""Which format should the preprocessed cache use? Candidates measured on one BraTS-size case.

The cache is read every training step, one patch at a time, and has to hold a
whole study (BraTS 2021: 1251 cases). So each candidate is measured for its
size on disk next to the raw ``.nii.gz`` files of the same case, and for the
time to read the whole case, one 128³ patch and one axial slice back as the
arrays the reader returns (single-threaded, page cache warm). The chosen
format's real read path (z-score and labels included) is measured by
bench/data_path.py; this table is why it was chosen (docs/decisions.md).

Run: ``.venv/bin/python bench/cache_format.py``; writes bench/results/cache_format.md.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import blosc2
import nibabel as nib
import numpy as np
from data_path import cpu_model, median_ms

from glioseg.cache import pack_regions
from glioseg.datasets.synthetic import MODALITIES, SyntheticSpec, synthesize_case
from glioseg.preprocess import brain_box, crop, normalise

PATCH = 128
OUT = Path(__file__).parent / "results" / "cache_format.md"


def blosc2_writer(codec: blosc2.Codec, chunks: tuple[int, ...], blocks: tuple[int, ...]) -> Callable[[Path, np.ndarray], Path]:
    def write(path: Path, array: np.ndarray) -> Path:
        path = path.with_suffix(".b2nd")
        blosc2.asarray(array, urlpath=str(path), mode="w", chunks=chunks, blocks=blocks,
                       cparams={"codec": codec, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1})
        return path

    return write


def npy_writer(path: Path, array: np.ndarray) -> Path:
    path = path.with_suffix(".npy")
    np.save(path, array)
    return path


def reader(path: Path) -> Callable[[tuple], np.ndarray]:
    """Read a selection into memory: a memory map is copied out (its slices are views until touched)."""
    if path.suffix == ".npy":
        return lambda where: np.array(np.load(path, mmap_mode="r")[where])
    return lambda where: blosc2.open(str(path), mode="r", dparams={"nthreads": 1})[where]


CHOSEN = blosc2_writer(blosc2.Codec.LZ4, (1, 128, 128, 32), (1, 32, 32, 8))
CANDIDATES: dict[str, tuple[str, Callable]] = {
    ".npy float32 z-scores (format 1)": ("f32", npy_writer),
    ".npy int16, memory-mapped": ("i16", npy_writer),
    ".npy float16 z-scores, memory-mapped": ("f16", npy_writer),
    "blosc2 LZ4 float32 z-scores, 64³ chunks": ("f32", blosc2_writer(blosc2.Codec.LZ4, (1, 64, 64, 64), (1, 16, 16, 16))),
    "blosc2 LZ4 float16 z-scores, 64³ chunks": ("f16", blosc2_writer(blosc2.Codec.LZ4, (1, 64, 64, 64), (1, 16, 16, 16))),
    "blosc2 ZSTD int16, 64³ chunks": ("i16", blosc2_writer(blosc2.Codec.ZSTD, (1, 64, 64, 64), (1, 16, 16, 16))),
    "blosc2 LZ4 int16, 64³ chunks": ("i16", blosc2_writer(blosc2.Codec.LZ4, (1, 64, 64, 64), (1, 16, 16, 16))),
    "blosc2 LZ4 int16, 128×128×32 chunks, 32×32×8 blocks (chosen)": ("i16", CHOSEN),
}


def main() -> None:
    case = synthesize_case(SyntheticSpec(cases=1, shape=(240, 240, 155), spacing=(1.0, 1.0, 1.0), seed=1), 0)
    work = Path(tempfile.mkdtemp(prefix="glioseg-cache-format-"))
    raw_paths = []
    for name, data in {**case.images, "seg": case.seg}.items():
        path = work / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, case.affine), path)
        raw_paths.append(path)
    integers = np.stack([case.images[m] for m in MODALITIES])
    cropped = crop(integers, brain_box(integers, 0))
    arrays = {"i16": cropped, "f32": normalise(cropped.astype(np.float32))}
    arrays["f16"] = arrays["f32"].astype(np.float16)
    seg = crop(case.seg[None], brain_box(integers, 0))[0]
    labels = pack_regions(np.stack([np.isin(seg, (1, 4)), seg > 0, seg == 4]))  # TC, WT, ET as the cache stores them
    label_mb = blosc2_writer(blosc2.Codec.LZ4, (128, 128, 32), (32, 32, 8))(work / "labels", labels).stat().st_size / 1e6
    raw_mb = sum(p.stat().st_size for p in raw_paths) / 1e6
    raw_ms = median_ms(lambda: [np.asarray(nib.load(p).dataobj) for p in raw_paths], 3)
    shape = cropped.shape[1:]
    patch = (slice(None), *[slice(max(0, (n - PATCH) // 2), max(0, (n - PATCH) // 2) + PATCH) for n in shape])
    axial = (slice(None), slice(None), slice(None), shape[2] // 2)
    lines = [
        "# Cache format: candidates on one BraTS-size case",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, blosc2 {blosc2.__version__}; single-threaded reads, page cache warm, median of 5 after a warm-up.",
        f"Case: 4 × 240×240×155 int16 + label as .nii.gz ({raw_mb:.1f} MB, decoded in {raw_ms:.0f} ms), cropped to the brain "
        f"{tuple(shape)}. Sizes include the labels ({label_mb:.2f} MB as packed region bits in blosc2). Patch {PATCH}³ (as far "
        "as the case reaches); slice = one axial slice of all modalities. Produced by `bench/cache_format.py`.",
        "",
        "| format | MB (× raw) | whole case ms (raw ÷ this) | 128³ patch ms (raw ÷ this) | axial slice ms |",
        "|---|---|---|---|---|",
    ]
    for name, (kind, write) in CANDIDATES.items():
        path = write(work / kind, arrays[kind])
        megabytes = path.stat().st_size / 1e6 + label_mb
        read = reader(path)
        whole = median_ms(lambda r=read: r((slice(None),) * 4))
        one_patch = median_ms(lambda r=read: r(patch))
        one_slice = median_ms(lambda r=read: r(axial))
        lines.append(f"| {name} | {megabytes:.1f} ({megabytes / raw_mb:.2f}×) | {whole:.1f} ({raw_ms / whole:.0f}×) | "
                     f"{one_patch:.1f} ({raw_ms / one_patch:.0f}×) | {one_slice:.2f} |")
    lines += ["", "What the chosen format costs through the real reader (z-score, labels, loader): bench/results/data_path.md."]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
