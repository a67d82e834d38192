"""The cases of ``glioseg predict``'s inputs, their files, and reading one case as the model's training data was read.

Which file is which modality: by default the BraTS naming of any release
(``<case>_t1.nii.gz`` … 2018–2021, ``<case>-t1n.nii.gz`` … 2023, with the
releases' names for one modality taken as the same: t1/t1n, t1ce/t1c, t2/t2w,
flair/t2f); or ``--modality name=pattern``, a glob relative to the case folder
in which ``{case}`` stands for the folder's name, as the custom layout's
patterns (docs/custom-layout.md). Or a dataset's manifest (``--manifest``, as
the workflow predicts a dataset of the config's ``predict`` section): its
cases and files as the layout found and the manifest checked them, each model
modality read from the dataset's modality of the same name (or another
release's name for it).

A model trained on an LGG kaggle_3m dataset reads the release's own form
instead: case folders of ``<case>_<n>.tif`` slices, stacked exactly as the
workflow stacked its training data (:func:`glioseg.datasets.lgg.stack_scans`),
and writes each slice's mask beside the volume. A model trained with brain
masks (a layout's ``mask``) needs each case's (``--mask``), and one trained
without them refuses them: the brain is found as training found it.

Case finding is lenient and reading strict: a case with a missing, doubled or
unrecognised file is returned with its ``problem``, so that the run reports it
and still predicts the others.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.errors import GliosegError

NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
TIF = re.compile(r"\.tiff?$", re.IGNORECASE)

SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"t1", "t1n"}), frozenset({"t1ce", "t1c", "t1gd"}), frozenset({"t2", "t2w"}), frozenset({"flair", "t2f"}),
)
"""Names the BraTS releases give one modality: a model trained on 2021's t1ce reads 2023's t1c."""

def aliases(modality: str) -> list[str]:
    """``modality`` and the other BraTS releases' names for it."""
    for group in SYNONYMS:
        if modality.lower() in group:
            return [modality, *sorted(group - {modality.lower()})]
    return [modality]


# ---------------------------------------------------------------- finding cases


@dataclass
class CaseInput:
    """One case's modality files as found, and what is wrong with them (``problem``), if anything.

    ``slices``: instead of files, the folder of an LGG kaggle_3m case's tif slices, stacked as training stacked
    them. ``mask``: the case's brain mask, for a model whose training found the brain by mask files.
    """

    case: str
    files: dict[str, Path] = field(default_factory=dict)
    problem: str | None = None
    slices: Path | None = None
    mask: Path | None = None

    def where(self) -> Path | None:
        """The file or folder an error about this case names."""
        return self.slices or next(iter(self.files.values()), None)


