"""From extracted files to the training cache: stack-slices, manifest, split, fingerprint, overlap, preprocess.

Stages that work case by case run ``glioseg --threads N`` cases at a time (:func:`glioseg.parallel.map_cases`).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_command, json_arg, log


def stack_slices(args: argparse.Namespace) -> None:
    from glioseg.datasets.lgg import stack_lgg

    stack_lgg(args.raw, args.out, threads=args.threads or 1)


def manifest(args: argparse.Namespace) -> None:
    from glioseg.datasets.layouts import resolve_layout_options
    from glioseg.manifest import build_manifest, write_manifest

    options = resolve_layout_options(args.layout, args.layout_options, args.raw)  # nnunet: its dataset.json
    frame, info = build_manifest(args.raw, args.layout, args.dataset, options, threads=args.threads or 1,
                                 labelled=not args.unlabelled)
    write_manifest(frame, info, args.out_csv, args.out_json)


def split(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.splits import write_splits

    info = read_dataset_info(args.info)
    if args.given:
        from glioseg.splits import write_given_splits

        log.info("the given split %s (sha256 %s)", args.given, hashlib.sha256(args.given.read_bytes()).hexdigest())
        table = write_given_splits(read_manifest(args.manifest), info.modalities, args.given, args.out_json, args.out_csv,
                                   args.given_copy, info.name)
    else:
        table = write_splits(read_manifest(args.manifest), info.modalities, args.folds, args.test_fraction, args.seed,
                             args.out_json, args.out_csv, tuple(args.holdout) if args.holdout else None)
    patients = table.drop_duplicates("patient")
    log.info("%s: %d patients; per fold %s; %d held out for testing", info.name, len(patients),
             patients[patients["fold"] >= 0]["fold"].value_counts().sort_index().to_dict(),
             int((patients["subset"] == "test").sum()))


def fingerprint(args: argparse.Namespace) -> None:
    from glioseg.datasets.overlap import fingerprint_dataset

    fingerprint_dataset(args.manifest, args.info, args.out, role=args.role, threads=args.threads or 1)


def overlap(args: argparse.Namespace) -> None:
    from glioseg.datasets.overlap import overlap_datasets

    overlap_datasets(args.train, args.evaluated, args.out, threshold=args.threshold)


def preprocess(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.preprocess import preprocess_dataset

    preprocess_dataset(read_manifest(args.manifest), read_dataset_info(args.info), args.out, args.margin, args.background,
                       threads=args.threads or 1, spacing=args.spacing)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "stack-slices", stack_slices, "Stack the LGG kaggle_3m 2D tif slices of each case into NIfTI volumes.")
    p.set_defaults(torch_threads=False)  # --threads: worker processes, no torch
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "manifest", manifest, "Find and validate every case of an extracted dataset; write its manifest.")
    p.set_defaults(torch_threads=False)
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--layout", required=True)
    p.add_argument("--layout-options", type=json_arg, default={}, help="the custom or nnunet layout's options as JSON")
    p.add_argument("--dataset", required=True)
    p.add_argument("--unlabelled", action="store_true",
                   help="the dataset has no labels (labelled: false): cases need none, and none is read or recorded")
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-json", type=Path, required=True)

    p = add_command(sub, "split", split, "Patient-level K-fold split, stratified by group, or a given one checked; MONAI fold JSON + CSV.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--holdout", type=int, nargs=2, metavar=("VAL", "TEST"),
                   help="a train/validation/test split by patient counts instead of folds (validation is fold 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--given", type=Path, help="a split file to use instead of drawing one (a MONAI datalist with fold keys, "
                                             "an nnU-Net splits_final.json or a CSV; docs/formats.md); --folds, "
                                             "--test-fraction, --holdout and --seed are then ignored")
    p.add_argument("--given-copy", type=Path, help="with --given: a folder to copy the file into, beside the split")
    p.add_argument("--out-json", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)

    p = add_command(sub, "fingerprint", fingerprint, "Content fingerprints of a dataset's cases, to find the same scans elsewhere.")
    p.set_defaults(torch_threads=False)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--role", default="flair", help="the image fingerprinted: flair, t1ce, t1, t2 (or a modality name)")
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "overlap", overlap, "Cases of an evaluated dataset that are the same scans as training cases.")
    p.add_argument("--train", type=Path, required=True, help="fingerprints of the training dataset")
    p.add_argument("--evaluated", type=Path, required=True, help="fingerprints of the evaluated dataset")
    p.add_argument("--threshold", type=float, default=0.8, help="similarity at or above which two scans are the same")
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "preprocess", preprocess, "Crop to the brain, z-score each channel, labels to regions: the training cache.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--margin", type=int, default=0)
    p.add_argument("--background", choices=("zero", "mode"), default="zero",
                   help="how to find the brain in cases without a brain mask: voxels nonzero in any channel (zero), "
                        "or voxels differing from their channel's most frequent value in any channel (mode)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="resample each case after the crop to this spacing (mm, or voxels for datasets without a "
                        "physical spacing); by default none")
    p.add_argument("--out", type=Path, required=True)
