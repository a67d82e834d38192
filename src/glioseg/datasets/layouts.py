"""Layout adapters: how one dataset's files are named and what its labels mean.

Each adapter turns an extracted folder into :class:`CaseFiles` and owns its
label convention and its patient-id rule; everything after the manifest is
layout-agnostic. Adding a layout is one function and one registry entry.

Case folders are found at any depth below the dataset root, because Kaggle
archives wrap the data in one or two folders of varying names; folders under a
hidden or ``__MACOSX`` component (macOS zip debris that mirrors every real
folder name) are never cases. A case id found twice is an error, since every
later stage names its files by case id.
"""

from __future__ import annotations

import csv
import glob
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glioseg.errors import GliosegError
from glioseg.labels import BRATS, LGG, REGIONS, LabelConvention
from glioseg.labels import BRATS2023 as BRATS2023_LABELS


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


@dataclass(frozen=True)
class Layout:
    """A dataset's file layout.

    ``masks``: every case comes with a brain-mask file (``CaseFiles.mask``),
    which preprocessing then trusts over any rule for finding the brain.
    ``physical_spacing``: whether the voxel spacing is a size in millimetres;
    when it is not (slices stacked from images with no spacing), distances
    such as HD95 are in pixels and are labelled so.
    """

    name: str
    modalities: tuple[str, ...]
    convention: LabelConvention
    find_cases: Callable[[Path], list[CaseFiles]]
    masks: bool = False
    physical_spacing: bool = True


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _nifti(folder: Path, stem: str) -> Path | None:
    """``stem.nii.gz`` or, failing that, ``stem.nii``: some releases and re-uploads ship uncompressed files."""
    return _existing(folder / f"{stem}.nii.gz") or _existing(folder / f"{stem}.nii")


