"""Cases of several datasets embedded together with t-SNE: do the datasets look alike?

Each case's feature vector (docs/decisions.md, "Data views") is built from the
profile's ``features.npz``, per modality role the datasets share:

* the brain, z-scored per modality, cropped to its bounding box in RAS order
  and averaged on a 12×12×8 grid (:data:`~glioseg.views.profile.FEATURE_GRID`):
  where tissue, ventricles and tumour lie and how they contrast, at a scale
  that ignores noise and registration detail;
* the shape of the modality's intensity distribution inside the brain (19
  quantiles centred on the median, over the interquartile range): contrast
  and protocol, without the scanner's gain.

Every column is standardised over the embedded cases, then each block (one
grid and one distribution shape per role) is scaled to the same total
variance, so 1152 grid cells do not drown 19 quantiles; PCA to at most 50
components, then scikit-learn's ``TSNE`` (exact parameters in the config).

Which cases: the configured datasets and groups, then a seeded random
``fraction`` of each (dataset, group), at least one case each; with
``same_scans`` on, the other copies of a sampled scan that the overlap stage
found in another embedded dataset are added, so every such pair is drawn
and linked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from glioseg.atomic import write_csv
from glioseg.errors import GliosegError
from glioseg.report.figures import finish_figure
from glioseg.views.profile import Features, read_features, shape_profiles

log = logging.getLogger(__name__)

NO_GROUP = "none"
"""The group name of cases whose layout gives none (what ``views → embedding → groups`` selects them by)."""
MAX_PCA = 50
_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


def shared_roles(features: Sequence[Features]) -> list[str]:
    """The modality roles every dataset has, in the first dataset's order."""
    roles = [role for role in features[0].role if all(role in f.role for f in features)]
    if not roles:
        listing = "; ".join(f"{f.dataset}: {', '.join(f.role)}" for f in features)
        raise GliosegError(f"the datasets share no modality ({listing})",
                           hint="embed datasets that share at least one modality (views → embedding → datasets).")
    return roles


def feature_blocks(f: Features, roles: Sequence[str]) -> list[np.ndarray]:
    """Per role: the downsampled brain (cases × cells) and its distribution shape (cases × 19)."""
    blocks = []
    for role in roles:
        m = f.role.index(role)
        blocks += [f.grid[:, m].astype(np.float64), shape_profiles(f.quantiles[:, m])]
    return blocks


def case_table(features: Sequence[Features]) -> pd.DataFrame:
    rows = [(f.dataset, case, group or NO_GROUP) for f in features for case, group in zip(f.case, f.group)]
    return pd.DataFrame(rows, columns=["dataset", "case", "group"])


def sample_cases(cases: pd.DataFrame, groups: Sequence[str], fraction: float, seed: int) -> pd.Series:
    """Which rows are drawn: a seeded ``fraction`` (at least one) of each (dataset, group) kept by ``groups`` (empty: all)."""
    rng = np.random.default_rng(seed)
    drawn = pd.Series(False, index=cases.index)
    for _, rows in cases.groupby(["dataset", "group"], sort=True):
        if groups and rows["group"].iloc[0] not in groups:
            continue
        ordered = rows.sort_values("case").index.to_numpy()
        count = min(len(ordered), max(1, math.ceil(fraction * len(ordered) - 1e-9)))
        drawn[rng.choice(ordered, size=count, replace=False)] = True
    return drawn


