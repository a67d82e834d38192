"""Column contracts of the CSV tables that pass between stages (see docs/formats.md).

Kept in a module with no heavy imports, so that the stage writing a table and
the stages reading it share one definition without the readers (summaries,
figures) paying for torch and MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

SCORE_COLUMNS: tuple[str, ...] = (
    "experiment", "fold", "dataset", "case", "region",
    "dice", "hd95", "sensitivity", "specificity", "truth_voxels", "pred_voxels",
    "iou", "precision", "tp", "fp", "fn", "tn",
)  # fmt: skip


SLICE_SCORE_COLUMNS: tuple[str, ...] = (
    "experiment", "fold", "dataset", "case", "region", "slice",
    "dice", "iou", "truth_pixels", "pred_pixels", "truth_parts", "missed_parts",
)  # fmt: skip


def history_columns(regions: Sequence[str]) -> list[str]:
    """Columns of a training ``history.csv`` for the given regions, in order."""
    validation = [f"val_{metric}_{r}" for metric in ("dice", "iou") for r in (*regions, "mean")]
    return ["epoch", "train_loss", *validation, "lr", "seconds"]
