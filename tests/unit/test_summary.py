"""Summary tables: numbers checked against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from glioseg.report.summary import (
    case_summary,
    fold_summary,
    lesion_summary,
    load_scores,
    markdown_report,
    pooled_summary,
    write_summary,
)
from glioseg.tables import LESION_SCORE_COLUMNS, SCORE_COLUMNS

# unet on brats: fold 0 has cases a, b, c; fold 1 has cases d, e.
# TC Dice  fold 0: 0.80 0.85 0.90 (mean 0.85, std 0.05)   fold 1: 0.70 0.80 (mean 0.75)
# TC HD95  fold 0: 2 4 6 (mean 4)                         fold 1: 8 10 (mean 9)
# Pooled TC Dice: mean 0.81, std sqrt(0.022 / 4) = 0.0742; over folds: mean 0.80, std 0.1 / sqrt(2) = 0.0707.
# Pooled TC HD95: mean 6, std sqrt(40 / 4) = 3.162;        over folds: mean 6.5, std 5 / sqrt(2) = 3.536.
UNET_TC = {("0", "a"): (0.80, 2.0), ("0", "b"): (0.85, 4.0), ("0", "c"): (0.90, 6.0), ("1", "d"): (0.70, 8.0), ("1", "e"): (0.80, 10.0)}
REGION_OFFSET = {"TC": 0.0, "WT": 0.05, "ET": -0.10}


def score_row(experiment: str, fold: int, dataset: str, case: str, region: str, dice: float, hd95: float) -> dict:
    return {
        "experiment": experiment, "fold": fold, "dataset": dataset, "case": case, "region": region,
        "dice": dice, "hd95": hd95, "sensitivity": 0.9, "specificity": 0.999, "truth_voxels": 1000, "pred_voxels": 950,
        "iou": dice / (2 - dice), "precision": 0.95, "tp": 900, "fp": 50, "fn": 100, "tn": 99_000,
    }  # fmt: skip


def make_scores() -> pd.DataFrame:
    """unet on brats (2 folds, 5 cases) plus a one-case, one-fold experiment "solo" on another dataset."""
    rows = [
        score_row("unet", int(fold), "brats", case, region, round(dice + offset, 4), hd95 + 1.0 * (region != "TC"))
        for (fold, case), (dice, hd95) in UNET_TC.items()
        for region, offset in REGION_OFFSET.items()
    ]
    rows += [score_row("solo", 0, "external", "z", region, 0.6, 12.0) for region in REGION_OFFSET]
    return pd.DataFrame(rows)


def write_scores(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def pick(summary: pd.DataFrame, experiment: str, region: str, metric: str) -> pd.Series:
    selected = summary[(summary.experiment == experiment) & (summary.region == region) & (summary.metric == metric)]
    assert len(selected) == 1
    return selected.iloc[0]


def test_case_summary_pools_cases_over_folds() -> None:
    summary = case_summary(make_scores())
    dice = pick(summary, "unet", "TC", "dice")
    assert dice["mean"] == pytest.approx(0.81)
    assert dice["std"] == pytest.approx(math.sqrt(0.022 / 4))
    assert dice["n_cases"] == 5
    hd95 = pick(summary, "unet", "TC", "hd95")
    assert (hd95["mean"], hd95["std"]) == pytest.approx((6.0, math.sqrt(10.0)))
    assert pick(summary, "unet", "WT", "dice")["mean"] == pytest.approx(0.86)


def test_fold_summary_averages_fold_means() -> None:
    summary = fold_summary(make_scores())
    dice = pick(summary, "unet", "TC", "dice")
    assert dice["mean"] == pytest.approx(0.80)
    assert dice["std"] == pytest.approx(0.1 / math.sqrt(2))
    assert dice["n_folds"] == 2
    hd95 = pick(summary, "unet", "TC", "hd95")
    assert (hd95["mean"], hd95["std"]) == pytest.approx((6.5, 5.0 / math.sqrt(2)))


def test_single_value_has_zero_std() -> None:
    scores = make_scores()
    for summary, count in ((case_summary(scores), "n_cases"), (fold_summary(scores), "n_folds")):
        solo = pick(summary, "solo", "ET", "dice")
        assert solo["std"] == 0.0
        assert solo[count] == 1


def test_summary_rows_are_in_region_and_metric_order() -> None:
    summary = case_summary(make_scores())
    unet = summary[summary.experiment == "unet"]
    assert list(dict.fromkeys(unet.region)) == ["TC", "WT", "ET"]
    assert list(unet.metric[:4]) == ["dice", "hd95", "sensitivity", "specificity"]
    assert list(dict.fromkeys(summary.experiment)) == ["solo", "unet"]


def test_markdown_report_formats_both_summaries_and_folds() -> None:
    report = markdown_report(make_scores())
    case_part, rest = report.split("## Mean ± std over folds")
    fold_part, per_fold_part = rest.split("## Dice per fold")
    assert "| unet | brats | 5 | 0.810 ± 0.074 | 0.860 ± 0.074 | 0.710 ± 0.074 | 6.0 ± 3.2 |" in case_part
    assert "| unet | brats | 2 | 0.800 ± 0.071 |" in fold_part
    assert "| 6.5 ± 3.5 |" in fold_part
    assert "| unet | brats | 0 | 3 | 0.850 ± 0.050 | 0.900 ± 0.050 | 0.750 ± 0.050 |" in per_fold_part
    assert "| solo | external | 0 | 1 | 0.600 ± 0.000 |" in per_fold_part
    for table in (case_part, fold_part):
        rows = [line for line in table.splitlines() if line.startswith("| solo") or line.startswith("| unet")]
        assert [row.split(" | ")[:2] for row in rows] == [["| solo", "external"], ["| unet", "brats"]]


def test_load_scores_keeps_case_ids_as_text_and_sorts(tmp_path: Path) -> None:
    scores = make_scores().assign(case=lambda f: f.case.map({"a": "007", "b": "01", "c": "3", "d": "d", "e": "e", "z": "z"}))
    shuffled = scores.sample(frac=1.0, random_state=0)
    loaded = load_scores([write_scores(tmp_path / "s.csv", shuffled)])
    assert set(loaded.case) == {"007", "01", "3", "d", "e", "z"}
    assert list(loaded.columns) == list(SCORE_COLUMNS)
    assert list(loaded.region[:3]) == ["TC", "WT", "ET"]
    assert list(loaded.experiment.drop_duplicates()) == ["solo", "unet"]


def test_load_scores_names_the_file_missing_a_column(tmp_path: Path) -> None:
    good = write_scores(tmp_path / "good.csv", make_scores())
    bad = write_scores(tmp_path / "bad.csv", make_scores().drop(columns="hd95"))
    with pytest.raises(ValueError, match=r"bad\.csv.*hd95"):
        load_scores([good, bad])


def test_load_scores_rejects_unknown_regions_and_duplicates(tmp_path: Path) -> None:
    odd = write_scores(tmp_path / "odd.csv", make_scores().replace({"region": {"ET": "NCR"}}))
    with pytest.raises(ValueError, match=r"odd\.csv.*NCR"):
        load_scores([odd])
    good = write_scores(tmp_path / "good.csv", make_scores())
    with pytest.raises(ValueError, match="given twice"):
        load_scores([good, good])


def test_write_summary_writes_sorted_scores_and_report(tmp_path: Path) -> None:
    scores = make_scores()
    parts = [write_scores(tmp_path / f"{name}.csv", rows) for name, rows in scores.groupby("experiment")]
    out_csv, out_md = tmp_path / "out" / "scores.csv", tmp_path / "out" / "summary.md"
    write_summary(parts[::-1], out_csv, out_md)
    expected = load_scores(parts)
    pd.testing.assert_frame_equal(pd.read_csv(out_csv, dtype={"case": str}), expected, check_dtype=False)
    assert out_md.read_text(encoding="utf-8") == markdown_report(expected)
    assert sorted(p.name for p in out_csv.parent.iterdir()) == ["scores.csv", "summary.md"]  # no temp files left


def test_write_summary_writes_nothing_for_a_bad_input(tmp_path: Path) -> None:
    bad = write_scores(tmp_path / "bad.csv", make_scores().drop(columns="case"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"bad\.csv"):
        write_summary([bad], out / "scores.csv", out / "summary.md")
    assert not out.exists() or not any(out.iterdir())


def test_pooled_summary_sums_confusion_counts_over_cases_per_region() -> None:
    """Two cases of very different size: pooling weights voxels, so the large case dominates."""
    base = {"experiment": "unet", "fold": 0, "dataset": "brats", "dice": 0.0, "hd95": 0.0, "sensitivity": 0.0,
            "specificity": 0.0, "truth_voxels": 0, "pred_voxels": 0, "iou": 0.0, "precision": 0.0}
    rows = [
        {**base, "case": "big", "region": "WT", "tp": 900, "fp": 100, "fn": 100, "tn": 8900},
        {**base, "case": "small", "region": "WT", "tp": 0, "fp": 10, "fn": 10, "tn": 9980},
        {**base, "case": "big", "region": "ET", "tp": 0, "fp": 0, "fn": 0, "tn": 10000},
        {**base, "case": "small", "region": "ET", "tp": 0, "fp": 0, "fn": 0, "tn": 10000},
    ]
    pooled = pooled_summary(pd.DataFrame(rows)).set_index("region")
    wt = pooled.loc["WT"]
    assert wt["sensitivity"] == pytest.approx(900 / 1010) and wt["precision"] == pytest.approx(900 / 1010)
    assert wt["specificity"] == pytest.approx(18880 / 18990)
    assert wt["f1"] == pytest.approx(1800 / 2020) and wt["iou"] == pytest.approx(900 / 1120)
    assert pooled.loc["ET", ["sensitivity", "precision", "f1", "iou"]].tolist() == [1.0, 1.0, 1.0, 1.0]  # nothing to find
    assert list(pooled.index) == ["WT", "ET", "mean"]
    assert pooled.loc["mean", "f1"] == pytest.approx((1800 / 2020 + 1.0) / 2)
    assert pooled.loc["mean", "n_cases"] == 2
    assert "| unet | brats | mean |" in markdown_report(pd.DataFrame(rows))


def with_lesions(scores: pd.DataFrame) -> pd.DataFrame:
    """unet's cases get lesion-wise scores: case a misses one of its two TC lesions (Dice 0, HD95 374)."""
    unet = scores.experiment == "unet"
    scores = scores.assign(lesion_dice=scores["dice"], lesion_hd95=scores["hd95"], lesions_found=1, lesions_missed=0,
                           false_lesions=0)
    a_tc = unet & (scores.case == "a") & (scores.region == "TC")
    scores.loc[a_tc, ["lesion_dice", "lesion_hd95", "lesions_found", "lesions_missed"]] = [0.40, 188.0, 1, 1]
    scores.loc[scores.case == "e", "false_lesions"] = 2
    scores.loc[~unet, list(LESION_SCORE_COLUMNS)] = float("nan")  # "solo" was scored before the columns existed
    return scores


