"""Figures for a study: training curves, score distributions and example segmentations.

Figures are built on :class:`matplotlib.figure.Figure` directly, never pyplot, so
no global figure state accumulates in a long pipeline job or a test session and
no display is needed (PNGs render with Agg). Each function returns its Figure
and, given ``out``, also writes it atomically so a killed job leaves no half PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from glioseg.atomic import atomic_path
from glioseg.labels import REGIONS
from glioseg.nifti import load_image
from glioseg.report.summary import read_checked_csv
from glioseg.tables import hd95_unit

DPI = 120
PLOTTED_HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_dice_mean")
# Label value -> colour. Enhancing tumour is 4 in BraTS 2018-2021 and 3 in BraTS 2023.
LABEL_COLOURS: dict[int, str] = {1: "red", 2: "limegreen", 3: "yellow", 4: "yellow"}
_LABEL_NAMES = ((1, "necrosis / non-enhancing (1)"), (2, "edema (2)"), (4, "enhancing (4; 3 in BraTS 2023)"))
_BOX_METRICS = (("dice", "Dice"), ("hd95", "HD95 ({unit})"))  # unit: mm, or px where the spacing is not physical
_OVERLAY_ALPHA = 0.45
_View = tuple[np.ndarray, tuple[float, float]]  # a displayed slice and its (low, high) grey window


def plot_training_curves(
    histories: Mapping[int, str | Path], out: str | Path | None = None, title: str = ""
) -> Figure:
    """Training loss and validation mean Dice per epoch, one line per fold, each fold's best epoch starred.

    ``histories`` maps fold -> history CSV. Epochs without validation (empty
    ``val_dice_mean``) are skipped in the Dice panel, so sparse validation still
    draws a connected line.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2)
    last_epoch = 2  # an x range of at least one epoch, even for a one-epoch run
    for index, (fold, path) in enumerate(sorted(histories.items())):
        history = read_checked_csv(path, PLOTTED_HISTORY_COLUMNS)
        colour = f"C{index % 10}"
        loss_ax.plot(history["epoch"], history["train_loss"], color=colour, label=f"fold {fold}")
        _plot_validation(dice_ax, history, fold, colour)
        last_epoch = max(last_epoch, int(history["epoch"].max()))
    _style_curve_axes(loss_ax, dice_ax, last_epoch)
    if title:
        fig.suptitle(title)
    return finish_figure(fig, out)


def plot_score_boxplots(scores: pd.DataFrame, out: str | Path | None = None) -> Figure:
    """Per-case Dice (top row) and HD95 (bottom row) by region, one box per experiment (and dataset if several).

    Every case is drawn as a jittered point over its box (outlier markers are
    off, since the points already show them): with a few dozen cases a box
    alone hides how few values it summarises. Jitter uses a fixed seed so the
    figure is reproducible. HD95 uses a symmetric-log axis: a missed or
    spurious region scores the image diagonal (hundreds of mm), which on a
    linear axis flattens the few-millimetre errors of every other case.
    """
    groups = _box_groups(scores)
    experiments = list(dict.fromkeys(experiment for experiment, _, _ in groups))
    colours = [f"C{experiments.index(experiment) % 10}" for experiment, _, _ in groups]  # one colour per experiment
    width = max(9.0, 1.0 * len(groups) * len(REGIONS) + 1.5)
    fig = Figure(figsize=(width, 6.5), layout="constrained")
    axes = fig.subplots(len(_BOX_METRICS), len(REGIONS), squeeze=False, sharey="row")
    rng = np.random.default_rng(0)
    for row, (metric, label_format) in enumerate(_BOX_METRICS):
        metric_label = label_format.format(unit=hd95_unit(scores))
        for col, region in enumerate(REGIONS):
            ax = axes[row, col]
            values = [rows.loc[rows["region"] == region, metric].to_numpy() for _, _, rows in groups]
            _draw_boxes(ax, values, [label for _, label, _ in groups], colours, rng)
            ax.set_title(f"{metric_label}, {region}")
            if metric == "hd95":
                ax.set_yscale("symlog", linthresh=1.0)
        axes[row, 0].set_ylabel(metric_label)
    return finish_figure(fig, out)


