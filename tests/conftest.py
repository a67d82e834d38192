"""Shared fixtures: a tiny synthetic dataset, extracted and manifested once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from glioseg.acquire.extract import extract_archive
from glioseg.datasets.synthetic import SyntheticSpec, write_sample_archive
from glioseg.manifest import build_manifest, write_manifest

TINY_SPEC = SyntheticSpec(cases=6, shape=(48, 48, 32), spacing=(2.0, 2.0, 2.0), lgg_fraction=0.34, seed=3)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An extracted six-case synthetic dataset in the BraTS 2021 layout (read-only for tests)."""
    root = tmp_path_factory.mktemp("tiny")
    write_sample_archive(TINY_SPEC, root / "sample.zip")
    return extract_archive(root / "sample.zip", root / "raw")


@pytest.fixture(scope="session")
def tiny_manifest(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("manifest")
    frame, info = build_manifest(tiny_raw, "brats2021", "tiny")
    write_manifest(frame, info, out / "tiny.csv", out / "tiny.json")
    return out / "tiny.csv", out / "tiny.json"


@pytest.fixture(scope="session")
def tiny_cache(tiny_manifest: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset preprocessed with margin 0, shared read-only by the tests that train or read patches."""
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.preprocess import preprocess_dataset

    csv, info_json = tiny_manifest
    out = tmp_path_factory.mktemp("cache") / "tiny"
    preprocess_dataset(read_manifest(csv), read_dataset_info(info_json), out, margin=0)
    return out