def test_lesion_summary_averages_over_cases_sums_lesions_and_leaves_out_unscored_rows() -> None:
    summary = lesion_summary(with_lesions(make_scores()))
    assert set(summary.experiment) == {"unet"}
    tc = summary[summary.region == "TC"].iloc[0]
    # TC lesion Dice: 0.40 0.85 0.90 0.70 0.80 → mean 0.73; HD95: 188 4 6 8 10 → mean 43.2
    assert (tc["lesion_dice"], tc["lesion_hd95"]) == pytest.approx((0.73, 43.2))
    assert tc["lesion_dice_std"] == pytest.approx(pd.Series([0.40, 0.85, 0.90, 0.70, 0.80]).std())
    assert (tc["lesions_found"], tc["lesions_missed"], tc["false_lesions"], tc["n_cases"]) == (5, 1, 2, 5)
    assert list(summary.region) == ["TC", "WT", "ET"]
    assert lesion_summary(make_scores()).empty


def test_the_report_has_a_lesion_wise_section_only_when_the_scores_do() -> None:
    report = markdown_report(with_lesions(make_scores()))
    section = report.split("## Lesion-wise")[1]
    assert "| unet | brats | TC | 5 | 0.730 ± 0.199 | 43.2 ± 81.0 | 5 | 1 | 2 |" in section
    assert "solo" not in section
    assert "## Lesion-wise" not in markdown_report(make_scores())
