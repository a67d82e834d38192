"""Summaries of per-case scores: the numbers a results table reports.

Cross-validated scores are aggregated in two ways that answer different
questions and give different spreads: pooling all cases (the std says how much
the model varies from patient to patient) and averaging within each fold first
(the std says how much training varies between folds). Both are reported and
labelled, so a reader never has to guess what a "±" means.

Summary frames are tidy, one row per (experiment, dataset, region, metric):
easy to filter, plot or pivot, and stable when metrics are added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api.typing import SeriesGroupBy

from glioseg.atomic import write_csv, write_text
from glioseg.errors import GliosegError
from glioseg.labels import REGIONS
from glioseg.tables import HD95_UNIT, LESION_SCORE_COLUMNS, SCORE_COLUMNS, hd95_unit

METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity")
ENSEMBLE_FOLD = -1
"""The fold of scores that an ensemble of every fold model produced (experiment ``<name>+ensemble``)."""
SCORE_KEYS: tuple[str, ...] = ("experiment", "fold", "dataset", "case", "region")
# Read as text so that case ids such as "00012" keep their leading zeros.
_TEXT_COLUMNS = {"experiment": str, "dataset": str, "case": str, "region": str}
_GROUP = ["experiment", "dataset", "region", "metric"]


class ReportInputError(GliosegError, ValueError):
    """A malformed report input; also a ValueError so callers need not know glioseg's error type."""


def read_checked_csv(
    path: str | Path, columns: Sequence[str], dtype: dict[str, type] | None = None
) -> pd.DataFrame:
    """Read a CSV, failing with the file's name and the missing columns rather than a KeyError later."""
    frame = pd.read_csv(path, dtype=dtype)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReportInputError(
            f"missing column(s) {missing}; found {list(frame.columns)}",
            path=path,
            hint=f"regenerate the file; it needs the columns {list(columns)}",
        )
    return frame


def load_scores(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate per-case score CSVs into one frame, sorted deterministically.

    Raises ValueError (a :class:`ReportInputError`) naming the file when a column
    is missing or a region is unknown, and when a (experiment, fold, dataset,
    case, region) row appears twice, which usually means a file was given twice.
    """
    if not paths:
        raise ValueError("no score files given")
    frames = [_read_scores(path) for path in paths]
    scores = pd.concat(frames, ignore_index=True)
    duplicated = scores[scores.duplicated(list(SCORE_KEYS), keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0][list(SCORE_KEYS)].to_dict()
        raise ValueError(f"{len(duplicated)} score rows share their {SCORE_KEYS}, e.g. {first}; was a file given twice?")
    return _sorted(scores, ["experiment", "dataset", "fold", "case", "region"])


def case_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over cases, all folds pooled, per (experiment, dataset, region, metric).

    Columns: experiment, dataset, region, metric, mean, std, n_cases. ``std`` is
    the sample std (ddof=1), reported as 0.0 rather than NaN for a single value.
    ``n_cases`` counts score rows, which is the number of cases when each case
    belongs to one fold (cross-validation); a test set scored by every fold's
    model counts once per fold.
    """
    tidy = _tidy(scores)
    summary = _mean_std(tidy.groupby(_GROUP)["value"], "n_cases")
    return _sorted(summary, _GROUP)


def fold_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over cases within each fold, then mean and std of those fold means.

    Columns: experiment, dataset, region, metric, mean, std, n_folds. ``std`` is
    the sample std over folds (ddof=1), 0.0 when there is a single fold.
    Averaging per fold first weights folds equally whatever their size.
    """
    per_fold = per_fold_summary(scores)
    summary = _mean_std(per_fold.groupby(_GROUP)["mean"], "n_folds")
    return _sorted(summary, _GROUP)


def per_fold_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over the cases of each fold: columns as :func:`case_summary` plus ``fold``.

    ``std`` is the sample std (ddof=1), 0.0 for a fold with a single case.
    """
    tidy = _tidy(scores)
    summary = _mean_std(tidy.groupby([*_GROUP, "fold"])["value"], "n_cases")
    return _sorted(summary, ["experiment", "dataset", "fold", "region", "metric"])


POOLED_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "precision", "f1", "iou")


