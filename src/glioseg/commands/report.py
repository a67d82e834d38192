"""Study-level outputs: ``summarize`` the score tables and draw the figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_command, fold_path, json_list


def summarize(args: argparse.Namespace) -> None:
    from glioseg.report.summary import write_summary

    write_summary(args.scores, args.out_csv, args.out_md, published=args.published)


def compare_published(args: argparse.Namespace) -> None:
    from glioseg.report.published import write_comparison
    from glioseg.report.summary import load_scores

    write_comparison(load_scores([args.scores]), args.published, args.out_csv, args.out_png)


def plot_curves(args: argparse.Namespace) -> None:
    from glioseg.report.figures import plot_training_curves

    plot_training_curves(dict(args.history), out=args.out, title=args.title)


def plot_boxplots(args: argparse.Namespace) -> None:
    from glioseg.report.figures import plot_score_boxplots
    from glioseg.report.summary import load_scores

    plot_score_boxplots(load_scores([args.scores]), out=args.out)


def plot_montage(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_manifest
    from glioseg.report.figures import plot_case_montage
    from glioseg.report.summary import load_scores

    plot_case_montage(load_scores(args.scores), read_manifest(args.manifest), dict(args.predictions), out=args.out)


def plot_gallery(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_manifest
    from glioseg.report.gallery import plot_gallery as draw_gallery

    draw_gallery(args.slice_scores, read_manifest(args.manifest), dict(args.predictions), out=args.out)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "summarize", summarize, "Collect score tables into scores.csv and a markdown summary.")
    p.add_argument("--scores", type=Path, nargs="+", required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-md", type=Path, required=True)
    p.add_argument("--published", type=json_list, default=[],
                   help="numbers a paper reported, as a JSON list of entries (experiment, evaluation, fold, region, metric, "
                        "aggregate, value, source, comparable, note), printed beside glioseg's own")

    p = add_command(sub, "compare-published", compare_published,
                    "Published numbers beside glioseg's for the same experiment, fold, region and metric: table and figure.")
    p.add_argument("--scores", type=Path, required=True, help="summary/scores.csv")
    p.add_argument("--published", type=json_list, required=True, help="the entries, as for summarize --published")
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-png", type=Path, required=True)

    p = add_command(sub, "plot-curves", plot_curves, "Training curves of one experiment, one line per fold.")
    p.add_argument("--history", type=fold_path, nargs="+", required=True, metavar="FOLD=CSV")
    p.add_argument("--title", default="")
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "plot-boxplots", plot_boxplots, "Per-case score distributions per region and experiment.")
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "plot-montage", plot_montage, "Best, median and worst case of one experiment on one dataset.")
    p.add_argument("--scores", type=Path, nargs="+", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--predictions", type=fold_path, nargs="+", required=True, metavar="FOLD=DIR")
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "plot-gallery", plot_gallery, "Slices by kind of result (good, missed, false positive...), from slice scores.")
    p.add_argument("--slice-scores", type=Path, nargs="+", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--predictions", type=fold_path, nargs="+", required=True, metavar="FOLD=DIR")
    p.add_argument("--out", type=Path, required=True)
