"""The synthetic sample: reproducible, in the exact BraTS 2021 Kaggle layout, and MRI-like enough to learn from."""

from __future__ import annotations

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from glioseg.datasets import synthetic
from glioseg.datasets.synthetic import (
    MODALITIES,
    TISSUE_LABELS,
    SyntheticSpec,
    case_id,
    grade_of,
    lgg_count,
    spec_affine,
    synthesize_case,
    write_sample_archive,
)
from glioseg.errors import GliosegError

SMALL = SyntheticSpec(cases=6, shape=(48, 48, 32), spacing=(2.0, 2.0, 2.0), lgg_fraction=0.34, seed=11)
CSF, GM, WM = TISSUE_LABELS["csf"], TISSUE_LABELS["gm"], TISSUE_LABELS["wm"]


@pytest.fixture(scope="module")
def cases() -> list[synthetic.SyntheticCase]:
    return [synthesize_case(SMALL, i) for i in range(SMALL.cases)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("sample") / "sample.zip"
    write_sample_archive(SMALL, path)
    return path


def _equal(a: synthetic.SyntheticCase, b: synthetic.SyntheticCase) -> bool:
    return (
        a.grade == b.grade
        and np.array_equal(a.seg, b.seg)
        and np.array_equal(a.tissue, b.tissue)
        and np.array_equal(a.affine, b.affine)
        and all(np.array_equal(a.images[m], b.images[m]) for m in MODALITIES)
    )


# ------------------------------------------------------------------ identity


def test_case_id_is_kaggle_style():
    assert case_id(0) == "BraTS2021_00000"
    assert case_id(3) == "BraTS2021_00003"
    assert case_id(12345) == "BraTS2021_12345"
    with pytest.raises(ValueError):
        case_id(100000)


def test_spec_normalises_config_lists_and_rejects_nonsense():
    spec = SyntheticSpec(shape=[48, 48, 32], spacing=[2, 2, 2])
    assert spec.shape == (48, 48, 32) and spec.spacing == (2.0, 2.0, 2.0)
    assert spec == SyntheticSpec(shape=(48, 48, 32), spacing=(2.0, 2.0, 2.0))
    bad_specs = (
        {"shape": (8, 48, 32)},
        {"shape": (48, 48)},
        {"spacing": (2.0, 0.0, 2.0)},
        {"lgg_fraction": 1.5},
        {"cases": -1},
    )
    for bad in bad_specs:
        with pytest.raises(GliosegError):
            SyntheticSpec(**bad)


# ------------------------------------------------------------- determinism


def test_same_spec_gives_identical_cases(cases):
    assert _equal(synthesize_case(SMALL, 2), cases[2])


def test_different_seed_gives_different_data(cases):
    other = synthesize_case(SyntheticSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1}), 2)
    assert not np.array_equal(other.seg, cases[2].seg)
    assert not np.array_equal(other.images["t1"], cases[2].images["t1"])


def test_case_does_not_depend_on_number_of_cases(cases):
    fewer = SyntheticSpec(**{**SMALL.__dict__, "cases": 3})
    more = SyntheticSpec(**{**SMALL.__dict__, "cases": 40})
    assert _equal(synthesize_case(fewer, 2), cases[2])
    assert _equal(synthesize_case(more, 2), cases[2])


def test_cases_differ_from_each_other(cases):
    assert not np.array_equal(cases[0].images["t1"], cases[1].images["t1"])
    assert not np.array_equal(cases[0].tissue, cases[1].tissue)


# ----------------------------------------------------------------- archive


def test_archive_has_exact_kaggle_layout(archive):
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    expected = {"README.txt"} | {
        f"{case_id(i)}/{case_id(i)}_{kind}.nii.gz" for i in range(SMALL.cases) for kind in (*MODALITIES, "seg")
    }
    assert len(names) == len(set(names))
    assert set(names) == expected
    assert not list(archive.parent.glob(".*.tmp")), "atomic write left a temporary file behind"


