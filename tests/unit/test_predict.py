"""glioseg predict and export: new scans from their raw files give what the infer stage gives from the cache."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from glioseg import bundle as bundles
from glioseg.cli import main
from glioseg.commands.predict import export as export_command
from glioseg.config import experiment_record, training_settings, validate_config
from glioseg.errors import GliosegError
from glioseg.inference import infer_cases
from glioseg.manifest import read_dataset_info, read_manifest
from glioseg.paths import Results
from glioseg.predict import PROBABILITIES, predict
from glioseg.preprocess import preprocess_dataset
from glioseg.settings import InferenceSettings, TrainingSettings
from glioseg.splits import write_splits
from glioseg.training.loop import FoldPaths, train_fold

from .test_config import SCHEMA

CPU = torch.device("cpu")
MODALITIES = ("t1", "t1ce", "t2", "flair")


@pytest.fixture(scope="module")
def study(tiny_manifest, tmp_path_factory):
    """A results tree as the pipeline leaves it: cache (margin 3), 2-fold split, two trained fold models, the record."""
    csv, info_json = tiny_manifest
    manifest, info = read_manifest(csv), read_dataset_info(info_json)
    config = validate_config({
        "seed": 5,
        "datasets": {"tiny": {"source": {"synthetic": {}}, "layout": "brats2021", "split": {"folds": 2, "seed": 0},
                              "preprocess": {"margin": 3}}},
        "experiments": {"e": {"dataset": "tiny", "model": {"name": "unet", "params": {"channels": [4, 8], "strides": [2],
                                                                                      "num_res_units": 0}},
                              "epochs": 1, "batch_size": 2, "patch_size": [16, 16, 16], "num_workers": 0,
                              "inference": {"overlap": 0.25, "sw_batch_size": 2}}},
    }, SCHEMA)
    results = Results(str(tmp_path_factory.mktemp("study") / "results"))
    preprocess_dataset(manifest, info, results.preprocessed("tiny"), margin=3)
    table = write_splits(manifest, info.modalities, 2, 0.0, 0, results.folds("tiny"), results.split_table("tiny"))
    settings = TrainingSettings.from_json(training_settings(config, "e"))
    for fold in (0, 1):
        train = table.loc[table["fold"] != fold, "case"].tolist()
        val = table.loc[table["fold"] == fold, "case"].tolist()
        paths = FoldPaths(cache=Path(results.preprocessed("tiny")), model=Path(results.model("e", fold)),
                          history=Path(results.history("e", fold)), state=Path(results.state("e", fold)))
        train_fold(settings, paths, train, val, ["TC", "WT", "ET"], in_channels=4, device=CPU)
    from glioseg.atomic import write_json

    write_json(results.experiment_record("e"), experiment_record(config, "e"))
    return {"results": results, "manifest": manifest, "info": info, "table": table, "config": config,
            "experiment": Path(results.root) / "models" / "e"}


def val_cases(study, fold: int) -> list[str]:
    return study["table"].loc[study["table"]["fold"] == fold, "case"].tolist()


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def probabilities_of(folder: Path, case: str) -> np.ndarray:
    return np.asarray(nib.load(str(folder / PROBABILITIES / f"{case}.nii.gz")).dataobj)


def test_predict_from_raw_files_gives_exactly_the_labels_infer_writes_from_the_cache(study, tiny_raw, tmp_path):
    results, fold = study["results"], 0
    cases = val_cases(study, fold)
    settings = InferenceSettings.from_json(experiment_record(study["config"], "e")["inference"])
    infer_cases([results.model("e", fold)], results.preprocessed("tiny"), study["manifest"], study["info"], cases,
                settings, tmp_path / "infer", device=CPU)
    report = predict(study["experiment"], [tiny_raw], tmp_path / "predict", folds=[fold], device=CPU)
    assert sorted(report.written) == sorted(study["manifest"]["case"])  # every case of the raw folder; seg files ignored
    for case in cases:
        inferred, predicted = nib.load(str(tmp_path / "infer" / f"{case}.nii.gz")), nib.load(str(tmp_path / "predict" / f"{case}.nii.gz"))
        assert np.array_equal(np.asarray(predicted.dataobj), np.asarray(inferred.dataobj))
        assert np.array_equal(predicted.affine, inferred.affine) and predicted.shape == inferred.shape
        assert predicted.get_data_dtype() == np.uint8
    assert any(labels_of(tmp_path / "predict" / f"{case}.nii.gz").any() for case in cases)


def test_infer_names_the_splits_cases_that_the_manifest_lacks_before_loading_anything(study, tmp_path):
    """Before: a KeyError from the manifest lookup after the models were loaded (a split of another dataset)."""
    results = study["results"]
    settings = InferenceSettings.from_json(experiment_record(study["config"], "e")["inference"])
    with pytest.raises(GliosegError, match=r"2 of 3 cases of the split are not in the manifest: other_1, other_2"):
        infer_cases([results.model("e", 0)], results.preprocessed("tiny"), study["manifest"], study["info"],
                    [val_cases(study, 0)[0], "other_1", "other_2"], settings, tmp_path / "infer", device=CPU)
    assert not (tmp_path / "infer").exists()


def test_the_ensemble_is_the_mean_of_the_folds_probabilities(study, tiny_raw, tmp_path):
    case = val_cases(study, 0)[0]
    folder = Path(tiny_raw) / case
    for name, folds in (("f0", [0]), ("f1", [1]), ("both", None)):
        predict(study["experiment"], [folder], tmp_path / name, folds=folds, probabilities=True, device=CPU)
    p0, p1, both = (probabilities_of(tmp_path / name, case) for name in ("f0", "f1", "both"))
    assert both.shape == (*labels_of(tmp_path / "both" / f"{case}.nii.gz").shape, 3) and both.dtype == np.float32
    np.testing.assert_allclose(both, (p0 + p1) / 2, atol=1e-6)
    assert not np.allclose(p0, p1, atol=1e-3)  # two different models
    masks = np.moveaxis(both > 0.5, -1, 0)
    labels = labels_of(tmp_path / "both" / f"{case}.nii.gz")
    assert np.array_equal(labels > 0, masks.any(axis=0)) and np.array_equal(labels == 4, masks[2])  # painted TC, WT, ET


def test_a_bundle_copied_elsewhere_predicts_the_same_labels(study, tiny_raw, tmp_path):
    case = val_cases(study, 1)[0]
    exported = bundles.write_bundle(bundles.from_results(study["experiment"]), tmp_path / "out")
    assert exported == tmp_path / "out" / "e.pt"
    moved = tmp_path / "elsewhere" / "model.pt"
    moved.parent.mkdir()
    shutil.copy(exported, moved)
    predict(study["experiment"], [Path(tiny_raw) / case], tmp_path / "tree", device=CPU)
    predict(moved, [Path(tiny_raw) / case], tmp_path / "bundle", device=CPU)
    assert np.array_equal(labels_of(tmp_path / "bundle" / f"{case}.nii.gz"), labels_of(tmp_path / "tree" / f"{case}.nii.gz"))
    loaded = bundles.read_bundle(moved)
    meta = loaded.metadata
    assert loaded.folds == [0, 1] and loaded.modalities == MODALITIES and loaded.margin == 3
    assert meta["data"]["digest"] and sorted(meta["data"]["split"]["validation"]) == ["0", "1"]
    assert meta["dataset"]["label_convention"]["name"] == "brats" and meta["inference"]["overlap"] == 0.25
    assert {"glioseg", "monai", "torch"} <= set(meta["versions"]) and meta["config"]["dataset"]["preprocess"]["margin"] == 3
    assert str(study["results"].root) not in str(meta)  # nothing from the results tree


def test_a_damaged_or_newer_bundle_is_refused_with_what_to_do(study, tmp_path):
    path = bundles.write_bundle(bundles.from_results(study["experiment"]), tmp_path / "b.pt")
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["preprocess"]["margin"] = 9
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(GliosegError, match="checksum"):
        bundles.read_bundle(tmp_path / "edited.pt")
    payload["version"] = bundles.BUNDLE_VERSION + 1
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(GliosegError, match="newer than this glioseg") as raised:
        bundles.read_bundle(tmp_path / "newer.pt")
    assert "update glioseg" in raised.value.message


def _case_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for seg in target.glob("*_seg.nii.gz"):
        seg.unlink()
    return target


def test_bad_cases_are_named_and_the_other_cases_are_still_written(study, tiny_raw, tmp_path):
    good, missing, shaped = sorted(study["manifest"]["case"])[:3]
    inputs = tmp_path / "in"
    for case in (good, missing, shaped):
        _case_copy(Path(tiny_raw) / case, inputs / case)
    (inputs / missing / f"{missing}_t1ce.nii.gz").unlink()
    flair = nib.load(str(inputs / shaped / f"{shaped}_flair.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(flair.dataobj)[:, :, :20], flair.affine), str(inputs / shaped / f"{shaped}_flair.nii.gz"))
    with pytest.raises(GliosegError) as raised:
        predict(study["experiment"], [inputs], tmp_path / "out", folds=[0], device=CPU)
    message = raised.value.message
    assert "2 of 3 cases could not be predicted" in message
    assert f"{missing}: " in message and "missing t1ce" in message
    assert f"{shaped}: " in message and "flair has shape (48, 48, 20) but t1 has (48, 48, 32)" in message
    assert (tmp_path / "out" / f"{good}.nii.gz").is_file()
    assert not (tmp_path / "out" / f"{missing}.nii.gz").exists() and not (tmp_path / "out" / f"{shaped}.nii.gz").exists()

    files = [Path(tiny_raw) / good / f"{good}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    with pytest.raises(GliosegError) as raised:
        predict(study["experiment"], files, tmp_path / "order", folds=[0], device=CPU)
    assert f"{good}: " in raised.value.message
    assert "files given in the order flair, t1, t1ce, t2, but the model takes t1, t1ce, t2, flair" in raised.value.message
    files = [Path(tiny_raw) / good / f"{good}_{m}.nii.gz" for m in MODALITIES]
    predict(study["experiment"], files, tmp_path / "order", folds=[0], device=CPU)
    assert np.array_equal(labels_of(tmp_path / "order" / f"{good}.nii.gz"), labels_of(tmp_path / "out" / f"{good}.nii.gz"))


def test_other_release_names_and_modality_patterns_find_the_same_case(study, tiny_raw, tmp_path):
    case = val_cases(study, 0)[0]
    predict(study["experiment"], [Path(tiny_raw) / case], tmp_path / "ref", folds=[0], device=CPU)
    expected = labels_of(tmp_path / "ref" / f"{case}.nii.gz")
    brats2023 = tmp_path / "brats2023" / "BraTS-GLI-00001-000"
    brats2023.mkdir(parents=True)
    for old, new in zip(MODALITIES, ("t1n", "t1c", "t2w", "t2f")):
        shutil.copy(Path(tiny_raw) / case / f"{case}_{old}.nii.gz", brats2023 / f"BraTS-GLI-00001-000-{new}.nii.gz")
    predict(study["experiment"], [brats2023.parent], tmp_path / "o2023", folds=[0], device=CPU, labels="brats2023")
    got = labels_of(tmp_path / "o2023" / "BraTS-GLI-00001-000.nii.gz")
    assert np.array_equal(got, np.where(expected == 4, 3, expected))  # ET written as 3
    custom = tmp_path / "custom" / "patient7"
    custom.mkdir(parents=True)
    for name in MODALITIES:
        shutil.copy(Path(tiny_raw) / case / f"{case}_{name}.nii.gz", custom / f"scan_{name.upper()}.nii.gz")
    patterns = {m: f"scan_{m.upper()}.nii.gz" for m in MODALITIES}
    predict(study["experiment"], [custom.parent], tmp_path / "ocustom", patterns=patterns, folds=[0], device=CPU)
    assert np.array_equal(labels_of(tmp_path / "ocustom" / "patient7.nii.gz"), expected)
    with pytest.raises(GliosegError, match="in the order"):
        predict(study["experiment"], [custom.parent], tmp_path / "x", patterns=dict(reversed(patterns.items())), device=CPU)


def test_a_rerun_skips_finished_cases_and_refuses_a_folder_of_other_settings(study, tiny_raw, tmp_path):
    case = val_cases(study, 0)[0]
    first = predict(study["experiment"], [Path(tiny_raw) / case], tmp_path / "out", folds=[0], device=CPU)
    again = predict(study["experiment"], [Path(tiny_raw) / case], tmp_path / "out", folds=[0], device=CPU)
    assert first.written == [case] and again.skipped == [case] and not again.written
    with pytest.raises(GliosegError, match="another model or other settings"):
        predict(study["experiment"], [Path(tiny_raw) / case], tmp_path / "out", folds=[0], overrides={"tta": True},
                device=CPU)


def test_the_commands_export_and_predict(study, tiny_raw, tmp_path):
    case = val_cases(study, 1)[0]
    assert main(["export", "--model", str(study["experiment"]), "--out", str(tmp_path / "bundle.pt")]) == 0
    assert main(["predict", "--model", str(tmp_path / "bundle.pt"), "--input", str(Path(tiny_raw) / case),
                 "--output", str(tmp_path / "out"), "--fold", "1", "--overlap", "0.5", "--tta"]) == 0
    assert (tmp_path / "out" / f"{case}.nii.gz").is_file()
    assert main(["predict", "--model", str(tmp_path / "bundle.pt"), "--input", str(tmp_path / "nowhere"),
                 "--output", str(tmp_path / "o2")]) == 2


# ---------------------------------------------------------------- a dataset's manifest (the workflow's predict section)


def test_a_datasets_manifest_predicts_its_cases_as_their_folder_does(study, tiny_raw, tiny_manifest, tmp_path):
    """--manifest: the cases the layout found, into a folder of <case>.nii.gz alone (the run record elsewhere)."""
    csv, info_json = tiny_manifest
    predict(study["experiment"], [tiny_raw], tmp_path / "folder", folds=[0], device=CPU)
    report = predict(study["experiment"], [], tmp_path / "submission", folds=[0], device=CPU, manifest=(csv, info_json),
                     record=tmp_path / "submission.json")
    cases = sorted(study["manifest"]["case"])
    assert sorted(report.written) == cases
    assert sorted(p.name for p in (tmp_path / "submission").iterdir()) == [f"{case}.nii.gz" for case in cases]
    assert (tmp_path / "submission.json").is_file()
    for case in cases:
        assert np.array_equal(labels_of(tmp_path / "submission" / f"{case}.nii.gz"),
                              labels_of(tmp_path / "folder" / f"{case}.nii.gz"))


def test_a_manifest_of_another_releases_names_is_read_and_one_without_a_modality_refused(study, tiny_manifest, tmp_path):
    import json

    csv, info_json = tiny_manifest
    frame = read_manifest(csv).head(1)
    sidecar = json.loads(info_json.read_text())
    renamed = dict(zip(MODALITIES, ("t1n", "t1c", "t2w", "t2f")))  # BraTS 2023's names for the same modalities
    frame.rename(columns={f"image_{old}": f"image_{new}" for old, new in renamed.items()}).to_csv(tmp_path / "v.csv", index=False)
    (tmp_path / "v.json").write_text(json.dumps({**sidecar, "modalities": list(renamed.values()), "labelled": False}))
    report = predict(study["experiment"], [], tmp_path / "out", folds=[1], device=CPU, manifest=(tmp_path / "v.csv",
                                                                                                  tmp_path / "v.json"))
    assert report.written == [frame.loc[0, "case"]]
    (tmp_path / "w.json").write_text(json.dumps({**sidecar, "modalities": ["t1", "t1ce", "t2", "dwi"]}))
    with pytest.raises(GliosegError, match=r"the model takes \['t1', 't1ce', 't2', 'flair'\]: none of the dataset's is flair"):
        predict(study["experiment"], [], tmp_path / "out2", device=CPU, manifest=(csv, tmp_path / "w.json"))


def test_the_predict_command_takes_a_manifest_and_a_record(study, tiny_manifest, tmp_path):
    csv, _ = tiny_manifest
    assert main(["predict", "--model", str(study["experiment"]), "--manifest", str(csv), "--fold", "0",
                 "--output", str(tmp_path / "out"), "--record", str(tmp_path / "run.json")]) == 0
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == len(study["manifest"]) and (tmp_path / "run.json").is_file()
    assert not (tmp_path / "out" / "predict.json").exists()
    assert main(["predict", "--model", str(study["experiment"]), "--output", str(tmp_path / "o2")]) == 2


# ---------------------------------------------------------------- hostile models, options and outputs


def _resummed(payload: dict, path: Path) -> Path:
    """``payload`` saved with its checksum recomputed: a bundle edited by hand, or by a damaged exporter, that the
    checksum cannot catch."""
    payload["checksum"] = bundles._checksum(payload["metadata"], payload["weights"])
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def bundle_payload(study, tmp_path_factory):
    path = bundles.write_bundle(bundles.from_results(study["experiment"]), tmp_path_factory.mktemp("bundle") / "b.pt")
    return torch.load(path, weights_only=True)


def _edited(payload: dict, edit) -> dict:
    import copy

    edited = copy.deepcopy(payload)
    edit(edited)
    return edited


def _first_tensor(payload: dict) -> str:
    return next(iter(payload["weights"][0]))


BROKEN_BUNDLES = {
    "background": (lambda p: p["metadata"]["preprocess"].update(background="bogus"),
                   "unusable model: its background rule 'bogus' is none of ['zero', 'mode']"),
    "margin": (lambda p: p["metadata"]["preprocess"].update(margin="abc"), "its crop margin 'abc' is not a whole number"),
    "modalities": (lambda p: p["metadata"].pop("modalities"), "metadata is incomplete or garbled (KeyError: 'modalities')"),
    "folds": (lambda p: p.update(weights={}), "unusable model: it holds no fold models"),
    "overlap": (lambda p: p["metadata"]["inference"].update(overlap=5), "unusable model: overlap 5 is not in [0, 1)"),
    "spacing": (lambda p: p["metadata"]["preprocess"].update(spacing=[0, 0, 0]), "spacing [0, 0, 0] is not three positive"),
    "shape": (lambda p: p["weights"][0].update({_first_tensor(p): torch.zeros(3)}),
              "fold 0's weights do not fit the network its metadata describes (4 modalities in, 3 regions out)"),
    "nan": (lambda p: p["weights"][0][_first_tensor(p)].fill_(float("nan")), "fold 0's weights hold NaN or infinite"),
    "network": (lambda p: p["metadata"]["training"].update(model={"name": "nosuchnet"}),
                "the network its metadata describes cannot be built (KeyError: \"unknown model 'nosuchnet'"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_BUNDLES))
def test_a_resummed_bundle_that_predict_could_not_use_is_refused_naming_the_fault_before_the_output_is_touched(
        broken, study, bundle_payload, tiny_raw, tmp_path):
    """Before: KeyErrors, a ZeroDivisionError or torch's load_state_dict traceback, or (background, NaN weights) labels
    predicted with a rule that does not exist or from a dead network."""
    edit, expected = BROKEN_BUNDLES[broken]
    path = _resummed(_edited(bundle_payload, edit), tmp_path / "edited.pt")
    case = val_cases(study, 0)[0]
    with pytest.raises(GliosegError) as raised:
        predict(path, [Path(tiny_raw) / case], tmp_path / "out", folds=[0], device=CPU)
    assert expected in raised.value.message and raised.value.path == path
    assert "What to do:" in raised.value.message
    assert not (tmp_path / "out").exists()  # no run record that would refuse the repaired bundle's predictions


@pytest.mark.parametrize(("version", "expected"), [(None, "its format version is None, not a version glioseg writes"),
                                                   (0, "its format version is 0"), ("2", "its format version is '2'")])
def test_a_bundle_without_a_format_version_glioseg_wrote_is_damaged_not_newer(version, expected, bundle_payload, tmp_path):
    payload = _edited(bundle_payload, lambda p: p.update(version=version))
    torch.save(payload, tmp_path / "v.pt")
    with pytest.raises(GliosegError) as raised:
        bundles.read_bundle(tmp_path / "v.pt")
    assert expected in raised.value.message and "newer" not in raised.value.message


def test_an_output_that_cannot_be_written_is_named_before_any_case_is_read(study, tiny_raw, tmp_path):
    case = Path(tiny_raw) / val_cases(study, 0)[0]
    (tmp_path / "afile").write_text("x")
    expectations = [
        ({"output": tmp_path / "afile"}, "--output is a file, not a folder", tmp_path / "afile"),
        ({"output": tmp_path / "afile" / "sub"}, "cannot write the run record (Not a directory)",
         tmp_path / "afile" / "sub" / "predict.json"),
        ({"output": tmp_path / "o", "record": tmp_path}, "the run record's path is a folder", tmp_path),
    ]
    for where, expected, named in expectations:
        with pytest.raises(GliosegError) as raised:
            predict(study["experiment"], [case], device=CPU, folds=[0], **where)
        assert expected in raised.value.message and raised.value.path == named and "What to do:" in raised.value.message


@pytest.mark.parametrize("record", ["{not json", "[1, 2]"])
def test_an_unreadable_run_record_is_refused_not_a_traceback(record, study, tiny_raw, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "predict.json").write_text(record)
    (tmp_path / "out" / "earlier.nii.gz").write_bytes(b"")  # a prediction the record should say the origin of
    with pytest.raises(GliosegError, match="cannot be told from another model's") as raised:
        predict(study["experiment"], [Path(tiny_raw) / val_cases(study, 0)[0]], tmp_path / "out", folds=[0], device=CPU)
    assert raised.value.path == tmp_path / "out" / "predict.json"


def test_the_record_of_a_run_that_wrote_nothing_does_not_hold_the_folder(study, tiny_raw, tmp_path):
    case = val_cases(study, 0)[0]
    broken = _case_copy(Path(tiny_raw) / case, tmp_path / "in" / case)
    (broken / f"{case}_t2.nii.gz").write_bytes(b"junk")
    with pytest.raises(GliosegError, match="1 of 1 cases"):
        predict(study["experiment"], [broken], tmp_path / "out", folds=[0], device=CPU)
    report = predict(study["experiment"], [Path(tiny_raw) / case], tmp_path / "out", folds=[1], device=CPU)
    assert report.written == [case]


def test_a_prediction_that_cannot_be_written_names_the_output_file_and_the_other_cases_are_written(study, tiny_raw, tmp_path):
    """Before: the failure named the case's t1 input file (e.g. 'No space left on device (…_t1.nii.gz)')."""
    first, second = sorted(study["manifest"]["case"])[:2]
    (tmp_path / "out" / f"{first}.nii.gz").mkdir(parents=True)  # stands for an output file that cannot be written
    with pytest.raises(GliosegError) as raised:
        predict(study["experiment"], [Path(tiny_raw) / first, Path(tiny_raw) / second], tmp_path / "out", folds=[0],
                device=CPU)
    message = raised.value.message
    assert f"{first}: {tmp_path / 'out' / first}.nii.gz: cannot write the prediction (Is a directory)" in message
    assert "on a disk with room for the predictions" in message
    assert (tmp_path / "out" / f"{second}.nii.gz").is_file()
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and ".tmp" in p.name]


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("overlap", 1.5, "overlap 1.5 is not in [0, 1)"), ("overlap", float("nan"), "overlap nan is not in [0, 1)"),
    ("threshold", 2.0, "threshold 2.0 is not between 0 and 1"), ("sw_batch_size", 0, "sw_batch_size 0 is not a positive"),
    ("roi_size", [16, 16], "roi_size [16, 16] is not 3 positive whole numbers (the model is 3D)"),
    ("roi_size", [0, 0, 0], "roi_size [0, 0, 0] is not 3 positive"),
])
def test_sliding_window_options_out_of_range_are_one_error_naming_the_option(option, value, expected, study, tiny_raw,
                                                                             tmp_path):
    """Before: one ValueError per case (overlap, sw-batch-size, roi-size sides), or labels silently empty (threshold 2,
    roi-size 0)."""
    with pytest.raises(GliosegError) as raised:
        predict(study["experiment"], [Path(tiny_raw) / val_cases(study, 0)[0]], tmp_path / "out", folds=[0], device=CPU,
                overrides={option: value})
    assert expected in raised.value.message and f"--{option.replace('_', '-')}" in raised.value.message
    assert not (tmp_path / "out").exists()


