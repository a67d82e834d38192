"""Finding case folders and files under a dataset root, as every layout family does.

Case folders are found at any depth below the dataset root, because Kaggle
archives wrap the data in one or two folders of varying names; folders under a
hidden or ``__MACOSX`` component (macOS zip debris that mirrors every real
folder name) are never cases. A case id found twice is an error, since every
later stage names its files by case id.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path

from glioseg.datasets.layouts.base import CaseFiles
from glioseg.errors import GliosegError


def existing_file(path: Path) -> Path | None:
    """``path`` if it is a file; ``None`` leaves the gap for the manifest to report."""
    return path if path.is_file() else None


def is_debris(path: Path, root: Path) -> bool:
    """Whether ``path`` lies under a hidden or ``__MACOSX`` folder below ``root``."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def case_folders(root: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Folders at any depth under ``root`` whose name matches ``pattern``, zip debris excluded.

    A folder wrapping a same-named folder is not a case: extracting a nested
    per-case archive (BraTS 2021's ``BraTS2021_00495.tar``) puts the case
    folder inside a folder named after the archive.
    """
    return [
        p
        for p in root.rglob("*")
        if pattern.match(p.name) and p.is_dir() and not is_debris(p, root) and not (p / p.name).is_dir()
    ]


def in_case_order(cases: Iterable[CaseFiles], root: Path) -> list[CaseFiles]:
    """Sort by case id, refusing duplicates (e.g. a training folder extracted twice into one root)."""
    ordered = sorted(cases, key=lambda c: c.case)
    duplicated = sorted({a.case for a, b in itertools.pairwise(ordered) if a.case == b.case})
    if duplicated:
        raise GliosegError(
            f"case ids found more than once: {', '.join(duplicated)}",
            path=root,
            hint="keep a single copy of each case folder under the dataset folder.",
        )
    return ordered