def plot_case_montage(
    scores: pd.DataFrame,
    manifest: pd.DataFrame,
    predictions: Mapping[int, str | Path],
    out: str | Path | None = None,
) -> Figure:
    """The best, median and worst case of one experiment on one dataset, by mean Dice over regions.

    One row per case: each ``image_*`` modality, then the truth and the
    prediction over FLAIR (or the first modality when there is no FLAIR), all
    on the same axial slice, the one with the largest tumour area in the truth.
    Volumes are reoriented to RAS first, so "axial" and "upright" hold whatever
    the file's voxel order; slices are shown in radiological convention
    (patient's right on the viewer's left, marked "R"); the slice number in
    each row title counts in that reoriented volume. Each modality is windowed
    to the 1st-99th percentile of its nonzero voxels.
    ``predictions`` maps fold -> folder of ``<case>.nii.gz``; a case's fold is
    read from ``scores``.
    """
    _require_single_study(scores)
    picks = pick_montage_cases(scores)
    modalities = [column for column in manifest.columns if column.startswith("image_")]
    entries = manifest.assign(case=manifest["case"].astype(str)).set_index("case")
    columns = len(modalities) + 2
    fig = Figure(figsize=(2.2 * columns, 2.6 * len(picks) + 0.5), layout="constrained")
    rows = fig.subfigures(len(picks), 1, squeeze=False)[:, 0]
    for subfig, (_, pick) in zip(rows, picks.iterrows()):
        entry = _manifest_entry(entries, pick["case"])
        _draw_case_row(subfig, pick, entry, modalities, _prediction_path(predictions, pick))
    handles = [Patch(color=LABEL_COLOURS[value], label=name) for value, name in _LABEL_NAMES]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    return finish_figure(fig, out)


