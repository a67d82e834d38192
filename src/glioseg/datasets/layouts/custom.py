"""The custom layout: a dataset's files and labels described in the config's ``layout_options``.

For datasets without an adapter of their own. The options are checked when
the layout is built, so a config mistake fails before any file is read
(docs/custom-layout.md has a worked example).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glioseg.datasets.layouts.base import CaseFiles, Layout, captured_patient
from glioseg.datasets.layouts.folders import in_case_order, is_debris
from glioseg.errors import GliosegError
from glioseg.labels import REGIONS, LabelConvention, nested_convention

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

    Regions keep the canonical TC, WT, ET order, limited to those named; the
    paint order follows from how they nest (:func:`glioseg.labels.nested_convention`).
    """
    regions_of = _label_regions(labels)
    members = {r: frozenset(v for v, rs in regions_of.items() if r in rs) for r in REGIONS if any(r in rs for rs in regions_of.values())}
    try:
        return nested_convention("custom", members)
    except ValueError as exc:
        raise _spec_error(str(exc)) from None


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
    """
    _check_spec(spec)
    modalities = {str(name): str(pattern) for name, pattern in spec["modalities"].items()}
    convention = custom_convention(spec["labels"])
    label, mask = spec["label"], spec.get("mask")
    case_glob = str(spec.get("cases", "*"))
    patient, group = _named_regex(spec, "patient"), _named_regex(spec, "group")

    def find_cases(root: Path) -> list[CaseFiles]:
        folders = (p for p in root.glob(case_glob) if p.is_dir() and not is_debris(p, root))
        patterns = {**modalities, "label": label, **({"mask": mask} if mask else {})}
        cases = (
            CaseFiles(
                case=folder.name,
                patient=captured_patient(patient, folder.name, _spec_error),
                group=_group(group, folder.relative_to(root).as_posix()),
                images={m: _single_match(folder, pattern, folder.name) for m, pattern in modalities.items()},
                label=_single_match(folder, label, folder.name),
                mask=_single_match(folder, mask, folder.name) if mask else None,
                wanted={name: str(folder / pattern.replace("{case}", folder.name)) for name, pattern in patterns.items()},
            )
            for folder in folders
        )
        return in_case_order(cases, root)

    return Layout("custom", tuple(modalities), convention, find_cases, masks=mask is not None)
