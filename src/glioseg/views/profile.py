"""A dataset's profile: what is in it, case by case, before anything is trained on it.

One pass over the manifest reads every case once and gives, per case: its
shape and voxel spacing, the brain's share of the volume, each modality's
intensity percentiles, mean and std inside the brain, the volume of each
tumour region (cm³, or voxels counted as ``px`` where the spacing is no
physical size, as for LGG kaggle_3m's stacked tifs), whether it has any
tumour, and flags for what looks unusual next to the dataset's other cases.
The same pass stores, per case and modality, 101 intensity quantiles and the
embedding's feature vector (``features.npz``), so that the histogram figure
and the t-SNE need no second read of the images.

The brain is found as preprocessing finds it: the case's brain mask where the
layout has one, else voxels nonzero in any modality (``zero``) or differing
from each modality's most frequent value (``mode``).

Outlier flags (column ``flags``, ``;``-separated):

* ``<modality> profile unusual``: the shape of the modality's intensity
  distribution inside the brain (its quantiles, centred on the median and
  scaled by the interquartile range, so a scanner's gain does not count) is
  far from the dataset's typical one: its distance to the per-quantile median
  over cases exceeds the median distance by :data:`OUTLIER_MADS` robust standard
  deviations. ``<modality> looks like <other>`` when it is, moreover, closer
  to another modality's typical profile: a mis-assigned sequence.
* ``shape unusual`` / ``spacing unusual``: an axis outside the dataset's
  quartiles widened by :data:`OUTLIER_IQRS` interquartile ranges (for a
  release whose cases all share one grid, any other grid).
* ``no tumour``: an empty label map.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from glioseg.atomic import atomic_path, write_csv, write_text
from glioseg.datasets.overlap import ROLES
from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, labels_to_regions
from glioseg.manifest import DatasetInfo, image_column, read_dataset_info, read_manifest
from glioseg.nifti import load_image, read_image, read_label, read_mask, voxel_spacing

log = logging.getLogger(__name__)

#: Percentiles of each modality inside the brain written to the profile table.
PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)
#: Quantile levels (in percent) stored per case and modality for the histograms and the shape descriptor.
LEVELS = np.linspace(0.0, 100.0, 101)
#: Levels of the scale-free profile that outlier flags and the embedding compare.
SHAPE_LEVELS = np.arange(5, 100, 5)
#: Cells per axis of the downsampled brain the embedding reads (RAS order).
FEATURE_GRID: tuple[int, int, int] = (12, 12, 8)
OUTLIER_MADS = 5.0
OUTLIER_IQRS = 3.0
#: A mis-assigned modality is this much closer to another modality's typical profile than to its own.
MISASSIGNED_RATIO = 2.0
FORMAT = "glioseg-views-features/1"
_MODE_SAMPLE = 100_000


@dataclass(frozen=True)
class CaseProfile:
    """One case's row of the profile table and its arrays for ``features.npz``."""

    row: dict
    quantiles: np.ndarray  # (modalities, len(LEVELS)) raw intensities inside the brain
    grid: np.ndarray  # (modalities, prod(FEATURE_GRID)) z-scored brain, cropped, cell means


def role_of(modality: str) -> str:
    """The role a modality plays across releases (``t2f`` → ``flair``); other names are their own role."""
    return next((role for role, aliases in ROLES.items() if modality.lower() in aliases), modality.lower())


def brain_mask(image: np.ndarray, mask: np.ndarray | None, background: str) -> np.ndarray:
    """The brain as preprocessing finds it: the mask, else voxels off the background in any channel."""
    if mask is not None:
        return mask
    if background == "mode":
        return np.any([channel != _mode(channel) for channel in image], axis=0)
    return np.any(image != 0, axis=0)