def pooled_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-region voxel-count metrics over all evaluated cases pooled, and their average over regions.

    Columns: experiment, dataset, region (``mean`` for the class average),
    sensitivity, specificity, precision, f1, iou, n_cases. Pooling the
    confusion counts weights every voxel equally (a large tumour counts more
    than a small one), as a classification report over a test set does; the
    per-case tables above weight every case equally. An empty denominator
    (no truth, no prediction) gives 1.0, as in per-case scoring.
    """
    counts = scores.groupby(["experiment", "dataset", "region"], sort=False).agg(
        tp=("tp", "sum"), fp=("fp", "sum"), fn=("fn", "sum"), tn=("tn", "sum"), n_cases=("case", "count"))
    tp, fp, fn, tn = (counts[c].astype(float) for c in ("tp", "fp", "fn", "tn"))

    def ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
        return (numerator / denominator.where(denominator > 0)).fillna(1.0)

    pooled = pd.DataFrame({"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
                           "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
                           "iou": ratio(tp, tp + fp + fn), "n_cases": counts["n_cases"]}).reset_index()
    average = pooled.groupby(["experiment", "dataset"], sort=False).agg(
        **{m: (m, "mean") for m in POOLED_METRICS}, n_cases=("n_cases", "max")).reset_index()
    average["region"] = "mean"
    order = {r: i for i, r in enumerate((*REGIONS, "mean"))}
    combined = pd.concat([pooled, average], ignore_index=True)
    return combined.sort_values(["experiment", "dataset", "region"], key=lambda c: c.map(order) if c.name == "region" else c,
                                kind="stable").reset_index(drop=True)


def lesion_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """The BraTS 2023 lesion-wise Dice and HD95 per (experiment, dataset, region): mean and std over cases (all folds
    pooled), with the truth lesions found and missed and the false lesions summed over those cases.

    Columns: experiment, dataset, region, lesion_dice, lesion_dice_std, lesion_hd95, lesion_hd95_std, lesions_found,
    lesions_missed, false_lesions, n_cases. Rows of score files written before the lesion-wise columns existed are
    left out (empty frame when none has them): a mean over some cases would read as one over all.
    """
    columns = ["experiment", "dataset", "region", "lesion_dice", "lesion_dice_std", "lesion_hd95", "lesion_hd95_std",
               "lesions_found", "lesions_missed", "false_lesions", "n_cases"]
    if not set(LESION_SCORE_COLUMNS) <= set(scores.columns):
        return pd.DataFrame(columns=columns)
    scored = scores.dropna(subset=list(LESION_SCORE_COLUMNS))
    summary = scored.groupby(["experiment", "dataset", "region"], sort=False).agg(
        lesion_dice=("lesion_dice", "mean"), lesion_dice_std=("lesion_dice", "std"), lesion_hd95=("lesion_hd95", "mean"),
        lesion_hd95_std=("lesion_hd95", "std"), lesions_found=("lesions_found", "sum"),
        lesions_missed=("lesions_missed", "sum"), false_lesions=("false_lesions", "sum"),
        n_cases=("case", "count")).reset_index()
    summary[["lesion_dice_std", "lesion_hd95_std"]] = summary[["lesion_dice_std", "lesion_hd95_std"]].fillna(0.0)
    return _sorted(summary[columns], ["experiment", "dataset", "region"])


def markdown_report(scores: pd.DataFrame) -> str:
    """A human-readable report: Dice and HD95 over cases, over folds, and Dice per fold."""
    sections = [
        "# Segmentation scores",
        "Values are mean ± sample std (ddof=1; 0.000 when there is a single value). "
        f"Dice to 3 decimals; {_hd95_note(scores)}",
        "## Mean ± std over cases (all folds pooled)",
        _summary_table(case_summary(scores), "n_cases", "cases", hd95_unit(scores)),
        "## Mean ± std over folds (each fold's mean over its cases first)",
        _summary_table(fold_summary(scores), "n_folds", "folds", hd95_unit(scores)),
        "## Dice per fold (mean ± std over the fold's cases)",
        _per_fold_table(per_fold_summary(scores)),
        "## Per region over all voxels of the evaluated cases (confusion counts pooled; `mean` averages the regions)",
        _pooled_table(pooled_summary(scores)),
    ]
    lesions = lesion_summary(scores)
    if not lesions.empty:
        sections += [
            "## Lesion-wise, by the BraTS 2023 rules (mean ± std over cases; lesions summed over them)",
            "Each truth lesion is scored on its own, and a missed or a false lesion scores Dice 0 and the cohort's "
            "HD95 penalty, so a missed small lesion weighs as much as a large one.",
            _lesion_table(lesions, hd95_unit(scores)),
        ]
    return "\n\n".join(sections) + "\n"


def write_summary(score_csvs: Sequence[str | Path], out_csv: str | Path, out_md: str | Path,
                  published: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write all score rows (sorted) to ``out_csv`` and :func:`markdown_report` to ``out_md``, atomically.

    ``published``: numbers a paper reported (:func:`glioseg.report.published.resolve_entries`),
    printed in a last section beside glioseg's own. Both inputs are read and
    checked before anything is written, so a bad input leaves no output behind.
    """
    scores = load_scores(score_csvs)
    report = markdown_report(scores)
    if published:
        from glioseg.report.published import compare_published, markdown_section

        report += "\n" + markdown_section(compare_published(scores, published)) + "\n"
    write_csv(out_csv, scores)
    write_text(out_md, report)


def _read_scores(path: str | Path) -> pd.DataFrame:
    frame = read_checked_csv(path, SCORE_COLUMNS, dtype=_TEXT_COLUMNS)
    unknown = sorted(set(frame["region"]) - set(REGIONS))
    if unknown:
        raise ReportInputError(f"unknown region(s) {unknown}; expected {list(REGIONS)}", path=path)
    return frame


