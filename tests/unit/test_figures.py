"""Figures: structure checked on tiny synthetic inputs, PNGs checked readable."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from glioseg.report.figures import (
    DPI,
    axial_slice,
    axial_view,
    pick_montage_cases,
    plot_case_montage,
    plot_score_boxplots,
    plot_training_curves,
    tumour_slice,
)

SHAPE = (16, 16, 8)


def assert_png(path: Path, figure_size: tuple[float, float]) -> None:
    image = matplotlib.image.imread(path)
    width, height = figure_size
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert image.shape[2] in (3, 4)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []  # no temp file left


def write_history(path: Path, epochs: int, best_epoch: int) -> Path:
    """Validation every 2 epochs; mean Dice peaks at ``best_epoch``."""
    epoch = np.arange(1, epochs + 1)
    dice = 0.8 - 0.01 * np.abs(epoch - best_epoch)
    validated = epoch % 2 == 0
    frame = pd.DataFrame({
        "epoch": epoch, "train_loss": 1.0 / epoch,
        "val_dice_TC": np.where(validated, dice, np.nan), "val_dice_WT": np.where(validated, dice, np.nan),
        "val_dice_ET": np.where(validated, dice, np.nan), "val_dice_mean": np.where(validated, dice, np.nan),
        "lr": 1e-3, "seconds": 1.0,
    })  # fmt: skip
    frame.to_csv(path, index=False)
    return path


def test_training_curves_one_line_per_fold_and_best_epochs(tmp_path: Path) -> None:
    histories = {0: write_history(tmp_path / "f0.csv", 10, 6), 1: write_history(tmp_path / "f1.csv", 12, 8)}
    out = tmp_path / "curves.png"
    fig = plot_training_curves(histories, out, title="unet")
    loss_ax, dice_ax = fig.axes
    assert len(loss_ax.lines) == len(dice_ax.lines) == 2
    assert loss_ax.get_xlim() == dice_ax.get_xlim() == (1, 12)
    assert [len(line.get_xdata()) for line in loss_ax.lines] == [10, 12]
    assert [len(line.get_xdata()) for line in dice_ax.lines] == [5, 6]  # epochs without validation skipped
    stars = [c for c in dice_ax.collections if isinstance(c, PathCollection)]
    assert [tuple(s.get_offsets()[0]) for s in stars] == [(6.0, 0.8), (8.0, 0.8)]
    assert "best 0.800 @ epoch 8" in dice_ax.get_legend().get_texts()[1].get_text()
    assert_png(out, fig.get_size_inches())


def test_training_curves_missing_column_names_the_file(tmp_path: Path) -> None:
    path = write_history(tmp_path / "f0.csv", 4, 2)
    pd.read_csv(path).drop(columns="val_dice_mean").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"f0\.csv.*val_dice_mean"):
        plot_training_curves({0: path})


def box_scores(datasets: tuple[str, ...]) -> pd.DataFrame:
    rows = [
        {"experiment": experiment, "fold": case % 2, "dataset": dataset, "case": f"c{case}", "region": region,
         "dice": 0.5 + 0.1 * case, "hd95": 2.0 + case, "sensitivity": 0.9, "specificity": 0.99,
         "truth_voxels": 100, "pred_voxels": 100, "iou": 0.5, "precision": 0.9, "tp": 90, "fp": 10, "fn": 10, "tn": 900}
        for experiment in ("unet", "swin") for dataset in datasets for case in range(4) for region in ("TC", "WT", "ET")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_boxplots_one_axis_per_region_and_metric(tmp_path: Path) -> None:
    out = tmp_path / "boxes.png"
    fig = plot_score_boxplots(box_scores(("brats",)), out)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes] == ["Dice, TC", "Dice, WT", "Dice, ET", "HD95 (mm), TC", "HD95 (mm), WT", "HD95 (mm), ET"]
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["swin\n(n=4)", "unet\n(n=4)"]
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert [len(p.get_offsets()) for p in points] == [4, 4]  # every case drawn
    assert fig.axes[3].collections[0].get_offsets()[:, 1].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert [ax.get_yscale() for ax in fig.axes] == ["linear"] * 3 + ["symlog"] * 3
    assert_png(out, fig.get_size_inches())


def test_boxplots_split_boxes_by_dataset_when_several() -> None:
    fig = plot_score_boxplots(box_scores(("brats", "upenn")))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["swin\nbrats\n(n=4)", "swin\nupenn\n(n=4)", "unet\nbrats\n(n=4)", "unet\nupenn\n(n=4)"]


# Mean Dice over regions: good 0.95, high 0.80, mid 0.70, low 0.50, bad 0.20 -> best good, median mid, worst bad.
MONTAGE_DICE = {"good": (0, 0.95), "high": (1, 0.80), "mid": (1, 0.70), "low": (0, 0.50), "bad": (1, 0.20)}


def montage_scores() -> pd.DataFrame:
    rows = [
        {"experiment": "unet", "fold": fold, "dataset": "brats", "case": case, "region": region,
         "dice": dice + offset, "hd95": 1.0, "sensitivity": 1.0, "specificity": 1.0, "truth_voxels": 1, "pred_voxels": 1,
         "iou": 1.0, "precision": 1.0, "tp": 1, "fp": 0, "fn": 0, "tn": 9}
        for case, (fold, dice) in MONTAGE_DICE.items() for region, offset in (("TC", 0.02), ("WT", 0.0), ("ET", -0.02))
    ]  # fmt: skip
    return pd.DataFrame(rows)


def write_case(root: Path, case: str, tumour_z: int) -> dict[str, str]:
    """Two modalities and a label whose largest tumour cross-section is at ``tumour_z``."""
    label = np.zeros(SHAPE, np.uint8)
    label[4:12, 4:12, tumour_z] = 2
    label[6:10, 6:10, tumour_z] = 4
    label[7:9, 7:9, tumour_z - 1 : tumour_z + 2] = 1
    entry = {"case": case, "patient": case, "group": "train"}
    for modality in ("t1", "flair"):
        image = np.random.default_rng(0).uniform(100, 200, SHAPE).astype(np.float32)
        entry[f"image_{modality}"] = str(save(root / f"{case}_{modality}.nii.gz", image))
    entry["label"] = str(save(root / f"{case}_seg.nii.gz", label))
    return entry


def save(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def test_pick_montage_cases_best_median_worst() -> None:
    picks = pick_montage_cases(montage_scores())
    assert picks[["role", "case", "fold"]].values.tolist() == [["best", "good", 0], ["median", "mid", 1], ["worst", "bad", 1]]
    assert picks["mean_dice"].tolist() == pytest.approx([0.95, 0.70, 0.20])


def test_pick_montage_cases_merges_roles_for_two_cases() -> None:
    scores = montage_scores()
    picks = pick_montage_cases(scores[scores.case.isin(["good", "bad"])])
    assert picks[["role", "case"]].values.tolist() == [["best", "good"], ["median/worst", "bad"]]


def test_case_montage_rows_and_panels(tmp_path: Path) -> None:
    folds = {0: tmp_path / "pred0", 1: tmp_path / "pred1"}
    for folder in folds.values():
        folder.mkdir()
    entries = []
    for case, (fold, _) in MONTAGE_DICE.items():
        if case in ("good", "mid", "bad"):  # only the picked cases have files: nothing else may be read
            entries.append(write_case(tmp_path, case, tumour_z=5))
            save(folds[fold] / f"{case}.nii.gz", nib.load(entries[-1]["label"]).get_fdata().astype(np.uint8))
        else:
            entries.append({"case": case, "patient": case, "group": "train", "image_t1": "x", "image_flair": "x", "label": "x"})
    out = tmp_path / "montage.png"
    fig = plot_case_montage(montage_scores(), pd.DataFrame(entries), folds, out)
    titles = [subfig.texts[0].get_text() for subfig in fig.subfigs]
    assert [title.split(":")[0] for title in titles] == ["best", "median", "worst"]
    assert ["good (fold 0)" in titles[0], "mid (fold 1)" in titles[1], "bad (fold 1)" in titles[2]] == [True] * 3
    assert "axial slice 5" in titles[0] and "TC 0.970 · WT 0.950 · ET 0.930" in titles[0]
    for subfig in fig.subfigs:
        assert [ax.get_title() for ax in subfig.axes] == ["t1", "flair", "truth", "prediction"]
        assert [len(ax.images) for ax in subfig.axes] == [1, 1, 2, 2]  # overlays sit on a grey background
    assert_png(out, fig.get_size_inches())


def test_case_montage_needs_one_experiment(tmp_path: Path) -> None:
    scores = pd.concat([montage_scores(), montage_scores().assign(experiment="swin")])
    with pytest.raises(ValueError, match="one experiment on one dataset"):
        plot_case_montage(scores, pd.DataFrame(), {})


def test_tumour_slice_largest_cross_section_or_middle() -> None:
    label = np.zeros(SHAPE, np.uint8)
    assert tumour_slice(label) == 4
    label[2:4, 2:4, 1] = 2
    label[2:6, 2:6, 6] = 1
    assert tumour_slice(label) == 6


def test_axial_view_puts_anterior_up_and_right_on_the_left() -> None:
    volume = np.zeros(SHAPE)
    volume[15, 8, 3] = 1.0  # patient's far right (RAS x max)
    volume[8, 15, 3] = 2.0  # most anterior (RAS y max)
    view = axial_view(volume, 3)
    assert view.shape == (16, 16)
    assert np.argwhere(view == 1.0).tolist() == [[7, 0]]  # right on the viewer's left
    assert np.argwhere(view == 2.0).tolist() == [[0, 7]]  # anterior at the top


def test_axial_slice_shows_any_stored_orientation_as_the_ras_view() -> None:
    """The gallery reads slices as files store them; BraTS stores LPS, LGG stacks too."""
    ras = np.zeros(SHAPE)
    ras[15, 8, 3] = 1.0  # patient's far right
    ras[8, 15, 3] = 2.0  # most anterior
    expected = axial_view(ras, 3)
    lps = nib.Nifti1Image(ras[::-1, ::-1].copy(), np.diag([-1.0, -1.0, 1.0, 1.0]))
    yx = nib.Nifti1Image(ras.transpose(1, 0, 2).copy(), np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    for image in (nib.Nifti1Image(ras, np.eye(4)), lps, yx):
        np.testing.assert_array_equal(axial_slice(image, 3), expected)
    sagittal = nib.Nifti1Image(ras.transpose(1, 2, 0).copy(), np.array([[0.0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]))
    np.testing.assert_array_equal(axial_slice(sagittal, 15), np.rot90(ras.transpose(1, 2, 0)[:, :, 15])[:, ::-1])

