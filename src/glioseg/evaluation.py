"""Which cases a stage works on: a fold's training and validation cases, or an evaluation's.

Infer and score both call :func:`cases_for`, so a prediction folder and its
score table always describe the same cases; training calls
:func:`training_cases`. Cases that are the same scans as another dataset's
(found by content, see ``glioseg.datasets.overlap``) are left out where the
experiment or the evaluation says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from glioseg.errors import GliosegError
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