def test_archive_volumes_load_with_spec_geometry_and_match_synthesis(archive, cases):
    affine = spec_affine(SMALL)
    assert np.allclose(np.diag(affine)[:3], SMALL.spacing)
    assert np.count_nonzero(affine[:3, :3] - np.diag(np.diag(affine[:3, :3]))) == 0
    with zipfile.ZipFile(archive) as zf:
        for i, case in enumerate(cases):
            cid = case_id(i)
            for kind in (*MODALITIES, "seg"):
                raw = zf.read(f"{cid}/{cid}_{kind}.nii.gz")
                assert raw[:2] == b"\x1f\x8b", "members must be real gzip files"
                img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
                assert img.shape == SMALL.shape
                assert np.allclose(img.affine, affine)
                assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
                assert np.allclose(img.header.get_zooms(), SMALL.spacing)
                data = np.asanyarray(img.dataobj)
                if kind == "seg":
                    assert img.get_data_dtype() == np.uint8
                    assert set(np.unique(data).tolist()) <= {0, 1, 2, 4}
                    assert np.array_equal(data, case.seg)
                else:
                    assert img.get_data_dtype() == np.int16
                    assert np.array_equal(data, case.images[kind])


def test_archive_readme_says_synthetic(archive):
    with zipfile.ZipFile(archive) as zf:
        text = zf.read("README.txt").decode("utf-8")
    assert "SYNTHETIC" in text and "not real patients".lower() in text.lower()
    assert f'"seed": {SMALL.seed}' in text and "glioseg" in text


def test_archive_is_byte_identical_across_runs(tmp_path, archive):
    again = tmp_path / "again.zip"
    write_sample_archive(SMALL, again)
    assert again.read_bytes() == archive.read_bytes()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(spec, index):
        raise RuntimeError("killed")

    monkeypatch.setattr(synthetic, "synthesize_case", boom)
    with pytest.raises(RuntimeError):
        write_sample_archive(SMALL, tmp_path / "out.zip")
    assert list(tmp_path.iterdir()) == []


def test_archive_is_readable_as_a_zip_in_memory(archive):
    # The pipeline may read members without extracting: the zip must be self-consistent.
    with zipfile.ZipFile(io.BytesIO(archive.read_bytes())) as zf:
        assert zf.testzip() is None


# ------------------------------------------------------------------ grades


def test_lgg_count_and_grade_rule_are_consistent_for_every_prefix():
    for fraction in (0.0, 0.1, 0.25, 0.34, 0.5, 1.0):
        for n in range(0, 25):
            spec = SyntheticSpec(cases=n, lgg_fraction=fraction)
            grades = [grade_of(spec, k) for k in range(n)]
            assert grades.count("LGG") == lgg_count(spec) == int(np.floor(n * fraction + 0.5 + 1e-9))
    assert lgg_count(SyntheticSpec(cases=20, lgg_fraction=0.25)) == 5


def test_lgg_cases_lack_enhancing_tumour_and_hgg_cases_have_it(cases):
    grades = [c.grade for c in cases]
    assert grades.count("LGG") == lgg_count(SMALL) == 2
    for i, c in enumerate(cases):
        assert c.grade == grade_of(SMALL, i)
        labels = set(np.unique(c.seg).tolist())
        if c.grade == "LGG":
            assert 4 not in labels and {1, 2} <= labels
        else:
            assert 4 in labels


# ---------------------------------------------------------------- anatomy


def test_background_is_exactly_zero_and_brain_is_nonzero(cases):
    for c in cases:
        brain = c.brain_mask
        assert 0.1 < brain.mean() < 0.7
        for m in MODALITIES:
            img = c.images[m]
            assert img.dtype == np.int16 and img.shape == c.seg.shape
            assert np.all(img[~brain] == 0), m
            assert np.all(img[brain] > 0), m  # "nonzero" is the brain mask, as pipelines assume
        assert c.seg.dtype == np.uint8


def test_brain_is_one_blob_clear_of_the_volume_edge(cases):
    for c in cases:
        brain = c.brain_mask
        assert ndi.label(brain)[1] == 1
        assert not brain[[0, -1]].any() and not brain[:, [0, -1]].any() and not brain[:, :, [0, -1]].any()
        assert {CSF, GM, WM} <= set(np.unique(c.tissue[brain]).tolist())


