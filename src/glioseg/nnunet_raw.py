"""Exchange with other tools: a glioseg dataset written as an nnU-Net raw dataset, and predictions made elsewhere read in.

:func:`export_nnunet` writes ``DatasetXXX_Name/`` (``dataset.json``,
``imagesTr/<case>_<XXXX>.nii.gz``, ``labelsTr/``, and ``imagesTs/`` +
``labelsTs/`` for glioseg's held-out test cases) with a ``splits_final.json``
that holds glioseg's folds, so that nnU-Net trains on exactly the same folds.
A dataset the ``nnunet`` layout read is written back as it was: its
``dataset.json`` is kept (``numTraining`` recounted) and its files copied byte
for byte. Any other dataset gets a regions-based ``dataset.json`` for TC, WT
and ET (the regions glioseg trains on); since nnU-Net wants consecutive label
values, a convention such as BraTS's 0/1/2/4 is renumbered (4 → 3), and the
``glioseg → label_values`` entry of ``dataset.json`` says how to map nnU-Net's
predictions back (an external experiment's ``label_map``).

:func:`import_predictions` reads ``<case>.nii.gz`` label maps from any folder
into ``predictions/<experiment>/fold<k>/<evaluation>/``, checked (every
case present, on the reference label's grid, with values of the dataset's
convention once ``label_map`` is applied), so that the score, montage and
gallery stages treat them as any experiment's.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from glioseg.atomic import atomic_dir
from glioseg.datasets.layouts.nnunet import load_dataset_json
from glioseg.errors import GliosegError
from glioseg.evaluation import case_labels
from glioseg.labels import LabelConvention
from glioseg.manifest import DatasetInfo, image_column
from glioseg.nifti import load_image, read_label, write_label_map
from glioseg.prediction_files import checked_prediction, find_predictions, naming_hint, warn_unknown_predictions

log = logging.getLogger(__name__)

#: nnU-Net's names of glioseg's regions, as its BraTS datasets write them.
REGION_LABELS = {"WT": "whole tumor", "TC": "tumor core", "ET": "enhancing tumor"}
#: How nnU-Net finds a raw dataset: ``Dataset<3 digits>_<name>``; the name in glioseg's dataset-name characters.
DATASET_FOLDER = re.compile(r"Dataset(?P<id>\d{3})_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)")
#: What an export writes, all of which a new export of the same folder may replace.
EXPORT_ENTRIES = frozenset({"dataset.json", "splits_final.json", "imagesTr", "labelsTr", "imagesTs", "labelsTs"})
#: Channel names nnU-Net v2 reads (case-insensitively) as a normalisation scheme; any other name is z-scored per case.
NNUNET_NORMALISATIONS = frozenset({"ct", "nonorm", "zscore", "rescale_to_0_1", "rgb_to_0_1"})


# ---------------------------------------------------------------- export


def nnunet_values(convention: LabelConvention) -> dict[int, int]:
    """Dataset label value → nnU-Net label value: consecutive from 0, in the order of the values."""
    return {value: index for index, value in enumerate(sorted(convention.values))}


def dataset_json(info: DatasetInfo, n_training: int) -> dict[str, Any]:
    """nnU-Net v2's dataset.json for a glioseg dataset: its modalities as channels, its regions as nnU-Net regions."""
    renumber = nnunet_values(info.convention)
    members = info.convention.members
    labels: dict[str, Any] = {"background": 0}
    order = []
    regions_based = len(members) > 1 or any(len(values) > 1 for values in members.values())
    for region, value in info.convention.paint:  # outermost first, as nnU-Net paints regions_class_order
        values = sorted(renumber[v] for v in members[region])
        labels[REGION_LABELS[region]] = values if regions_based else values[0]
        order.append(renumber[value])
    payload: dict[str, Any] = {
        "channel_names": {str(index): modality for index, modality in enumerate(info.modalities)},
        "labels": labels,
        "numTraining": n_training,
        "file_ending": ".nii.gz",
        "name": info.name,
        "description": f"glioseg dataset '{info.name}' (layout {info.layout}); splits_final.json holds glioseg's folds",
    }
    if regions_based:
        payload["regions_class_order"] = order
    payload["glioseg"] = {"dataset": info.name, "label_values": {str(n): v for v, n in renumber.items() if n != v}}
    return payload


