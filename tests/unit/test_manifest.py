import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from glioseg.cli import _parser
from glioseg.cli import main as cli_main
from glioseg.errors import GliosegError
from glioseg.manifest import build_manifest, read_dataset_info, read_manifest, write_manifest


def test_manifest_lists_every_case_with_all_paths(tiny_raw, tiny_manifest):
    csv, info_json = tiny_manifest
    frame, info = read_manifest(csv), read_dataset_info(info_json)
    assert list(frame["case"]) == [f"BraTS2021_{i:05d}" for i in range(6)]
    assert (frame["patient"] == frame["case"]).all()
    assert list(frame.columns[:8]) == ["case", "patient", "group", "image_t1", "image_t1ce", "image_t2", "image_flair", "label"]
    assert frame.loc[2, "image_flair"].endswith("BraTS2021_00002/BraTS2021_00002_flair.nii.gz")
    assert info.modalities == ("t1", "t1ce", "t2", "flair") and info.convention.name == "brats"


@pytest.fixture
def raw_copy(tiny_raw, tmp_path):
    return shutil.copytree(tiny_raw, tmp_path / "raw")


def test_bad_cases_are_each_named_with_their_problem(raw_copy):
    (raw_copy / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()
    seg = raw_copy / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    image = nib.load(seg)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine, image.header), seg)
    flair = raw_copy / "BraTS2021_00004" / "BraTS2021_00004_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:400])
    with pytest.raises(GliosegError) as error:
        build_manifest(raw_copy, "brats2021", "tiny")
    message = error.value.message
    assert "3 of 6 cases are unusable" in message
    assert "BraTS2021_00001: missing t2" in message
    assert "BraTS2021_00003: label values [3] outside the brats convention" in message
    assert "BraTS2021_00004: flair:" in message and str(flair) in message


def test_truncated_label_data_is_reported_not_raised_raw(raw_copy):
    seg = raw_copy / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz"
    raw = gzip.decompress(seg.read_bytes())
    seg.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(GliosegError, match=r"BraTS2021_00002: label: .*(truncated|corrupt|readable)"):
        build_manifest(raw_copy, "brats2021", "tiny")


def test_shape_disagreement_is_reported(raw_copy):
    t1 = raw_copy / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz"
    image = nib.load(t1)
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), image.affine), t1)
    with pytest.raises(GliosegError, match=r"BraTS2021_00000: t1ce has shape \(48, 48, 32\) but t1 has \(10, 10, 10\)"):
        build_manifest(raw_copy, "brats2021", "tiny")


def test_empty_folder_says_the_layout_may_be_wrong(tmp_path):
    with pytest.raises(GliosegError, match="no cases in the brats2021 layout"):
        build_manifest(tmp_path, "brats2021", "x")


def rewrite(path, change, dtype=None):
    """Rewrite a NIfTI file with ``change`` applied to its voxels (as ``dtype``, default its own)."""
    image = nib.load(path)
    data = np.asarray(image.dataobj).astype(dtype or image.get_data_dtype())
    change(data)
    header = image.header.copy()
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, image.affine, header), path)
    return path


def set_flat(values: dict[int, float]):
    """A change for :func:`rewrite`: voxel ``index`` (in flat order) takes ``value``."""
    def change(data):
        for index, value in values.items():
            data.flat[index] = value
    return change


def test_non_finite_image_voxels_are_named_with_case_modality_file_and_count(raw_copy):
    flair = rewrite(raw_copy / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz",
                    set_flat({100: np.nan, 101: np.nan, 102: np.nan, 200: np.inf}), np.float32)
    with pytest.raises(GliosegError) as error:
        build_manifest(raw_copy, "brats2021", "tiny")
    message = error.value.message
    assert "1 of 6 cases are unusable" in message
    assert f"BraTS2021_00002: flair: image has 3 NaN voxels and 1 infinite voxel ({flair})" in message


