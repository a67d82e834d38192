"""Finding the same scan across datasets, whatever its name, file format, dtype and intensity scale."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from glioseg.datasets.overlap import (
    OVERLAP_COLUMNS,
    THRESHOLD,
    find_overlap,
    fingerprint_dataset,
    fingerprint_manifest,
    fingerprint_volume,
    modality_for_role,
    overlap_datasets,
    read_fingerprints,
    write_overlap,
)
from glioseg.datasets.synthetic import SyntheticSpec, case_id, synthesize_case
from glioseg.errors import GliosegError
from glioseg.labels import BRATS, BRATS2023
from glioseg.manifest import DatasetInfo, write_manifest

SHAPE = (48, 48, 32)
SPEC_A = SyntheticSpec(shape=SHAPE, seed=11)
SPEC_B = SyntheticSpec(shape=SHAPE, seed=12)  # other seed: other brains, tumours and scanners
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
MODALITY_SETS = {"a": ("t1", "t1ce", "t2", "flair"), "b": ("t1n", "t1c", "t2w", "t2f")}


@pytest.fixture(scope="module")
def flairs() -> dict[str, list[np.ndarray]]:
    """FLAIR volumes of ten cases from each of two generators."""
    return {name: [synthesize_case(spec, i).images["flair"] for i in range(10)] for name, spec in (("a", SPEC_A), ("b", SPEC_B))}


def _brain(volume: np.ndarray) -> np.ndarray:
    return volume != 0


def _rescaled(volume: np.ndarray, a: float, b: float) -> np.ndarray:
    """Another release's normalisation: ``a*x + b`` everywhere, background included, as float32."""
    return (a * volume.astype(np.float64) + b).astype(np.float32)


def _save(path: Path, volume: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, AFFINE), path)
    return str(path)


def _write_dataset(root: Path, name: str, volumes: dict[str, np.ndarray], suffix: str) -> tuple[Path, Path]:
    """A manifest (CSV + sidecar) whose FLAIR-role image holds each volume; the other modalities are not read."""
    flair = "flair" if name == "a" else "t2f"
    rows = []
    for case, volume in volumes.items():
        row = {"case": case, "patient": case, "group": ""}
        for modality in MODALITY_SETS[name]:
            source = volume if modality == flair else np.zeros(SHAPE, np.int16)
            row[f"image_{modality}"] = _save(root / case / f"{case}_{modality}{suffix}", source)
        row["label"] = _save(root / case / f"{case}_seg{suffix}", np.zeros(SHAPE, np.uint8))
        rows.append(row)
    info = DatasetInfo(name, "brats2021" if name == "a" else "brats2023", MODALITY_SETS[name], BRATS if name == "a" else BRATS2023)
    write_manifest(pd.DataFrame(rows), info, root / f"{name}.csv", root / f"{name}.json")
    return root / f"{name}.csv", root / f"{name}.json"


@pytest.fixture(scope="module")
def datasets(flairs, tmp_path_factory) -> dict:
    """Set A: six cases as int16 .nii.gz. Set B: six cases, renamed BraTS 2023-style, as .nii, two of them copies from A.

    The copies went through another release's processing: A's case 4 as
    float32 rescaled by 0.37x + 12.5, A's case 1 rescaled by 0.01x + 7 and
    rounded back to int16 (42 grey levels left in the brain; measured: 20
    levels still give > 0.98, 10 levels > 0.95, fewer than 6 fail).
    """
    root = tmp_path_factory.mktemp("overlap")
    a = {case_id(i): flairs["a"][i] for i in range(6)}
    b = {f"BraTS-GLI-{i:05d}-000": flairs["b"][i] for i in range(6)}
    b["BraTS-GLI-00002-000"] = _rescaled(flairs["a"][4], 0.37, 12.5)
    b["BraTS-GLI-00005-000"] = np.rint(_rescaled(flairs["a"][1], 0.01, 7.0)).astype(np.int16)
    return {
        "a": _write_dataset(root / "a", "a", a, ".nii.gz"),
        "b": _write_dataset(root / "b", "b", b, ".nii"),
        "planted": {(case_id(4), "BraTS-GLI-00002-000"), (case_id(1), "BraTS-GLI-00005-000")},
    }


