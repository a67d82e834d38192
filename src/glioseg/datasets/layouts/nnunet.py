"""The nnunet layout: an nnU-Net v2 raw dataset, ``DatasetXXX_Name/`` with its ``dataset.json``.

``imagesTr/<case>_<XXXX><ending>`` holds channel ``XXXX`` (four digits) of
each training case and ``labelsTr/<case><ending>`` its label map; cases in
``imagesTs/`` are read too when ``labelsTs/`` gives their labels (they are then
nnU-Net's test set: manifest column ``nnunet_set`` = ``Ts``, and a given
``splits_final.json`` holds them out), and skipped otherwise, having nothing
to be scored against.

Everything else comes from ``dataset.json``:

- ``channel_names`` (v1: ``modality``) give the modalities, in channel
  order, named as written, lower-cased (``FLAIR`` → ``flair``, which the
  fingerprint and figures look for); ``layout_options → modalities`` renames
  them by channel index or name.
- ``labels`` give the label convention. A *regions-based* dataset (some
  label a list of values, e.g. ``"whole tumor": [1, 2, 3]``) names its regions:
  whole tumour, tumour core and enhancing tumour by their usual names or
  abbreviations, or as ``layout_options → regions`` says; ``regions_class_order``
  gives the value painted for each region when predictions are written back.
  A *label-based* dataset names tissue classes: edema (WT), necrosis or
  non-enhancing core (TC, WT), enhancing tumour (TC, WT, ET), or a single
  tumour/lesion label (WT); ``layout_options → labels`` ({value: [regions]},
  as the custom layout's) replaces the guess.

The layout is built from the ``dataset.json`` it will read:
:func:`glioseg.datasets.layouts.resolve_layout_options` puts the file's
content into the options under ``dataset_json`` (the manifest stage does this),
so that the modalities and the convention are known before any case is.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glioseg.datasets.layouts.base import CaseFiles, Layout, captured_patient
from glioseg.datasets.layouts.folders import existing_file, in_case_order, is_debris
from glioseg.errors import GliosegError
from glioseg.labels import REGIONS, LabelConvention, nested_convention

log = logging.getLogger(__name__)

#: The keys a user may give in ``layout_options`` (``dataset_json`` is filled in by glioseg).
NNUNET_OPTIONS = frozenset({"modalities", "labels", "regions", "patient"})
DESCRIPTION = "dataset_json"

#: Region names nnU-Net's BraTS datasets and others use, lower-cased, for a regions-based dataset.
REGION_NAMES = {
    "WT": ("whole tumor", "whole tumour", "whole_tumor", "whole-tumor", "wt", "whole"),
    "TC": ("tumor core", "tumour core", "tumor_core", "tumor-core", "tc", "core"),
    "ET": ("enhancing tumor", "enhancing tumour", "enhancing_tumor", "enhancing-tumor", "et", "enhancing"),
}

#: Tissue-class names of a label-based dataset, lower-cased, and the regions each label belongs to.
CLASS_NAMES = {
    ("edema", "oedema", "peritumoral edema", "peritumoral oedema", "ed", "snfh", "surrounding non-enhancing flair hyperintensity"):
        ("WT",),
    ("necrosis", "ncr", "net", "ncr/net", "ncr_net", "necrotic tumor core", "necrotic and non-enhancing tumor core",
     "non-enhancing tumor", "non-enhancing tumour", "non-enhancing tumor core", "netc", "necrotic"): ("TC", "WT"),
    ("enhancing tumor", "enhancing tumour", "enhancing", "et"): ("TC", "WT", "ET"),
    ("tumor", "tumour", "lesion", "whole tumor", "whole tumour", "abnormality", "foreground"): ("WT",),
}

_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_NAME = re.compile(r"[^a-z0-9_-]+")
_ENDINGS = (".nii.gz", ".nii")


def _error(problem: str, path: Path | None = None) -> GliosegError:
    return GliosegError(
        f"nnunet layout: {problem}",
        path=path,
        hint="fix dataset.json (nnU-Net v2: channel_names, labels, file_ending; regions_class_order for regions), or "
        "describe what it lacks in the dataset's layout_options: modalities {channel: name}, labels {value: [TC|WT|ET, ...]} "
        "for a label-based dataset, regions {label name: TC|WT|ET} for a regions-based one, patient (a regex with "
        "(?P<patient>...)).",
    )


# ---------------------------------------------------------------- finding and reading dataset.json


def dataset_folder(root: Path) -> Path:
    """The ``DatasetXXX_Name`` folder: ``root`` itself, or the one folder under it (two levels at most) with a dataset.json."""
    root = Path(root)
    if (root / "dataset.json").is_file():
        return root
    found = sorted({p.parent for pattern in ("*/dataset.json", "*/*/dataset.json") for p in root.glob(pattern)
                    if (p.parent / "imagesTr").is_dir() and not is_debris(p.parent, root)})
    if len(found) != 1:
        what = "no folder with a dataset.json and an imagesTr folder" if not found else \
            f"{len(found)} nnU-Net datasets ({', '.join(p.name for p in found)})"
        raise GliosegError(f"nnunet layout: {what} under the dataset folder", path=root,
                           hint="point the dataset's source at one DatasetXXX_Name folder (or an archive holding one).")
    return found[0]


def load_dataset_json(path: Path) -> dict[str, Any]:
    """The content of one ``dataset.json``; a byte-order mark (Windows editors write one) is no error."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(f"dataset.json is not readable JSON ({exc})", path) from None
    if not isinstance(payload, dict):
        raise _error("dataset.json is not a JSON object", path)
    return payload


