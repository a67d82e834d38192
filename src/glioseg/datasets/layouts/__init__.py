"""Layout adapters: how one dataset's files are named and what its labels mean, by release family.

Each adapter turns an extracted folder into :class:`~glioseg.datasets.layouts.base.CaseFiles`
and owns its label convention and its patient-id rule; everything after the
manifest is layout-agnostic. Families live in their own modules (``brats``,
``lgg``, ``custom``, ``nnunet``); this registry names every layout and carries its
properties, so the workflow asks a layout what it needs instead of keeping
lists of layout names. The Snakefile imports this package at every start, so
nothing here may import torch, MONAI or an image library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from glioseg.datasets.layouts.base import Layout
from glioseg.datasets.layouts.brats import BRATS2018, BRATS2019, BRATS2020, BRATS2021, brats2023_layout
from glioseg.datasets.layouts.custom import custom_layout
from glioseg.datasets.layouts.lgg import LGG_KAGGLE3M
from glioseg.datasets.layouts.nnunet import described_options, nnunet_layout
from glioseg.errors import GliosegError

#: Layouts fixed by their dataset's release.
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (BRATS2018, BRATS2019, BRATS2020, BRATS2021, LGG_KAGGLE3M)}

#: Layouts built from the dataset's ``layout_options``; none of them stacks slices.
LAYOUT_FACTORIES: dict[str, Callable[[Mapping[str, Any]], Layout]] = {
    "brats2023": brats2023_layout, "custom": custom_layout, "nnunet": nnunet_layout}

#: Factories whose options are optional, because the dataset describes itself (nnU-Net's dataset.json).
SELF_DESCRIBED = frozenset({"nnunet"})

#: Factories that may be given no options at all: the self-described ones, and brats2023 (cohort GLI by default).
OPTIONS_OPTIONAL = SELF_DESCRIBED | {"brats2023"}


def layout_names() -> list[str]:
    """Every name a dataset's ``layout`` may take (the config schema's enum must list exactly these)."""
    return sorted([*LAYOUTS, *LAYOUT_FACTORIES])


def _fixed_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise KeyError(f"unknown layout '{name}'; known layouts: {layout_names()}")
    return LAYOUTS[name]


def get_layout(name: str, options: Mapping[str, Any] | None = None) -> Layout:
    """The layout called ``name``; ``options`` (the dataset's ``layout_options``) configure a ``custom``, ``nnunet``
    or ``brats2023`` one (its cohort)."""
    if name in LAYOUT_FACTORIES:
        if not options and name not in OPTIONS_OPTIONAL:
            raise GliosegError(f"the {name} layout needs layout_options",
                               hint="describe the dataset's files under datasets → <name> → layout_options: modalities, "
                                    "label and labels (docs/custom-layout.md has a worked example).")
        return LAYOUT_FACTORIES[name](options or {})
    layout = _fixed_layout(name)
    if options:
        raise GliosegError(f"the {name} layout takes no layout_options", hint="remove layout_options, or use layout: custom.")
    return layout


def resolve_layout_options(name: str, options: Mapping[str, Any] | None, root: str | Path) -> dict[str, Any]:
    """The options to build ``name``'s layout for the dataset under ``root``: the config's, plus what the data says
    of itself (the ``nnunet`` layout's dataset.json), read here once so the manifest knows modalities and labels."""
    if name in SELF_DESCRIBED:
        return described_options(options, root)
    return dict(options or {})


def stacks_slices(layout: str) -> bool:
    """Whether ``layout``'s release is 2D slices, which the workflow stacks into volumes before the manifest reads them.

    Answered from the name alone, so the Snakefile can plan without building a
    layout: a custom layout's patterns name volume files, never slices.
    """
    return layout not in LAYOUT_FACTORIES and _fixed_layout(layout).stacks_slices


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