@pytest.fixture(scope="module")
def fingerprints(datasets) -> dict[str, pd.DataFrame]:
    return {
        "a": fingerprint_manifest(pd.read_csv(datasets["a"][0], dtype=str), "image_flair"),
        "b": fingerprint_manifest(pd.read_csv(datasets["b"][0], dtype=str), "image_t2f"),
    }


def test_renamed_resaved_rescaled_copies_are_the_same_scan(fingerprints, datasets):
    every_pair = find_overlap(fingerprints["a"], fingerprints["b"], threshold=-1.0)
    similarity = {(r.case_a, r.case_b): r.similarity for r in every_pair.itertuples()}
    planted = sorted(similarity[pair] for pair in datasets["planted"])
    print(f"\nsimilarity of the planted copies: {planted}")
    assert planted[0] > 0.99  # int16-rounded copy; the float32 copy is 1 to float precision
    assert planted[1] == pytest.approx(1.0, abs=1e-5)


def test_find_overlap_returns_exactly_the_planted_duplicates(fingerprints, datasets):
    pairs = find_overlap(fingerprints["a"], fingerprints["b"])
    assert list(pairs.columns) == ["case_a", "case_b", "similarity"]
    assert set(zip(pairs["case_a"], pairs["case_b"])) == datasets["planted"]
    assert len(pairs) == 2 and list(pairs["case_a"]) == [case_id(1), case_id(4)]  # sorted by case_a


def test_different_scans_stay_far_below_the_threshold(flairs):
    a = np.stack([fingerprint_volume(v) for v in flairs["a"]])
    b = np.stack([fingerprint_volume(v) for v in flairs["b"]])
    across = a @ b.T
    within = a @ a.T
    np.fill_diagonal(within, -1.0)
    worst = max(across.max(), within.max())
    same = min(fingerprint_volume(_rescaled(v, 3.1, -40.0)) @ f for v, f in zip(flairs["a"], a))
    print(f"\ndifferent scans: max {worst:.3f}, mean {across.mean():.3f}; same scan rescaled: min {same:.6f}; "
          f"threshold {THRESHOLD}, margin below it {THRESHOLD - worst:.3f}")
    assert worst < THRESHOLD - 0.25
    assert same > 0.9999


def test_noisy_copy_still_matches(flairs):
    """Gaussian noise of 20% of the brain's intensity spread (an SNR of 5) keeps the similarity above 0.9.

    Measured on these 48x48x32 volumes: about 0.99 at 10%, 0.94 at 30%, 0.89
    at 50%; larger volumes average more voxels per cell and tolerate more.
    """
    rng = np.random.default_rng(0)
    for volume in flairs["a"][:3]:
        brain = _brain(volume)
        noise = rng.normal(0.0, 0.2 * volume[brain].std(), volume.shape)
        noisy = np.where(brain, volume + noise, 0.0)
        similarity = fingerprint_volume(noisy) @ fingerprint_volume(volume)
        assert THRESHOLD < 0.9 < similarity


def test_scans_of_different_shapes_are_never_compared(flairs):
    descriptor = fingerprint_volume(flairs["a"][0])
    a = pd.DataFrame({"case": ["x"], "shape": [SHAPE], "descriptor": [descriptor]})
    b = pd.DataFrame({"case": ["y", "z"], "shape": [(48, 48, 33), SHAPE], "descriptor": [descriptor, descriptor]})
    assert list(find_overlap(a, b)["case_b"]) == ["z"]


def test_empty_volume_has_no_identity():
    blank = fingerprint_volume(np.full(SHAPE, 7, np.int16))
    assert not blank.any()
    frame = pd.DataFrame({"case": ["blank"], "shape": [SHAPE], "descriptor": [blank]})
    assert find_overlap(frame, frame).empty


def test_role_picks_each_release_s_name_for_flair():
    a = DatasetInfo("a", "brats2021", MODALITY_SETS["a"], BRATS)
    b = DatasetInfo("b", "brats2023", MODALITY_SETS["b"], BRATS2023)
    assert modality_for_role(a, "flair") == "flair" and modality_for_role(b, "flair") == "t2f"
    assert modality_for_role(b, "t1ce") == "t1c" and modality_for_role(b, "t2w") == "t2w"
    with pytest.raises(GliosegError, match=r"dataset b has no dwi image \(modalities: t1n, t1c, t2w, t2f\)"):
        modality_for_role(b, "dwi")


