"""One case of a dataset, every modality side by side with its segmentation, in three planes.

The orientation code is the case montage's (:mod:`glioseg.report.figures`):
volumes are reoriented to RAS by their affine, and every plane is shown in
radiological convention with :func:`~glioseg.report.figures.radiological`:
axial (anterior up) and coronal (superior up) with the patient's right on the
viewer's left, sagittal with superior up and anterior on the left. Each plane
cuts through the tumour's largest cross-section along its axis (the middle of
the volume without tumour); pixels keep the voxel spacing's aspect ratio, or fill
the panel where the spacing is not physical (LGG kaggle_3m's stacked slices).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from glioseg.errors import GliosegError
from glioseg.manifest import DatasetInfo, image_column
from glioseg.nifti import load_image
from glioseg.report.figures import _LABEL_NAMES, LABEL_COLOURS, _label_rgba, finish_figure, radiological

#: (name, the RAS axis the plane is normal to).
PLANES: tuple[tuple[str, int], ...] = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def pick_case(manifest: pd.DataFrame, case: str | None = None, seed: int = 42, source: str | Path = "manifest") -> pd.Series:
    """The manifest row of ``case``, or one drawn with ``seed`` (the same draw for the same manifest)."""
    if case:
        rows = manifest[manifest["case"] == case]
        if rows.empty:
            raise GliosegError(f"case {case!r} is not in the manifest", path=source,
                               hint=f"name one of its cases (e.g. {manifest['case'].iloc[0]!r}) in views → montage → cases.")
        return rows.iloc[0]
    ordered = manifest.sort_values("case", kind="stable").reset_index(drop=True)
    return ordered.iloc[int(np.random.default_rng(seed).integers(len(ordered)))]


def section(label: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the largest tumour cross-section, or the middle without tumour."""
    other = tuple(a for a in range(3) if a != axis)
    areas = np.count_nonzero(label, axis=other)
    return int(np.argmax(areas)) if areas.any() else label.shape[axis] // 2


def plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The plane ``index`` normal to RAS ``axis``, as displayed (radiological, superior or anterior up)."""
    return radiological(np.take(volume, index, axis=axis))


def _canonical(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    image = nib.as_closest_canonical(load_image(path))
    return np.asanyarray(image.dataobj).astype(np.float32), tuple(float(z) for z in image.header.get_zooms()[:3])


def plot_dataset_montage(row: pd.Series, info: DatasetInfo, out: str | Path | None = None) -> Figure:
    """A row per plane (axial, coronal, sagittal): each modality, then the segmentation over FLAIR (or the first)."""
    modalities = list(info.modalities)
    images = {m: _canonical(row[image_column(m)]) for m in modalities}
    label, spacing = _canonical(row["label"])
    label = np.rint(label).astype(np.int16)
    background = "flair" if "flair" in modalities else modalities[0]
    windows = {m: _window(images[m][0]) for m in modalities}
    columns = len(modalities) + 1
    fig = Figure(figsize=(2.3 * columns, 2.5 * len(PLANES) + 0.8), layout="constrained")
    axes = fig.subplots(len(PLANES), columns, squeeze=False)
    for r, (name, axis) in enumerate(PLANES):
        index = section(label, axis)
        shown = [a for a in range(3) if a != axis]  # rows of the displayed plane run along shown[1], columns along shown[0]
        # Pixels keep the spacing's aspect; without a physical spacing (LGG's stacked slices) each panel is filled.
        aspect = spacing[shown[1]] / spacing[shown[0]] if info.physical_spacing else "auto"
        for c, modality in enumerate(modalities):
            ax = axes[r, c]
            ax.imshow(plane(images[modality][0], axis, index), cmap="gray", vmin=windows[modality][0], vmax=windows[modality][1],
                      aspect=aspect)
            ax.set_title(f"{modality}" if r == 0 else "", fontsize="small")
        ax = axes[r, -1]
        ax.imshow(plane(images[background][0], axis, index), cmap="gray", vmin=windows[background][0],
                  vmax=windows[background][1], aspect=aspect)
        ax.imshow(_label_rgba(plane(label, axis, index)), interpolation="nearest", aspect=aspect)
        ax.set_title(f"segmentation on {background}" if r == 0 else "", fontsize="small")
        axes[r, 0].set_ylabel(f"{name} {index}", fontsize="small")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        if axis != 0:
            axes[r, 0].text(0.03, 0.5, "R", transform=axes[r, 0].transAxes, color="white", fontsize="small", va="center")
        else:
            axes[r, 0].text(0.03, 0.5, "A", transform=axes[r, 0].transAxes, color="white", fontsize="small", va="center")
    group = f", {row['group']}" if row.get("group") else ""
    unit = "mm" if info.physical_spacing else "px (not physical)"
    fig.suptitle(f"{info.name}: {row['case']}{group} · {' × '.join(map(str, label.shape))} voxels of "
                 f"{' × '.join(f'{s:g}' for s in spacing)} {unit} (RAS)", fontsize="medium")
    names = _LABEL_NAMES if info.convention.regions != ("WT",) else ((1, "tumour (whole tumour only, 1)"),)
    handles = [Patch(color=LABEL_COLOURS[value], label=name) for value, name in names]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize="small")
    return finish_figure(fig, out)


def _window(volume: np.ndarray) -> tuple[float, float]:
    nonzero = volume[volume != 0]
    low, high = np.percentile(nonzero, [1, 99]) if nonzero.size else (0.0, 1.0)
    return float(low), float(max(high, low + 1e-6))
