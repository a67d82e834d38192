"""The score stage: every predicted case against its reference label, per region.

Predictions are read back from the NIfTI files the infer stage wrote and the
truth from the raw dataset, so a score covers the whole chain, including the
mapping back to the original geometry and label convention. Distances are in
the dataset's voxel spacing: millimetres, or pixels where the spacing is not a
physical size (the ``hd95_unit`` column says which).

Every region row also carries the BraTS 2023 lesion-wise scores
(``LESION_SCORE_COLUMNS``), matched with the settings of the case's BraTS 2023
cohort, read from its id (``BraTS-MET-00001-000`` is MET), and with the adult
glioma (GLI) settings for any other case id.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice, compute_iou
from scipy import ndimage as ndi
from tqdm import tqdm

from glioseg.errors import GliosegError
from glioseg.evaluation import case_labels
from glioseg.labels import LabelConvention, labels_to_regions
from glioseg.manifest import DatasetInfo
from glioseg.metrics import BRATS2023_LESION_PARAMETERS, LesionWiseParameters, LesionWiseScore, score_lesions, score_region
from glioseg.nifti import load_image, read_label, voxel_spacing
from glioseg.prediction_files import checked_prediction, prediction_files
from glioseg.tables import HD95_UNIT, LESION_SCORE_COLUMNS, SCORE_COLUMNS, SLICE_SCORE_COLUMNS

_BRATS2023_CASE = re.compile(r"^BraTS-(?P<cohort>[A-Z]{3})-\d{5}-\d{3}$")


def _regions(path: Path | str, convention: LabelConvention) -> np.ndarray:
    try:
        return labels_to_regions(read_label(path), convention).astype(bool)
    except ValueError as exc:
        raise GliosegError(str(exc), path=path, hint="reference labels must use the dataset's label convention; "
                                                     "run the manifest step again if the dataset changed.") from None


def _masks(prediction: Path | str, truth: Path | str, convention: LabelConvention) -> tuple[np.ndarray, np.ndarray]:
    """The prediction's and the truth's region masks, the prediction checked against the truth's grid and the convention."""
    pred = labels_to_regions(checked_prediction(prediction, truth, convention), convention).astype(bool)
    return pred, _regions(truth, convention)


def lesion_parameters(case: str) -> LesionWiseParameters:
    """The lesion-wise settings for ``case``: its BraTS 2023 cohort's, read from the case id, else the glioma (GLI) ones."""
    match = _BRATS2023_CASE.match(case)
    return BRATS2023_LESION_PARAMETERS.get(match["cohort"] if match else "GLI", BRATS2023_LESION_PARAMETERS["GLI"])


def _lesion_columns(score: LesionWiseScore) -> dict:
    return dict(zip(LESION_SCORE_COLUMNS, (score.dice, score.hd95, score.lesions_found, score.lesions_missed,
                                           score.false_lesions), strict=True))


def score_case(prediction: Path | str, truth: Path | str, convention: LabelConvention,
               lesions: LesionWiseParameters | None = None) -> list[dict]:
    """One row per region for one case: the whole-region scores, then the lesion-wise ones (``lesions``: GLI's settings
    when not given)."""
    pred, ref = _masks(prediction, truth, convention)
    spacing = voxel_spacing(load_image(truth))
    lesions = lesions or BRATS2023_LESION_PARAMETERS["GLI"]
    return [{"region": region, **vars(score_region(pred[i], ref[i], spacing)),
             **_lesion_columns(score_lesions(pred[i], ref[i], spacing, lesions))} for i, region in enumerate(convention.regions)]


def score_predictions(pred_dir: str | Path, manifest: pd.DataFrame, info: DatasetInfo, cases: list[str], experiment: str,
                      fold: int, label: str | None = None) -> pd.DataFrame:
    """Score every listed case; a missing prediction is an error, never a silent gap in the table.

    ``label`` names the evaluation in the ``dataset`` column (default: the
    dataset's name; ``<dataset>+test`` for its held-out test patients).
    """
    labels = case_labels(manifest, cases)
    predictions = prediction_files(pred_dir, cases, manifest["case"].tolist())
    rows = []
    for case in tqdm(cases, desc=f"scoring {experiment} fold {fold}", unit="case"):
        for row in score_case(predictions[case], labels[case], info.convention, lesion_parameters(case)):
            rows.append({"experiment": experiment, "fold": fold, "dataset": label or info.name, "case": case, **row,
                         HD95_UNIT: info.distance_unit})
    return pd.DataFrame(rows, columns=[*SCORE_COLUMNS, HD95_UNIT, *LESION_SCORE_COLUMNS])


def slice_rows(pred: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Per axial slice of one region mask (X, Y, Z): Dice, IoU, pixel counts, and the tumour parts missed.

    Slices are numbered from 1 (``slice_number`` = z + 1), as the LGG release
    numbers its tif files, so a row names the file a reader would open.

    A *part* is a connected component of the truth in the slice; it is missed
    when no predicted pixel touches it (a two-part tumour with one part found
    has ``truth_parts`` 2 and ``missed_parts`` 1). Dice and IoU are MONAI's,
    computed for all slices at once, with empty truth and prediction scoring 1.
    """
    batch_pred = torch.as_tensor(np.moveaxis(pred, -1, 0)[:, None], dtype=torch.float32)
    batch_truth = torch.as_tensor(np.moveaxis(truth, -1, 0)[:, None], dtype=torch.float32)
    dice = compute_dice(batch_pred, batch_truth, include_background=True, ignore_empty=False)[:, 0].tolist()
    iou = compute_iou(batch_pred, batch_truth, include_background=True, ignore_empty=False)[:, 0].tolist()
    rows = []
    for z in range(truth.shape[-1]):
        parts, n_parts = ndi.label(truth[..., z])
        found = set(np.unique(parts[pred[..., z] & (parts > 0)]))
        rows.append({"slice_number": z + 1, "dice": dice[z], "iou": iou[z], "truth_pixels": int(truth[..., z].sum()),
                     "pred_pixels": int(pred[..., z].sum()), "truth_parts": n_parts, "missed_parts": n_parts - len(found)})
    return rows


def score_prediction_slices(pred_dir: str | Path, manifest: pd.DataFrame, info: DatasetInfo, cases: list[str], experiment: str,
                            fold: int, label: str | None = None) -> pd.DataFrame:
    """Per-slice scores of every listed case and region: what galleries and slice-level tables of 2D datasets read."""
    labels = case_labels(manifest, cases)
    predictions = prediction_files(pred_dir, cases, manifest["case"].tolist())
    rows = []
    for case in tqdm(cases, desc=f"scoring slices {experiment} fold {fold}", unit="case"):
        pred, ref = _masks(predictions[case], labels[case], info.convention)
        for i, region in enumerate(info.convention.regions):
            rows += [{"experiment": experiment, "fold": fold, "dataset": label or info.name, "case": case, "region": region, **row}
                     for row in slice_rows(pred[i], ref[i])]
    return pd.DataFrame(rows, columns=SLICE_SCORE_COLUMNS)