def described_options(options: Mapping[str, Any] | None, root: str | Path) -> dict[str, Any]:
    """``options`` with the dataset's ``dataset.json`` under :data:`DESCRIPTION`, checked by building the layout.

    Checked here, where the file's path is known, so that what the file lacks
    or gets wrong (no ``channel_names``, labels that are no tumour region …)
    is reported with the file named; the layout factory sees only its content.
    """
    path = dataset_folder(Path(root)) / "dataset.json"
    resolved = {**(options or {}), DESCRIPTION: load_dataset_json(path)}
    try:
        nnunet_layout(resolved)
    except GliosegError as exc:
        raise GliosegError(exc.problem, path=exc.path or path, hint=exc.hint) from None
    return resolved


# ---------------------------------------------------------------- channels and labels


def _channels(description: Mapping[str, Any], renames: Mapping[str, Any]) -> tuple[str, ...]:
    channels = description.get("channel_names", description.get("modality"))
    if channels is None:
        raise _error("dataset.json has no channel_names {\"0\": name, ...}")
    if not isinstance(channels, Mapping) or not channels or not all(str(k).isdigit() for k in channels):
        raise _error(f"dataset.json's channel_names must be {{\"0\": name, ...}}, not {channels!r}")
    indices = sorted(int(k) for k in channels)
    if indices != list(range(len(indices))):
        raise _error(f"channel_names are numbered {indices}, not 0, 1, …")
    names = []
    for index in indices:
        original = channels.get(str(index), channels.get(index))
        if not isinstance(original, str):
            raise _error(f"channel {index} is named {original!r}, not a string such as \"FLAIR\"")
        chosen = renames.get(str(index), renames.get(original))
        name = str(chosen) if chosen is not None else _NAME.sub("_", original.strip().lower()).strip("_-")
        if not name or not name[0].isalnum():
            raise _error(f"channel {index} ({original!r}) gives no usable modality name; name it in layout_options → modalities")
        names.append(name)
    if len(set(names)) != len(names):
        raise _error(f"channels {names} give the same modality name twice; name them in layout_options → modalities")
    return tuple(names)


def _values(value: Any, name: str) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise _error(f"label {name!r} has value {value!r}, not a label value or a list of them")
    return tuple(values)


def _lookup(names: Mapping[Any, tuple[str, ...]], label: str) -> Any:
    key = label.strip().lower()
    return next((target for aliases, target in names.items() if key in aliases), None)