def read_same_scans(tables: Sequence[str | Path]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Pairs ((dataset, case), (dataset, case)) from the overlap stage's tables."""
    pairs = []
    for path in tables:
        try:
            frame = pd.read_csv(path, dtype=str)
        except (OSError, pd.errors.ParserError) as exc:
            raise GliosegError(f"overlap table not readable ({exc})", path=path, hint="re-run the overlap step.") from None
        missing = {"dataset_a", "case_a", "dataset_b", "case_b"} - set(frame.columns)
        if missing:
            raise GliosegError(f"not an overlap table: columns {sorted(missing)} missing", path=path,
                               hint="delete it and re-run the overlap step.")
        pairs += [((a, ca), (b, cb)) for a, ca, b, cb in frame[["dataset_a", "case_a", "dataset_b", "case_b"]].itertuples(index=False)]
    return pairs


def standardised(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Columns z-scored over the cases (constant columns left 0), each block scaled to unit total variance per column count."""
    out = []
    for block in blocks:
        std = block.std(axis=0)
        z = np.where(std > 0, (block - block.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
        out.append(z / math.sqrt(max(1, int((std > 0).sum()))))
    return np.concatenate(out, axis=1)


def embed(vectors: np.ndarray, *, n_components: int = 2, perplexity: float = 30.0, random_state: int = 42) -> np.ndarray:
    """PCA to at most :data:`MAX_PCA` components, then t-SNE; perplexity capped at (cases - 1) / 3 for small sets."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    components = max(1, min(MAX_PCA, n - 1, vectors.shape[1]))
    # One thread: the same coordinates whatever the machine's cores, and no OpenMP threads spinning on a
    # shared node (100 cases: 1.2 s on one thread, 33 s with two threads on two busy cores).
    with threadpool_limits(limits=1):
        reduced = PCA(n_components=components, random_state=random_state).fit_transform(vectors)
        tsne = TSNE(n_components=n_components, perplexity=min(perplexity, max(1.0, (n - 1) / 3)), random_state=random_state,
                    init="pca", learning_rate="auto", method="barnes_hut" if n_components < 4 else "exact")
        return tsne.fit_transform(reduced)


def embed_datasets(features: Sequence[Features], same_scans: Sequence[tuple[tuple[str, str], tuple[str, str]]] = (), *,
                   groups: Sequence[str] = (), fraction: float = 0.5, add_same_scans: bool = True, n_components: int = 2,
                   perplexity: float = 30.0, random_state: int = 42) -> pd.DataFrame:
    """The embedded cases: ``dataset, case, group, sampled, tsne_1…, same_scan`` (``dataset/case`` of its other copies)."""
    roles = shared_roles(features)
    cases = case_table(features)
    per_dataset = [feature_blocks(f, roles) for f in features]
    blocks = [np.concatenate(parts) for parts in zip(*per_dataset)]
    drawn = sample_cases(cases, groups, fraction, random_state)
    keys = list(zip(cases["dataset"], cases["case"]))
    position = {key: i for i, key in enumerate(keys)}
    partners: dict[int, set[int]] = {}
    for a, b in same_scans:
        if a in position and b in position:
            partners.setdefault(position[a], set()).add(position[b])
            partners.setdefault(position[b], set()).add(position[a])
    chosen = drawn.copy()
    if add_same_scans:
        for i in np.flatnonzero(drawn.to_numpy()):
            for j in partners.get(int(i), ()):
                if not groups or cases.at[j, "group"] in groups:
                    chosen.iloc[j] = True
    index = np.flatnonzero(chosen.to_numpy())
    if len(index) < 3:
        raise GliosegError(f"only {len(index)} cases selected for the embedding; t-SNE needs at least 3",
                           hint="embed more datasets or groups, or raise views → embedding → fraction.")
    coordinates = embed(standardised([b[index] for b in blocks]), n_components=n_components, perplexity=perplexity,
                        random_state=random_state)
    table = cases.iloc[index].reset_index(drop=True)
    table["sampled"] = drawn.to_numpy()[index]
    for k in range(n_components):
        table[f"tsne_{k + 1}"] = coordinates[:, k].round(5)
    kept = set(index.tolist())
    table["same_scan"] = [";".join(sorted(f"{keys[j][0]}/{keys[j][1]}" for j in partners.get(int(i), ()) if j in kept))
                          for i in index]
    return table


def plot_embedding(table: pd.DataFrame, out: str | Path | None = None, title: str = "") -> Figure:
    """Cases in the first two t-SNE dimensions: colour by dataset, marker by group; the same scan ringed and linked."""
    fig = Figure(figsize=(8.5, 6.5), layout="constrained")
    ax = fig.subplots()
    datasets = list(dict.fromkeys(table["dataset"]))
    groups = sorted(set(table["group"]))
    xy = {(d, c): (x, y) for d, c, x, y in table[["dataset", "case", "tsne_1", "tsne_2"]].itertuples(index=False)}
    drawn = set()
    for (dataset, case), same in zip(xy, table["same_scan"].fillna("")):
        for other in filter(None, same.split(";")):
            key = tuple(other.split("/", 1))
            if key in xy and frozenset([(dataset, case), key]) not in drawn:
                drawn.add(frozenset([(dataset, case), key]))
                (x0, y0), (x1, y1) = xy[(dataset, case)], xy[key]
                ax.plot([x0, x1], [y0, y1], color="black", linewidth=0.8, alpha=0.6, zorder=1)
    for d, dataset in enumerate(datasets):
        for g, group in enumerate(groups):
            rows = table[(table["dataset"] == dataset) & (table["group"] == group)]
            if len(rows):
                ax.scatter(rows["tsne_1"], rows["tsne_2"], s=28, color=f"C{d % 10}", marker=_MARKERS[g % len(_MARKERS)],
                           alpha=0.8, linewidths=0, zorder=2)
    shared = table[table["same_scan"].fillna("") != ""]
    ax.scatter(shared["tsne_1"], shared["tsne_2"], s=90, facecolors="none", edgecolors="black", linewidths=0.9, zorder=3)
    handles = [Line2D([], [], color=f"C{d % 10}", marker="o", linestyle="", label=f"{dataset} ({(table['dataset'] == dataset).sum()})")
               for d, dataset in enumerate(datasets)]
    handles += [Line2D([], [], color="grey", marker=_MARKERS[g % len(_MARKERS)], linestyle="", label=f"group {group}")
                for g, group in enumerate(groups)]
    if len(shared):
        handles.append(Line2D([], [], color="black", marker="o", markerfacecolor="none", linewidth=0.8,
                              label=f"same scan in two datasets ({len(drawn)} pairs)"))
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of the cases' image features", fontsize="medium")
    return finish_figure(fig, out)


def embedding_stage(features_npz: Sequence[str | Path], overlap_csvs: Sequence[str | Path], out_csv: str | Path, out_png: str | Path,
                    settings: Mapping) -> pd.DataFrame:
    """Rule ``embedding``: features of the datasets (and their overlap tables) to the coordinates and the figure."""
    features = [read_features(path) for path in features_npz]
    table = embed_datasets(features, read_same_scans(overlap_csvs), groups=settings.get("groups", []),
                           fraction=settings.get("fraction", 0.5), add_same_scans=settings.get("same_scans", True),
                           n_components=settings.get("n_components", 2), perplexity=settings.get("perplexity", 30.0),
                           random_state=settings.get("random_state", 42))
    write_csv(out_csv, table)
    sampled = ", ".join(f"{d} {g}: {n}" for (d, g), n in table.groupby(["dataset", "group"]).size().items())
    title = f"t-SNE of {len(table)} cases ({sampled}), random_state {settings.get('random_state', 42)}"
    if table.columns.str.startswith("tsne_").sum() >= 2:
        plot_embedding(table, out_png, title=title)
    else:
        fig = Figure(figsize=(8, 2))
        fig.text(0.5, 0.5, "one t-SNE component: nothing to draw in a plane (see embedding.csv)", ha="center")
        finish_figure(fig, out_png)
    log.info("embedded %d cases of %d datasets", len(table), len(features))
    return table
