"""A custom layout's options are checked when the config is read, and docs/custom-layout.md's example works."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from glioseg.config import validate_config
from glioseg.datasets.layouts import check_layout_options
from glioseg.errors import GliosegError
from glioseg.manifest import build_manifest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DOC = ROOT / "docs" / "custom-layout.md"
OPTIONS = {"modalities": {"t1": "{case}_t1.nii.gz"}, "label": "{case}_seg.nii.gz", "labels": {1: ["WT"]}}


def study(dataset: dict) -> dict:
    return {"datasets": {"d": {"source": {"path": "data"}, **dataset}}, "experiments": {"e": {"dataset": "d", "model": {"name": "unet"}}}}


@pytest.mark.parametrize(
    "dataset, message",
    [
        ({"layout": "custom"}, r"at datasets → d: 'layout_options' is a required property"),
        ({"layout": "custom", "layout_options": {**OPTIONS, "labels": {1: ["WTT"]}}},
         r"at datasets → d → layout_options → labels → 1 → 0: 'WTT' is not one of \['TC', 'WT', 'ET'\]"),
        ({"layout": "custom", "layout_options": {**OPTIONS, "maks": "x"}}, r"\('maks' was unexpected\)"),
        ({"layout": "custom", "layout_options": {"modalities": {"t1": "x"}, "labels": {1: ["WT"]}}}, "'label' is a required property"),
        ({"layout": "custom", "layout_options": {**OPTIONS, "labels": {"0": ["WT"]}}}, r"labels: '0' does not match"),
        ({"layout": "custom", "layout_options": {**OPTIONS, "labels": {0: ["WT"]}}}, "labels: 0 is less than the minimum of 1"),
        ({"layout": "custom", "layout_options": {**OPTIONS, "labels": {1: []}}}, r"labels → 1: \[\] should be non-empty"),
        ({"layout": "brats2021", "layout_options": OPTIONS}, "at datasets → d → layout_options: .* is expected to be empty"),
        ({"layout": "brats2021", "preprocess": {"background": "nonzero"}},
         r"preprocess → background: 'nonzero' is not one of \['zero', 'mode'\]"),
    ],
)
def test_the_schema_refuses_what_it_can_say(dataset, message):
    with pytest.raises(GliosegError, match=message):
        validate_config(study(dataset), SCHEMA)


def test_a_good_custom_dataset_passes_and_gets_the_default_background():
    config = validate_config(study({"layout": "custom", "layout_options": {**OPTIONS, "mask": "{case}_brain.nii.gz"}}), SCHEMA)
    assert config["datasets"]["d"]["preprocess"] == {"margin": 0, "background": "zero"}
    assert config["datasets"]["d"]["layout_options"] == {**OPTIONS, "mask": "{case}_brain.nii.gz"}  # no defaults added


def doc_config() -> dict:
    block = re.search(r"```yaml\n(datasets:.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return yaml.safe_load(block.group(1))


def test_the_documented_example_is_a_valid_config():
    config = {**doc_config(), "experiments": {"e": {"dataset": "my_gliomas", "model": {"name": "unet"}}}}
    dataset = validate_config(config, SCHEMA)["datasets"]["my_gliomas"]
    check_layout_options("my_gliomas", dataset["layout"], dataset["layout_options"])


def test_the_documented_example_reads_the_documented_tree(tmp_path):
    options = doc_config()["datasets"]["my_gliomas"]["layout_options"]
    grid = np.zeros((6, 6, 4), np.float32)
    grid[1:5, 1:5, 1:3] = 1.0
    for site, case in (("site_A", "P001_t0"), ("site_A", "P001_t1"), ("site_B", "P002_t0")):
        folder = tmp_path / site / case
        (folder / "anat").mkdir(parents=True)
        names = [f"{case}_T1c", f"anat/{case}_T2w_reg", f"{case}_FLAIR", f"{case}_seg", f"{case}_brainmask"]
        for name in names:
            nib.save(nib.Nifti1Image(grid.astype(np.uint8) if name.endswith(("seg", "brainmask")) else grid, np.eye(4)),
                     folder / f"{name}.nii.gz")
    frame, info = build_manifest(tmp_path, "custom", "my_gliomas", options)
    assert frame[["case", "patient", "group"]].values.tolist() == [
        ["P001_t0", "P001", "site_A"], ["P001_t1", "P001", "site_A"], ["P002_t0", "P002", "site_B"]]
    assert list(frame.columns) == ["case", "patient", "group", "image_t1ce", "image_t2", "image_flair", "label", "mask"]
    assert frame.loc[0, "image_t2"] == str(tmp_path / "site_A" / "P001_t0" / "anat" / "P001_t0_T2w_reg.nii.gz")
    assert info.convention.regions == ("TC", "WT", "ET")


def test_what_only_the_layout_can_check_fails_when_the_config_is_read():
    """A patient regex without its named group passes the schema; validate_config must still refuse it, naming the dataset."""
    options = {**OPTIONS, "patient": r"^(\w+)_\d+$"}
    with pytest.raises(GliosegError) as caught:
        validate_config(study({"layout": "custom", "layout_options": options}), SCHEMA, source="my.yaml")
    assert caught.value.message.startswith("my.yaml: dataset 'd': ")
    assert "patient" in caught.value.message