def test_export_names_a_bad_model_folder_record_or_out_path(study, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "taken.pt").mkdir()
    bundle = bundles.write_bundle(bundles.from_results(study["experiment"]), tmp_path / "b.pt")
    expectations = [
        (["--model", str(bundle), "--out", str(tmp_path / "x.pt")], "this is a file (already a bundle?)"),
        (["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt")], f"{tmp_path / 'nowhere'}: no such experiment"),
        (["--model", str(study["experiment"]), "--out", str(tmp_path / "taken.pt")], "is a folder, so the bundle cannot be"),
        (["--model", str(study["experiment"]), "--out", str(tmp_path / "afile" / "b.pt")],
         f"cannot write the bundle ({tmp_path / 'afile'} is a file, not a folder)"),
    ]
    for argv, expected in expectations:
        with pytest.raises(GliosegError) as raised:
            export_command(argparse.Namespace(model=Path(argv[1]), out=Path(argv[3])))
        assert expected in raised.value.message and "What to do:" in raised.value.message


def test_export_names_a_damaged_experiment_record_or_split(study, tmp_path):
    import json

    root = tmp_path / "results"
    shutil.copytree(study["results"].root, root)
    record = root / "models" / "e" / "experiment.json"
    good = json.loads(record.read_text())
    for broken, expected in (([], "holds a JSON list, not the object glioseg writes"),
                             ({**good, "folds": ["x"]}, "folds (not fold numbers) missing or of the wrong kind"),
                             ({k: v for k, v in good.items() if k != "preprocess"}, "damaged experiment record: preprocess")):
        record.write_text(json.dumps(broken))
        with pytest.raises(GliosegError) as raised:
            bundles.from_results(root / "models" / "e")
        assert expected in raised.value.message and raised.value.path == record
    record.write_text(json.dumps(good))
    (root / "splits" / "tiny" / "folds.json").write_text(json.dumps({"training": [{"case": "x"}]}))
    with pytest.raises(GliosegError, match=r"not a fold list glioseg writes \(KeyError: 'fold'\)"):
        bundles.from_results(root / "models" / "e")


