"""Slice galleries: the kinds of success and failure a 2D study reports, picked from the slice scores.

Buda et al. and study 4 show hand-picked slices: good predictions, missed
small tumours, a two-part tumour with one part missed, false positives and
clean slices without tumour. Here each row is chosen from
``slice_scores/<experiment>/fold<k>/<dataset>.csv`` by a stated rule
(:data:`ROLES`), so the figure is reproducible and cannot flatter the model.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from glioseg.nifti import load_image
from glioseg.report.figures import axial_slice, finish_figure
from glioseg.report.summary import read_checked_csv
from glioseg.tables import SLICE_SCORE_COLUMNS

Pick = Callable[[pd.DataFrame], pd.DataFrame]


def _good(s: pd.DataFrame) -> pd.DataFrame:
    return s[s["truth_pixels"] > 0].sort_values(["dice", "truth_pixels"], ascending=[False, False])


def _missed_small(s: pd.DataFrame) -> pd.DataFrame:
    return s[(s["truth_pixels"] > 0) & (s["missed_parts"] == s["truth_parts"])].sort_values("truth_pixels")


def _part_missed(s: pd.DataFrame) -> pd.DataFrame:
    partly = (s["truth_parts"] >= 2) & (s["missed_parts"] > 0) & (s["missed_parts"] < s["truth_parts"])
    return s[partly].sort_values("truth_pixels", ascending=False)


def _false_positive(s: pd.DataFrame) -> pd.DataFrame:
    return s[(s["truth_pixels"] == 0) & (s["pred_pixels"] > 0)].sort_values("pred_pixels", ascending=False)


def _clean(s: pd.DataFrame) -> pd.DataFrame:
    clean = s[(s["truth_pixels"] == 0) & (s["pred_pixels"] == 0)]
    return clean.iloc[::max(1, len(clean) // 8)]  # spread over cases and heights, not the first slices of one case


ROLES: dict[str, tuple[str, Pick]] = {
    "good": ("highest Dice among slices with tumour", _good),
    "missed small tumour": ("tumour with no predicted pixel on it, smallest first", _missed_small),
    "part of a tumour missed": ("two or more tumour parts, at least one found and one missed, largest first", _part_missed),
    "false positive": ("prediction on a slice without tumour, largest first", _false_positive),
    "clean, no tumour": ("no tumour and no prediction, spread over the evaluation", _clean),
}


def pick_gallery(slice_scores: pd.DataFrame, per_role: int = 4, region: str = "WT") -> pd.DataFrame:
    """Up to ``per_role`` slices per role (columns as the slice scores plus ``role``); ties broken by case and slice."""
    scores = slice_scores[slice_scores["region"] == region].sort_values(["case", "slice_number"], kind="stable")
    picks = []
    for role, (_, pick) in ROLES.items():
        chosen = pick(scores).head(per_role)
        picks.append(chosen.assign(role=role))
    return pd.concat(picks, ignore_index=True)


def plot_gallery(slice_csvs: list[str | Path], manifest: pd.DataFrame, predictions: Mapping[int, str | Path],
                 out: str | Path | None = None, per_role: int = 4, region: str = "WT") -> Figure:
    """One row per role: FLAIR (or the first modality) with the truth outlined in green and the prediction in red."""
    scores = pd.concat([read_checked_csv(path, SLICE_SCORE_COLUMNS, dtype={"case": str}) for path in slice_csvs])
    picks = pick_gallery(scores, per_role, region)
    entries = manifest.assign(case=manifest["case"].astype(str)).set_index("case")
    modality = "image_flair" if "image_flair" in entries.columns else next(c for c in entries.columns if c.startswith("image_"))
    fig = Figure(figsize=(2.4 * per_role + 2.6, 2.6 * len(ROLES) + 0.6), layout="constrained")
    grid = fig.subplots(len(ROLES), per_role, squeeze=False)
    for row, (role, (rule, _)) in zip(grid, ROLES.items()):
        chosen = picks[picks["role"] == role]
        for ax, (_, pick) in zip(row, chosen.iterrows()):
            _draw_slice(ax, pick, entries.loc[pick["case"]], modality, Path(predictions[int(pick["fold"])]))
        for ax in row:
            ax.set_axis_off()
        found = f"{len(chosen)} shown" if len(chosen) else "none in this evaluation"
        row[0].text(-0.06, 0.5, f"{role} ({found})\n" + textwrap.fill(rule, 34), transform=row[0].transAxes,
                    ha="right", va="center", fontsize="small")
    handles = [Line2D([], [], color="lime", label="truth"), Line2D([], [], color="red", label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(f"{region} slices by kind of result, chosen from the slice scores")
    return finish_figure(fig, out)


def _draw_slice(ax, pick: pd.Series, entry: pd.Series, modality: str, predictions: Path) -> None:
    """One picked slice; its title gives the slice number counted from 1, as the LGG tif files are numbered."""
    number = int(pick["slice_number"])
    z = number - 1
    image = axial_slice(load_image(entry[modality]), z).astype(np.float32)
    truth = axial_slice(load_image(entry["label"]), z) > 0
    prediction = axial_slice(load_image(predictions / f"{pick['case']}.nii.gz"), z) > 0
    nonzero = image[image != 0]
    low, high = np.percentile(nonzero, [1, 99]) if nonzero.size else (0.0, 1.0)
    ax.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6))
    for mask, colour in ((truth, "lime"), (prediction, "red")):
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(f"{pick['case']}\nslice {number} · Dice {pick['dice']:.2f}", fontsize="x-small")