def pick_montage_cases(scores: pd.DataFrame) -> pd.DataFrame:
    """Best, median and worst (fold, case) by mean Dice over regions, in that order.

    Columns: role, fold, case, one Dice column per region, mean_dice. The median
    is the lower median for an even count; ties are broken by case name so the
    pick is deterministic. With fewer than three cases a row can carry two
    roles (e.g. "median/worst").
    """
    if scores.empty:
        raise ValueError("no scores to pick montage cases from")
    dice = scores.pivot_table(index=["fold", "case"], columns="region", values="dice").reindex(columns=list(REGIONS))
    dice.columns = [f"dice_{region}" for region in REGIONS]
    dice["mean_dice"] = dice.mean(axis=1)
    ranked = dice.reset_index().sort_values(["mean_dice", "case", "fold"], ascending=[False, True, True])
    count = len(ranked)
    roles: dict[int, list[str]] = {}
    for role, position in (("best", 0), ("median", count // 2), ("worst", count - 1)):
        roles.setdefault(position, []).append(role)
    picked = ranked.iloc[list(roles)].reset_index(drop=True)
    picked.insert(0, "role", ["/".join(names) for names in roles.values()])
    return picked


def tumour_slice(label: np.ndarray) -> int:
    """Index along the last axis of the largest tumour cross-section, or the middle slice if there is no tumour."""
    areas = np.count_nonzero(label, axis=(0, 1))
    return int(np.argmax(areas)) if areas.any() else label.shape[2] // 2


def axial_view(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of an RAS volume as displayed: anterior up, patient's right on the left."""
    return radiological(volume[:, :, k])


def radiological(plane: np.ndarray) -> np.ndarray:
    """An axial plane in RA order (x to the right, y to the front) as displayed: anterior up, patient's right on the left."""
    return np.rot90(plane)[:, ::-1]


def axial_slice(image: nib.Nifti1Image, k: int) -> np.ndarray:
    """Slice ``k`` along the file's last axis (the one 2D models and slice scores count) as displayed.

    Its two in-plane axes are put in RA order by the affine first, so BraTS
    (stored LPS), LGG stacks and RAS files all show anterior up. A last axis
    that is not inferior–superior (a sagittal or coronal stack) is shown as
    stored.
    """
    plane = np.asarray(image.dataobj[..., k])
    orientation = nib.io_orientation(image.affine)
    if orientation[2, 0] == 2:
        plane = nib.orientations.apply_orientation(plane, orientation[:2])
    return radiological(plane)


def finish_figure(fig: Figure, out: str | Path | None) -> Figure:
    """Return the figure, after writing it atomically as a PNG when ``out`` is given."""
    if out is not None:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    return fig


def _plot_validation(ax: Axes, history: pd.DataFrame, fold: int, colour: str) -> None:
    validated = history.dropna(subset=["val_dice_mean"])
    if validated.empty:
        ax.plot([], [], color=colour, label=f"fold {fold}: no validation")
        return
    best = validated.loc[validated["val_dice_mean"].idxmax()]
    label = f"fold {fold}: best {best['val_dice_mean']:.3f} @ epoch {int(best['epoch'])}"
    ax.plot(validated["epoch"], validated["val_dice_mean"], color=colour, marker="o", markersize=2.5, label=label)
    ax.scatter([best["epoch"]], [best["val_dice_mean"]], marker="*", s=180, color=colour, edgecolors="black", zorder=3)


def _style_curve_axes(loss_ax: Axes, dice_ax: Axes, last_epoch: int) -> None:
    for ax in (loss_ax, dice_ax):
        ax.set_xlim(1, last_epoch)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.set_title("Training loss")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize="small")
    dice_ax.set_title("Validation Dice, mean of TC/WT/ET")
    dice_ax.set_ylabel("mean Dice")
    star = Line2D([], [], marker="*", markersize=11, linestyle="", color="grey", markeredgecolor="black")
    handles, labels = dice_ax.get_legend_handles_labels()
    dice_ax.legend([*handles, star], [*labels, "best epoch"], fontsize="small", loc="lower right")


def _box_groups(scores: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(experiment, tick label, rows) per experiment, or per (experiment, dataset) when several datasets are present."""
    if scores["dataset"].nunique() > 1:
        return [(exp, f"{exp}\n{ds}", rows) for (exp, ds), rows in scores.groupby(["experiment", "dataset"])]
    return [(exp, exp, rows) for exp, rows in scores.groupby("experiment")]


def _draw_boxes(
    ax: Axes, values: list[np.ndarray], labels: list[str], colours: list[str], rng: np.random.Generator
) -> None:
    positions = np.arange(1, len(values) + 1)
    boxes = ax.boxplot(values, positions=positions, widths=0.55, showfliers=False, patch_artist=True)
    for box, colour in zip(boxes["boxes"], colours):
        box.set(facecolor=colour, alpha=0.35)
    for median in boxes["medians"]:
        median.set(color="black", linewidth=1.5)
    for position, points in zip(positions, values):
        jitter = rng.uniform(-0.15, 0.15, size=len(points))
        ax.scatter(position + jitter, points, s=10, color="black", alpha=0.6, linewidths=0, zorder=3)
    ticks = [f"{label}\n(n={len(points)})" for label, points in zip(labels, values)]
    ax.set_xticks(positions, ticks, fontsize="small")
    ax.grid(axis="y", alpha=0.3)


def _require_single_study(scores: pd.DataFrame) -> None:
    studies = scores[["experiment", "dataset"]].drop_duplicates()
    if len(studies) != 1:
        found = [tuple(row) for row in studies.itertuples(index=False)]
        raise ValueError(f"a montage shows one experiment on one dataset; filter the scores first (found {found})")


def _manifest_entry(entries: pd.DataFrame, case: str) -> pd.Series:
    if case not in entries.index:
        raise ValueError(f"case {case!r} is in the scores but not in the manifest")
    return entries.loc[case]


def _prediction_path(predictions: Mapping[int, str | Path], pick: pd.Series) -> Path:
    fold, case = int(pick["fold"]), pick["case"]
    if fold not in predictions:
        raise ValueError(f"no predictions folder given for fold {fold} (case {case!r}); got folds {sorted(predictions)}")
    return Path(predictions[fold]) / f"{case}.nii.gz"


def _draw_case_row(
    subfig: SubFigure, pick: pd.Series, entry: pd.Series, modalities: list[str], prediction_path: Path
) -> None:
    truth = _load_label(entry["label"])
    prediction = _load_label(prediction_path, expected_shape=truth.shape)
    k = tumour_slice(truth)
    views = {m: _windowed_view(entry[m], k, truth.shape) for m in modalities}
    axes = subfig.subplots(1, len(modalities) + 2)
    for ax, modality in zip(axes, modalities):
        image, window = views[modality]
        ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
        ax.set_title(modality.removeprefix("image_"), fontsize="small")
    background = views["image_flair" if "image_flair" in views else modalities[0]]
    _draw_overlay(axes[-2], background, axial_view(truth, k), "truth")
    _draw_overlay(axes[-1], background, axial_view(prediction, k), "prediction")
    for ax in axes:
        ax.set_axis_off()
    axes[0].text(0.03, 0.5, "R", transform=axes[0].transAxes, color="white", fontsize="small", va="center")
    dice = " · ".join(f"{region} {pick[f'dice_{region}']:.3f}" for region in REGIONS)
    title = f"{pick['role']}: {pick['case']} (fold {int(pick['fold'])}), axial slice {k}, Dice {dice}"
    subfig.suptitle(title, fontsize="medium")


def _draw_overlay(ax: Axes, background: _View, labels: np.ndarray, title: str) -> None:
    image, window = background
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
    ax.imshow(_label_rgba(labels), interpolation="nearest")
    ax.set_title(title, fontsize="small")


def _label_rgba(labels: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4))
    for value, colour in LABEL_COLOURS.items():
        rgba[labels == value] = (*to_rgb(colour), _OVERLAY_ALPHA)
    return rgba


def _load_canonical(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Voxel array reoriented to RAS, so the last axis is inferior-to-superior whatever the file's order.

    A missing or unreadable file raises :class:`GliosegError` naming it (see :mod:`glioseg.nifti`).
    """
    array = np.asanyarray(nib.as_closest_canonical(load_image(path)).dataobj)
    if expected_shape is not None and array.shape != expected_shape:
        raise ValueError(f"{path}: shape {array.shape} differs from the label's {expected_shape}")
    return array


def _load_label(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    return np.rint(_load_canonical(path, expected_shape)).astype(np.int16)


def _windowed_view(path: str | Path, k: int, shape: tuple[int, ...]) -> _View:
    """Displayed slice ``k`` and its grey window, 1st-99th percentile of the volume's nonzero voxels."""
    volume = _load_canonical(path, shape).astype(np.float32)
    nonzero = volume[volume != 0]
    low, high = np.percentile(nonzero, [1, 99]) if nonzero.size else (0.0, 1.0)
    return axial_view(volume, k), (float(low), float(max(high, low + 1e-6)))
