"""The manifest: one validated row per case, the contract every later stage reads.

``<dataset>.csv`` lists each case's patient, group and one path per modality
(``image_<modality>`` columns) plus its label; ``<dataset>.json`` beside it
records the layout, modalities and label convention (the dataset's
``dataset.json``, in nnU-Net's words). Every case is checked here — files
present and readable, shapes and affines in agreement, image voxels finite,
labels whole numbers inside the convention, brain masks 0/1 and not empty —
so a bad case is reported by name before any training starts.

An unlabelled dataset (``labelled: false`` in the config: a challenge's
validation or test release) is checked the same way without labels: its
``label`` column is empty, its sidecar says ``"labelled": false``, and it can
only be predicted, never trained on or scored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glioseg.atomic import write_csv, write_json
from glioseg.datasets.layouts import get_layout
from glioseg.datasets.layouts.base import CaseFiles, Layout, cases_for
from glioseg.errors import GliosegError
from glioseg.labels import LabelConvention, unexpected_labels
from glioseg.nifti import load_image, read_image, read_label, read_mask
from glioseg.parallel import map_cases

log = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DatasetInfo:
    """The manifest's sidecar: what downstream stages must know about a dataset as a whole."""

    name: str
    layout: str
    modalities: tuple[str, ...]
    convention: LabelConvention
    physical_spacing: bool = True
    labelled: bool = True

    @property
    def distance_unit(self) -> str:
        """What distances measured with the voxel spacing are in: mm, or px where the spacing is not a physical size."""
        return "mm" if self.physical_spacing else "px"

    def to_json(self) -> dict:
        convention = {
            "name": self.convention.name,
            "members": {region: sorted(values) for region, values in self.convention.members.items()},
            "paint": [list(pair) for pair in self.convention.paint],
        }
        return {"name": self.name, "layout": self.layout, "modalities": list(self.modalities), "label_convention": convention,
                "physical_spacing": self.physical_spacing, "labelled": self.labelled}


def image_column(modality: str) -> str:
    return f"image_{modality}"


def case_problems(files: CaseFiles, layout: Layout) -> list[str]:
    """Everything wrong with one case, as readable sentences; empty when the case is good.

    Every volume is decoded in full, not only its header: a truncated
    ``.nii.gz`` has a perfect header, and must be caught here rather than
    hours later in preprocessing.
    """
    return _case_problems(files, masks=layout.masks, convention=layout.convention)


def _case_problems(files: CaseFiles, *, masks: bool, convention: LabelConvention, labelled: bool = True) -> list[str]:
    """:func:`case_problems` given what it needs of the layout: a layout's ``find_cases`` need not pickle, these do.

    Without ``labelled`` the case's label, if any, is not read: the images (and mask) are checked alone.
    """
    if not labelled:
        files = dataclasses.replace(files, label=None)
    missing = [m for m, p in files.images.items() if p is None]
    if labelled and files.label is None:
        missing.append("label")
    if masks and files.mask is None:
        missing.append("mask")
    if missing:
        return [f"missing {', '.join(f'{name} ({files.wanted[name]})' if name in files.wanted else name for name in missing)}"]
    problems: list[str] = []
    paths = {**dict(files.images.items())}
    if labelled:
        paths["label"] = files.label
    if masks:
        paths["mask"] = files.mask
    headers = {}
    for name, path in paths.items():
        try:
            headers[name] = load_image(path)
        except GliosegError as exc:
            problems.append(f"{name}: {exc.problem} ({path})")
    if problems:
        return problems
    reference_name, reference = next(iter(headers.items()))
    for name, image in headers.items():
        if image.shape != reference.shape:
            problems.append(f"{name} has shape {image.shape} but {reference_name} has {reference.shape} ({paths[name]})")
        elif not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE):
            problems.append(f"{name}'s affine differs from {reference_name}'s ({paths[name]})")
    if problems:
        return problems
    readers = {"label": read_label, "mask": read_mask}
    volumes = {}
    for name, path in paths.items():
        try:
            volumes[name] = readers.get(name, read_image)(path)
        except GliosegError as exc:
            problems.append(f"{name}: {exc.problem} ({path})")
    if problems:
        return problems
    bad = unexpected_labels(volumes["label"], convention) if labelled else None
    if bad:
        problems.append(f"label values {bad} outside the {convention.name} convention {sorted(convention.values)} "
                        f"({paths['label']})")
    if "mask" in volumes and not volumes["mask"].any():
        problems.append(f"mask: the brain mask is empty ({paths['mask']})")
    return problems


def _row(files: CaseFiles, labelled: bool) -> dict[str, str]:
    row = {"case": files.case, "patient": files.patient, "group": files.group}
    row.update({image_column(m): str(p) for m, p in files.images.items()})
    row["label"] = str(files.label) if labelled else ""
    if files.mask is not None:
        row["mask"] = str(files.mask)
    row.update(files.extra)
    return row