def test_tumour_lies_inside_the_brain_without_touching_its_surface(cases):
    for c in cases:
        tumour = c.seg > 0
        assert tumour.any()
        assert not np.any(tumour & ~c.brain_mask)
        assert not np.any(ndi.binary_dilation(tumour) & ~c.brain_mask), "tumour touches the brain surface"


def test_tumour_regions_are_nested_like_brats(cases):
    for c in cases:
        if c.grade == "HGG":
            # Necrosis, where present, is enclosed by enhancing tumour: never next to edema or healthy tissue.
            necrosis = c.seg == 1
            if necrosis.any():
                ring = ndi.binary_dilation(necrosis) & ~necrosis
                assert set(np.unique(c.seg[ring]).tolist()) <= {1, 4}


def test_tumour_sizes_vary_from_small_to_large(cases):
    volumes = [int((c.seg > 0).sum()) for c in cases]
    assert max(volumes) >= 3 * min(volumes), volumes


# --------------------------------------------------------------- contrasts


def _mean(img: np.ndarray, region: np.ndarray) -> float:
    assert region.sum() > 0
    return float(img[region].mean())


def test_tumour_contrasts_match_real_mri(cases):
    necrosis_seen = False
    for c in cases:
        # Compare with white matter near the tumour, as a reader would: the bias field varies across the head.
        nearby = ndi.binary_dilation(c.seg > 0, iterations=8)
        normal_wm = (c.tissue == WM) & (c.seg == 0) & nearby
        flair, t1ce, t2, t1 = (c.images[m].astype(float) for m in ("flair", "t1ce", "t2", "t1"))
        edema = c.seg == 2
        assert _mean(flair, edema) > 1.3 * _mean(flair, normal_wm)
        assert _mean(t2, edema) > _mean(t2, normal_wm)
        assert _mean(t1, c.seg > 0) < _mean(t1, normal_wm)
        if c.grade == "HGG":
            rim = c.seg == 4
            assert _mean(t1ce, rim) > _mean(t1ce, normal_wm)
            necrosis = c.seg == 1
            if necrosis.sum() >= 3:
                necrosis_seen = True
                assert _mean(t1ce, rim) > _mean(t1ce, necrosis)  # small cores blur into the rim at 2 mm
                assert _mean(t2, necrosis) > _mean(t2, normal_wm)
        else:
            core = c.seg == 1
            assert _mean(t1ce, core) < _mean(t1ce, normal_wm)  # does not enhance
            assert _mean(t2, core) > _mean(t2, normal_wm)
    assert necrosis_seen


def test_healthy_tissue_contrasts_match_real_mri(cases):
    for c in cases:
        healthy = c.seg == 0
        csf, gm, wm = ((c.tissue == t) & healthy for t in (CSF, GM, WM))
        t1, t1ce, t2, flair = (c.images[m].astype(float) for m in MODALITIES)
        assert _mean(t1, wm) > _mean(t1, gm) > _mean(t1, csf)
        assert _mean(t1ce, wm) > _mean(t1ce, gm) > _mean(t1ce, csf)
        assert _mean(t2, csf) > _mean(t2, gm) > _mean(t2, wm)
        assert _mean(flair, gm) > _mean(flair, wm) > _mean(flair, csf)


def test_intensity_scale_differs_between_cases_and_modalities(cases):
    # Scanners differ: a model must not rely on absolute intensities.
    medians = np.array([[np.median(c.images[m][c.brain_mask]) for m in MODALITIES] for c in cases])
    assert np.all(medians.max(axis=0) > 1.5 * medians.min(axis=0)), medians
    assert len(np.unique(medians)) == medians.size


def test_images_have_noise_and_bias_not_flat_classes(cases):
    c = cases[0]
    normal_wm = (c.tissue == WM) & (c.seg == 0) & ndi.binary_erosion(c.tissue == WM, iterations=2)
    for m in MODALITIES:
        values = c.images[m][normal_wm].astype(float)
        cv = values.std() / values.mean()
        assert 0.01 < cv < 0.35, (m, cv)