def _mode(volume: np.ndarray) -> np.generic:
    flat = volume.ravel()
    values, counts = np.unique(flat[:: max(1, flat.size // _MODE_SAMPLE)], return_counts=True)
    return values[counts.argmax()]


def region_volumes(label: np.ndarray, convention: LabelConvention, spacing: Sequence[float], physical: bool) -> dict[str, float]:
    """Each region's size: cm³ from the voxel spacing in mm, or a voxel count where the spacing is not physical."""
    regions = labels_to_regions(label, convention)
    voxel = float(np.prod(spacing)) / 1000.0 if physical else 1.0
    return {region: float(np.count_nonzero(regions[i])) * voxel for i, region in enumerate(convention.regions)}


def canonical(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A volume in RAS voxel order, as the figures show it, so every dataset's grid cells mean the same place."""
    return nib.orientations.apply_orientation(volume, nib.io_orientation(affine))


def brain_grid(image: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Per channel: z-scored over the brain, 0 elsewhere, cropped to the brain's box in RAS order, cell means on FEATURE_GRID."""
    brain = canonical(brain, affine)
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(brain))
    inside = brain[box]
    out = []
    for channel in image:
        values = canonical(channel, affine)[box]
        brain_values = values[inside]
        std = float(brain_values.std()) or 1.0
        normed = np.where(inside, (values - float(brain_values.mean())) / std, 0.0)
        out.append(cell_means(normed, FEATURE_GRID).ravel())
    return np.asarray(out, dtype=np.float32)


def cell_means(volume: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """Mean of ``volume`` over each cell of a ``grid`` laid evenly over it (an axis shorter than the grid repeats its voxels)."""
    for axis, cells in enumerate(grid):
        if volume.shape[axis] < cells:
            volume = np.repeat(volume, -(-cells // volume.shape[axis]), axis=axis)
    axes = [(np.arange(n) * g) // n for n, g in zip(volume.shape, grid)]
    index = (axes[0][:, None, None] * grid[1] + axes[1][None, :, None]) * grid[2] + axes[2][None, None, :]
    sums = np.bincount(index.ravel(), weights=volume.ravel(), minlength=int(np.prod(grid)))
    sizes = np.bincount(index.ravel(), minlength=int(np.prod(grid)))
    return (sums / sizes).reshape(grid)


def profile_case(row: pd.Series, info: DatasetInfo, background: str) -> CaseProfile:
    """Read one case (every modality, its label, its mask if any) and describe it."""
    columns = [image_column(m) for m in info.modalities]
    header = load_image(row[columns[0]])
    spacing = voxel_spacing(header)
    image = np.stack([read_image(row[c]) for c in columns])
    mask = read_mask(row["mask"]) if row.get("mask") else None
    brain = brain_mask(image, mask, background)
    if not brain.any():
        raise GliosegError(f"case {row['case']}: no brain found (every voxel is background)", path=row[columns[0]],
                           hint="check the images, or set the dataset's preprocess → background to mode for a nonzero background.")
    label = read_label(row["label"])
    volumes = region_volumes(label, info.convention, spacing, info.physical_spacing)
    quantiles = np.stack([np.percentile(channel[brain], LEVELS) for channel in image]).astype(np.float32)
    out = {"case": row["case"], "patient": row["patient"], "group": row["group"]}
    out |= {f"shape_{a}": n for a, n in zip("xyz", image.shape[1:])}
    out |= {f"spacing_{a}": round(s, 6) for a, s in zip("xyz", spacing)}
    out["brain_fraction"] = round(float(brain.mean()), 6)
    for modality, channel, q in zip(info.modalities, image, quantiles):
        values = channel[brain]
        out |= {f"{modality}_p{p}": float(q[p]) for p in PERCENTILES}
        out |= {f"{modality}_mean": float(values.mean()), f"{modality}_std": float(values.std())}
    out |= {f"volume_{region}": value for region, value in volumes.items()}
    out["volume_unit"] = "cm3" if info.physical_spacing else "px"
    out["tumour"] = bool(label.any())
    return CaseProfile(out, quantiles, brain_grid(image, brain, header.affine))


def shape_profiles(quantiles: np.ndarray) -> np.ndarray:
    """Quantiles at SHAPE_LEVELS minus the median, over the interquartile range: a distribution's shape, not its scale."""
    q = quantiles.astype(np.float64)
    iqr = q[..., 75] - q[..., 25]
    iqr = np.where(iqr > 0, iqr, np.maximum(q[..., 100] - q[..., 0], 1e-12))
    return (q[..., SHAPE_LEVELS] - q[..., 50:51]) / iqr[..., None]


def _robust_outliers(distance: np.ndarray) -> np.ndarray:
    median = np.median(distance)
    spread = 1.4826 * np.median(np.abs(distance - median))
    return distance > median + OUTLIER_MADS * max(spread, 0.05 * median, 1e-6)


def _axis_outliers(values: np.ndarray) -> np.ndarray:
    """Rows with any column outside its quartiles widened by OUTLIER_IQRS interquartile ranges."""
    q1, q3 = np.percentile(values, [25, 75], axis=0)
    iqr = q3 - q1
    tolerance = OUTLIER_IQRS * iqr + 1e-6 * np.abs(q3)
    return np.any((values < q1 - tolerance) | (values > q3 + tolerance), axis=1)


def outlier_flags(table: pd.DataFrame, quantiles: np.ndarray, modalities: Sequence[str], min_cases: int = 10) -> list[str]:
    """One ``;``-joined string of flags per case (empty when nothing stands out); see the module's docstring."""
    flags: list[list[str]] = [[] for _ in range(len(table))]
    for index, tumour in enumerate(table["tumour"]):
        if not tumour:
            flags[index].append("no tumour")
    if len(table) >= min_cases:
        profiles = shape_profiles(quantiles)  # (cases, modalities, levels)
        typical = np.median(profiles, axis=0)  # (modalities, levels)
        for m, modality in enumerate(modalities):
            distance = np.abs(profiles[:, m] - typical[m]).mean(axis=1)
            for index in np.flatnonzero(_robust_outliers(distance)):
                to_others = {other: float(np.abs(profiles[index, m] - typical[o]).mean())
                             for o, other in enumerate(modalities) if o != m}
                closest = min(to_others, key=to_others.get, default=None)
                if closest is not None and to_others[closest] * MISASSIGNED_RATIO < distance[index]:
                    flags[index].append(f"{modality} looks like {closest}")
                else:
                    flags[index].append(f"{modality} profile unusual")
        for name, prefix in (("shape", "shape_"), ("spacing", "spacing_")):
            values = table[[f"{prefix}{a}" for a in "xyz"]].to_numpy(dtype=float)
            for index in np.flatnonzero(_axis_outliers(values)):
                flags[index].append(f"{name} unusual")
    return ["; ".join(case_flags) for case_flags in flags]


def profile_manifest(manifest: pd.DataFrame, info: DatasetInfo, background: str = "zero") -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The profile table, quantiles (cases, modalities, 101) and feature grids (cases, modalities, cells) of every case."""
    profiles = [profile_case(row, info, background)
                for _, row in tqdm(manifest.iterrows(), total=len(manifest), desc=f"profiling {info.name}", unit="case")]
    table = pd.DataFrame([p.row for p in profiles])
    quantiles = np.stack([p.quantiles for p in profiles])
    grids = np.stack([p.grid for p in profiles])
    table["flags"] = outlier_flags(table, quantiles, info.modalities)
    return table, quantiles, grids


def write_features(path: str | Path, info: DatasetInfo, table: pd.DataFrame, quantiles: np.ndarray, grids: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, format=np.array(FORMAT), dataset=np.array(info.name),
                 case=np.array(table["case"].astype(str).to_list(), dtype=str),
                 group=np.array(table["group"].astype(str).to_list(), dtype=str),
                 modality=np.array(info.modalities, dtype=str), role=np.array([role_of(m) for m in info.modalities], dtype=str),
                 levels=LEVELS, quantiles=quantiles.astype(np.float32), grid=grids.astype(np.float32),
                 feature_grid=np.array(FEATURE_GRID))


@dataclass(frozen=True)
class Features:
    """One dataset's ``features.npz``."""

    dataset: str
    case: list[str]
    group: list[str]
    modality: list[str]
    role: list[str]
    quantiles: np.ndarray
    grid: np.ndarray


def read_features(path: str | Path) -> Features:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise GliosegError(f"features in format {data['format']}, expected {FORMAT}", path=path,
                                   hint="delete the file and re-run the profile step.")
            return Features(str(data["dataset"]), data["case"].tolist(), data["group"].tolist(), data["modality"].tolist(),
                            data["role"].tolist(), data["quantiles"], data["grid"])
    except (OSError, KeyError, ValueError) as exc:
        raise GliosegError(f"not a readable features file ({exc})", path=path,
                           hint="delete the file and re-run the profile step.") from None


# ------------------------------------------------------------------------------- the summary page


def summary_tables(table: pd.DataFrame, info: DatasetInfo) -> dict[str, pd.DataFrame]:
    """The dataset at a glance: counts, groups, shapes, spacings, intensities, volumes, flagged cases."""
    unit = "cm³" if info.physical_spacing else "px"
    overview = pd.DataFrame({"": ["cases", "patients", "cases without tumour", "flagged cases"],
                             "count": [len(table), table["patient"].nunique(), int((~table["tumour"].astype(bool)).sum()),
                                       int((table["flags"] != "").sum())]})
    groups = table["group"].replace("", "(none)").value_counts().rename_axis("group").reset_index(name="cases")
    shapes = _value_counts(table, "shape", "voxels")
    spacings = _value_counts(table, "spacing", "spacing (mm)" if info.physical_spacing else "spacing (not physical)")
    intensity_rows = []
    for modality in info.modalities:
        for stat in [*(f"p{p}" for p in PERCENTILES), "mean", "std"]:
            values = table[f"{modality}_{stat}"]
            intensity_rows.append({"modality": modality, "statistic": stat, "median over cases": values.median(),
                                   "min": values.min(), "max": values.max()})
    volume_rows = []
    for region in info.convention.regions:
        values = table[f"volume_{region}"]
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        volume_rows.append({"region": region, f"mean ({unit})": values.mean(), f"std ({unit})": spread,
                            f"median ({unit})": values.median(), f"min ({unit})": values.min(), f"max ({unit})": values.max(),
                            "cases with none": int((values == 0).sum())})
    flagged = table.loc[table["flags"] != "", ["case", "group", "flags"]]
    return {"Overview": overview, "Groups": groups, "Shapes": shapes, "Voxel spacings": spacings,
            "Intensities inside the brain": pd.DataFrame(intensity_rows), f"Tumour region volumes ({unit})": pd.DataFrame(volume_rows),
            "Flagged cases": flagged}


def _value_counts(table: pd.DataFrame, prefix: str, heading: str) -> pd.DataFrame:
    keys = table[[f"{prefix}_{a}" for a in "xyz"]].astype(str).agg(" × ".join, axis=1)
    return keys.value_counts().rename_axis(heading).reset_index(name="cases")


def summary_html(table: pd.DataFrame, info: DatasetInfo) -> str:
    """A self-contained HTML page of :func:`summary_tables`, as the report shows it."""
    parts = [f"<h1>Dataset {html.escape(info.name)} ({html.escape(info.layout)})</h1>",
             f"<p>Modalities: {html.escape(', '.join(info.modalities))}. Intensities are raw values inside the brain; "
             f"volumes in {'cm³' if info.physical_spacing else 'voxels (px: the spacing is not physical)'}.</p>"]
    for title, frame in summary_tables(table, info).items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append("<p>none</p>" if frame.empty else frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0,
                                                                     classes="profile"))
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>profile of {html.escape(info.name)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def profile_dataset(manifest_csv: str | Path, info_json: str | Path, out_csv: str | Path, out_html: str | Path,
                    out_features: str | Path, background: str = "zero") -> pd.DataFrame:
    """Rule ``profile``: a manifest to its profile table, summary page and features file."""
    info = read_dataset_info(info_json)
    manifest = read_manifest(manifest_csv)
    if manifest.empty:
        raise GliosegError("the manifest lists no cases", path=manifest_csv, hint="re-run the manifest step.")
    table, quantiles, grids = profile_manifest(manifest, info, background)
    for case, flags in zip(table["case"], table["flags"]):
        if flags:
            log.warning("%s: %s", case, flags)
    write_features(out_features, info, table, quantiles, grids)
    write_csv(out_csv, table)
    write_text(out_html, summary_html(table, info))
    return table
