"""Published numbers beside glioseg's: the right rows, aggregated the way the paper did, and the difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from glioseg.config import validate_config
from glioseg.errors import GliosegError
from glioseg.report.published import compare_published, markdown_section, resolve_entries, write_comparison
from glioseg.report.summary import write_summary
from glioseg.tables import SCORE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def score_rows(experiment: str, dataset: str, fold: int, case: str, dice: dict[str, float], counts=(8, 2, 2, 88)) -> list[dict]:
    tp, fp, fn, tn = counts
    return [{"experiment": experiment, "fold": fold, "dataset": dataset, "case": case, "region": region, "dice": value,
             "hd95": 1.0, "sensitivity": 0.5, "specificity": 0.9, "truth_voxels": tp + fn, "pred_voxels": tp + fp,
             "iou": value / (2 - value), "precision": 0.5, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
            for region, value in dice.items()]


@pytest.fixture
def scores() -> pd.DataFrame:
    rows = []
    # fold 0: one case; fold 1: three cases, so the mean of fold means differs from the mean over cases
    rows += score_rows("swin", "brats18", 0, "c0", {"TC": 0.2, "WT": 0.4, "ET": 0.3})
    for case, wt in (("c1", 0.6), ("c2", 0.8), ("c3", 1.0)):
        rows += score_rows("swin", "brats18", 1, case, {"TC": 0.5, "WT": wt, "ET": 0.2})
    rows += score_rows("other", "brats18", 0, "c0", {"TC": 0.9, "WT": 0.9, "ET": 0.9})  # another experiment: never picked
    rows += score_rows("swin", "brats18+test", 0, "t0", {"TC": 0.1, "WT": 0.1, "ET": 0.1}, counts=(3, 1, 0, 96))
    frame = pd.DataFrame(rows)
    return frame[list(SCORE_COLUMNS)]


def entry(**fields) -> dict:
    base = {"experiment": "swin", "evaluation": "brats18", "fold": "mean", "aggregate": "cases", "comparable": True,
            "note": "", "metric": "dice", "region": "WT", "value": 0.5, "source": "paper"}
    return base | fields


def test_picks_the_experiment_evaluation_fold_and_region(scores):
    table = compare_published(scores, [entry(fold=0, value=0.5), entry(fold=1, value=0.7), entry(fold=1, region="mean", value=0.5),
                                       entry(evaluation="brats18+test", fold=0, region="ET", value=0.2)])
    assert table["glioseg"].tolist() == pytest.approx([0.4, 0.8, (0.5 + 0.8 + 0.2) / 3, 0.1])
    assert table["difference"].tolist() == pytest.approx([-0.1, 0.1, 0.0, -0.1])
    assert table["n_cases"].tolist() == [1, 3, 3, 1]


def test_the_mean_over_folds_is_the_mean_of_fold_means(scores):
    table = compare_published(scores, [entry(fold="mean", value=0.6)])
    assert table.at[0, "glioseg"] == pytest.approx((0.4 + 0.8) / 2)  # not (0.4 + 0.6 + 0.8 + 1.0) / 4
    assert table.at[0, "difference"] == pytest.approx(0.0)


def test_pooled_voxel_metrics_sum_the_confusion_counts(scores):
    table = compare_published(scores, [entry(evaluation="brats18+test", fold=0, aggregate="voxels", metric=m, region="mean", value=0)
                                       for m in ("iou", "sensitivity", "precision", "f1")])
    assert table["glioseg"].tolist() == pytest.approx([3 / 4, 1.0, 3 / 4, 6 / 7])


def test_a_number_that_is_not_comparable_is_listed_but_not_compared(scores):
    table = compare_published(scores, [entry(comparable=False, note="another voxel population")])
    assert np.isnan(table.at[0, "glioseg"]) and np.isnan(table.at[0, "difference"])
    section = markdown_section(table)
    assert "**not comparable**: paper; another voxel population" in section and "| – | – |" in section


def test_an_experiment_not_scored_gives_a_blank_not_a_zero(scores):
    table = compare_published(scores, [entry(experiment="missing")])
    assert np.isnan(table.at[0, "glioseg"]) and table.at[0, "n_cases"] == 0


def test_the_summary_prints_them_beside_glioseg_and_the_stage_draws_them(scores, tmp_path):
    scores.to_csv(tmp_path / "scores.csv", index=False)
    entries = [entry(fold=0, value=0.5)]
    write_summary([tmp_path / "scores.csv"], tmp_path / "all.csv", tmp_path / "summary.md", published=entries)
    text = (tmp_path / "summary.md").read_text()
    assert "## Published numbers beside glioseg's" in text
    assert "| swin | brats18 | 0 | WT | dice | cases | 0.500 | 0.400 | -0.100 | 1 | paper |" in text
    write_comparison(scores, entries, tmp_path / "published.csv", tmp_path / "published.png")
    assert pd.read_csv(tmp_path / "published.csv")["difference"].tolist() == pytest.approx([-0.1])
    assert (tmp_path / "published.png").stat().st_size > 5_000


def test_entries_of_an_unknown_experiment_are_refused():
    config = {"experiments": {"swin": {"dataset": "brats18"}}, "published": {"swin2": [entry()]}}
    with pytest.raises(GliosegError, match="experiment 'swin2', which the study does not define"):
        resolve_entries(config, "study.yaml")
    pooled_hd95 = {**entry(), "metric": "hd95", "aggregate": "voxels"}
    config = {"experiments": {"swin": {"dataset": "brats18"}}, "published": {"swin": [pooled_hd95]}}
    with pytest.raises(GliosegError, match="not a pooled-voxel metric"):
        resolve_entries(config)


@pytest.mark.parametrize("name, count", [("study1-swin-brats21-to-brats18.yaml", 28), ("study2-medicalnet-resnet-brats19.yaml", 12),
                                         ("brats-unet2d-family.yaml", 6), ("lgg-unet.yaml", 2)])
def test_the_study_configs_carry_their_papers_numbers(name, count):
    config = validate_config(yaml.safe_load((ROOT / "configs" / name).read_text()), SCHEMA)
    entries = resolve_entries(config, name)
    assert len(entries) == count
    for item in entries:
        spec = config["experiments"][item["experiment"]]
        assert item["evaluation"] in (spec["dataset"], f"{spec['dataset']}+test")
        assert item["source"] and 0 < item["value"] < 1
    not_comparable = [e["metric"] for e in entries if not e["comparable"]]
    assert not_comparable == (["specificity"] if name.startswith("brats-unet2d") else [])
