"""Which format should the preprocessed cache use? It is read every epoch, so measure.

Writes one BraTS-sized synthetic case (240×240×155, 4 modalities, cropped to
its brain as preprocessing does) in each candidate format and times reading it
back the way training reads it: the whole case, and one random 128³ patch.
Results are ratios to the raw ``.nii.gz`` read measured in the same run, with
the machine recorded, in bench/results/cache_format.md.

Run: ``.venv/bin/python bench/cache_format.py``
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.datasets.synthetic import MODALITIES, SyntheticSpec, synthesize_case
from glioseg.preprocess import brain_box, crop, normalise

REPEATS = 7
PATCH = 128
OUT = Path(__file__).parent / "results" / "cache_format.md"


def cpu_model() -> str:
    """The CPU's model name (platform.processor() is empty on Linux)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed(read: Callable[[], np.ndarray]) -> float:
    """Median wall time in milliseconds of ``read`` (one warm-up call first, as epochs after the first are warm)."""
    read()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def patch_of(array: np.ndarray) -> np.ndarray:
    starts = [max(0, (n - PATCH) // 2) for n in array.shape[1:]]
    return np.ascontiguousarray(array[(slice(None), *[slice(s, s + PATCH) for s in starts])], dtype=np.float32)


def main() -> None:
    case = synthesize_case(SyntheticSpec(cases=1, shape=(240, 240, 155), spacing=(1.0, 1.0, 1.0), seed=1), 0)
    work = Path(tempfile.mkdtemp(prefix="glioseg-bench-"))
    raw_paths = []
    for modality in MODALITIES:
        path = work / f"{modality}.nii.gz"
        nib.save(nib.Nifti1Image(case.images[modality], case.affine), path)
        raw_paths.append(path)
    image = np.stack([case.images[m].astype(np.float32) for m in MODALITIES])
    cached = normalise(crop(image, brain_box(image, 0)))
    np.save(work / "f32.npy", cached)
    np.save(work / "f16.npy", cached.astype(np.float16))
    np.savez_compressed(work / "f32.npz", image=cached)

    def nifti() -> np.ndarray:
        return np.stack([np.asarray(nib.load(p).dataobj, dtype=np.float32) for p in raw_paths])

    rows = [
        ("raw .nii.gz ×4 (nibabel, float32)", nifti, None),
        (".npz compressed float32", lambda: np.load(work / "f32.npz")["image"], None),
        (".npy float32", lambda: np.load(work / "f32.npy"), lambda: patch_of(np.load(work / "f32.npy", mmap_mode="r"))),
        (".npy float16", lambda: np.load(work / "f16.npy").astype(np.float32),
         lambda: patch_of(np.load(work / "f16.npy", mmap_mode="r"))),
    ]
    baseline = timed(nifti)
    sizes = {"raw .nii.gz ×4 (nibabel, float32)": sum(p.stat().st_size for p in raw_paths),
             ".npz compressed float32": (work / "f32.npz").stat().st_size,
             ".npy float32": (work / "f32.npy").stat().st_size, ".npy float16": (work / "f16.npy").stat().st_size}
    lines = [
        "# Cache format: reading one BraTS-sized case",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, nibabel {nib.__version__}; {REPEATS} timed reads after one warm-up (page cache warm).",
        f"Case: 240×240×155, 4 modalities, cropped to the brain {tuple(cached.shape[1:])}; patch {PATCH}³ read through a memory map.",
        "",
        "| format | size MB | whole case ms | ratio to .nii.gz | one patch ms |",
        "|---|---|---|---|---|",
    ]
    for name, whole, patch in rows:
        ms = baseline if whole is nifti else timed(whole)
        patch_ms = f"{timed(patch):.1f}" if patch else "–"
        lines.append(f"| {name} | {sizes[name] / 1e6:.1f} | {ms:.1f} | {ms / baseline:.3f} | {patch_ms} |")
    lines += ["", "Decision: see docs/decisions.md (cache format)."]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