class Matcher:
    """Tells which modality a file is: the BraTS names by default, or ``--modality`` patterns."""

    def __init__(self, modalities: Sequence[str], patterns: Mapping[str, str] | None = None) -> None:
        self.modalities = tuple(modalities)
        self.patterns = dict(patterns) if patterns else None
        if self.patterns is not None:
            names = list(self.patterns)
            if set(names) != set(self.modalities):
                raise GliosegError(f"--modality names {names}, but the model was trained on {list(self.modalities)}",
                                   hint=f"give one --modality per modality the model takes: {', '.join(self.modalities)}.")
            if names != list(self.modalities):
                raise GliosegError(f"--modality gives the modalities in the order {names}, the model takes "
                                   f"{list(self.modalities)}", hint="give the --modality options in the model's order "
                                   f"({', '.join(self.modalities)}), each naming its files.")
        self._suffixes = {m: re.compile(rf"^(?P<case>.+?)[_-](?:{'|'.join(map(re.escape, aliases(m)))})\.nii(?:\.gz)?$",
                                        re.IGNORECASE) for m in self.modalities}

    def describe(self, modality: str) -> str:
        if self.patterns is not None:
            return f"'{self.patterns[modality]}'"
        return " or ".join(f"<case>_{a}.nii[.gz]" for a in aliases(modality))

    def by_name(self, path: Path) -> tuple[str, str] | None:
        """(case, modality) read off a file's name with the BraTS names; ``None`` if it is none of the model's."""
        for modality, regex in self._suffixes.items():
            found = regex.match(path.name)
            if found:
                return found["case"], modality
        return None

    def by_pattern(self, path: Path, folder_case: str) -> str | None:
        """The modality whose ``--modality`` pattern matches ``path``'s name, ``{case}`` being the folder's name."""
        for modality, pattern in (self.patterns or {}).items():
            if fnmatch.fnmatchcase(path.name, Path(pattern.replace("{case}", folder_case)).name):
                return modality
        return None

    def in_folder(self, folder: Path) -> list[CaseInput]:
        """The cases whose files lie directly in ``folder``: one per BraTS case prefix, or the folder's own case."""
        files = sorted(p for p in folder.iterdir() if p.is_file() and NIFTI.search(p.name))
        if self.patterns is not None:
            case = CaseInput(folder.name)
            for modality, pattern in self.patterns.items():
                matches = sorted(p for p in folder.glob(pattern.replace("{case}", folder.name)) if p.is_file())
                if len(matches) > 1:
                    case.problem = f"pattern {pattern!r} of {modality} matches {len(matches)} files: " \
                                   f"{', '.join(p.name for p in matches)}"
                if matches:
                    case.files[modality] = matches[0]
            return [case] if case.files else []
        cases: dict[str, CaseInput] = {}
        for path in files:
            found = self.by_name(path)
            if found is None:
                continue
            name, modality = found
            case = cases.setdefault(name, CaseInput(name))
            if modality in case.files:
                case.problem = f"two files for {modality}: {case.files[modality].name} and {path.name}"
            case.files[modality] = path
        return list(cases.values())


def _check_complete(case: CaseInput, matcher: Matcher) -> None:
    if case.problem is None:
        missing = [m for m in matcher.modalities if m not in case.files]
        if missing:
            case.problem = "missing " + ", ".join(f"{m} (no file named {matcher.describe(m)})" for m in missing)
    case.files = {m: case.files[m] for m in matcher.modalities if m in case.files}


def _explicit_files(paths: Sequence[Path], matcher: Matcher) -> CaseInput:
    """Files given one by one: one case. Named by modality, they must come in the model's order; unnamed, they are taken
    in the model's order."""
    found = [matcher.by_pattern(p, p.parent.name) if matcher.patterns is not None else
             (matcher.by_name(p) or (None, None))[1] for p in paths]
    prefixes = {matcher.by_name(p)[0] for p in paths if matcher.by_name(p)}
    name = prefixes.pop() if len(prefixes) == 1 else NIFTI.sub("", paths[0].name)
    case = CaseInput(name)
    if all(m is None for m in found):
        if len(paths) != len(matcher.modalities):
            case.problem = f"{len(paths)} files given for a model of {len(matcher.modalities)} modalities " \
                           f"({', '.join(matcher.modalities)})"
        case.files = dict(zip(matcher.modalities, paths))
        return case
    unknown = [p.name for p, m in zip(paths, found) if m is None]
    if unknown:
        case.problem = f"cannot tell which modality {', '.join(unknown)} is"
    elif found != [m for m in matcher.modalities if m in found]:
        case.problem = f"files given in the order {', '.join(found)}, but the model takes {', '.join(matcher.modalities)}"
    case.files = {m: p for p, m in zip(paths, found) if m is not None}
    _check_complete(case, matcher)
    return case


def _existing(inputs: Sequence[str | Path]) -> list[Path]:
    paths = [Path(p) for p in inputs]
    absent = [p for p in paths if not p.exists()]
    if absent:
        raise GliosegError("no such input", path=absent[0], hint="give folders of cases, one case folder, or a case's files.")
    return paths


def _folders(paths: Sequence[Path]) -> list[Path]:
    """Every folder of ``paths``, at any depth, in a stable order."""
    found = []
    for folder in (p for p in paths if p.is_dir()):
        for root, dirs, _ in os.walk(folder):
            dirs.sort()
            found.append(Path(root))
    return found


def _first_file(paths: Sequence[Path], pattern: re.Pattern[str]) -> Path | None:
    """The first file among ``paths`` or in their folders whose name matches ``pattern``: what the inputs hold instead."""
    candidates = [p for p in paths if p.is_file()] + [f for folder in _folders(paths) for f in sorted(folder.iterdir())]
    return next((p for p in candidates if p.is_file() and pattern.search(p.name)), None)


