"""Splits a user brings: a MONAI datalist, an nnU-Net ``splits_final.json`` or a CSV, checked against the manifest.

A dataset's ``split: {file: <path>}`` replaces the folds glioseg would draw.
The file is read in two steps. :func:`read_given_split` reads it alone, with
no image library or pandas, so that the Snakefile can count its folds when it
plans the DAG. :func:`check_given_split` then matches it against the manifest
and raises one :class:`GliosegError` naming the file and listing every problem
(cases it names that the dataset lacks, cases of the dataset it leaves out,
cases listed twice, patients split across folds, empty folds). What comes out
is the same one-row-per-case table a drawn split gives, so ``folds.json`` and
``splits.csv`` and everything after them are unchanged.

The three kinds (told apart by extension and structure):

- MONAI datalist (``.json``, an object): ``training`` entries with ``fold``
  keys (K-fold) and optional ``testing`` entries (held out); or ``training``
  and ``validation`` without folds (a hold-out split). An entry names its case
  by ``case`` (glioseg's own ``folds.json``), else by its ``label`` path, else
  by its first ``image`` path, matched to the manifest file of the same name
  whose path shares the longest ending with it
  (``TrainingData/BraTS2021_00000/BraTS2021_00000_seg.nii.gz`` matches
  wherever the dataset was extracted); a tie between cases is an error.
- nnU-Net ``splits_final.json`` (``.json``, a list): one ``{"train", "val"}``
  per fold of case identifiers. Each case must be validated in exactly one
  fold and trained in all the others; one fold alone is a hold-out split.
  Cases of the dataset that nnU-Net keeps in ``imagesTs`` (manifest column
  ``nnunet_set`` = ``Ts``, from the ``nnunet`` layout) and the file does not
  list are its test cases.
- CSV (``.csv``): a ``case`` or a ``patient`` column (a patient's row covers
  all its cases), then ``fold`` (-1 = test) and/or ``subset``: ``test`` holds
  a row out whatever its fold; without a ``fold`` column, ``train``/``val``/
  ``test`` make a hold-out split. glioseg's own ``splits.csv`` is such a file.

A hold-out split is numbered as glioseg numbers its own: fold 0 validation,
fold 1 training, and experiments validate on fold 0 only.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from glioseg.errors import GliosegError

TEST_FOLD = -1
"""The held-out test cases' fold (``glioseg.splits.TEST_FOLD``)."""

KINDS = ("monai", "nnunet", "csv")
_LISTED = 20  # names listed per problem before "… and N more"
_HINT = ("edit the split file so that it assigns every case (or patient) of the dataset's manifest exactly once, with "
         "each patient's cases in one fold and no fold empty; or remove split → file to let glioseg draw the folds. "
         "The formats: docs/formats.md, 'Given splits'.")


@dataclass(frozen=True)
class Assignment:
    """One line of the file: what it names (``by`` case, patient or path) and the fold it puts it in."""

    ref: str
    by: str
    fold: int
    where: str


@dataclass(frozen=True)
class GivenSplit:
    """A split file as read, before it meets the manifest.

    ``folds`` counts the validation folds (1 for a hold-out split, whose fold 0
    validates and fold 1 trains). ``problems`` are what is wrong inside the
    file itself; they are reported with the manifest's, all at once.
    """

    path: Path
    kind: str
    assignments: tuple[Assignment, ...]
    folds: int
    holdout: bool
    problems: tuple[str, ...] = ()
    test_unlisted_ts: bool = False

    @property
    def has_test(self) -> bool:
        """Whether anything is held out as test (cases the nnU-Net layout keeps in imagesTs may be too)."""
        return self.test_unlisted_ts or any(a.fold == TEST_FOLD for a in self.assignments)

    def fold_numbers(self) -> list[int]:
        """The folds a case can be in, test aside: 0..K-1, or 0 (validation) and 1 (training) for a hold-out."""
        return [0, 1] if self.holdout else list(range(self.folds))