def convention_from(description: Mapping[str, Any], options: Mapping[str, Any]) -> LabelConvention:
    """The label convention a dataset.json's ``labels`` (and ``regions_class_order``) describe, with the options' overrides."""
    labels = description.get("labels")
    if labels is None:
        raise _error("dataset.json has no labels {name: value, ...}")
    if not isinstance(labels, Mapping) or not labels:
        raise _error(f"dataset.json's labels must be {{name: value, ...}}, not {labels!r}")
    parsed = {str(name): _values(value, str(name)) for name, value in labels.items()}
    if "ignore" in {name.lower() for name in parsed}:
        raise _error("dataset.json has an 'ignore' label, which glioseg's scores cannot leave out; remove it")
    foreground = {name: values for name, values in parsed.items() if values != (0,)}
    if len(foreground) == len(parsed):
        raise _error("dataset.json labels have no background (a label of value 0)")
    regions_based = any(isinstance(v, (list, tuple)) for v in labels.values()) or "regions_class_order" in description
    if regions_based:
        return _regions_convention(foreground, description.get("regions_class_order"), options.get("regions", {}))
    return _label_convention(foreground, options.get("labels"))


def _regions_convention(foreground: Mapping[str, tuple[int, ...]], order: Any,
                        renames: Mapping[str, str]) -> LabelConvention:
    region_of = {}
    for name in foreground:
        region = renames.get(name) or next((r for r, aliases in REGION_NAMES.items() if name.strip().lower() in aliases), None)
        if region not in REGIONS:
            raise _error(f"region {name!r} is none of whole tumour, tumour core, enhancing tumour; say which in "
                         "layout_options → regions")
        region_of[name] = region
    if len(set(region_of.values())) != len(region_of):
        raise _error(f"two labels name the same region: {region_of}")
    members = {r: frozenset(foreground[name]) for r in REGIONS for name in foreground if region_of[name] == r}
    try:
        derived = nested_convention("nnunet", members)
    except ValueError as exc:
        raise _error(str(exc)) from None
    if order is None:
        return derived
    if not isinstance(order, list) or len(order) != len(foreground) or not all(isinstance(v, int) for v in order):
        raise _error(f"regions_class_order {order!r} must give one label value per region ({len(foreground)})")
    painted = {region_of[name]: value for name, value in zip(foreground, order)}
    for region, value in painted.items():
        inner = frozenset().union(*(m for m in members.values() if m < members[region]))
        if value not in members[region] - inner:
            raise _error(f"regions_class_order paints {region} with {value}, which is not a value of that region alone")
    paint = tuple((region, painted[region]) for region, _ in derived.paint)
    return LabelConvention("nnunet", members, paint)


def _label_convention(foreground: Mapping[str, tuple[int, ...]], override: Mapping[Any, Any] | None) -> LabelConvention:
    if override:
        from glioseg.datasets.layouts.custom import custom_convention

        convention = custom_convention(override)
        return LabelConvention("nnunet", convention.members, convention.paint)
    regions_of: dict[int, tuple[str, ...]] = {}
    for name, values in foreground.items():
        if len(values) != 1:
            raise _error(f"label {name!r} lists values {list(values)} in a dataset without regions_class_order")
        value = values[0]
        regions = ("WT",) if len(foreground) == 1 else _lookup(CLASS_NAMES, name)
        if regions is None:
            raise _error(f"label {name!r} ({value}) is no tumour class glioseg knows (edema, necrosis or non-enhancing core, "
                         "enhancing tumour); give every label's regions in layout_options → labels")
        regions_of[value] = regions
    members = {r: frozenset(v for v, rs in regions_of.items() if r in rs) for r in REGIONS
               if any(r in rs for rs in regions_of.values())}
    try:
        return nested_convention("nnunet", members)
    except ValueError as exc:
        raise _error(str(exc)) from None


# ---------------------------------------------------------------- the layout


