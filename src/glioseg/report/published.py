"""Numbers a paper reported, beside glioseg's own for the same experiment, evaluation, fold, region and metric.

A study config's ``published`` maps experiment names to entries (schema:
``definitions → published``). Each entry says what was reported and how it
was aggregated:

* ``aggregate: cases``: the mean over cases of a per-case score (Dice, HD95,
  IoU, sensitivity, specificity, precision; ``f1`` is Dice per case), over the
  cases of ``fold``, or, for ``fold: mean``, the mean of the fold means (as a
  paper's "average over folds" is computed);
* ``aggregate: voxels``: sensitivity, specificity, precision, F1 (= Dice) or
  IoU of every evaluated voxel pooled (the summary's pooled table).

``region: mean`` averages the three regions' values. ``comparable: false``
marks a number that is not what glioseg computes (another voxel population,
another metric definition): it is listed with its ``note``, and glioseg's
value and the difference are left blank rather than set beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from glioseg.atomic import write_csv
from glioseg.errors import GliosegError
from glioseg.labels import REGIONS
from glioseg.report.figures import finish_figure

COLUMNS = ["experiment", "evaluation", "fold", "region", "metric", "aggregate", "published", "glioseg", "difference",
           "n_cases", "comparable", "source", "note"]
CASE_METRICS = {"dice": "dice", "f1": "dice", "hd95": "hd95", "iou": "iou", "sensitivity": "sensitivity",
                "specificity": "specificity", "precision": "precision"}
VOXEL_METRICS = ("sensitivity", "specificity", "precision", "f1", "dice", "iou")


def resolve_entries(config: Mapping[str, Any], source: str = "config") -> list[dict[str, Any]]:
    """Every published entry of a validated config as one flat record, ``experiment`` and ``evaluation`` filled in.

    Raises :class:`GliosegError` for an entry whose experiment is not in the
    study, or whose aggregate cannot give its metric.
    """
    experiments = config["experiments"]
    entries = []
    for experiment, items in config.get("published", {}).items():
        if experiment not in experiments:
            raise GliosegError(f"published numbers are given for experiment '{experiment}', which the study does not define",
                               path=source, hint=f"name one of {sorted(experiments)} under 'published' (grid experiments by "
                                                 "their full name, e.g. main-unet-bcedice-adam).")
        for item in items:
            entry = {"experiment": experiment, "evaluation": item.get("evaluation") or experiments[experiment]["dataset"],
                     "fold": item.get("fold", "mean"), "aggregate": item.get("aggregate", "cases"),
                     "comparable": item.get("comparable", True), "note": item.get("note", ""),
                     **{key: item[key] for key in ("metric", "region", "value", "source")}}
            if entry["aggregate"] == "voxels" and entry["metric"] not in VOXEL_METRICS:
                raise GliosegError(f"published → {experiment}: {entry['metric']} is not a pooled-voxel metric", path=source,
                                   hint=f"use aggregate: cases, or one of {list(VOXEL_METRICS)}.")
            entries.append(entry)
    return entries


def _case_value(rows: pd.DataFrame, metric: str, fold: Any) -> float:
    column = CASE_METRICS[metric]
    if fold == "mean":
        return float(rows.groupby("fold")[column].mean().mean())
    return float(rows[column].mean())


def _pooled_value(rows: pd.DataFrame, metric: str) -> float:
    tp, fp, fn, tn = (float(rows[c].sum()) for c in ("tp", "fp", "fn", "tn"))
    numerator, denominator = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "precision": (tp, tp + fp),
                              "f1": (2 * tp, 2 * tp + fp + fn), "dice": (2 * tp, 2 * tp + fp + fn),
                              "iou": (tp, tp + fp + fn)}[metric]
    return numerator / denominator if denominator > 0 else 1.0


def glioseg_value(scores: pd.DataFrame, entry: Mapping[str, Any]) -> tuple[float, int]:
    """glioseg's number for one entry and the cases it is computed over (NaN, 0 when nothing was scored)."""
    rows = scores[(scores["experiment"] == entry["experiment"]) & (scores["dataset"] == entry["evaluation"])]
    if entry["fold"] != "mean":
        rows = rows[rows["fold"].astype(int) == int(entry["fold"])]
    regions = list(REGIONS) if entry["region"] == "mean" else [entry["region"]]
    rows = rows[rows["region"].isin(regions)]
    present = [region for region in regions if (rows["region"] == region).any()]
    if len(present) < len(regions):
        return float("nan"), 0
    per_region = []
    for region in regions:
        selected = rows[rows["region"] == region]
        if entry["aggregate"] == "voxels":
            per_region.append(_pooled_value(selected, entry["metric"]))
        else:
            per_region.append(_case_value(selected, entry["metric"], entry["fold"]))
    return float(np.mean(per_region)), int(rows[["fold", "case"]].drop_duplicates().shape[0])


