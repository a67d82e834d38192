"""Evaluating fold models: ``infer`` an evaluation's cases, then ``score`` them per case or per slice."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_case_selection, add_command, json_arg, log


def infer(args: argparse.Namespace) -> None:
    from glioseg.evaluation import cases_for
    from glioseg.inference import infer_cases
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.settings import InferenceSettings

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    infer_cases(args.model, args.cache, read_manifest(args.manifest), read_dataset_info(args.info), cases,
                InferenceSettings.from_json(args.settings), args.out)


def score(args: argparse.Namespace) -> None:
    from glioseg.atomic import write_csv
    from glioseg.evaluation import cases_for
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.scoring import score_predictions

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    scores = score_predictions(args.predictions, read_manifest(args.manifest), read_dataset_info(args.info), cases,
                               args.experiment, args.fold, args.evaluation)
    write_csv(args.out, scores)
    means = scores.groupby("region")["dice"].mean()
    log.info("%s fold %d: mean Dice %s", args.experiment, args.fold, ", ".join(f"{r} {v:.3f}" for r, v in means.items()))


def score_slices(args: argparse.Namespace) -> None:
    from glioseg.atomic import write_csv
    from glioseg.evaluation import cases_for
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.scoring import score_prediction_slices

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    scores = score_prediction_slices(args.predictions, read_manifest(args.manifest), read_dataset_info(args.info), cases,
                                     args.experiment, args.fold, args.evaluation)
    write_csv(args.out, scores)
    tumour = scores[scores["truth_pixels"] > 0]
    log.info("%s fold %d: %d slices, %d with tumour (mean Dice %.3f, IoU %.3f), %d without (%d with a false positive)",
             args.experiment, args.fold, len(scores), len(tumour), tumour["dice"].mean(), tumour["iou"].mean(),
             len(scores) - len(tumour), int(((scores["truth_pixels"] == 0) & (scores["pred_pixels"] > 0)).sum()))


def _add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """What both scoring commands read and write."""
    parser.add_argument("--predictions", type=Path, required=True)
    add_case_selection(parser)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--evaluation", help="the evaluation's name, written in the dataset column: the dataset, or "
                                             "<dataset>+test for held-out cases (default: the dataset's name)")
    parser.add_argument("--out", type=Path, required=True)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "infer", infer, "Predict an evaluation's cases; NIfTI label maps in the original geometry.")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="a model file, or several to ensemble")
    p.add_argument("--cache", type=Path, required=True)
    add_case_selection(p)
    p.add_argument("--settings", type=json_arg, required=True, help="the experiment's inference settings as JSON")
    p.add_argument("--out", type=Path, required=True)

    _add_scoring_arguments(add_command(sub, "score", score, "Score an evaluation's predictions per case and region "
                                       "(Dice, IoU, HD95, sensitivity, specificity, precision, voxel counts)."))
    _add_scoring_arguments(add_command(sub, "score-slices", score_slices,
                                       "Per-slice Dice, IoU and missed tumour parts of an evaluation (2D datasets)."))
