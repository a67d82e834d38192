"""The LGG ``kaggle_3m`` release, as read after its 2D slices are stacked into volumes.

The stacking itself (:func:`glioseg.datasets.lgg.stack_lgg`) lives outside this
package: it needs Pillow and nibabel, and this package is imported by the
Snakefile at every start.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from glioseg.datasets.layouts.base import CaseFiles, Layout
from glioseg.datasets.layouts.folders import case_folders, existing_file, in_case_order
from glioseg.errors import GliosegError
from glioseg.labels import LGG

#: ``TCGA_<inst>_<patient>_<date>``: the patient is the folder name without the scan date.
LGG_CASE = re.compile(r"^(?P<patient>TCGA_[A-Za-z0-9]+_[A-Za-z0-9]+)_\d{8}$")
LGG_MODALITIES = ("pre", "flair", "post")
_RESERVED_COLUMNS = {"case", "patient", "group", "label", "mask"}


def _metadata(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """``data.csv``'s columns (``Patient`` aside) and each patient's row, as strings; empty when there is no file."""
    if not path.is_file():
        return [], {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in reader.fieldnames or [] if c != "Patient"]
        rows = list(reader)
    hint = "restore data.csv from the kaggle_3m release, or delete it to leave the manifest without clinical columns."
    if "Patient" not in (reader.fieldnames or []):
        raise GliosegError("data.csv has no 'Patient' column", path=path, hint=hint)
    clashing = [c for c in columns if c in _RESERVED_COLUMNS or c.startswith("image_")]
    if clashing:
        raise GliosegError(f"data.csv columns {clashing} clash with the manifest's own columns", path=path, hint=hint)
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        patient = (row["Patient"] or "").strip()
        if patient in table:
            raise GliosegError(f"patient {patient} has two rows", path=path, hint="keep one row per patient in data.csv.")
        table[patient] = {c: (row[c] or "").strip() for c in columns}
    return columns, table


def _kaggle3m_cases(root: Path) -> list[CaseFiles]:
    """Kaggle ``mateuszbuda/lgg-mri-segmentation`` after :func:`glioseg.datasets.lgg.stack_lgg`:
    ``TCGA_<inst>_<patient>_<date>/<case>_{pre,flair,post,seg}.nii.gz`` and ``data.csv`` at the root.

    Patient = ``TCGA_<inst>_<patient>`` (two scan dates of one person stay in one
    split); no group; every ``data.csv`` column but ``Patient`` is passed through
    as an extra manifest column (empty for a patient the file does not list).
    """
    columns, metadata = _metadata(root / "data.csv")
    cases = []
    for folder in case_folders(root, LGG_CASE):
        patient = LGG_CASE.match(folder.name)["patient"]
        cases.append(
            CaseFiles(
                case=folder.name,
                patient=patient,
                group="",
                images={m: existing_file(folder / f"{folder.name}_{m}.nii.gz") for m in LGG_MODALITIES},
                label=existing_file(folder / f"{folder.name}_seg.nii.gz"),
                extra={c: metadata.get(patient, {}).get(c, "") for c in columns},
            )
        )
    return in_case_order(cases, root)


#: Stacked from tifs that carry no spacing (glioseg.datasets.lgg): unit voxels, distances in pixels.
LGG_KAGGLE3M = Layout("lgg_kaggle3m", LGG_MODALITIES, LGG, _kaggle3m_cases, physical_spacing=False, stacks_slices=True)
