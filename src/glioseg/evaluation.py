"""Which cases a stage works on (a fold's training and validation cases, or an evaluation's), and their predictions.

Infer and score both call :func:`cases_for`, so a prediction folder and its
score table always describe the same cases; training calls
:func:`training_cases`. Cases that are the same scans as another dataset's
(found by content, see ``glioseg.datasets.overlap``) are left out where the
experiment or the evaluation says so.

Scoring and the import of predictions made elsewhere find and check each
case's prediction with the same functions (:func:`find_predictions`,
:func:`checked_prediction`), so a prediction the import accepts is one the
score stage reads the same way, and a bad one gets the same message in both.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, unexpected_labels
from glioseg.nifti import load_image, read_label
from glioseg.splits import fold_cases

log = logging.getLogger(__name__)

SUBSETS = ("val", "test", "all")


_FOLDS_HINT = "point --splits at the folds.json the split step wrote (results/splits/<dataset>/folds.json), or run that step again."


def read_folds(path: str | Path) -> dict:
    """A fold JSON as the split step writes it; a missing, garbled or foreign file is a :class:`GliosegError` naming it."""
    try:
        folds = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GliosegError("no such fold JSON", path=path, hint=_FOLDS_HINT) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GliosegError(f"unreadable fold JSON ({type(exc).__name__}: {exc})", path=path, hint=_FOLDS_HINT) from None
    if isinstance(folds, dict):
        folds = {**folds, "testing": folds.get("testing", [])}  # a datalist without held-out cases has none
    entries = (folds.get("training"), folds.get("testing")) if isinstance(folds, dict) else (None, None)
    if not all(isinstance(items, list) and all(isinstance(item, dict) and "case" in item for item in items) for items in entries) \
            or not all("fold" in item for item in entries[0]):
        raise GliosegError("not a glioseg fold JSON: it needs 'training' (entries with case and fold) and, if any cases "
                           "are held out, 'testing' (entries with case)", path=path, hint=_FOLDS_HINT)
    return folds


def case_labels(manifest: pd.DataFrame, cases: Sequence[str]) -> dict[str, str]:
    """Each case's reference label file; cases of the split that the manifest lacks are named, all at once."""
    labels = dict(zip(manifest["case"], manifest["label"], strict=True))
    unknown = [case for case in cases if case not in labels]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise GliosegError(f"{len(unknown)} of {len(cases)} cases of the split are not in the manifest: {shown}",
                           hint="the split (--splits) and the manifest (--manifest) must be of the same dataset; if the "
                                "dataset changed, run the manifest and split steps again.")
    return {case: labels[case] for case in cases}


def evaluation_cases(folds: dict, fold: int, subset: str, exclude: set[str] = frozenset()) -> list[str]:
    """The cases of a fold JSON to evaluate: ``val`` (fold ``fold``), ``test`` (held out) or ``all``; minus ``exclude``."""
    if subset == "val":
        _, cases = fold_cases(folds, fold)
    elif subset == "test":
        cases = [item["case"] for item in folds["testing"]]
    elif subset == "all":
        cases = [item["case"] for item in folds["training"] + folds["testing"]]
    else:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    return [case for case in cases if case not in exclude]


def excluded_cases(overlap_csvs: Sequence[str | Path] = ()) -> set[str]:
    """The cases listed in overlap tables (column ``case_b``, the evaluated dataset's side)."""
    excluded: set[str] = set()
    for path in overlap_csvs:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "case_b" not in table.columns:
            raise GliosegError("not an overlap table: no case_b column", path=path, hint="re-run the overlap step.")
        excluded.update(table["case_b"])
    return excluded


def cases_for(splits: str | Path, fold: int, subset: str, overlap_csvs: Sequence[str | Path] = ()) -> list[str]:
    """Read the fold JSON and the overlap tables and return the cases to evaluate; an empty selection is an error."""
    folds = read_folds(splits)
    cases = evaluation_cases(folds, fold, subset, excluded_cases(overlap_csvs))
    if not cases:
        raise GliosegError(f"no cases left to evaluate (subset {subset}, fold {fold})", path=splits,
                           hint="every case overlaps the training data or the subset is empty; check the overlap table "
                           "or set exclude_overlap: false.")
    return cases


def training_cases(splits: str | Path, fold: int, overlap_csvs: Sequence[str | Path] = ()) -> tuple[list[str], list[str]]:
    """A fold's training and validation cases, minus the cases listed in overlap tables; neither may end up empty."""
    train, val = fold_cases(read_folds(splits), fold)
    left_out = excluded_cases(overlap_csvs)
    if left_out:
        log.info("leaving out %d training and %d validation cases that are scans of the excluded datasets",
                 len(set(train) & left_out), len(set(val) & left_out))
    train, val = [c for c in train if c not in left_out], [c for c in val if c not in left_out]
    if not train or not val:
        raise GliosegError(f"fold {fold} has no {'training' if not train else 'validation'} cases left after leaving "
                           "out the overlap", path=splits, hint="check exclude_overlap_with in the experiment's config.")
    return train, val


# ---------------------------------------------------------------- predictions, ours or another tool's

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