def compare_published(scores: pd.DataFrame, entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per published entry: the published value, glioseg's, and glioseg minus published (blank when not comparable)."""
    rows = []
    for entry in entries:
        ours, cases = glioseg_value(scores, entry) if entry["comparable"] else (float("nan"), 0)
        rows.append({**{key: entry[key] for key in ("experiment", "evaluation", "region", "metric", "aggregate", "source", "note",
                                                    "comparable")},
                     "fold": str(entry["fold"]), "published": float(entry["value"]), "glioseg": round(ours, 6),
                     "difference": round(ours - float(entry["value"]), 6), "n_cases": cases})
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown_section(comparison: pd.DataFrame) -> str:
    """The summary's section: published and glioseg's numbers side by side, non-comparable ones said so."""
    if comparison.empty:
        return ""
    lines = ["## Published numbers beside glioseg's",
             "Each row: what the study reported, glioseg's own number computed the same way (mean over cases per fold, the "
             "mean of fold means for `mean`, or all voxels pooled), and glioseg − published. A dash: not comparable (see the "
             "note) or not scored.",
             "",
             "| experiment | evaluation | fold | region | metric | aggregate | published | glioseg | difference | cases | source / note |",
             "| :--- | :--- | ---: | :--- | :--- | :--- | ---: | ---: | ---: | ---: | :--- |"]
    for row in comparison.itertuples(index=False):
        ours = "–" if np.isnan(row.glioseg) else f"{row.glioseg:.3f}"
        difference = "–" if np.isnan(row.difference) else f"{row.difference:+.3f}"
        note = row.source + (f"; {row.note}" if row.note else "")
        if not row.comparable:
            note = f"**not comparable**: {note}"
        cells = [row.experiment, row.evaluation, row.fold, row.region, row.metric, row.aggregate, f"{row.published:.3f}", ours,
                 difference, str(row.n_cases or "–"), note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_published(comparison: pd.DataFrame, out: str | Path | None = None) -> Figure:
    """Published (hollow) and glioseg's (filled) value per entry, joined by a line; non-comparable entries greyed."""
    labels = [f"{r.experiment} · {r.evaluation} · fold {r.fold} · {r.region} {r.metric}" for r in comparison.itertuples(index=False)]
    height = max(2.5, 0.28 * len(labels) + 1.2)
    fig = Figure(figsize=(10, height), layout="constrained")
    ax = fig.subplots()
    experiments = list(dict.fromkeys(comparison["experiment"]))
    for y, row in enumerate(comparison.itertuples(index=False)):
        colour = f"C{experiments.index(row.experiment) % 10}" if row.comparable else "grey"
        if not np.isnan(row.glioseg):
            ax.plot([row.published, row.glioseg], [y, y], color=colour, linewidth=1, alpha=0.6)
            ax.scatter([row.glioseg], [y], color=colour, s=30, zorder=3)
        ax.scatter([row.published], [y], facecolors="white", edgecolors=colour, s=30, zorder=3)
        if not row.comparable:
            ax.annotate("not comparable", (row.published, y), xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize="x-small", color="grey")
    ax.set_yticks(range(len(labels)), labels, fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlabel("value (Dice, IoU, sensitivity… as labelled)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="black", label="published"),
                       Line2D([], [], marker="o", linestyle="", color="black", label="glioseg")], fontsize="small", loc="best")
    return finish_figure(fig, out)


def write_comparison(scores: pd.DataFrame, entries: Sequence[Mapping[str, Any]], out_csv: str | Path, out_png: str | Path) -> pd.DataFrame:
    """Rule ``compare_published``: the comparison table and its figure."""
    comparison = compare_published(scores, entries)
    write_csv(out_csv, comparison)
    plot_published(comparison, out_png)
    return comparison
