"""Label conventions and the nested tumour regions models are trained on.

Datasets disagree on label values (BraTS 2018–2021 mark enhancing tumour 4,
BraTS 2023 marks it 3), but every model here predicts the same nested regions:
tumour core TC, whole tumour WT and enhancing tumour ET, one sigmoid channel
each. A :class:`LabelConvention` is the bridge in both directions, so that
preprocessing can turn any dataset's labels into regions and inference can
write predictions back in the dataset's own convention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

REGIONS: tuple[str, ...] = ("TC", "WT", "ET")


@dataclass(frozen=True)
class LabelConvention:
    """How one dataset's label values map onto regions.

    ``members`` gives, for each region, the label values inside it. ``paint``
    orders (region, label) pairs from the outermost region inward: painting a
    label map in that order turns a nested set of region masks back into labels.
    """

    name: str
    members: dict[str, frozenset[int]]
    paint: tuple[tuple[str, int], ...]

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.members)

    @property
    def values(self) -> frozenset[int]:
        """All label values allowed in a label map (background 0 included)."""
        return frozenset({0}).union(*self.members.values())


BRATS = LabelConvention(
    name="brats",
    members={"TC": frozenset({1, 4}), "WT": frozenset({1, 2, 4}), "ET": frozenset({4})},
    paint=(("WT", 2), ("TC", 1), ("ET", 4)),
)

BRATS2023 = LabelConvention(
    name="brats2023",
    members={"TC": frozenset({1, 3}), "WT": frozenset({1, 2, 3}), "ET": frozenset({3})},
    paint=(("WT", 2), ("TC", 1), ("ET", 3)),
)

#: LGG kaggle_3m: one binary FLAIR-abnormality mask, i.e. whole tumour only.
LGG = LabelConvention("lgg", members={"WT": frozenset({1})}, paint=(("WT", 1),))


def nested_convention(name: str, members: Mapping[str, frozenset[int]]) -> LabelConvention:
    """A convention whose paint order follows from its regions' label values alone.

    Regions must be nested or disjoint, as BraTS regions are, or no label map
    could express a set of region masks; ``paint`` then runs from the
    outermost region (most label values) inward, each region painted with its
    smallest label value that no region inside it claims. A region left with
    no value of its own could never be written back, so it is refused.
    """
    for a in members:
        for b in members:
            if members[a] & members[b] and not (members[a] <= members[b] or members[b] <= members[a]):
                raise ValueError(f"regions {a} and {b} overlap without one containing the other")
    order = sorted(members, key=lambda r: (-len(members[r]), REGIONS.index(r)))
    paint = []
    for region in order:
        inner = frozenset().union(*(m for m in members.values() if m < members[region]))
        own = members[region] - inner
        if not own:
            raise ValueError(f"region {region} has no label value of its own, so predictions of it could not be written")
        paint.append((region, min(own)))
    return LabelConvention(name=name, members=dict(members), paint=tuple(paint))


def unexpected_labels(label: np.ndarray, convention: LabelConvention) -> list[int]:
    """Label values present in ``label`` that ``convention`` does not define."""
    present = np.unique(label)
    return sorted(int(v) for v in present if int(v) not in convention.values)


def labels_to_regions(label: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Return a ``(len(regions), *label.shape)`` uint8 array of region masks."""
    bad = unexpected_labels(label, convention)
    if bad:
        raise ValueError(f"label values {bad} are not in the {convention.name} convention {sorted(convention.values)}")
    return np.stack([np.isin(label, sorted(vals)) for vals in convention.members.values()]).astype(np.uint8)


def regions_to_labels(regions: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """Paint region masks (channel-first, any truthy dtype) into a uint8 label map.

    Regions need not be nested: each voxel takes the label of the innermost
    region that claims it, the usual way BraTS predictions are converted.
    """
    index = {name: i for i, name in enumerate(convention.regions)}
    out = np.zeros(regions.shape[1:], dtype=np.uint8)
    for region, value in convention.paint:
        out[regions[index[region]].astype(bool)] = value
    return out