def test_fractional_float_labels_are_refused_not_truncated(raw_copy):
    def fractions(data):
        data[data == 1] = 1.5
        data[data == 4] = 4.6

    seg = rewrite(raw_copy / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz", fractions, np.float32)
    values = np.asarray(nib.load(seg).dataobj)
    bad = int(np.count_nonzero((values == np.float32(1.5)) | (values == np.float32(4.6))))
    with pytest.raises(GliosegError) as error:
        build_manifest(raw_copy, "brats2021", "tiny")
    assert f"BraTS2021_00003: label: label values are not whole numbers: {bad} voxels hold values such as 1.5, 4.6 ({seg})" \
        in error.value.message


def test_nan_label_is_reported_as_nan(raw_copy):
    seg = rewrite(raw_copy / "BraTS2021_00005" / "BraTS2021_00005_seg.nii.gz", set_flat({7: np.nan}), np.float32)
    with pytest.raises(GliosegError) as error:
        build_manifest(raw_copy, "brats2021", "tiny")
    assert f"BraTS2021_00005: label: label map has 1 NaN voxel ({seg})" in error.value.message
    assert "2147483648" not in error.value.message


def test_whole_float_labels_are_read_as_their_integers(raw_copy):
    rewrite(raw_copy / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz", lambda d: None, np.float32)
    frame, _ = build_manifest(raw_copy, "brats2021", "tiny")
    assert len(frame) == 6


# ---------------------------------------------------------------- in parallel


def test_two_threads_write_the_same_manifest_bytes(tiny_raw, tiny_manifest, tmp_path):
    csv, info_json = tiny_manifest  # built with one thread
    frame, info = build_manifest(tiny_raw, "brats2021", "tiny", threads=2)
    write_manifest(frame, info, tmp_path / "tiny.csv", tmp_path / "tiny.json")
    assert (tmp_path / "tiny.csv").read_bytes() == csv.read_bytes()
    assert (tmp_path / "tiny.json").read_bytes() == info_json.read_bytes()


def test_the_manifest_command_passes_its_threads_on(tiny_raw, tiny_manifest, tmp_path, monkeypatch):
    import glioseg.manifest

    seen = []
    real = glioseg.manifest.map_cases
    monkeypatch.setattr(glioseg.manifest, "map_cases", lambda *a, **k: seen.append(k["threads"]) or real(*a, **k))
    argv = ["manifest", "--raw", str(tiny_raw), "--layout", "brats2021", "--dataset", "tiny",
            "--out-csv", str(tmp_path / "tiny.csv"), "--out-json", str(tmp_path / "tiny.json")]
    assert cli_main(["--threads", "2", *argv]) == 0 and cli_main(argv) == 0
    assert seen == [2, 1]
    assert not _parser().parse_args(["--threads", "2", *argv]).torch_threads  # so glioseg does not import torch for it
    assert (tmp_path / "tiny.csv").read_bytes() == tiny_manifest[0].read_bytes()


def test_two_threads_name_every_bad_case_as_one_thread_does(raw_copy):
    (raw_copy / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()
    flair = raw_copy / "BraTS2021_00004" / "BraTS2021_00004_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:400])
    messages = []
    for threads in (1, 2):
        with pytest.raises(GliosegError) as error:
            build_manifest(raw_copy, "brats2021", "tiny", threads=threads)
        messages.append(error.value.message)
    assert messages[0] == messages[1]
    assert "2 of 6 cases are unusable" in messages[1] and "BraTS2021_00001: missing t2" in messages[1]
    assert "BraTS2021_00004: flair:" in messages[1] and str(flair) in messages[1]


# ---------------------------------------------------------------- unlabelled datasets (labelled: false)


def _without_labels(raw_copy):
    for seg in raw_copy.glob("*/*_seg.nii.gz"):
        seg.unlink()
    return raw_copy


def test_an_unlabelled_dataset_is_checked_without_labels_and_records_none(raw_copy, tmp_path):
    frame, info = build_manifest(_without_labels(raw_copy), "brats2021", "val", labelled=False)
    assert list(frame["case"]) == [f"BraTS2021_{i:05d}" for i in range(6)]
    assert (frame["label"] == "").all() and frame.loc[0, "image_t1"].endswith("BraTS2021_00000_t1.nii.gz")
    write_manifest(frame, info, tmp_path / "val.csv", tmp_path / "val.json")
    assert read_dataset_info(tmp_path / "val.json").labelled is False
    assert (read_manifest(tmp_path / "val.csv")["label"] == "").all()


def test_an_unlabelled_dataset_still_has_its_images_checked(raw_copy):
    (_without_labels(raw_copy) / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()
    with pytest.raises(GliosegError, match="1 of 6 cases are unusable:\n    BraTS2021_00001: missing t2\n  What to do: replace"):
        build_manifest(raw_copy, "brats2021", "val", labelled=False)


def test_the_label_files_of_an_unlabelled_dataset_are_not_read(raw_copy):
    """A validation release may ship a few files named as labels: they are neither checked nor recorded."""
    seg = raw_copy / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz"
    seg.write_bytes(b"not a nifti")
    frame, info = build_manifest(raw_copy, "brats2021", "val", labelled=False)
    assert (frame["label"] == "").all() and not info.labelled


def test_missing_labels_of_a_labelled_dataset_are_named_with_the_way_out(raw_copy):
    for case in ("BraTS2021_00001", "BraTS2021_00004"):
        (raw_copy / case / f"{case}_seg.nii.gz").unlink()
    with pytest.raises(GliosegError) as error:
        build_manifest(raw_copy, "brats2021", "val")
    message = error.value.message
    assert "2 of 6 cases are unusable" in message and "BraTS2021_00001: missing label" in message
    assert "2 of 6 cases have no label file" in message and "datasets → val → labelled: false" in message


def test_a_labelled_sidecar_says_so_and_an_old_one_reads_as_labelled(tiny_manifest, tmp_path):
    import json

    payload = json.loads(tiny_manifest[1].read_text())
    assert payload["labelled"] is True
    del payload["labelled"]
    (tmp_path / "old.json").write_text(json.dumps(payload))
    assert read_dataset_info(tmp_path / "old.json").labelled is True


def test_the_manifest_command_takes_unlabelled(raw_copy, tmp_path):
    argv = ["manifest", "--raw", str(_without_labels(raw_copy)), "--layout", "brats2021", "--dataset", "val", "--unlabelled",
            "--out-csv", str(tmp_path / "val.csv"), "--out-json", str(tmp_path / "val.json")]
    assert cli_main(argv) == 0
    assert not read_dataset_info(tmp_path / "val.json").labelled


def test_a_missing_empty_or_garbled_manifest_or_sidecar_is_named_for_every_stage(tiny_manifest, tmp_path, capsys):
    csv, sidecar = tiny_manifest
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "cut.json").write_text(sidecar.read_text()[:40])
    (tmp_path / "list.json").write_text("[1, 2]")
    for read, path, problem in ((read_manifest, tmp_path / "none.csv", "no such manifest"),
                                (read_manifest, tmp_path / "empty.csv", "unreadable manifest (EmptyDataError"),
                                (read_manifest, sidecar, "not a glioseg manifest"),
                                (read_dataset_info, tmp_path / "none.json", "no such manifest sidecar"),
                                (read_dataset_info, tmp_path / "cut.json", "unreadable manifest sidecar (JSONDecodeError"),
                                (read_dataset_info, tmp_path / "list.json", "unreadable manifest sidecar (TypeError")):
        with pytest.raises(GliosegError) as error:
            read(path)
        assert error.value.path == path and error.value.problem.startswith(problem), error.value.message
        assert "run the manifest step again" in error.value.hint
    code = cli_main(["preprocess", "--manifest", str(csv), "--info", str(tmp_path / "cut.json"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code != 0 and "cut.json" in err and "unreadable manifest sidecar" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