def _tidy(scores: pd.DataFrame) -> pd.DataFrame:
    """Long format, one row per (score row, metric), so every metric aggregates the same way."""
    ids = ["experiment", "dataset", "fold", "case", "region"]
    return scores.melt(id_vars=ids, value_vars=list(METRICS), var_name="metric", value_name="value")


def _mean_std(grouped: SeriesGroupBy, count_name: str) -> pd.DataFrame:
    summary = grouped.agg(mean="mean", std="std", count="count").reset_index()
    summary["std"] = summary["std"].fillna(0.0)  # ddof=1 std of one value is NaN; report no spread
    return summary.rename(columns={"count": count_name})


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by ``by``, regions and metrics in their conventional order rather than alphabetically."""
    order = {"region": {r: i for i, r in enumerate(REGIONS)}, "metric": {m: i for i, m in enumerate(METRICS)}}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order[column.name]) if column.name in order else column

    return frame.sort_values(by, key=key, kind="stable").reset_index(drop=True)


_FORMATS = {"dice": ".3f", "hd95": ".1f"}
_HEADINGS = {"dice": "Dice {}", "hd95": "HD95 {} ({unit})"}


def _hd95_note(scores: pd.DataFrame) -> str:
    """HD95's unit in words: pixels where a dataset's voxels have no physical size (LGG kaggle_3m), else mm."""
    unit = hd95_unit(scores)
    if unit == "mm":
        return "HD95 in mm to 1 decimal."
    if unit == "px":
        return "HD95 in px (pixels: these datasets' voxels have no physical size) to 1 decimal."
    pixels = sorted(set(scores.loc[scores[HD95_UNIT] == "px", "dataset"]))
    return f"HD95 to 1 decimal, in mm except in px (pixels: voxels with no physical size) for {', '.join(pixels)}."


def _cell(row: pd.Series | None, metric: str) -> str:
    if row is None:
        return "–"
    fmt = _FORMATS[metric]
    return f"{row['mean']:{fmt}} ± {row['std']:{fmt}}"


def _summary_table(summary: pd.DataFrame, count_column: str, count_heading: str, unit: str = "mm") -> str:
    """One row per (experiment, dataset); Dice then HD95 columns (in ``unit``) for each region."""
    header = ["experiment", "dataset", count_heading]
    header += [_HEADINGS[m].format(r, unit=unit) for m in _FORMATS for r in REGIONS]
    rows = []
    for (experiment, dataset), group in summary.groupby(["experiment", "dataset"], sort=False):
        cells = _lookup(group)
        count = int(group[count_column].max())
        rows.append([experiment, dataset, str(count)] + [_cell(cells.get((r, m)), m) for m in _FORMATS for r in REGIONS])
    return _markdown_table(header, rows)


def _per_fold_table(per_fold: pd.DataFrame) -> str:
    header = ["experiment", "dataset", "fold", "cases"] + [_HEADINGS["dice"].format(r) for r in REGIONS]
    rows = []
    for (experiment, dataset, fold), group in per_fold.groupby(["experiment", "dataset", "fold"], sort=False):
        cells = _lookup(group)
        count = int(group["n_cases"].max())
        rows.append([experiment, dataset, "ensemble" if fold == ENSEMBLE_FOLD else str(fold), str(count)]
                    + [_cell(cells.get((r, "dice")), "dice") for r in REGIONS])
    return _markdown_table(header, rows)


def _pooled_table(pooled: pd.DataFrame) -> str:
    header = ["experiment", "dataset", "region", *POOLED_METRICS, "cases"]
    rows = [[row["experiment"], row["dataset"], row["region"], *(f"{row[m]:.3f}" for m in POOLED_METRICS),
             str(int(row["n_cases"]))] for _, row in pooled.iterrows()]
    return _markdown_table(header, rows)


def _lesion_table(lesions: pd.DataFrame, unit: str) -> str:
    header = ["experiment", "dataset", "region", "cases", "lesion Dice", f"lesion HD95 ({unit})", "found", "missed", "false"]
    rows = [[row["experiment"], row["dataset"], row["region"], str(int(row["n_cases"])),
             f"{row['lesion_dice']:.3f} ± {row['lesion_dice_std']:.3f}",
             f"{row['lesion_hd95']:.1f} ± {row['lesion_hd95_std']:.1f}",
             *(str(int(row[c])) for c in ("lesions_found", "lesions_missed", "false_lesions"))]
            for _, row in lesions.iterrows()]
    return _markdown_table(header, rows)


def _lookup(group: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    return {(row["region"], row["metric"]): row for _, row in group.iterrows()}


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table; text columns left-aligned, numbers right-aligned."""
    align = [":---" if h in ("experiment", "dataset", "region") else "---:" for h in header]
    lines = [_markdown_row(header), _markdown_row(align)] + [_markdown_row(row) for row in rows]
    return "\n".join(lines)


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
