"""The t-SNE stage: deterministic for a seed, the sample per group, planted duplicates marked and linked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glioseg.errors import GliosegError
from glioseg.views.embedding import embed_datasets, embedding_stage, sample_cases, shared_roles
from glioseg.views.profile import FEATURE_GRID, LEVELS, Features, profile_dataset

CELLS = int(np.prod(FEATURE_GRID))


def features(dataset: str, groups: list[str], seed: int, roles=("t1", "flair"), offset: float = 0.0) -> Features:
    rng = np.random.default_rng(seed)
    n = len(groups)
    quantiles = np.sort(rng.gamma(2.0, 100.0, size=(n, len(roles), len(LEVELS))), axis=-1)
    grid = (rng.standard_normal((n, len(roles), CELLS)) + offset).astype(np.float32)
    return Features(dataset, [f"{dataset}_{i:03d}" for i in range(n)], groups, list(roles), list(roles), quantiles, grid)


@pytest.fixture
def two_datasets():
    a = features("a", ["HGG"] * 10 + ["LGG"] * 6, seed=1)
    b = features("b", [""] * 12, seed=2, offset=0.5)
    copies = {"a_001": "b_000", "a_004": "b_001", "a_012": "b_002"}  # three of a's scans planted in b
    for source, copy in copies.items():
        i, j = a.case.index(source), b.case.index(copy)
        b.quantiles[j], b.grid[j] = a.quantiles[i], a.grid[i]
    pairs = [(("a", s), ("b", c)) for s, c in copies.items()]
    return [a, b], pairs, copies


def test_the_same_seed_gives_the_same_embedding_and_another_seed_another_sample(two_datasets):
    datasets, pairs, _ = two_datasets
    first = embed_datasets(datasets, pairs, random_state=42)
    again = embed_datasets(datasets, pairs, random_state=42)
    pd.testing.assert_frame_equal(first, again)
    other = embed_datasets(datasets, pairs, random_state=7)
    assert set(other["case"]) != set(first["case"])
    assert list(first.columns) == ["dataset", "case", "group", "sampled", "tsne_1", "tsne_2", "same_scan"]


def test_a_random_half_of_each_group_is_drawn(two_datasets):
    datasets, _, _ = two_datasets
    table = embed_datasets(datasets, (), random_state=42)
    assert table.groupby(["dataset", "group"]).size().to_dict() == {("a", "HGG"): 5, ("a", "LGG"): 3, ("b", "none"): 6}
    assert table["sampled"].all() and (table["same_scan"] == "").all()
    only_lgg = embed_datasets(datasets, (), groups=["LGG"], fraction=1.0, random_state=42)
    assert set(only_lgg["group"]) == {"LGG"} and len(only_lgg) == 6


def test_planted_duplicates_are_marked_linked_and_land_together(two_datasets):
    datasets, pairs, copies = two_datasets
    table = embed_datasets(datasets, pairs, fraction=0.5, random_state=42)
    keyed = table.set_index(["dataset", "case"])
    drawn_sources = [s for s in copies if ("a", s) in keyed.index and keyed.loc[("a", s), "sampled"]]
    drawn_copies = [c for c in copies.values() if ("b", c) in keyed.index and keyed.loc[("b", c), "sampled"]]
    assert drawn_sources or drawn_copies
    for source, copy in copies.items():
        if source in drawn_sources or copy in drawn_copies:  # a drawn scan brings its copy along
            assert keyed.loc[("a", source), "same_scan"] == f"b/{copy}"
            assert keyed.loc[("b", copy), "same_scan"] == f"a/{source}"
            xy = keyed[["tsne_1", "tsne_2"]].to_numpy()
            spread = np.median(np.linalg.norm(xy[:, None] - xy[None], axis=-1))
            gap = np.linalg.norm(keyed.loc[("a", source), ["tsne_1", "tsne_2"]].to_numpy(float)
                                 - keyed.loc[("b", copy), ["tsne_1", "tsne_2"]].to_numpy(float))
            assert gap < 0.25 * spread
    unmarked = table[~table["case"].isin([*copies, *copies.values()])]
    assert (unmarked["same_scan"] == "").all()


def test_sampling_takes_at_least_one_case_per_group():
    cases = pd.DataFrame({"dataset": ["a"] * 3, "case": ["x", "y", "z"], "group": ["HGG", "LGG", "LGG"]})
    drawn = sample_cases(cases, (), 0.1, 0)
    assert drawn.sum() == 2 and drawn[0]


def test_datasets_without_a_shared_modality_are_refused():
    with pytest.raises(GliosegError, match="share no modality"):
        shared_roles([features("a", ["x"] * 3, 1, roles=("t1",)), features("b", ["x"] * 3, 2, roles=("flair",))])


def test_too_few_cases_are_refused_with_what_to_do():
    with pytest.raises(GliosegError, match="fraction"):
        embed_datasets([features("a", ["x"] * 2, 1)], fraction=1.0)


def test_the_stage_writes_coordinates_and_figure_from_profiled_datasets(tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest
    profile_dataset(csv, info_json, tmp_path / "p.csv", tmp_path / "p.html", tmp_path / "f.npz")
    overlap = tmp_path / "overlap.csv"
    overlap.write_text("dataset_a,case_a,dataset_b,case_b,similarity\n")
    table = embedding_stage([tmp_path / "f.npz"], [overlap], tmp_path / "e.csv", tmp_path / "e.png", {"fraction": 1.0})
    assert len(table) == 6 and (tmp_path / "e.png").stat().st_size > 10_000
    assert pd.read_csv(tmp_path / "e.csv")["case"].tolist() == table["case"].tolist()