def build_manifest(raw: str | Path, layout_name: str, dataset: str,
                   options: Mapping[str, Any] | None = None, *, threads: int = 1,
                   labelled: bool = True) -> tuple[pd.DataFrame, DatasetInfo]:
    """Find and validate every case under ``raw``; raise one error naming every bad case.

    ``options`` are the dataset's ``layout_options`` (the ``custom`` layout's file patterns and labels).
    ``labelled=False`` (the config's ``labelled: false``): no case needs a label, and none is read or recorded.
    Cases are checked ``threads`` at a time, in worker processes (:func:`glioseg.parallel.map_cases`);
    the manifest and the error are the same whatever ``threads`` is.
    """
    layout = get_layout(layout_name, options)
    root = Path(raw)
    if not root.is_dir():
        raise GliosegError("dataset folder not found", path=root, hint="run the acquire step first, or fix the dataset's source path.")
    found = layout.find_cases(root)
    cases = cases_for(found, labelled)
    if not cases:
        hint = f"check that the dataset's 'layout' ({layout.name}) matches the files, or that the archive is the right one."
        if found:
            hint = (f"the {len(found)} cases found are a validation release without labels: to predict them, set "
                    f"datasets → {dataset} → labelled: false and name the dataset in the config's predict section.")
        raise GliosegError(f"no cases in the {layout.name} layout were found", path=root, hint=hint)
    if len(cases) < len(found):
        log.info("%s: %d of the %d cases found are left out (%s)", dataset, len(found) - len(cases), len(found),
                 "a validation release without labels" if labelled else "not in the validation release")
    if not labelled and any(files.label is not None for files in cases):
        log.info("%s is unlabelled (labelled: false): its label files are not read", dataset)
    check = partial(_case_problems, masks=layout.masks, convention=layout.convention, labelled=labelled)
    found = map_cases(check, cases, threads=threads, desc=f"checking {dataset}", name=lambda files: files.case)
    bad = {files.case: problems for files, problems in zip(cases, found) if problems}
    if bad:
        listing = "\n".join(f"    {case}: {'; '.join(p)}" for case, p in bad.items())
        unlabelled = sum(files.label is None for files in cases) if labelled else 0
        hint = "replace or remove those cases' files (or fix the archive) and run again; nothing downstream was written."
        if unlabelled:
            hint = (f"{unlabelled} of {len(cases)} cases have no label file. If the dataset has no labels (a validation "
                    f"or test release), set datasets → {dataset} → labelled: false in the config: it is then only "
                    f"predicted (the config's predict section), never trained on or scored. Otherwise {hint}")
        raise GliosegError(f"{len(bad)} of {len(cases)} cases are unusable:\n{listing}", path=root, hint=hint)
    frame = pd.DataFrame([_row(files, labelled) for files in cases])
    log.info("%s: %d cases, %d patients", dataset, len(frame), frame["patient"].nunique())
    return frame, DatasetInfo(dataset, layout.name, layout.modalities, layout.convention, layout.physical_spacing, labelled)


def write_manifest(frame: pd.DataFrame, info: DatasetInfo, out_csv: str | Path, out_json: str | Path) -> None:
    write_csv(out_csv, frame)
    write_json(out_json, info.to_json())


_REWRITE = "run the manifest step again (snakemake), or point at the results/manifests/<dataset>.csv and .json it wrote."


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest CSV; a missing, unreadable or foreign file is a :class:`GliosegError` naming it."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise GliosegError("no such manifest", path=path, hint=_REWRITE) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise GliosegError(f"unreadable manifest ({type(exc).__name__}: {exc})", path=path, hint=_REWRITE) from None
    missing = {"case", "patient", "group", "label"} - set(frame.columns)
    if missing:
        raise GliosegError(f"not a glioseg manifest: columns {sorted(missing)} missing", path=path, hint=_REWRITE)
    return frame


def read_dataset_info(path: str | Path) -> DatasetInfo:
    """Read a manifest sidecar; the label convention is stored in full, so custom conventions survive.

    A sidecar written before ``physical_spacing`` existed is read as physical (millimetres), one before
    ``labelled`` existed as labelled. A missing, unreadable or garbled one is a :class:`GliosegError` naming it.
    """
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        stored = payload["label_convention"]
        convention = LabelConvention(
            name=stored["name"],
            members={region: frozenset(values) for region, values in stored["members"].items()},
            paint=tuple((region, int(value)) for region, value in stored["paint"]),
        )
        return DatasetInfo(payload["name"], payload["layout"], tuple(payload["modalities"]), convention,
                           payload.get("physical_spacing", True), payload.get("labelled", True))
    except FileNotFoundError:
        raise GliosegError("no such manifest sidecar", path=path, hint=_REWRITE) from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GliosegError(f"unreadable manifest sidecar ({type(exc).__name__}: {exc})", path=path, hint=_REWRITE) from None


def modality_columns(frame: pd.DataFrame, modalities: Sequence[str]) -> list[str]:
    return [image_column(m) for m in modalities]
