"""The BraTS releases 2018, 2019, 2020, 2021 and 2023 (any of its five cohorts), each as its Kaggle upload lays it out.

Each case is its own patient except in 2023, whose case ids carry a
timepoint; the releases differ in prefixes, separators, file extensions and
where the tumour grade is written.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from glioseg.datasets.layouts.base import CaseFiles, Layout
from glioseg.datasets.layouts.folders import case_folders, existing_file, in_case_order
from glioseg.errors import GliosegError
from glioseg.labels import BRATS
from glioseg.labels import BRATS2023 as BRATS2023_LABELS

_BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")


def _nifti(folder: Path, stem: str) -> Path | None:
    """``stem.nii.gz`` or, failing that, ``stem.nii``: some releases and re-uploads ship uncompressed files."""
    return existing_file(folder / f"{stem}.nii.gz") or existing_file(folder / f"{stem}.nii")


#: The folders the challenges ship their validation releases in: ``MICCAI_BraTS_2018_Data_Validation``, 2019's
#: alike, ``MICCAI_BraTS2020_ValidationData``, ``RSNA_ASNR_MICCAI_BraTS2021_ValidationData`` and
#: ``ASNR-MICCAI-BraTS2023-<COHORT>-Challenge-ValidationData`` (and the Kaggle uploads' wrappers of them).
VALIDATION_RELEASE = re.compile(r"ValidationData|_Data_Validation", re.IGNORECASE)


def in_validation_release(folder: Path) -> bool:
    """Whether a case folder lies under a validation release's folder, whose labels were never published: a
    labelled dataset leaves its unlabelled cases out, an unlabelled one is made of them
    (:func:`~glioseg.datasets.layouts.base.cases_for`)."""
    return any(VALIDATION_RELEASE.search(part) for part in folder.parent.parts)


# ---------------------------------------------------------------- 2018–2021


def _brats2021_cases(root: Path) -> list[CaseFiles]:
    """``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``, at any depth; one patient per case.

    The validation release (``RSNA_ASNR_MICCAI_BraTS2021_ValidationData/BraTS2021_XXXXX/``, no ``seg``) names its
    cases and files the same way.
    """
    cases = (
        CaseFiles(
            case=folder.name,
            patient=folder.name,
            group="",
            images={m: _nifti(folder, f"{folder.name}_{m}") for m in BRATS2021.modalities},
            label=_nifti(folder, f"{folder.name}_seg"),
            validation_release=in_validation_release(folder),
        )
        for folder in case_folders(root, re.compile(r"^BraTS2021_\d{5}$"))
    )
    return in_case_order(cases, root)


def _graded_cases(root: Path, case_prefix: str) -> list[CaseFiles]:
    """BraTS 2018/2019: ``.../{HGG,LGG}/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``; group = the grade folder.

    Only case folders directly inside a folder named ``HGG`` or ``LGG`` count,
    and those directly inside the validation release's
    ``MICCAI_BraTS_<year>_Data_Validation/`` (ungraded, unlabelled: group
    empty). Each case is its own patient: these releases publish no
    cross-case patient ids.
    """
    pattern = re.compile(rf"^{re.escape(case_prefix)}_\w+$", re.IGNORECASE)  # re-uploads vary the prefix's case
    cases = []
    for folder in case_folders(root, pattern):
        validation = bool(VALIDATION_RELEASE.search(folder.parent.name))
        if folder.parent.name not in ("HGG", "LGG") and not validation:
            continue
        cases.append(CaseFiles(
            case=folder.name,
            patient=folder.name,
            group="" if validation else folder.parent.name,
            images={m: _nifti(folder, f"{folder.name}_{m}") for m in _BRATS_MODALITIES},
            label=_nifti(folder, f"{folder.name}_seg"),
            validation_release=validation,
        ))
    return in_case_order(cases, root)


def _brats2018_cases(root: Path) -> list[CaseFiles]:
    """Kaggle ``sanglequang/brats2018``: ``MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/Brats18_<site>_<id>_1/...``.

    Note the ``Brats18_`` prefix (2019 writes ``BraTS19_``); prefixes match case-insensitively.
    ``survival_data.csv`` beside ``HGG``/``LGG`` is not read.
    """
    return _graded_cases(root, "Brats18")


def _brats2019_cases(root: Path) -> list[CaseFiles]:
    """``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_<site>_<id>_1/...``, named as in 2018.

    ``name_mapping.csv`` and ``survival_data.csv`` beside ``HGG``/``LGG`` are not
    read: the grade is already the folder.
    """
    return _graded_cases(root, "BraTS19")


_BRATS2020_CASE = re.compile(r"^BraTS20_(Training|Validation)_\d{3}$")

#: Segmentations the release ships under another name, accepted for that case only.
_BRATS2020_SEG_ALIASES = {"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}


def _brats2020_label(folder: Path) -> Path | None:
    alias = _BRATS2020_SEG_ALIASES.get(folder.name)
    return _nifti(folder, f"{folder.name}_seg") or (existing_file(folder / alias) if alias else None)


def _grades(mapping: Path) -> dict[str, str]:
    """``BraTS_2020_subject_ID`` → ``Grade`` from a ``name_mapping.csv``; empty when there is none."""
    if not mapping.is_file():
        return {}
    with mapping.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"Grade", "BraTS_2020_subject_ID"} <= rows[0].keys():
        raise GliosegError(
            "name_mapping.csv has no 'Grade' and 'BraTS_2020_subject_ID' columns",
            path=mapping,
            hint="restore the file from the BraTS 2020 archive, or delete it to leave cases ungrouped.",
        )
    return {row["BraTS_2020_subject_ID"].strip(): row["Grade"].strip() for row in rows}


def _brats2020_cases(root: Path) -> list[CaseFiles]:
    """Kaggle ``awsaf49/brats20-dataset-training-validation``.

    Reads ``BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX/
    BraTS20_Training_XXX_{t1,t1ce,t2,flair,seg}.nii``. Quirks: files are
    uncompressed ``.nii``; case 355's segmentation is named
    ``W39_1998.09.19_Segm.nii``; grades are not folders but the ``Grade``
    column of ``name_mapping.csv`` beside the case folders (a case it does not
    list gets an empty group); ``survival_info.csv`` is ignored. The
    validation release beside it (``BraTS2020_ValidationData/MICCAI_BraTS2020_ValidationData/BraTS20_Validation_XXX/``,
    no ``seg``; ``name_mapping_validation_data.csv`` and ``survival_evaluation.csv`` not read) is marked as such
    (:func:`in_validation_release`); a training case without a label is kept, for the manifest to report.
    """
    folders = case_folders(root, _BRATS2020_CASE)
    grades = {parent: _grades(parent / "name_mapping.csv") for parent in {f.parent for f in folders}}
    cases = (
        CaseFiles(
            case=folder.name,
            patient=folder.name,
            group=grades[folder.parent].get(folder.name, ""),
            images={m: _nifti(folder, f"{folder.name}_{m}") for m in _BRATS_MODALITIES},
            label=_brats2020_label(folder),
            validation_release=in_validation_release(folder),
        )
        for folder in folders
    )
    return in_case_order(cases, root)


# ---------------------------------------------------------------- 2023

#: The BraTS 2023 segmentation cohorts, as their case ids spell them: adult glioma, meningioma, brain
#: metastases, paediatric tumours, sub-Saharan African glioma. All share the file naming and the labels.
BRATS2023_COHORTS: tuple[str, ...] = ("GLI", "MEN", "MET", "PED", "SSA")

#: The keys the brats2023 layout's ``layout_options`` may hold (the config schema lists the same).
BRATS2023_OPTIONS = frozenset({"cohort"})

_BRATS2023_MODALITIES = ("t1n", "t1c", "t2w", "t2f")


def brats2023_cohort(options: Mapping[str, Any]) -> str:
    """The cohort the options name (``GLI`` when they name none), refused unless it is a BraTS 2023 cohort."""
    unknown = sorted(set(options) - BRATS2023_OPTIONS)
    if unknown:
        raise GliosegError(f"unknown brats2023 layout_options {unknown}; allowed: {sorted(BRATS2023_OPTIONS)}",
                           hint=f"give at most layout_options: {{cohort: <one of {list(BRATS2023_COHORTS)}>}}.")
    cohort = str(options.get("cohort", "GLI"))
    if cohort not in BRATS2023_COHORTS:
        raise GliosegError(f"unknown BraTS 2023 cohort {cohort!r}; known cohorts: {list(BRATS2023_COHORTS)}",
                           hint="write the cohort as the case ids do (BraTS-MEN-00004-000 is cohort MEN).")
    return cohort


def _brats2023_cases(root: Path, cohort: str) -> list[CaseFiles]:
    """BraTS 2023, one cohort: ``ASNR-MICCAI-BraTS2023-<COHORT>-Challenge-TrainingData/BraTS-<COHORT>-XXXXX-YYY/
    BraTS-<COHORT>-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (the wrapping folders vary between uploads and
    are not read).

    Quirks: hyphens, not underscores; new modality names (t1n = T1, t1c = T1
    post-contrast, t2w = T2, t2f = FLAIR); labels 1/2/3 with 3 = enhancing
    tumour, the same in every cohort. ``YYY`` is the timepoint: ``BraTS-<COHORT>-XXXXX``
    is the patient, so a patient's timepoints stay in one split. Only the
    cohort's own case folders are read, so another cohort's cases beside them
    are left out. The cases of the ``...-Challenge-ValidationData`` release are marked as such
    (:func:`in_validation_release`), as for 2020.
    """
    pattern = re.compile(rf"^(?P<patient>BraTS-{cohort}-\d{{5}})-\d{{3}}$")
    cases = (
        CaseFiles(
            case=folder.name,
            patient=pattern.match(folder.name)["patient"],
            group="",
            images={m: _nifti(folder, f"{folder.name}-{m}") for m in _BRATS2023_MODALITIES},
            label=_nifti(folder, f"{folder.name}-seg"),
            validation_release=in_validation_release(folder),
        )
        for folder in case_folders(root, pattern)
    )
    return in_case_order(cases, root)


def brats2023_layout(options: Mapping[str, Any]) -> Layout:
    """The BraTS 2023 layout of the cohort ``layout_options → cohort`` names (default ``GLI``, adult glioma)."""
    cohort = brats2023_cohort(options)
    return Layout("brats2023", _BRATS2023_MODALITIES, BRATS2023_LABELS, partial(_brats2023_cases, cohort=cohort))


BRATS2018 = Layout("brats2018", _BRATS_MODALITIES, BRATS, _brats2018_cases)
BRATS2019 = Layout("brats2019", _BRATS_MODALITIES, BRATS, _brats2019_cases)
BRATS2020 = Layout("brats2020", _BRATS_MODALITIES, BRATS, _brats2020_cases)
BRATS2021 = Layout("brats2021", _BRATS_MODALITIES, BRATS, _brats2021_cases)
BRATS2023 = brats2023_layout({})
"""The adult glioma (GLI) cohort, the brats2023 layout without options."""