def _sorted_unique(cases: list[CaseInput]) -> list[CaseInput]:
    """``cases`` by name; two of one name are both marked as a problem (they would write one file)."""
    seen: dict[str, CaseInput] = {}
    for case in cases:
        if case.case in seen:
            first = seen[case.case]
            case.problem = first.problem = f"two cases named {case.case}: in {first.where().parent} and {case.where().parent}"
        seen.setdefault(case.case, case)
    return sorted(cases, key=lambda c: c.case)


def find_cases(inputs: Sequence[str | Path], matcher: Matcher) -> list[CaseInput]:
    """Every case of ``inputs``: each folder searched at any depth, and the files given one by one as one case."""
    paths = _existing(inputs)
    cases: list[CaseInput] = []
    for folder in _folders(paths):
        cases += matcher.in_folder(folder)
    files = [p for p in paths if p.is_file()]
    if files:
        cases.append(_explicit_files(files, matcher))
    for case in cases:
        _check_complete(case, matcher)
    if not cases:
        tif = _first_file(paths, TIF)
        if tif is not None:
            raise GliosegError(f"the inputs hold tif slices ({tif.name}), but the model was trained on NIfTI volumes of "
                               f"{', '.join(matcher.modalities)}", path=tif, hint="give the model NIfTI scans of those "
                               "modalities; tif slices are read by models trained on an LGG kaggle_3m dataset.")
        raise GliosegError(f"no cases found: no NIfTI files named as the model's modalities "
                           f"({'; '.join(matcher.describe(m) for m in matcher.modalities)})", path=paths[0] if paths else None,
                           hint="point --input at the scans, or name each modality's files with --modality name=pattern.")
    return _sorted_unique(cases)


def find_slice_cases(inputs: Sequence[str | Path]) -> list[CaseInput]:
    """Every LGG kaggle_3m case of ``inputs``, for a model trained on such a dataset: each folder, at any depth, that
    holds its own ``<folder>_<n>.tif`` slices (``_mask.tif`` files beside them are not read)."""
    from glioseg.datasets.lgg import holds_slices

    paths = _existing(inputs)
    files = [p for p in paths if p.is_file()]
    if files:
        raise GliosegError("a model trained on LGG kaggle_3m slices reads case folders, not single files", path=files[0],
                           hint="give the folder of a case's <case>_<n>.tif slices, or a folder of such folders.")
    cases = [CaseInput(folder.name, slices=folder) for folder in _folders(paths) if holds_slices(folder)]
    if not cases:
        nifti = _first_file(paths, NIFTI)
        found = f"the inputs hold NIfTI files ({nifti.name}) but no" if nifti is not None else "no"
        raise GliosegError(f"{found} LGG kaggle_3m case folders: the model was trained on the release's tif slices, "
                           "and reads folders of <case>_<n>.tif (pre-contrast, FLAIR, post-contrast)",
                           path=nifti or (paths[0] if paths else None),
                           hint="give a case folder of <case>_<n>.tif slices, or a folder of such folders; a stacked "
                                "dataset's NIfTI volumes are predicted through its manifest (--manifest).")
    return _sorted_unique(cases)


def find_masks(cases: Sequence[CaseInput], pattern: str) -> None:
    """Each case's brain mask: the one file ``pattern`` (``{case}`` being the case's name) matches in its folder; none
    or several is the case's problem."""
    for case in cases:
        where = case.where()
        if where is None or case.problem:
            continue
        found = sorted(p for p in where.parent.glob(pattern.replace("{case}", case.case)) if p.is_file())
        if len(found) == 1:
            case.mask = found[0]
        else:
            listed = f": {', '.join(p.name for p in found)}" if found else ""
            case.problem = f"--mask {pattern!r} matches {len(found)} files in {where.parent}{listed}, not one brain mask"