def _rewrite(path: Path, data: np.ndarray | None = None, **header: object) -> None:
    """``path`` saved again with other voxels and/or header fields (the affine is then the header's sform)."""
    image = nib.load(str(path))
    hdr = image.header.copy()
    for key, value in header.items():
        hdr[key] = value
    if data is not None:
        hdr.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) if data is None else data, None if header else image.affine, hdr),
             str(path))


def test_scans_without_real_voxels_or_a_geometry_are_named_with_what_to_do_and_the_others_are_written(study, tiny_raw,
                                                                                                       tmp_path):
    """Before: complex voxels were silently cast to their real part and predicted; RGB voxels and a singular affine
    ended the whole run with a numpy or nibabel traceback (a singular one after the case was predicted); a NaN affine
    was reported as differing from the other modalities'."""
    good, *bad = sorted(study["manifest"]["case"])[:5]
    inputs = tmp_path / "in"
    for case in (good, *bad):
        _case_copy(Path(tiny_raw) / case, inputs / case)
    complex_case, rgb_case, singular_case, nan_case = bad
    t2 = inputs / complex_case / f"{complex_case}_t2.nii.gz"
    _rewrite(t2, np.asarray(nib.load(str(t2)).dataobj).astype(np.complex64))
    t2 = inputs / rgb_case / f"{rgb_case}_t2.nii.gz"
    rgb = np.zeros(nib.load(str(t2)).shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    _rewrite(t2, rgb)
    for modality in MODALITIES:
        _rewrite(inputs / singular_case / f"{singular_case}_{modality}.nii.gz", qform_code=0, sform_code=1,
                 srow_x=[0, 0, 0, 0], srow_y=[0, 0, 0, 0], srow_z=[0, 0, 0, 0])
        _rewrite(inputs / nan_case / f"{nan_case}_{modality}.nii.gz", qform_code=0, sform_code=1,
                 srow_x=[np.nan, 0, 0, 0])
    with pytest.raises(GliosegError) as raised:
        predict(study["experiment"], [inputs], tmp_path / "out", folds=[0], device=CPU)
    message = raised.value.message
    assert "4 of 5 cases could not be predicted" in message
    assert f"{complex_case}: {inputs / complex_case / complex_case}_t2.nii.gz: voxels of type complex64 are not one real " \
           "number each" in message
    assert f"{rgb_case}: {inputs / rgb_case / rgb_case}_t2.nii.gz: voxels of type [('R', 'u1')" in message
    for case in (singular_case, nan_case):
        assert f"{case}: {inputs / case / case}_t1.nii.gz: its affine (the voxel-to-world matrix in the header) is not " \
               "finite or not invertible" in message
    assert message.count("      What to do: ") == 4  # each case's own advice, besides the run's
    assert "repair the header" in message and "save the volume with integer or float voxels" in message
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [f"{good}.nii.gz"]


def test_a_missing_or_unreadable_manifest_is_named(study, tiny_manifest, tmp_path):
    """Before: pandas' FileNotFoundError or json's JSONDecodeError traceback."""
    csv, _ = tiny_manifest
    (tmp_path / "bad.json").write_text("{")
    for manifest, named, expected in (((tmp_path / "none.csv", tmp_path / "none.json"), tmp_path / "none.csv", "no such manifest"),
                                      ((csv, tmp_path / "bad.json"), tmp_path / "bad.json", "unreadable manifest sidecar")):
        with pytest.raises(GliosegError) as raised:
            predict(study["experiment"], [], tmp_path / "out", device=CPU, manifest=manifest)
        assert expected in raised.value.message and raised.value.path == named and "--manifest" in raised.value.message
