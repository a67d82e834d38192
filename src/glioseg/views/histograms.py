"""Per-modality intensity histograms inside the brain, datasets overlaid.

Each case contributes its 101 stored quantiles (``features.npz``), i.e. equal
weight per case whatever its brain's size, so a dataset's curve is the mixture
of its cases' distributions. Two rows: raw intensities (where scanners and
releases differ in scale), and each case's intensities z-scored over its brain
(what a model sees after preprocessing; differences left here are in the shape
of the distributions: contrast, bias, a mis-assigned sequence). Modalities are
matched across datasets by role (``t2f`` is ``flair``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from glioseg.report.figures import finish_figure
from glioseg.views.profile import Features, read_features

_BINS = 60


def _z_scored(quantiles: np.ndarray) -> np.ndarray:
    """Quantiles of each case and modality centred on their mean and scaled by their spread (from the quantiles)."""
    mean = quantiles.mean(axis=-1, keepdims=True)
    std = quantiles.std(axis=-1, keepdims=True)
    return (quantiles - mean) / np.where(std > 0, std, 1.0)


def plot_intensity_histograms(features: Sequence[Features], out: str | Path | None = None) -> Figure:
    roles = list(dict.fromkeys(role for f in features for role in f.role))
    fig = Figure(figsize=(3.2 * len(roles) + 0.5, 6.0), layout="constrained")
    axes = fig.subplots(2, len(roles), squeeze=False)
    for c, role in enumerate(roles):
        for r, (transform, xlabel) in enumerate(((lambda q: q, "raw intensity"), (_z_scored, "z-score over the brain"))):
            ax = axes[r, c]
            samples = {f.dataset: transform(f.quantiles[:, f.role.index(role), 1:-1]).ravel() for f in features if role in f.role}
            values = np.concatenate(list(samples.values()))
            low, high = np.percentile(values, [0.5, 99.5])
            bins = np.linspace(low, high if high > low else low + 1.0, _BINS + 1)
            for index, f in enumerate(features):
                if f.dataset in samples:
                    ax.hist(samples[f.dataset], bins=bins, density=True, histtype="step", linewidth=1.5, color=f"C{index % 10}",
                            label=f"{f.dataset} ({len(f.case)})")
            ax.set_xlabel(xlabel, fontsize="small")
            ax.set_yticks([])
            if r == 0:
                names = sorted({f.modality[f.role.index(role)] for f in features if role in f.role})
                ax.set_title(" / ".join(names), fontsize="medium")
    axes[0, 0].set_ylabel("density (raw)")
    axes[1, 0].set_ylabel("density (z-scored)")
    axes[0, -1].legend(fontsize="small", title="dataset (cases)")
    return finish_figure(fig, out)


def histograms(features_npz: Sequence[str | Path], out: str | Path) -> Figure:
    """Rule ``plot_histograms``: the datasets' features files to the figure."""
    return plot_intensity_histograms([read_features(path) for path in features_npz], out)