def manifest_cases(manifest: str | Path, info: str | Path, modalities: Sequence[str], masks: bool = False) -> list[CaseInput]:
    """The cases of a dataset's manifest, each of the model's ``modalities`` read from the dataset's modality of that
    name or of another BraTS release's name for it (a model of 2021's t1ce reads 2023's t1c); with ``masks`` (a model
    trained with brain masks), each with the brain mask its layout found."""
    from glioseg.manifest import image_column

    frame, dataset = _read_manifest(Path(manifest), Path(info))
    chosen: dict[str, str] = {}
    for modality in modalities:
        names = {alias.lower() for alias in aliases(modality)}
        found = [name for name in dataset.modalities if name.lower() in names]
        if found:
            chosen[modality] = found[0]
    missing = [m for m in modalities if m not in chosen]
    if missing:
        raise GliosegError(f"dataset '{dataset.name}' has the modalities {list(dataset.modalities)}, the model takes "
                           f"{list(modalities)}: none of the dataset's is {', '.join(missing)}", path=manifest,
                           hint="predict a dataset with the model's modalities (the BraTS releases' names for one "
                                "modality count as the same), or name each modality's files with --input and --modality.")
    cases = [CaseInput(row["case"], {m: Path(row[image_column(chosen[m])]) for m in modalities},
                       mask=Path(row["mask"]) if masks and isinstance(row.get("mask"), str) and row["mask"] else None)
             for _, row in frame.iterrows()]
    if not cases:
        raise GliosegError("the manifest lists no cases", path=manifest, hint="run the manifest step again.")
    return cases


def _read_manifest(manifest: Path, info: Path) -> tuple[Any, Any]:
    """A manifest and its sidecar, with advice on ``--manifest`` (a path a person typed) when one cannot be read."""
    from glioseg.manifest import read_dataset_info, read_manifest

    try:
        return read_manifest(manifest), read_dataset_info(info)
    except GliosegError as exc:
        raise GliosegError(exc.problem, path=exc.path,
                           hint="give --manifest a dataset's results/manifests/<dataset>.csv, with its .json beside it "
                                "(or --info), as the manifest step wrote them.") from None


# ---------------------------------------------------------------- reading one case


def read_case(case: CaseInput) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """The case's (C, X, Y, Z) float32 image, its first modality's NIfTI (the output's geometry) and its brain mask,
    if it has one; shapes and affines must agree across modalities and the mask, as the manifest requires of training
    cases. An LGG case's slices are stacked as training stacked them (:func:`glioseg.datasets.lgg.stack_scans`)."""
    from glioseg.manifest import AFFINE_TOLERANCE
    from glioseg.nifti import load_image, read_image, read_mask

    if case.slices is not None:
        from glioseg.datasets.lgg import stack_scans

        return (*stack_scans(case.slices), None)
    paths = {**case.files, **({"brain mask": case.mask} if case.mask is not None else {})}
    headers = {name: load_image(p) for name, p in paths.items()}
    for name, image in headers.items():
        _check_affine(image, paths[name])
    (first, reference), *others = headers.items()
    for name, image in others:
        if image.shape != reference.shape:
            raise GliosegError(f"{name} has shape {image.shape} but {first} has {reference.shape}",
                               path=paths[name], hint=f"give the case's {_grid_of(name)} on one grid.")
        if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE):
            raise GliosegError(f"{name}'s affine differs from {first}'s", path=paths[name],
                               hint=f"give the case's {_grid_of(name)} on one grid.")
    mask = read_mask(case.mask) if case.mask is not None else None
    return np.stack([read_image(p) for p in case.files.values()]), reference, mask


def _check_affine(image: Any, path: Path) -> None:
    """Refuse a file whose voxel-to-world matrix has NaNs or no inverse: the label map is written in the scan's
    geometry, and there is none to write it in (nibabel would fail only after the case was predicted)."""
    affine = np.asarray(image.affine, dtype=float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GliosegError("its affine (the voxel-to-world matrix in the header) is not finite or not invertible, so "
                           "the scan has no geometry to write the prediction in", path=path,
                           hint="repair the header (e.g. re-convert the scan from DICOM, or copy the qform/sform of a "
                                "good scan of the same grid), or leave the case out.")


def _grid_of(name: str) -> str:
    return "brain mask and modalities co-registered" if name == "brain mask" else "modalities co-registered"