def splits_final(folds: Mapping[str, Any], validation_folds: int | None = None) -> list[dict[str, list[str]]]:
    """glioseg's folds as nnU-Net's ``splits_final.json``: per fold, the other folds' cases to train and its own to validate.

    ``validation_folds`` is how many folds glioseg validates on (1 for a hold-out split, whose
    fold 1 only trains); default every fold of the fold JSON.
    """
    fold_of = {item["case"]: int(item["fold"]) for item in folds["training"]}
    available = len(set(fold_of.values()))
    count = validation_folds if validation_folds is not None else available
    if not 1 <= count <= available:
        raise GliosegError(f"{count} validation folds asked for, but the split has {available} fold{'s' if available != 1 else ''}"
                           " of training cases", hint=f"give --validation-folds between 1 (a hold-out split) and {available}, "
                                                    "or leave it out to validate on every fold.")
    cases = sorted(fold_of)
    return [{"train": [c for c in cases if fold_of[c] != k], "val": [c for c in cases if fold_of[c] == k]}
            for k in range(count)]


def _source_dataset_json(manifest: pd.DataFrame) -> Path:
    """The dataset.json of a dataset the nnunet layout read: beside the folder of its first label."""
    path = Path(manifest["label"].iloc[0]).parent.parent / "dataset.json"
    if not path.is_file():
        raise GliosegError("the nnU-Net dataset.json this dataset was read from is gone", path=path,
                           hint="restore the dataset folder, or re-run the manifest step.")
    return path


def check_dataset_folder(out: Path) -> None:
    """Refuse an output folder nnU-Net would not find: ``Dataset<001..999>_<name>``, as ``nnUNetv2_* -d <id>`` looks it up."""
    match = DATASET_FOLDER.fullmatch(out.name)
    if match is None or int(match["id"]) == 0:
        raise GliosegError("nnU-Net finds a raw dataset only by a folder named Dataset<id>_<name>: id three digits from "
                           "001 to 999, name of letters, digits, _ and -", path=out,
                           hint="give --out as <folder>/Dataset<id>_<name>, e.g. Dataset501_brats (nnU-Net asks for ids "
                                "of 500 and above for one's own datasets).")


def _warn_normalisation(modalities: Sequence[str]) -> None:
    """Log the modality names nnU-Net reads as a normalisation scheme rather than z-scoring them as glioseg does."""
    for index, modality in enumerate(modalities):
        if modality.casefold() in NNUNET_NORMALISATIONS:
            log.warning("channel %d is named %r, which nnU-Net reads as its '%s' normalisation (glioseg z-scores each "
                        "case): the two models do not see the same inputs; edit channel_names in dataset.json if that "
                        "is not meant", index, modality, modality.casefold())


def _copy_nifti(source: Path, target: Path) -> None:
    """Byte for byte when the endings agree; a ``.nii`` gzipped into a ``.nii.gz`` (the same image)."""
    if source.name.endswith(".nii") and target.name.endswith(".nii.gz"):
        with source.open("rb") as raw, gzip.open(target, "wb", compresslevel=6) as packed:
            shutil.copyfileobj(raw, packed)
    else:
        shutil.copyfile(source, target)


def _write_labels(source: Path, target: Path, values: Mapping[int, int]) -> None:
    """The label map with each value renumbered; header and geometry kept."""
    image = load_image(source)
    data = read_label(source)
    lookup = np.zeros(max(values) + 1, np.uint8)
    for old, new in values.items():
        lookup[old] = new
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    nib.save(nib.Nifti1Image(lookup[data], image.affine, header), str(target))


def export_nnunet(manifest: pd.DataFrame, info: DatasetInfo, folds: Mapping[str, Any], out: str | Path,
                  validation_folds: int | None = None) -> dict[str, int]:
    """Write the dataset as the nnU-Net raw dataset ``out`` (``DatasetXXX_Name``); returns case counts."""
    out = Path(out)
    check_dataset_folder(out)
    if not info.labelled:
        raise GliosegError(f"dataset '{info.name}' has no labels (labelled: false): nnU-Net cannot train on it",
                           hint="export a labelled dataset; an unlabelled one is only predicted.")
    training = {item["case"] for item in folds["training"]}
    testing = {item["case"] for item in folds["testing"]}
    split = splits_final(folds, validation_folds)
    case_labels(manifest, sorted(training | testing))
    rows = manifest[manifest["case"].isin(training | testing)].sort_values("case")
    from_nnunet = info.layout == "nnunet"
    if from_nnunet:
        description = load_dataset_json(_source_dataset_json(manifest))
        description["numTraining"] = len(training)
        ending = str(description.get("file_ending", ".nii.gz"))
        renumber = None
    else:
        description = dataset_json(info, len(training))
        _warn_normalisation(info.modalities)
        ending = ".nii.gz"
        renumber = nnunet_values(info.convention)
        if all(old == new for old, new in renumber.items()):
            renumber = None
    with atomic_dir(out, replaces=lambda entry: entry.name in EXPORT_ENTRIES) as tmp:
        for folder in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if testing else ()):
            (tmp / folder).mkdir()
        for _, row in tqdm(rows.iterrows(), total=len(rows), desc=f"exporting {info.name}", unit="case"):
            part = "Ts" if row["case"] in testing else "Tr"
            for index, modality in enumerate(info.modalities):
                _copy_nifti(Path(row[image_column(modality)]), tmp / f"images{part}" / f"{row['case']}_{index:04d}{ending}")
            target = tmp / f"labels{part}" / f"{row['case']}{ending}"
            if renumber is None:
                _copy_nifti(Path(row["label"]), target)
            else:
                _write_labels(Path(row["label"]), target, renumber)
        (tmp / "dataset.json").write_text(json.dumps(description, indent=4) + "\n", encoding="utf-8")
        (tmp / "splits_final.json").write_text(json.dumps(split, indent=4) + "\n", encoding="utf-8")
    log.info("%s: %d training and %d test cases written to %s", info.name, len(training), len(testing), out)
    return {"training": len(training), "test": len(testing)}


