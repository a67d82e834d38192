"""Gallery rows are chosen from the slice scores by their stated rules, never by hand."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from glioseg.report.gallery import ROLES, pick_gallery, plot_gallery
from glioseg.tables import SLICE_SCORE_COLUMNS


def slice_row(case: str, number: int, dice: float, truth: int, pred: int, parts: int = 0, missed: int = 0) -> dict:
    return {"experiment": "unet", "fold": 0, "dataset": "lgg", "case": case, "region": "WT", "slice_number": number, "dice": dice,
            "iou": dice / (2 - dice), "truth_pixels": truth, "pred_pixels": pred, "truth_parts": parts, "missed_parts": missed}


SCORES = pd.DataFrame([
    slice_row("a", 1, 0.95, 400, 410, 1, 0),  # good
    slice_row("a", 2, 0.91, 300, 280, 1, 0),  # good
    slice_row("a", 3, 0.0, 12, 0, 1, 1),  # missed, small
    slice_row("b", 1, 0.0, 80, 0, 1, 1),  # missed, larger
    slice_row("b", 2, 0.6, 500, 300, 2, 1),  # two parts, one missed
    slice_row("b", 3, 0.0, 0, 35, 0, 0),  # false positive
    slice_row("b", 4, 1.0, 0, 0, 0, 0),  # clean
    slice_row("b", 5, 0.7, 200, 150, 2, 0),  # two parts, both found: not "part missed"
], columns=SLICE_SCORE_COLUMNS)


def test_each_role_takes_the_slices_its_rule_names():
    picks = pick_gallery(SCORES, per_role=2)
    chosen = {role: list(zip(group["case"], group["slice_number"])) for role, group in picks.groupby("role", sort=False)}
    assert chosen["good"] == [("a", 1), ("a", 2)]
    assert chosen["missed small tumour"] == [("a", 3), ("b", 1)]  # smallest first
    assert chosen["part of a tumour missed"] == [("b", 2)]
    assert chosen["false positive"] == [("b", 3)]
    assert chosen["clean, no tumour"] == [("b", 4)]
    assert list(chosen) == list(ROLES)


def test_the_gallery_draws_every_role_and_says_when_one_is_empty(tmp_path):
    shape = (24, 20, 5)
    paths = {}
    for name, value in (("flair", 100.0), ("label", 1)):
        data = np.zeros(shape, np.float32 if name == "flair" else np.uint8)
        data[4:20, 4:16, :] = value
        paths[name] = tmp_path / f"a_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), paths[name])
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)), tmp_path / "pred" / "a.nii.gz")
    scores = SCORES[SCORES["case"] == "a"]
    scores.to_csv(tmp_path / "slices.csv", index=False)
    manifest = pd.DataFrame({"case": ["a"], "image_flair": [str(paths["flair"])], "label": [str(paths["label"])]})
    figure = plot_gallery([tmp_path / "slices.csv"], manifest, {0: tmp_path / "pred"}, out=tmp_path / "gallery.png", per_role=2)
    texts = [text.get_text() for ax in figure.axes for text in ax.texts]
    assert any(t.startswith("good (2 shown)") for t in texts)
    assert any(t.startswith("false positive (none in this evaluation)") for t in texts)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert "a\nslice 1 · Dice 0.95" in titles and len(titles) == 3
    assert (tmp_path / "gallery.png").stat().st_size > 5_000


def test_a_slice_is_drawn_and_titled_by_its_number_counted_from_one(tmp_path):
    """slice_number n is z = n - 1 of the volume, as kaggle_3m's <case>_<n>.tif is: the title gives the file's n."""
    shape = (12, 10, 4)
    flair = np.zeros(shape, np.float32)
    for z in range(shape[2]):
        flair[2:10, 2:8, z] = 10.0 * (z + 1)  # slice number n holds 10 n
    label = np.zeros(shape, np.uint8)
    label[4:8, 3:6, :] = 1
    for name, data in (("flair", flair), ("label", label)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"a_{name}.nii.gz")
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "pred" / "a.nii.gz")
    pd.DataFrame([slice_row("a", 3, 0.97, 12, 12, 1, 0)], columns=SLICE_SCORE_COLUMNS).to_csv(tmp_path / "slices.csv", index=False)
    manifest = pd.DataFrame({"case": ["a"], "image_flair": [str(tmp_path / "a_flair.nii.gz")], "label": [str(tmp_path / "a_label.nii.gz")]})
    figure = plot_gallery([tmp_path / "slices.csv"], manifest, {0: tmp_path / "pred"}, per_role=1)
    drawn = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in drawn] == ["a\nslice 3 · Dice 0.97"]
    assert drawn[0].images[0].get_array().max() == 30.0
