"""Column contracts of the CSV tables that pass between stages (see docs/formats.md).

Kept in a module with no heavy imports, so that the stage writing a table and
the stages reading it share one definition without the readers (summaries,
figures) paying for torch and MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCORE_COLUMNS: tuple[str, ...] = (
    "experiment", "fold", "dataset", "case", "region",
    "dice", "hd95", "sensitivity", "specificity", "truth_voxels", "pred_voxels",
    "iou", "precision", "tp", "fp", "fn", "tn",
)  # fmt: skip


HD95_UNIT = "hd95_unit"
"""An optional score column: ``mm``, or ``px`` where the dataset's voxel spacing is not a physical size (LGG
kaggle_3m's stacked tifs). Score files written before it existed lack it; their hd95 is in mm."""


LESION_SCORE_COLUMNS: tuple[str, ...] = ("lesion_dice", "lesion_hd95", "lesions_found", "lesions_missed", "false_lesions")
"""Optional score columns: the BraTS 2023 lesion-wise Dice and HD95 (hd95_unit applies) and their lesion counts
(:func:`glioseg.metrics.score_lesions`). Score files written before they existed lack them."""


SLICE_SCORE_COLUMNS: tuple[str, ...] = (
    "experiment", "fold", "dataset", "case", "region", "slice_number",
    "dice", "iou", "truth_pixels", "pred_pixels", "truth_parts", "missed_parts",
)  # fmt: skip
"""``slice_number`` counts axial slices from 1 (z index + 1), as kaggle_3m numbers its tif files."""


def hd95_unit(scores: Any) -> str:
    """The unit of a score table's hd95 column: ``mm``, ``px``, or ``mm/px`` when the table mixes datasets of both."""
    units = sorted(set(scores[HD95_UNIT].fillna("mm")) if HD95_UNIT in scores.columns else {"mm"})
    return "/".join(units) or "mm"


TIMING_COLUMNS: tuple[str, ...] = ("seconds", "data_seconds", "compute_seconds", "validation_seconds")
"""history.csv's wall times: the only columns in which a resumed training differs from an uninterrupted one."""


def history_columns(regions: Sequence[str]) -> list[str]:
    """Columns of a training ``history.csv`` for the given regions, in order.

    ``data_seconds`` is the time the epoch's training steps waited for batches, ``compute_seconds`` the time of the
    steps themselves, ``validation_seconds`` that of the epoch's validation (0 when it did not validate).
    """
    validation = [f"val_{metric}_{r}" for metric in ("dice", "iou") for r in (*regions, "mean")]
    return ["epoch", "train_loss", *validation, "lr", *TIMING_COLUMNS]
