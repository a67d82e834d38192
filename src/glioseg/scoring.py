"""The score stage: every predicted case against its reference label, per region.

Predictions are read back from the NIfTI files the infer stage wrote and the
truth from the raw dataset, so a score covers the whole chain, including the
mapping back to the original geometry and label convention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, labels_to_regions
from glioseg.manifest import DatasetInfo
from glioseg.metrics import score_region
from glioseg.nifti import load_image, read_volume, voxel_spacing
from glioseg.tables import SCORE_COLUMNS



def _regions(path: Path | str, convention: LabelConvention) -> np.ndarray:
    try:
        return labels_to_regions(read_volume(path, dtype=np.int32), convention).astype(bool)
    except ValueError as exc:
        raise GliosegError(str(exc), path=path, hint="predictions and labels must use the dataset's label convention.") from None


def score_case(prediction: Path | str, truth: Path | str, convention: LabelConvention) -> list[dict]:
    """One row per region for one case."""
    pred_image, truth_image = load_image(prediction), load_image(truth)
    if pred_image.shape != truth_image.shape or not np.allclose(pred_image.affine, truth_image.affine, atol=1e-3):
        raise GliosegError(f"prediction geometry {pred_image.shape} does not match the reference label {truth_image.shape} ({truth})",
                           path=prediction, hint="re-run inference for this experiment; the dataset may have changed.")
    pred, ref = _regions(prediction, convention), _regions(truth, convention)
    spacing = voxel_spacing(truth_image)
    return [{"region": region, **vars(score_region(pred[i], ref[i], spacing))} for i, region in enumerate(convention.regions)]


def score_predictions(pred_dir: str | Path, manifest: pd.DataFrame, info: DatasetInfo, cases: list[str], experiment: str,
                      fold: int) -> pd.DataFrame:
    """Score every listed case; a missing prediction is an error, never a silent gap in the table."""
    labels = manifest.set_index("case")["label"]
    rows = []
    for case in tqdm(cases, desc=f"scoring {experiment} fold {fold}", unit="case"):
        prediction = Path(pred_dir) / f"{case}.nii.gz"
        for row in score_case(prediction, labels[case], info.convention):
            rows.append({"experiment": experiment, "fold": fold, "dataset": info.name, "case": case, **row})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