# ---------------------------------------------------------------- predictions made elsewhere


def parse_label_map(label_map: Mapping[Any, Any] | None, convention: LabelConvention | None = None) -> dict[int, int]:
    """``{value in the predictions: value in the dataset's convention}``, keys from YAML ints or JSON strings.

    With ``convention``, a value mapped to something outside it is refused here,
    once, rather than as a fault of every prediction that holds it.
    """
    hint = ("write the external experiment's label_map as {value in the predictions: value in the dataset}, e.g. {3: 4} "
            "for nnU-Net's BraTS values (an exported dataset's dataset.json: glioseg → label_values).")
    if label_map is not None and not isinstance(label_map, Mapping):
        raise GliosegError(f"label_map {label_map!r} is not a mapping of label values", hint=hint)
    parsed = {}
    for key, value in (label_map or {}).items():
        if not str(key).isdigit() or not str(value).isdigit():
            raise GliosegError(f"label_map entry {key!r}: {value!r} is not a pair of label values", hint=hint)
        parsed[int(key)] = int(value)
    outside = sorted(set(parsed.values()) - set(convention.values)) if convention else []
    if outside:
        raise GliosegError(f"label_map maps to {outside}, outside the {convention.name} convention {sorted(convention.values)}",
                           hint=hint)
    return parsed


def _is_prediction(entry: Path) -> bool:
    """What an import's output folder holds: ``<case>.nii.gz`` files, which a new import may replace."""
    return entry.is_file() and entry.name.endswith(".nii.gz")


def import_predictions(source: str | Path, manifest: pd.DataFrame, info: DatasetInfo, cases: Sequence[str], out: str | Path,
                       label_map: Mapping[Any, Any] | None = None) -> None:
    """Check and copy an evaluation's predictions from ``source`` into ``out`` (``<case>.nii.gz`` each).

    Every problem (a missing case, another grid, values outside the
    convention) is reported at once, naming the folder; nothing is written then.
    Each is written as glioseg's inference writes its own (uint8, on the
    reference label's geometry), whatever type the other tool saved.
    """
    source, mapping = Path(source), parse_label_map(label_map, info.convention)
    labels = case_labels(manifest, cases)
    files, problems = find_predictions(source, cases)
    if Path(out).resolve() == source.resolve():
        raise GliosegError("the output folder is the folder of predictions read", path=out,
                           hint="import into another folder (the pipeline's is results/predictions/<experiment>/...).")
    found: dict[str, np.ndarray] = {}
    hints = [naming_hint(source, cases)] if problems else []
    for case in tqdm(files, desc=f"checking predictions in {source.name}", unit="case"):
        try:
            found[case] = checked_prediction(files[case], labels[case], info.convention, mapping)
        except GliosegError as exc:
            problems[case] = exc.problem
            hints += [exc.hint] if exc.hint and exc.hint not in hints else []
    if problems:
        listing = "\n".join(f"    {case}: {problems[case]}" for case in cases if case in problems)
        raise GliosegError(f"{len(problems)} of {len(cases)} predictions are unusable:\n{listing}", path=source,
                           hint="\n  ".join(hints))
    warn_unknown_predictions(source, manifest["case"].tolist())
    with atomic_dir(out, replaces=_is_prediction) as tmp:
        for case, values in found.items():
            write_label_map(tmp / f"{case}.nii.gz", values, load_image(labels[case]))
    log.info("%d predictions from %s", len(found), source)