def _is_debris(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def _case_folders(root: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Folders at any depth under ``root`` whose name matches ``pattern``, zip debris excluded.

    A folder wrapping a same-named folder is not a case: extracting a nested
    per-case archive (BraTS 2021's ``BraTS2021_00495.tar``) puts the case
    folder inside a folder named after the archive.
    """
    return [
        p
        for p in root.rglob("*")
        if pattern.match(p.name) and p.is_dir() and not _is_debris(p, root) and not (p / p.name).is_dir()
    ]


def _in_case_order(cases: Iterable[CaseFiles], root: Path) -> list[CaseFiles]:
    """Sort by case id, refusing duplicates (e.g. a training folder extracted twice into one root)."""
    ordered = sorted(cases, key=lambda c: c.case)
    duplicated = sorted({a.case for a, b in zip(ordered, ordered[1:]) if a.case == b.case})
    if duplicated:
        raise GliosegError(
            f"case ids found more than once: {', '.join(duplicated)}",
            path=root,
            hint="keep a single copy of each case folder under the dataset folder.",
        )
    return ordered


def _without_unlabelled_validation(found: Iterable[tuple[Path, CaseFiles]]) -> Iterable[CaseFiles]:
    """Drop unlabelled cases under a ``*ValidationData*`` folder: a challenge's validation release never
    published its labels, so it is not training data. An unlabelled case anywhere else stays, for the
    manifest to report."""
    return (case for folder, case in found if case.label is not None or not any("ValidationData" in part for part in folder.parent.parts))


# ---------------------------------------------------------------- BraTS 2018–2021


def _brats2021_cases(root: Path) -> list[CaseFiles]:
    """``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``, at any depth; one patient per case."""
    cases = (
        CaseFiles(
            case=folder.name,
            patient=folder.name,
            group="",
            images={m: _nifti(folder, f"{folder.name}_{m}") for m in BRATS2021.modalities},
            label=_nifti(folder, f"{folder.name}_seg"),
        )
        for folder in _case_folders(root, re.compile(r"^BraTS2021_\d{5}$"))
    )
    return _in_case_order(cases, root)


_BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")


def _graded_cases(root: Path, case_prefix: str) -> list[CaseFiles]:
    """BraTS 2018/2019: ``.../{HGG,LGG}/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``; group = the grade folder.

    Only case folders directly inside a folder named ``HGG`` or ``LGG`` count,
    which also leaves out the validation release (its cases sit directly in
    ``MICCAI_BraTS_<year>_Data_Validation/``, ungraded and unlabelled). Each
    case is its own patient: these releases publish no cross-case patient ids.
    """
    pattern = re.compile(rf"^{re.escape(case_prefix)}_\w+$", re.IGNORECASE)  # re-uploads vary the prefix's case
    cases = (
        CaseFiles(
            case=folder.name,
            patient=folder.name,
            group=folder.parent.name,
            images={m: _nifti(folder, f"{folder.name}_{m}") for m in _BRATS_MODALITIES},
            label=_nifti(folder, f"{folder.name}_seg"),
        )
        for folder in _case_folders(root, pattern)
        if folder.parent.name in ("HGG", "LGG")
    )
    return _in_case_order(cases, root)


def _brats2018_cases(root: Path) -> list[CaseFiles]:
    """Kaggle ``sanglequang/brats2018``: ``MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/Brats18_<site>_<id>_1/...``.

    Note the ``Brats18_`` prefix (2019 writes ``BraTS19_``); prefixes match case-insensitively.
    ``survival_data.csv`` beside ``HGG``/``LGG`` is not read.
    """
    return _graded_cases(root, "Brats18")


def _brats2019_cases(root: Path) -> list[CaseFiles]:
    """``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_<site>_<id>_1/...``, named as in 2018.

    ``name_mapping.csv`` and ``survival_data.csv`` beside ``HGG``/``LGG`` are not
    read: the grade is already the folder.
    """
    return _graded_cases(root, "BraTS19")


_BRATS2020_CASE = re.compile(r"^BraTS20_(Training|Validation)_\d{3}$")

#: Segmentations the release ships under another name, accepted for that case only.
_BRATS2020_SEG_ALIASES = {"BraTS20_Training_355": "W39_1998.09.19_Segm.nii"}


def _brats2020_label(folder: Path) -> Path | None:
    alias = _BRATS2020_SEG_ALIASES.get(folder.name)
    return _nifti(folder, f"{folder.name}_seg") or (_existing(folder / alias) if alias else None)


def _grades(mapping: Path) -> dict[str, str]:
    """``BraTS_2020_subject_ID`` → ``Grade`` from a ``name_mapping.csv``; empty when there is none."""
    if not mapping.is_file():
        return {}
    with mapping.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"Grade", "BraTS_2020_subject_ID"} <= rows[0].keys():
        raise GliosegError(
            "name_mapping.csv has no 'Grade' and 'BraTS_2020_subject_ID' columns",
            path=mapping,
            hint="restore the file from the BraTS 2020 archive, or delete it to leave cases ungrouped.",
        )
    return {row["BraTS_2020_subject_ID"].strip(): row["Grade"].strip() for row in rows}


def _brats2020_cases(root: Path) -> list[CaseFiles]:
    """Kaggle ``awsaf49/brats20-dataset-training-validation``.

    Reads ``BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/BraTS20_Training_XXX/
    BraTS20_Training_XXX_{t1,t1ce,t2,flair,seg}.nii``. Quirks: files are
    uncompressed ``.nii``; case 355's segmentation is named
    ``W39_1998.09.19_Segm.nii``; grades are not folders but the ``Grade``
    column of ``name_mapping.csv`` beside the case folders (a case it does not
    list gets an empty group); ``survival_info.csv`` is ignored. The
    ``BraTS2020_ValidationData`` cases have no labels and are skipped; a
    training case without a label is kept, for the manifest to report.
    """
    folders = _case_folders(root, _BRATS2020_CASE)
    grades = {parent: _grades(parent / "name_mapping.csv") for parent in {f.parent for f in folders}}
    found = (
        (
            folder,
            CaseFiles(
                case=folder.name,
                patient=folder.name,
                group=grades[folder.parent].get(folder.name, ""),
                images={m: _nifti(folder, f"{folder.name}_{m}") for m in _BRATS_MODALITIES},
                label=_brats2020_label(folder),
            ),
        )
        for folder in folders
    )
    return _in_case_order(_without_unlabelled_validation(found), root)


# ---------------------------------------------------------------- BraTS 2023

_BRATS2023_CASE = re.compile(r"^(?P<patient>BraTS-GLI-\d{5})-\d{3}$")


def _brats2023_cases(root: Path) -> list[CaseFiles]:
    """BraTS 2023 glioma (GLI): ``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/BraTS-GLI-XXXXX-YYY/
    BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz``.

    Quirks: hyphens, not underscores; new modality names (t1n = T1, t1c = T1
    post-contrast, t2w = T2, t2f = FLAIR); labels 1/2/3 with 3 = enhancing
    tumour. ``YYY`` is the timepoint: ``BraTS-GLI-XXXXX`` is the patient, so a
    patient's timepoints stay in one split. Unlabelled cases of the
    ``...-ValidationData`` release are skipped, as for 2020.
    """
    found = (
        (
            folder,
            CaseFiles(
                case=folder.name,
                patient=_BRATS2023_CASE.match(folder.name)["patient"],
                group="",
                images={m: _nifti(folder, f"{folder.name}-{m}") for m in BRATS2023.modalities},
                label=_nifti(folder, f"{folder.name}-seg"),
            ),
        )
        for folder in _case_folders(root, _BRATS2023_CASE)
    )
    return _in_case_order(_without_unlabelled_validation(found), root)


# ---------------------------------------------------------------- LGG kaggle_3m (stacked)

#: ``TCGA_<inst>_<patient>_<date>``: the patient is the folder name without the scan date.
LGG_CASE = re.compile(r"^(?P<patient>TCGA_[A-Za-z0-9]+_[A-Za-z0-9]+)_\d{8}$")
LGG_MODALITIES = ("pre", "flair", "post")
_LGG_RESERVED = {"case", "patient", "group", "label", "mask"}


def _lgg_metadata(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
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
    clashing = [c for c in columns if c in _LGG_RESERVED or c.startswith("image_")]
    if clashing:
        raise GliosegError(f"data.csv columns {clashing} clash with the manifest's own columns", path=path, hint=hint)
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        patient = (row["Patient"] or "").strip()
        if patient in table:
            raise GliosegError(f"patient {patient} has two rows", path=path, hint="keep one row per patient in data.csv.")
        table[patient] = {c: (row[c] or "").strip() for c in columns}
    return columns, table


def _lgg_kaggle3m_cases(root: Path) -> list[CaseFiles]:
    """Kaggle ``mateuszbuda/lgg-mri-segmentation`` after :func:`glioseg.datasets.lgg.stack_lgg`:
    ``TCGA_<inst>_<patient>_<date>/<case>_{pre,flair,post,seg}.nii.gz`` and ``data.csv`` at the root.

    Patient = ``TCGA_<inst>_<patient>`` (two scan dates of one person stay in one
    split); no group; every ``data.csv`` column but ``Patient`` is passed through
    as an extra manifest column (empty for a patient the file does not list).
    """
    columns, metadata = _lgg_metadata(root / "data.csv")
    cases = []
    for folder in _case_folders(root, LGG_CASE):
        patient = LGG_CASE.match(folder.name)["patient"]
        cases.append(
            CaseFiles(
                case=folder.name,
                patient=patient,
                group="",
                images={m: _existing(folder / f"{folder.name}_{m}.nii.gz") for m in LGG_MODALITIES},
                label=_existing(folder / f"{folder.name}_seg.nii.gz"),
                extra={c: metadata.get(patient, {}).get(c, "") for c in columns},
            )
        )
    return _in_case_order(cases, root)


# ---------------------------------------------------------------- custom

#: The keys of the custom layout's ``layout_options`` (the config schema's ``layout_options`` lists the same).
CUSTOM_OPTIONS = frozenset({"modalities", "label", "labels", "mask", "cases", "patient", "group"})
_MODALITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def _spec_error(problem: str) -> GliosegError:
    return GliosegError(
        f"custom layout: {problem}",
        hint="fix the dataset's layout_options: modalities {name: pattern}, label: pattern, labels {value: [TC|WT|ET, ...]}, "
        "and optionally mask (a brain-mask pattern), cases (a folder glob), patient and group (regexes with a named group); "
        "see docs/custom-layout.md.",
    )


def _check_pattern(key: str, pattern: Any, inside: str = "the case folder", placeholders: frozenset[str] = frozenset({"{case}"})) -> None:
    """A pattern is a glob relative to ``inside`` that uses no placeholder but ``placeholders``."""
    if not isinstance(pattern, str) or not pattern:
        raise _spec_error(f"'{key}' must be a file pattern (a glob relative to {inside})")
    unknown = sorted(set(_PLACEHOLDER.findall(pattern)) - placeholders)
    if unknown:
        allowed = f"the only one is {', '.join(sorted(placeholders))}" if placeholders else "it takes none"
        raise _spec_error(f"the '{key}' pattern {pattern!r} has placeholders {unknown}; {allowed}")
    if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
        raise _spec_error(f"the '{key}' pattern {pattern!r} must stay inside {inside} (no leading / and no ..)")


def _check_spec(spec: Mapping[str, Any]) -> None:
    unknown = sorted(set(spec) - CUSTOM_OPTIONS)
    if unknown:
        raise _spec_error(f"unknown keys {unknown}; allowed: {sorted(CUSTOM_OPTIONS)}")
    missing = sorted({"modalities", "label", "labels"} - set(spec))
    if missing:
        raise _spec_error(f"missing keys {missing}")
    modalities = spec["modalities"]
    if not isinstance(modalities, Mapping) or not modalities or not all(isinstance(p, str) for p in modalities.values()):
        raise _spec_error("'modalities' must map each modality name to a file pattern")
    bad_names = [str(name) for name in modalities if not _MODALITY_NAME.match(str(name))]
    if bad_names:
        raise _spec_error(f"modality names {bad_names} must be letters, digits, _ and - (they become manifest columns image_<name>)")
    for name, pattern in modalities.items():
        _check_pattern(f"modalities → {name}", pattern)
    for key in ("label", "mask"):
        if key in spec:
            _check_pattern(key, spec[key])
    if "cases" in spec:
        _check_pattern("cases", spec["cases"], inside="the dataset folder", placeholders=frozenset())


def _named_regex(spec: Mapping[str, Any], key: str) -> re.Pattern[str] | None:
    """``spec[key]`` compiled, checked to capture a group named ``key``; ``None`` when the key is absent."""
    if key not in spec:
        return None
    try:
        regex = re.compile(spec[key])
    except (re.error, TypeError) as exc:
        raise _spec_error(f"the '{key}' regex {spec[key]!r} is invalid: {exc}") from None
    if key not in regex.groupindex:
        raise _spec_error(f"the '{key}' regex needs a named group (?P<{key}>...)")
    return regex


def _label_regions(labels: Mapping[Any, Any]) -> dict[int, frozenset[str]]:
    """Parse ``{value: [regions]}``, accepting YAML int keys and JSON string keys alike."""
    if not isinstance(labels, Mapping) or not labels:
        raise _spec_error("'labels' must map each label value to its regions")
    parsed: dict[int, frozenset[str]] = {}
    for value, regions in labels.items():
        if not str(value).isdigit() or int(value) == 0:
            raise _spec_error(f"label value {value!r} must be a positive integer (0 is background)")
        if not isinstance(regions, (list, tuple)) or not regions or not set(regions) <= set(REGIONS):
            raise _spec_error(f"label {value} must list one or more regions among {list(REGIONS)}, not {regions!r}")
        parsed[int(value)] = frozenset(regions)
    return parsed


def custom_convention(labels: Mapping[Any, Any]) -> LabelConvention:
    """A :class:`LabelConvention` from ``{value: [regions]}``.

    Regions keep the canonical TC, WT, ET order, limited to those named. They
    must be nested or disjoint, as BraTS regions are, or no label map could
    express a set of region masks; ``paint`` then runs from the outermost
    region (most label values) inward, each region painted with its smallest
    label value that no region inside it claims.
    """
    regions_of = _label_regions(labels)
    members = {r: frozenset(v for v, rs in regions_of.items() if r in rs) for r in REGIONS if any(r in rs for rs in regions_of.values())}
    for a in members:
        for b in members:
            if members[a] & members[b] and not (members[a] <= members[b] or members[b] <= members[a]):
                raise _spec_error(f"regions {a} and {b} overlap without one containing the other")
    order = sorted(members, key=lambda r: (-len(members[r]), REGIONS.index(r)))
    paint = []
    for region in order:
        inner = frozenset().union(*(m for m in members.values() if m < members[region]))
        own = members[region] - inner
        if not own:
            raise _spec_error(f"region {region} has no label value of its own, so predictions of it could not be written")
        paint.append((region, min(own)))
    return LabelConvention(name="custom", members=members, paint=tuple(paint))


def _single_match(folder: Path, pattern: str, case: str) -> Path | None:
    """The one file matching ``pattern`` (``{case}`` filled in) under ``folder``; ``None`` if there is none."""
    matches = sorted(p for p in folder.glob(pattern.replace("{case}", glob.escape(case))) if p.is_file())
    if len(matches) > 1:
        raise GliosegError(
            f"case {case}: pattern '{pattern}' matches {len(matches)} files: {', '.join(p.name for p in matches)}",
            path=folder,
            hint="make the layout_options pattern specific enough to match one file per case.",
        )
    return matches[0] if matches else None


def _patient(regex: re.Pattern[str] | None, case: str) -> str:
    """The patient id captured from the case id; a case the regex misses is an error, not a patient of its own."""
    if regex is None:
        return case
    found = regex.search(case)
    if found is None or not found["patient"]:
        raise _spec_error(f"the 'patient' regex {regex.pattern!r} captures no patient id in case '{case}'")
    return found["patient"]


def _group(regex: re.Pattern[str] | None, relative: str) -> str:
    """The group captured from the case folder's path under the root; empty (ungrouped) when it does not match."""
    found = regex.search(relative) if regex else None
    return (found["group"] or "") if found else ""


def custom_layout(spec: Mapping[str, Any]) -> Layout:
    """A layout described in the config, for datasets without an adapter of their own.

    ``spec`` keys (patterns are globs relative to the case folder, ``{case}``
    standing for the case id; each must match at most one file)::

        modalities: {t1c: "{case}_T1c.nii.gz", flair: "anat/*FLAIR*.nii.gz"}   # any subset, in channel order
        label: "{case}_seg.nii.gz"
        labels: {1: [WT]}              # value -> regions among TC, WT, ET
        mask: "{case}_brainmask.nii.gz"   # optional: a 0/1 brain mask per case, used to crop and normalise
        cases: "*"                     # optional folder glob under the root; case id = folder name
        patient: "^(?P<patient>P\\d+)"  # optional; default: patient = case id
        group: "(?P<group>HGG|LGG)/"   # optional; searched in the folder's path under the root, no match = ""

    The spec is checked here, so a config mistake fails before any file is read
    (docs/custom-layout.md has a worked example).
    """
    _check_spec(spec)
    modalities = {str(name): str(pattern) for name, pattern in spec["modalities"].items()}
    convention = custom_convention(spec["labels"])
    label, mask = spec["label"], spec.get("mask")
    case_glob = str(spec.get("cases", "*"))
    patient, group = _named_regex(spec, "patient"), _named_regex(spec, "group")

    def find_cases(root: Path) -> list[CaseFiles]:
        folders = (p for p in root.glob(case_glob) if p.is_dir() and not _is_debris(p, root))
        cases = (
            CaseFiles(
                case=folder.name,
                patient=_patient(patient, folder.name),
                group=_group(group, folder.relative_to(root).as_posix()),
                images={m: _single_match(folder, pattern, folder.name) for m, pattern in modalities.items()},
                label=_single_match(folder, label, folder.name),
                mask=_single_match(folder, mask, folder.name) if mask else None,
            )
            for folder in folders
        )
        return _in_case_order(cases, root)

    return Layout("custom", tuple(modalities), convention, find_cases, masks=mask is not None)


# ---------------------------------------------------------------- registry

BRATS2018 = Layout("brats2018", _BRATS_MODALITIES, BRATS, _brats2018_cases)
BRATS2019 = Layout("brats2019", _BRATS_MODALITIES, BRATS, _brats2019_cases)
BRATS2020 = Layout("brats2020", _BRATS_MODALITIES, BRATS, _brats2020_cases)
BRATS2021 = Layout("brats2021", _BRATS_MODALITIES, BRATS, _brats2021_cases)
BRATS2023 = Layout("brats2023", ("t1n", "t1c", "t2w", "t2f"), BRATS2023_LABELS, _brats2023_cases)
#: Stacked from tifs that carry no spacing (glioseg.datasets.lgg): unit voxels, distances in pixels.
LGG_KAGGLE3M = Layout("lgg_kaggle3m", LGG_MODALITIES, LGG, _lgg_kaggle3m_cases, physical_spacing=False)

#: Layouts fixed by their dataset's release.
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (BRATS2018, BRATS2019, BRATS2020, BRATS2021, BRATS2023, LGG_KAGGLE3M)}

#: Layouts built from the dataset's ``layout_options``.
LAYOUT_FACTORIES: dict[str, Callable[[Mapping[str, Any]], Layout]] = {"custom": custom_layout}


def layout_names() -> list[str]:
    """Every name a dataset's ``layout`` may take (the config schema's enum must list exactly these)."""
    return sorted([*LAYOUTS, *LAYOUT_FACTORIES])


def get_layout(name: str, options: Mapping[str, Any] | None = None) -> Layout:
    """The layout called ``name``; ``options`` (the dataset's ``layout_options``) configure a ``custom`` one."""
    if name in LAYOUT_FACTORIES:
        if not options:
            raise GliosegError(f"the {name} layout needs layout_options", hint="describe the dataset's files under layout_options (see glioseg.datasets.layouts.custom_layout).")
        return LAYOUT_FACTORIES[name](options)
    if name not in LAYOUTS:
        raise KeyError(f"unknown layout '{name}'; known layouts: {layout_names()}")
    if options:
        raise GliosegError(f"the {name} layout takes no layout_options", hint="remove layout_options, or use layout: custom.")
    return LAYOUTS[name]


def check_layout_options(dataset: str, layout: str, options: Mapping[str, Any] | None, source: str | Path = "config") -> None:
    """Check a dataset's ``layout`` and ``layout_options`` as far as can be done without reading data.

    What the config schema cannot say (a regex without its named group,
    label regions that overlap without nesting, an unknown placeholder in a
    pattern) would otherwise surface only when the manifest job runs.
    """
    try:
        get_layout(layout, options)
    except KeyError as exc:
        raise GliosegError(f"dataset '{dataset}': {exc.args[0]}", path=source, hint="use one of the known layouts.") from None
    except GliosegError as exc:
        raise GliosegError(f"dataset '{dataset}': {exc.problem}", path=source, hint=exc.hint) from None
