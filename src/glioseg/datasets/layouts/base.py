"""What every layout adapter produces: the files of one case, and the layout that finds them."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glioseg.labels import LabelConvention


@dataclass(frozen=True)
class CaseFiles:
    """One case as found on disk; a missing file is ``None`` so the manifest can report it."""

    case: str
    patient: str
    group: str
    images: dict[str, Path | None]
    label: Path | None
    extra: dict[str, str] = field(default_factory=dict)
    mask: Path | None = None
    validation_release: bool = False
    """The case lies in a challenge's validation release, whose labels were never published."""
    wanted: dict[str, str] = field(default_factory=dict)
    """Where the layout looked for each file (a path or a glob), by modality, ``label`` or ``mask``: a missing
    file is then reported with the name it should have had, which tells a misnamed file from an absent one."""


@dataclass(frozen=True)
class Layout:
    """A dataset's file layout.

    ``masks``: every case comes with a brain-mask file (``CaseFiles.mask``),
    which preprocessing then trusts over any rule for finding the brain.
    ``physical_spacing``: whether the voxel spacing is a size in millimetres;
    when it is not (slices stacked from images with no spacing), distances
    such as HD95 are in pixels and are labelled so.
    ``stacks_slices``: the release ships 2D slices, which the workflow stacks
    into volumes before ``find_cases`` reads them.
    """

    name: str
    modalities: tuple[str, ...]
    convention: LabelConvention
    find_cases: Callable[[Path], list[CaseFiles]]
    masks: bool = False
    physical_spacing: bool = True
    stacks_slices: bool = False


def cases_for(cases: Sequence[CaseFiles], labelled: bool) -> list[CaseFiles]:
    """The cases a dataset is made of, given whether it is labelled (the config's ``labelled``).

    A labelled dataset leaves out the unlabelled cases of a validation
    release: a BraTS archive often holds the training and the validation
    release side by side, and only the first is training data. An unlabelled
    one (a validation release to predict) is the validation release's cases
    when there are any, so the same archive can be named as both datasets;
    otherwise it is every case found.
    """
    if labelled:
        return [case for case in cases if case.label is not None or not case.validation_release]
    released = [case for case in cases if case.validation_release]
    return released or list(cases)


def captured_patient(regex: re.Pattern[str] | None, case: str, error: Callable[[str], Exception]) -> str:
    """The patient id a layout's ``patient`` regex captures in a case id (the case itself without a regex).

    A case the regex misses is an error, raised as ``error(problem)``, not a patient of its own.
    """
    if regex is None:
        return case
    found = regex.search(case)
    if found is None or not found["patient"]:
        raise error(f"the 'patient' regex {regex.pattern!r} captures no patient id in case '{case}'")
    return found["patient"]
