"""Layout adapters: how one dataset's files are named and what its labels mean.

Each adapter turns an extracted folder into :class:`CaseFiles` and owns its
label convention and its patient-id rule; everything after the manifest is
layout-agnostic. Adding a layout is one function and one registry entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glioseg.labels import BRATS, LabelConvention


@dataclass(frozen=True)
class CaseFiles:
    """One case as found on disk; a missing file is ``None`` so the manifest can report it."""

    case: str
    patient: str
    group: str
    images: dict[str, Path | None]
    label: Path | None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    name: str
    modalities: tuple[str, ...]
    convention: LabelConvention
    find_cases: Callable[[Path], list[CaseFiles]]


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _brats2021_cases(root: Path) -> list[CaseFiles]:
    """``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``, at any depth; one patient per case."""
    pattern = re.compile(r"^BraTS2021_\d{5}$")
    folders = sorted((p for p in root.rglob("BraTS2021_*") if p.is_dir() and pattern.match(p.name)), key=lambda p: p.name)
    return [
        CaseFiles(
            case=folder.name,
            patient=folder.name,
            group="",
            images={m: _existing(folder / f"{folder.name}_{m}.nii.gz") for m in BRATS2021.modalities},
            label=_existing(folder / f"{folder.name}_seg.nii.gz"),
        )
        for folder in folders
    ]


BRATS2021 = Layout("brats2021", ("t1", "t1ce", "t2", "flair"), BRATS, _brats2021_cases)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (BRATS2021,)}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown layout '{name}'; known layouts: {sorted(LAYOUTS)}") from None
