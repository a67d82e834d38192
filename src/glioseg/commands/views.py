"""Views of the data before training: profile a dataset, its modality montage, intensity histograms, the t-SNE embedding."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_command, json_arg


def profile(args: argparse.Namespace) -> None:
    from glioseg.views.profile import profile_dataset

    profile_dataset(args.manifest, args.info, args.out_csv, args.out_html, args.out_features, background=args.background)


def plot_dataset_montage(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.views.montage import pick_case, plot_dataset_montage

    row = pick_case(read_manifest(args.manifest), args.case, args.seed, source=args.manifest)
    plot_dataset_montage(row, read_dataset_info(args.info), out=args.out)


def plot_histograms(args: argparse.Namespace) -> None:
    from glioseg.views.histograms import histograms

    histograms(args.features, args.out)


def embed(args: argparse.Namespace) -> None:
    from glioseg.views.embedding import embedding_stage

    embedding_stage(args.features, args.same_scans, args.out_csv, args.out_png, args.settings)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "profile", profile,
                    "Profile a dataset: shapes, spacings, intensities in the brain, label volumes, outlier flags; per-case features.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--background", choices=("zero", "mode"), default="zero",
                   help="how the brain is told from the background without a brain mask, as in preprocess")
    p.add_argument("--out-csv", type=Path, required=True, help="one row per case")
    p.add_argument("--out-html", type=Path, required=True, help="the dataset at a glance")
    p.add_argument("--out-features", type=Path, required=True, help="intensity quantiles and embedding features (.npz)")

    p = add_command(sub, "plot-dataset-montage", plot_dataset_montage,
                    "One case's modalities side by side with its segmentation, axial, coronal and sagittal.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--case", default=None, help="the case to show (default: drawn with --seed)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "plot-histograms", plot_histograms, "Per-modality intensity histograms inside the brain, datasets overlaid.")
    p.add_argument("--features", type=Path, nargs="+", required=True, help="each dataset's features.npz from profile")
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "embed", embed, "t-SNE of the cases of one or more datasets, the same scans marked and linked.")
    p.add_argument("--features", type=Path, nargs="+", required=True, help="each dataset's features.npz from profile")
    p.add_argument("--same-scans", type=Path, nargs="*", default=[], help="overlap tables between the datasets")
    p.add_argument("--settings", type=json_arg, default={},
                   help="JSON: groups, fraction, same_scans, n_components, perplexity, random_state (views → embedding)")
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-png", type=Path, required=True)