def test_write_overlap_writes_the_table_atomically(tmp_path, monkeypatch):
    out = tmp_path / "overlap" / "a__b.csv"
    pairs = pd.DataFrame({"case_a": ["A1", "A4"], "case_b": ["B5", "B2"], "similarity": [0.999912345, 1.0]})
    write_overlap(out, pairs, "brats2021", "brats2023")
    table = pd.read_csv(out, dtype={"similarity": float})
    assert list(table.columns) == OVERLAP_COLUMNS
    assert table.values.tolist() == [["brats2021", "A1", "brats2023", "B5", 0.9999], ["brats2021", "A4", "brats2023", "B2", 1.0]]

    def broken(frame, path, **kwargs):
        Path(path).write_text("dataset_a,case_a\nbrats2021,")  # half a table, then the job dies
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        write_overlap(out, pairs.iloc[:1], "brats2021", "brats2023")
    assert pd.read_csv(out).shape == (2, 5)  # the old table is intact
    assert [p.name for p in out.parent.iterdir()] == ["a__b.csv"]  # and no temporary left behind


def test_corrupt_file_is_named_with_its_case(datasets, tmp_path):
    manifest = pd.read_csv(datasets["a"][0], dtype=str)
    bad = tmp_path / "BraTS2021_00003_flair.nii.gz"
    bad.write_bytes(Path(manifest.loc[3, "image_flair"]).read_bytes()[:300])
    manifest.loc[3, "image_flair"] = str(bad)
    with pytest.raises(GliosegError) as error:
        fingerprint_manifest(manifest, "image_flair")
    assert "case BraTS2021_00003" in error.value.message and str(bad) in error.value.message
    with pytest.raises(GliosegError, match=r"no column 'image_t2f' \(images: image_t1, image_t1ce, image_t2, image_flair\)"):
        fingerprint_manifest(manifest, "image_t2f")


def test_every_corrupt_file_is_listed_in_one_error(datasets, tmp_path):
    manifest = pd.read_csv(datasets["a"][0], dtype=str)
    bad = {}
    for row in (1, 4):
        bad[row] = tmp_path / f"{manifest.loc[row, 'case']}_flair.nii.gz"
        bad[row].write_bytes(Path(manifest.loc[row, "image_flair"]).read_bytes()[:300])
        manifest.loc[row, "image_flair"] = str(bad[row])
    with pytest.raises(GliosegError) as error:
        fingerprint_manifest(manifest, "image_flair", threads=2)
    message = error.value.message
    assert "2 of 6 cases failed (fingerprinting image_flair)" in message
    for row, path in bad.items():
        assert f"    {manifest.loc[row, 'case']}: " in message and str(path) in message


def test_fingerprint_files_are_the_same_bytes_whatever_the_threads(datasets, tmp_path):
    fingerprint_dataset(*datasets["a"], tmp_path / "one.npz", threads=1)
    fingerprint_dataset(*datasets["a"], tmp_path / "two.npz", threads=2)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    stored = read_fingerprints(tmp_path / "two.npz").frame
    computed = fingerprint_manifest(pd.read_csv(datasets["a"][0], dtype=str), "image_flair")
    assert stored["case"].to_list() == computed["case"].to_list() and stored["shape"].to_list() == computed["shape"].to_list()
    np.testing.assert_array_equal(np.stack(stored["descriptor"]), np.stack(computed["descriptor"]))


def test_snakemake_rules_fingerprint_each_dataset_once_then_compare(datasets, tmp_path):
    fingerprint_dataset(*datasets["a"], tmp_path / "a.npz", role="flair")
    fingerprint_dataset(*datasets["b"], tmp_path / "b.npz", role="flair")  # finds t2f
    pairs = overlap_datasets(tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "a__b.csv")
    table = pd.read_csv(tmp_path / "a__b.csv")
    assert set(zip(table["case_a"], table["case_b"])) == datasets["planted"] == set(zip(pairs["case_a"], pairs["case_b"]))
    assert set(table["dataset_a"]) == {"a"} and set(table["dataset_b"]) == {"b"}

    fingerprint_dataset(*datasets["b"], tmp_path / "b_t1.npz", role="t1n")  # an exact modality name works too
    with pytest.raises(GliosegError, match="a was fingerprinted on its flair image but b on its t1 image"):
        overlap_datasets(tmp_path / "a.npz", tmp_path / "b_t1.npz", tmp_path / "mixed.csv")
