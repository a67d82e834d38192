"""The predictions of an evaluation, glioseg's or another tool's: finding each case's file and checking it.

Scoring and the import of predictions made elsewhere find and check each
case's prediction with the same functions (:func:`find_predictions`,
:func:`checked_prediction`), so a prediction the import accepts is one the
score stage reads the same way, and a bad one gets the same message in both.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, unexpected_labels
from glioseg.nifti import load_image, read_label

log = logging.getLogger(__name__)

PREDICTION_ENDINGS = (".nii.gz", ".nii")
#: How far a prediction's affine may be from its reference label's (float32 headers round-trip with ~1e-6 noise).
GEOMETRY_TOLERANCE = 1e-3
_NNUNET_IMAGE = re.compile(r"_\d{4}\.nii(\.gz)?$")
_GRID_HINT = ("predictions are label maps on each case's reference label grid: for glioseg's own, re-run inference (the "
              "dataset may have changed); for another tool's, save them in the original images' geometry, as nnU-Net does.")
_VALUES_HINT = ("predictions use the dataset's label convention; another tool's values (nnU-Net's consecutive 0, 1, 2, 3 "
                "for BraTS's 0, 1, 2, 4) are mapped back by an external experiment's label_map, or by glioseg "
                "import-predictions --label-map (an exported dataset's dataset.json says how: glioseg → label_values).")


def find_predictions(folder: str | Path, cases: Sequence[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Each case's ``<case>.nii.gz`` (or ``.nii``) in ``folder``, and a problem for each case without exactly one.

    A case with both endings is a problem, not a choice: the two files may
    differ, and picking one would score whichever happened to win.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is a file, not a folder of predictions" if folder.exists() else "no such folder of predictions"
        raise GliosegError(problem, path=folder, hint="give the folder that holds one <case>.nii.gz label map per case "
                                                      "(an external experiment: its predictions path; {fold} and "
                                                      "{evaluation} are filled in).")
    files: dict[str, Path] = {}
    problems: dict[str, str] = {}
    for case in cases:
        found = [folder / f"{case}{ending}" for ending in PREDICTION_ENDINGS if os.path.lexists(folder / f"{case}{ending}")]
        if not found:
            problems[case] = f"no {case}.nii.gz"
        elif len(found) > 1:
            problems[case] = f"two predictions, {found[0].name} and {found[1].name}: remove the one that is not meant"
        elif found[0].is_dir():
            problems[case] = f"{found[0].name} is a folder, not a label map"
        elif not found[0].exists():
            problems[case] = f"{found[0].name} is a broken link (to {os.readlink(found[0])})"
        else:
            files[case] = found[0]
    return files, problems


def naming_hint(folder: str | Path, cases: Sequence[str]) -> str:
    """What to do about missing predictions, with what the folder holds instead (another naming is then visible)."""
    names = sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(PREDICTION_ENDINGS))
    hint = f"predictions are named after the dataset's case ids, e.g. {cases[0]}.nii.gz (or .nii)"
    if not names:
        return f"{hint}; this folder holds no NIfTI file: has the tool that writes them finished?"
    hint += f"; this folder holds {len(names)} NIfTI file{'s' if len(names) != 1 else ''} such as {', '.join(names[:3])}"
    if all(_NNUNET_IMAGE.search(name) for name in names):
        hint += (": named as nnU-Net names input image channels (<case>_0000.nii.gz), so they look like images, "
                 "not predictions (nnU-Net writes predictions as <case>.nii.gz)")
    return hint + "."


def prediction_files(folder: str | Path, cases: Sequence[str], dataset_cases: Collection[str] = ()) -> dict[str, Path]:
    """Each case's prediction file in ``folder``; every missing or ambiguous one is named in one error.

    Files named after no case of the dataset (``dataset_cases``) are logged:
    they are not scored, and are often the sign of another naming.
    """
    files, problems = find_predictions(folder, cases)
    if problems:
        listing = "\n".join(f"    {case}: {problem}" for case, problem in problems.items())
        raise GliosegError(f"{len(problems)} of {len(cases)} predictions are missing or ambiguous:\n{listing}", path=folder,
                           hint=naming_hint(folder, cases))
    warn_unknown_predictions(folder, dataset_cases)
    return files


def warn_unknown_predictions(folder: str | Path, dataset_cases: Collection[str]) -> None:
    """Log the NIfTI files in ``folder`` named after no case of the dataset (nothing when ``dataset_cases`` is empty)."""
    if not dataset_cases:
        return
    known = set(dataset_cases)
    unknown = sorted(p.name for p in Path(folder).iterdir()
                     if p.name.endswith(PREDICTION_ENDINGS) and _case_of(p.name) not in known)
    if unknown:
        log.warning("%s: %d file%s named after no case of the dataset, not scored: %s", folder, len(unknown),
                    "s" if len(unknown) != 1 else "", ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))


def _case_of(name: str) -> str:
    return next(name.removesuffix(ending) for ending in PREDICTION_ENDINGS if name.endswith(ending))


def grid_difference(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> str | None:
    """How ``image``'s voxel grid differs from ``reference``'s (shape, spacing, origin, orientation), or None."""
    if image.shape != reference.shape:
        return f"shape {image.shape} differs from {reference.shape}"
    if np.allclose(image.affine, reference.affine, atol=GEOMETRY_TOLERANCE):
        return None
    spacing, reference_spacing = (np.round(np.linalg.norm(i.affine[:3, :3], axis=0), 4).tolist() for i in (image, reference))
    origin, reference_origin = (np.round(i.affine[:3, 3], 3).tolist() for i in (image, reference))
    if spacing != reference_spacing:
        return f"voxel spacing {spacing} differs from {reference_spacing}"
    if origin != reference_origin:
        return f"origin {origin} differs from {reference_origin}"
    return f"orientation differs (affine {np.round(image.affine, 3).tolist()} against {np.round(reference.affine, 3).tolist()})"


def remap_labels(values: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """``values`` with each key of ``mapping`` replaced by its value (all at once, so {1: 2, 2: 1} swaps)."""
    out = values.copy()
    for old, new in mapping.items():
        out[values == old] = new
    return out


def checked_prediction(path: str | Path, truth: str | Path, convention: LabelConvention,
                       mapping: Mapping[int, int] | None = None) -> np.ndarray:
    """A prediction's label values (after ``mapping``), refused with its file named when its grid is not the
    reference label's or a value is outside the convention: a cast or an ignored value would score it wrongly."""
    difference = grid_difference(load_image(path), load_image(truth))
    if difference:
        raise GliosegError(f"not on the reference label's grid ({truth}): {difference}", path=path, hint=_GRID_HINT)
    values = read_label(path)
    if mapping:
        values = remap_labels(values, mapping)
    bad = unexpected_labels(values, convention)
    if bad:
        raise GliosegError(f"label values {bad}{' after label_map' if mapping else ''} outside the {convention.name} "
                           f"convention {sorted(convention.values)}", path=path, hint=_VALUES_HINT)
    return values
