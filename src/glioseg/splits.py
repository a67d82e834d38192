"""Patient-level K-fold splits, stratified by group, written as a MONAI fold JSON.

A split assigns *patients*, never cases: two scans of one person on both
sides of a fold would leak. Within each group (e.g. HGG/LGG) patients are
shuffled with the seed, an optional test share is held out, and the rest are
dealt round-robin into folds, continuing the deal across groups so fold sizes
differ by at most one patient.

A hold-out split (study 4's 79/20/11 patients) is the same file with one
validation fold: fold 0 holds the validation patients, fold 1 the training
patients, ``testing`` the test patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from glioseg.atomic import write_csv, write_json
from glioseg.errors import GliosegError
from glioseg.manifest import modality_columns

TEST_FOLD = -1


def _patient_groups(manifest: pd.DataFrame) -> pd.Series:
    """Each patient's group: the most common group among its cases (ties broken by name)."""
    return manifest.groupby("patient")["group"].agg(lambda g: g.mode().iloc[0])


def assign_folds(manifest: pd.DataFrame, n_folds: int, test_fraction: float, seed: int) -> pd.Series:
    """Return each patient's fold (``TEST_FOLD`` for the held-out test set), indexed by patient."""
    groups = _patient_groups(manifest)
    rng = np.random.default_rng(seed)
    assignment: dict[str, int] = {}
    dealt = 0
    for group in sorted(groups.unique()):
        patients = np.array(sorted(groups.index[groups == group]))
        rng.shuffle(patients)
        n_test = round(test_fraction * len(patients))
        for patient in patients[:n_test]:
            assignment[patient] = TEST_FOLD
        for patient in patients[n_test:]:
            assignment[patient] = dealt % n_folds
            dealt += 1
    if dealt < n_folds:
        raise GliosegError(
            f"{dealt} training patients cannot fill {n_folds} folds",
            hint="lower split → folds or test_fraction, or use a larger dataset.",
        )
    return pd.Series(assignment, name="fold").sort_index()


def _stratified_order(manifest: pd.DataFrame, seed: int) -> list[str]:
    """All patients, shuffled within their group, then merged so that every prefix mixes the groups in proportion."""
    groups = _patient_groups(manifest)
    rng = np.random.default_rng(seed)
    keyed = []
    for group in sorted(groups.unique()):
        patients = np.array(sorted(groups.index[groups == group]))
        rng.shuffle(patients)
        keyed += [((rank + 0.5) / len(patients), group, patient) for rank, patient in enumerate(patients)]
    return [patient for _, _, patient in sorted(keyed)]


def holdout_folds(manifest: pd.DataFrame, val_patients: int, test_patients: int, seed: int) -> pd.Series:
    """Each patient's part of a train/validation/test split by patient counts: fold 0 validation, 1 training, test ``TEST_FOLD``."""
    order = _stratified_order(manifest, seed)
    if len(order) <= val_patients + test_patients:
        raise GliosegError(
            f"{len(order)} patients cannot give {val_patients} validation and {test_patients} test patients and still train",
            hint="lower split → val_patients or test_patients.",
        )
    assignment = dict.fromkeys(order[:test_patients], TEST_FOLD)
    assignment |= dict.fromkeys(order[test_patients:test_patients + val_patients], 0)
    assignment |= dict.fromkeys(order[test_patients + val_patients:], 1)
    return pd.Series(assignment, name="fold").sort_index()


def split_table(manifest: pd.DataFrame, n_folds: int, test_fraction: float, seed: int,
                holdout: tuple[int, int] | None = None) -> pd.DataFrame:
    """One row per case: case, patient, group, fold, subset (train/test); ``holdout`` = (validation, test) patient counts."""
    folds = assign_folds(manifest, n_folds, test_fraction, seed) if holdout is None else holdout_folds(manifest, *holdout, seed)
    table = manifest[["case", "patient", "group"]].copy()
    table["fold"] = table["patient"].map(folds).astype(int)
    table["subset"] = np.where(table["fold"] == TEST_FOLD, "test", "train")
    return table


def folds_json(manifest: pd.DataFrame, table: pd.DataFrame, modalities: Sequence[str]) -> dict:
    """The MONAI research-contributions fold format, with case and patient ids added to each entry."""
    columns = modality_columns(manifest, modalities)
    merged = manifest.merge(table[["case", "fold"]], on="case")

    def entry(row: pd.Series) -> dict:
        item = {"case": row["case"], "patient": row["patient"], "image": [row[c] for c in columns], "label": row["label"]}
        if row["fold"] != TEST_FOLD:
            item = {"fold": int(row["fold"]), **item}
        return item

    return {
        "training": [entry(r) for _, r in merged[merged["fold"] != TEST_FOLD].iterrows()],
        "testing": [entry(r) for _, r in merged[merged["fold"] == TEST_FOLD].iterrows()],
    }


def write_splits(manifest: pd.DataFrame, modalities: Sequence[str], n_folds: int, test_fraction: float, seed: int,
                 out_json: str | Path, out_csv: str | Path, holdout: tuple[int, int] | None = None) -> pd.DataFrame:
    table = split_table(manifest, n_folds, test_fraction, seed, holdout)
    write_json(out_json, folds_json(manifest, table, modalities))
    write_csv(out_csv, table)
    return table


def fold_cases(folds: dict, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation case ids of one fold of a fold JSON."""
    training = folds["training"]
    if not any(item["fold"] == fold for item in training):
        raise GliosegError(f"fold {fold} has no cases in this split", hint="check the experiment's folds against the dataset's split.")
    train = [item["case"] for item in training if item["fold"] != fold]
    val = [item["case"] for item in training if item["fold"] == fold]
    return train, val


def given_split_table(manifest: pd.DataFrame, given_path: str | Path, dataset: str = "") -> pd.DataFrame:
    """The one-row-per-case table of a split the user gives (``split: {file: …}``), checked against the manifest."""
    from glioseg.given_split import check_given_split, read_given_split

    folds = check_given_split(read_given_split(given_path), manifest.to_dict("records"), dataset)
    table = manifest[["case", "patient", "group"]].copy()
    table["fold"] = table["case"].map(folds).astype(int)
    table["subset"] = np.where(table["fold"] == TEST_FOLD, "test", "train")
    return table


def write_given_splits(manifest: pd.DataFrame, modalities: Sequence[str], given_path: str | Path, out_json: str | Path,
                       out_csv: str | Path, copy_dir: str | Path | None = None, dataset: str = "") -> pd.DataFrame:
    """``folds.json`` and ``splits.csv`` from a given split, as :func:`write_splits` writes a drawn one; the file copied to ``copy_dir``."""
    from glioseg.given_split import copy_given_split, read_given_split

    table = given_split_table(manifest, given_path, dataset)
    write_json(out_json, folds_json(manifest, table, modalities))
    write_csv(out_csv, table)
    if copy_dir is not None:
        copy_given_split(read_given_split(given_path), copy_dir)
    return table