def _ending(description: Mapping[str, Any]) -> str:
    ending = str(description.get("file_ending", ".nii.gz"))
    if ending not in _ENDINGS:
        raise _error(f"file_ending {ending!r}: glioseg reads NIfTI only ({', '.join(_ENDINGS)})")
    return ending


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - NNUNET_OPTIONS - {DESCRIPTION})
    if unknown:
        raise _error(f"unknown layout_options {unknown}; allowed: {sorted(NNUNET_OPTIONS)}")
    for key in ("modalities", "regions", "labels"):
        if key in options and not isinstance(options[key], Mapping):
            raise _error(f"layout_options → {key} must be a mapping")
    if "patient" in options:
        try:
            regex = re.compile(options["patient"])
        except (re.error, TypeError) as exc:
            raise _error(f"the 'patient' regex {options['patient']!r} is invalid: {exc}") from None
        if "patient" not in regex.groupindex:
            raise _error("the 'patient' regex needs a named group (?P<patient>...)")


def _cases_of(folder: Path, ending: str) -> dict[str, set[int]]:
    """Case id → channel numbers present, from ``<case>_<XXXX><ending>`` files.

    A folder holding images, none of them so named, is an error: the usual cause is a ``file_ending`` that is
    not the files' (``.nii`` for ``.nii.gz`` files), which would otherwise read as a dataset without cases.
    """
    found: dict[str, set[int]] = {}
    for path in folder.glob(f"*{ending}") if folder.is_dir() else ():
        stem = path.name[: -len(ending)]
        match = _CHANNEL_FILE.match(stem)
        if match and path.is_file():
            found.setdefault(match["case"], set()).add(int(match["channel"]))
    others = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(_ENDINGS)) if folder.is_dir() else []
    if others and not found:
        raise _error(f"{folder.name} holds no <case>_<XXXX>{ending} file (file_ending {ending!r}) but "
                     f"{len(others)} other NIfTI files, e.g. {others[0]}", folder)
    return found


def nnunet_layout(options: Mapping[str, Any]) -> Layout:
    """The layout of an nnU-Net raw dataset, from ``options[dataset_json]`` and the user's overrides.

    Without ``dataset_json`` (a config being checked before the data exists),
    only the overrides are checked, and the layout returned cannot find cases.
    """
    options = dict(options or {})
    _check_options(options)
    patient = re.compile(options["patient"]) if "patient" in options else None
    description = options.get(DESCRIPTION)
    if description is None:
        def unresolved(root: Path) -> list[CaseFiles]:
            raise GliosegError("the nnunet layout was built without its dataset.json", path=root,
                               hint="build it with glioseg.datasets.layouts.resolve_layout_options('nnunet', options, root), "
                                    "as the manifest stage does.")

        return Layout("nnunet", (), LabelConvention("nnunet", {}, ()), unresolved)
    modalities = _channels(description, options.get("modalities", {}))
    convention = convention_from(description, options)
    ending = _ending(description)

    def find_cases(root: Path) -> list[CaseFiles]:
        folder = dataset_folder(root)
        cases = []
        for images, labels, subset in (("imagesTr", "labelsTr", "Tr"), ("imagesTs", "labelsTs", "Ts")):
            channels = _cases_of(folder / images, ending)
            if subset == "Tr":
                names = set(channels) | {p.name[: -len(ending)] for p in (folder / labels).glob(f"*{ending}") if p.is_file()}
            else:
                names = {c for c in channels if (folder / labels / f"{c}{ending}").is_file()}
                if len(names) < len(channels):
                    log.info("%d cases of %s have no label in %s and are left out", len(channels) - len(names), images, labels)
            extra = sorted(f"{c}_{k:04d}{ending}" for c in names for k in channels.get(c, ()) if k >= len(modalities))
            if extra:
                raise _error(f"{images} holds channels dataset.json does not declare ({len(modalities)} channels): "
                             f"{', '.join(extra[:10])}", folder / images)
            for case in names:
                wanted = {m: folder / images / f"{case}_{k:04d}{ending}" for k, m in enumerate(modalities)}
                wanted["label"] = folder / labels / f"{case}{ending}"
                cases.append(CaseFiles(
                    case=case,
                    patient=captured_patient(patient, case, _error),
                    group="",
                    images={m: existing_file(wanted[m]) for m in modalities},
                    label=existing_file(wanted["label"]),
                    extra={"nnunet_set": subset},
                    wanted={name: str(path) for name, path in wanted.items()},
                ))
        return in_case_order(cases, root)

    return Layout("nnunet", modalities, convention, find_cases)