def _unreadable(path: Path, problem: str) -> GliosegError:
    return GliosegError(f"cannot read the given split: {problem}", path=path, hint=_HINT)


def read_given_split(path: str | Path) -> GivenSplit:
    """Read a split file on its own; a file that is missing or of no known kind is an error at once."""
    path = Path(path)
    if not path.is_file():
        raise GliosegError("the given split file does not exist", path=path,
                           hint="give split → file as a path relative to the working directory (where Snakemake runs), "
                                "or an absolute one.")
    return _read_cached(path, path.stat().st_mtime_ns, path.stat().st_size)


@functools.lru_cache(maxsize=32)
def _read_cached(path: Path, _mtime: int, _size: int) -> GivenSplit:
    """The Snakefile asks for the fold count of each dataset several times; the file is read once per version."""
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: editors on Windows write a BOM
    except UnicodeDecodeError as exc:
        raise _unreadable(path, f"not UTF-8 text ({exc}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        named = "" if path.suffix.lower() == ".json" else f"; a CSV split must be named .csv, not {path.suffix or 'without an extension'}"
        raise _unreadable(path, f"not valid JSON ({exc}){named}") from None
    if isinstance(payload, list):
        return _read_nnunet(path, payload)
    if isinstance(payload, dict) and "training" in payload:
        return _read_monai(path, payload)
    raise _unreadable(path, "a JSON split is either a MONAI datalist (an object with a 'training' list) or an nnU-Net "
                            "splits_final.json (a list of {'train': [...], 'val': [...]}), and this is neither")


# ---------------------------------------------------------------- MONAI datalist


def _entry_ref(entry: Any, where: str) -> tuple[str, str] | None:
    """What a datalist entry names: its ``case``, else its label path, else its first image path."""
    if not isinstance(entry, Mapping):
        return None
    if isinstance(entry.get("case"), str) and entry["case"]:
        return entry["case"], "case"
    label = entry.get("label")
    if isinstance(label, str) and label:
        return label, "path"
    image = entry.get("image")
    if isinstance(image, list) and image:
        image = image[0]
    if isinstance(image, str) and image:
        return image, "path"
    return None


def _read_monai(path: Path, payload: Mapping[str, Any]) -> GivenSplit:
    problems: list[str] = []
    assignments: list[Assignment] = []
    sections = {key: payload.get(key, []) for key in ("training", "validation", "testing")}
    for key, entries in sections.items():
        if not isinstance(entries, list):
            raise _unreadable(path, f"'{key}' must be a list of entries")
    training = sections["training"]
    with_fold = [e for e in training if isinstance(e, Mapping) and "fold" in e]
    holdout = not with_fold
    if holdout and not sections["validation"]:
        raise _unreadable(path, "the MONAI datalist's 'training' entries have no 'fold' keys and there is no 'validation' "
                                "list: it gives no validation cases")
    if with_fold and sections["validation"]:
        problems.append("'validation' beside 'training' entries with folds: each fold's validation cases are its "
                        "'training' entries of that fold; move the 'validation' entries into folds or into 'testing'")
    for key, entries in sections.items():
        for index, entry in enumerate(entries):
            where = f"{key}[{index}]"
            ref = _entry_ref(entry, where)
            if ref is None:
                problems.append(f"{where} names no case (no 'case', 'label' or 'image')")
                continue
            if key == "testing":
                fold = TEST_FOLD
            elif key == "validation":
                fold = 0
            elif holdout:
                fold = 1
            else:
                fold = _fold_value(entry.get("fold"))
                if fold is None or fold < 0:
                    problems.append(f"{where} has fold {entry.get('fold')!r}, not a fold number (0, 1, …)")
                    continue
            assignments.append(Assignment(ref[0], ref[1], fold, where))
    return _finish(path, "monai", assignments, holdout, problems)


_INTEGER = re.compile(r"-?[0-9]+")


def _fold_value(value: Any) -> int | None:
    """A fold number written as an integer (``2``, ``"2"``, ``2.0``); ``None`` for anything else.

    Only ASCII digits count: ``str.isdigit`` also accepts ``²`` and ``١``, which ``int`` then refuses or reads as 1.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# ---------------------------------------------------------------- nnU-Net splits_final.json


def _read_nnunet(path: Path, folds: list[Any]) -> GivenSplit:
    if not folds or not all(isinstance(f, Mapping) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list)
                            for f in folds):
        raise _unreadable(path, "an nnU-Net splits_final.json is a non-empty list of {'train': [...], 'val': [...]}, one per fold")
    problems: list[str] = []
    holdout = len(folds) == 1
    assignments: list[Assignment] = []
    for k, fold in enumerate(folds):
        for case in fold["val"]:
            assignments.append(Assignment(str(case), "case", 0 if holdout else k, f"fold {k} val"))
    if holdout:
        assignments += [Assignment(str(case), "case", 1, "fold 0 train") for case in folds[0]["train"]]
        overlap = sorted(set(map(str, folds[0]["train"])) & set(map(str, folds[0]["val"])))
        if overlap:
            problems.append(f"fold 0 trains on cases it validates on ({len(overlap)}): {_listing(overlap)}")
    else:
        validated = {str(case) for fold in folds for case in fold["val"]}
        for k, fold in enumerate(folds):
            train, val = set(map(str, fold["train"])), set(map(str, fold["val"]))
            unexpected = sorted(train - validated)
            absent = sorted(validated - val - train)
            both = sorted(train & val)
            if unexpected:
                problems.append(f"fold {k} trains on cases that no fold validates ({len(unexpected)}): {_listing(unexpected)} "
                                "— glioseg trains each fold on the other folds' validation cases")
            if absent:
                problems.append(f"fold {k} leaves out of training cases that other folds validate ({len(absent)}): "
                                f"{_listing(absent)}")
            if both:
                problems.append(f"fold {k} trains on cases it validates on ({len(both)}): {_listing(both)}")
    return _finish(path, "nnunet", assignments, holdout, problems, test_unlisted_ts=True)


# ---------------------------------------------------------------- CSV

_SUBSETS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test", "testing": "test"}


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank rows with their line numbers; a BOM and Windows line endings are read as the CSV
    they are."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    except UnicodeDecodeError as exc:
        raise _unreadable(path, f"not UTF-8 text ({exc}); save it as UTF-8 (Excel: 'CSV UTF-8')") from None
    except csv.Error as exc:
        raise _unreadable(path, f"not a readable CSV ({exc})") from None
    if not lines:
        raise _unreadable(path, "the file is empty; a split CSV starts with a header line, e.g. case,fold")
    return lines[0][1], lines[1:]


def _delimiter_problem(header: list[str]) -> str:
    """Why a header without the needed columns may be so: Excel in many locales saves CSV separated by ';'."""
    other = next((sep for sep in (";", "\t") if len(header) == 1 and sep in header[0]), None)
    return f"; its columns look separated by {other!r}: save it comma-separated" if other else ""


def _read_csv(path: Path) -> GivenSplit:
    header, lines = _csv_rows(path)
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    if not lines:
        raise _unreadable(path, "the CSV has a header but no rows")
    by = "case" if "case" in columns else "patient" if "patient" in columns else None
    if by is None or not ({"fold", "subset"} & set(columns)):
        raise _unreadable(path, f"a split CSV needs a 'case' or 'patient' column and a 'fold' and/or 'subset' column; "
                                f"it has {sorted(columns)}{_delimiter_problem(header)}")
    holdout = "fold" not in columns
    problems: list[str] = []
    assignments: list[Assignment] = []
    for number, fields in lines:
        where = f"line {number}"
        if len(fields) != len(header):
            quoting = " (a name holding a comma needs quotes)" if len(fields) > len(header) else ""
            problems.append(f"{where} has {len(fields)} field{'s' if len(fields) != 1 else ''} where the header has "
                            f"{len(header)}{quoting}")
            continue
        row = {name: fields[index] for name, index in columns.items()}
        ref = row[by].strip()
        subset_text = row.get("subset", "").strip().lower()
        subset = _SUBSETS.get(subset_text) if subset_text else None
        if not ref:
            problems.append(f"{where} has an empty {by}")
            continue
        if subset_text and subset is None:
            problems.append(f"{where}: subset {subset_text!r} is none of train, val, test")
            continue
        if holdout:
            if subset is None:
                problems.append(f"{where} has no subset")
                continue
            fold = {"val": 0, "train": 1, "test": TEST_FOLD}[subset]
        elif subset == "test":
            fold = TEST_FOLD
        else:
            fold = _fold_value(row["fold"])
            if fold is None or (fold < 0 and fold != TEST_FOLD):
                problems.append(f"{where}: fold {row['fold']!r} is not a fold number (0, 1, …, or -1 for test)")
                continue
            if subset == "val":
                problems.append(f"{where}: subset val beside a fold column (a fold's validation cases are its rows; "
                                "use train, or test)")
                continue
        assignments.append(Assignment(ref, by, fold, where))
    return _finish(path, "csv", assignments, holdout, problems)


# ---------------------------------------------------------------- what every kind shares


def _finish(path: Path, kind: str, assignments: list[Assignment], holdout: bool, problems: list[str], *,
            test_unlisted_ts: bool = False) -> GivenSplit:
    """Count the folds (the highest number + 1; a gap below it is an empty fold, found against the manifest).

    A fold number no smaller than the count of entries in folds is a problem of its own and left out: such a
    fold count could never be filled, and the Snakefile, which plans one training per fold, would plan them all.
    A hold-out's numbers are glioseg's own (0 and 1), never the file's.
    """
    limit = sum(a.fold != TEST_FOLD for a in assignments)
    beyond = [] if holdout else [a for a in assignments if a.fold >= limit]
    problems = problems + [f"{a.where}: fold {a.fold} is beyond what {limit} entries in folds can fill "
                           f"(folds 0 to {limit - 1})" for a in beyond]
    assignments = [a for a in assignments if a not in beyond]
    numbered = [a.fold for a in assignments if a.fold != TEST_FOLD]
    folds = 1 if holdout else (max(numbered) + 1 if numbered else 0)
    if not holdout and folds < 2:
        problems.append(f"it gives {folds} fold{'s' if folds != 1 else ''}: cross-validation needs at least two "
                        "(a train/validation split is a hold-out: see docs/formats.md)")
    return GivenSplit(path, kind, tuple(assignments), max(folds, 1), holdout, tuple(problems), test_unlisted_ts)


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", … and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in PurePosixPath(path.replace("\\", "/")).parts if part not in (".", "/"))


class _PathIndex:
    """Manifest files by name, to find the case whose path ends with a datalist entry's path."""

    def __init__(self, rows: Iterable[tuple[str, Sequence[str]]]):
        self._by_name: dict[str, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
        for case, paths in rows:
            for path in paths:
                parts = _parts(path)
                if parts:
                    self._by_name[parts[-1]].append((parts, case))

    def cases(self, path: str) -> set[str]:
        """The cases with a file of this name whose path shares the longest ending with ``path`` (the folders
        above the data differ between the machine that wrote the datalist and this one)."""
        wanted = _parts(path)
        if not wanted:
            return set()
        scored = [(_common_ending(parts, wanted), case) for parts, case in self._by_name.get(wanted[-1], [])]
        best = max((score for score, _ in scored), default=0)
        return {case for score, case in scored if score == best}


def _common_ending(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def check_given_split(given: GivenSplit, cases: Sequence[Mapping[str, str]], dataset: str = "") -> dict[str, int]:
    """Each manifest case's fold under ``given``; every problem at once in one :class:`GliosegError`.

    ``cases`` are the manifest's rows (``case``, ``patient``, path columns
    ``image_*`` and ``label``, optional ``nnunet_set``).
    """
    problems = list(given.problems)
    patient_of = {row["case"]: row["patient"] for row in cases}
    cases_of: dict[str, list[str]] = defaultdict(list)
    for row in cases:
        cases_of[row["patient"]].append(row["case"])
    index = _PathIndex((row["case"], [v for k, v in row.items() if k == "label" or k.startswith("image_")]) for row in cases)

    unknown: dict[str, list[str]] = defaultdict(list)
    ambiguous: list[str] = []
    placed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for item in given.assignments:
        if item.by == "case":
            found = {item.ref} if item.ref in patient_of else set()
        elif item.by == "patient":
            found = set(cases_of.get(item.ref, ()))
        else:
            found = index.cases(item.ref)
        if not found:
            unknown[item.by].append(item.ref)
        elif len(found) > 1 and item.by == "path":
            ambiguous.append(f"{item.ref} ({item.where}: {', '.join(sorted(found))})")
        else:
            for case in found:
                placed[case].append((item.fold, item.where))

    for by, refs in unknown.items():
        noun = {"case": "cases", "patient": "patients", "path": "files"}[by]
        problems.append(f"unknown {noun}, not in the dataset ({len(refs)}): {_listing(refs)}")
    if ambiguous:
        problems.append(f"paths that match several cases ({len(ambiguous)}): {_listing(ambiguous)}")
    twice = sorted(case for case, where in placed.items() if len(where) > 1)
    if twice:
        problems.append(f"cases listed more than once ({len(twice)}): "
                        + _listing([f"{c} ({', '.join(w for _, w in placed[c])})" for c in twice]))
    folds = {case: where[0][0] for case, where in placed.items()}
    nnunet_test = {row["case"] for row in cases if given.test_unlisted_ts and row.get("nnunet_set") == "Ts"}
    for case in nnunet_test - set(folds):
        folds[case] = TEST_FOLD
    missing = [row["case"] for row in cases if row["case"] not in folds]
    if missing:
        problems.append(f"missing cases, in no fold ({len(missing)}): {_listing(missing)}")
    split_patients = []
    for patient, members in cases_of.items():
        seen = sorted({folds[c] for c in members if c in folds})
        if len(seen) > 1:
            split_patients.append(f"{patient} (folds {', '.join('test' if f == TEST_FOLD else str(f) for f in seen)})")
    if split_patients:
        problems.append(f"patients whose cases are in different folds ({len(split_patients)}): {_listing(split_patients)}")
    used = set(folds.values())
    names = {0: "0 (validation)", 1: "1 (training)"} if given.holdout else {}
    empty = [names.get(k, str(k)) for k in given.fold_numbers() if k not in used]
    if empty:
        problems.append(f"empty folds: {', '.join(empty)}")
    if problems:
        what = f" dataset '{dataset}'" if dataset else " the dataset"
        listing = "\n".join(f"    {problem}" for problem in problems)
        raise GliosegError(f"the given split ({given.kind}) does not fit{what} ({len(cases)} cases); "
                           f"{len(problems)} problem{'s' if len(problems) != 1 else ''}:\n{listing}",
                           path=given.path, hint=_HINT)
    return {row["case"]: folds[row["case"]] for row in cases}


def copy_given_split(given: GivenSplit, folder: str | Path) -> Path:
    """The file as it was read, into ``folder`` under its own name (the results keep the split they used)."""
    from glioseg.atomic import atomic_dir

    with atomic_dir(folder) as tmp:
        shutil.copyfile(given.path, tmp / given.path.name)
    return Path(folder) / given.path.name
