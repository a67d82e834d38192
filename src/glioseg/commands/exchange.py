"""Exchange with other tools: ``export-nnunet`` writes a dataset for nnU-Net with glioseg's folds;
``import-predictions`` takes predictions made elsewhere into the results, to be scored as any experiment's."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_case_selection, add_command, json_arg


def export_nnunet(args: argparse.Namespace) -> None:
    from glioseg.evaluation import read_folds
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.nnunet_raw import export_nnunet as export

    export(read_manifest(args.manifest), read_dataset_info(args.info), read_folds(args.splits), args.out, args.validation_folds)


def import_predictions(args: argparse.Namespace) -> None:
    from glioseg.evaluation import cases_for
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.nnunet_raw import import_predictions as take

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    take(args.source, read_manifest(args.manifest), read_dataset_info(args.info), cases, args.out, args.label_map)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "export-nnunet", export_nnunet,
                    "Write a dataset as an nnU-Net raw dataset (DatasetXXX_Name) with glioseg's folds in splits_final.json.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True, help="the dataset's folds.json")
    p.add_argument("--validation-folds", type=int, help="folds glioseg validates on (1 for a hold-out split); default all")
    p.add_argument("--out", type=Path, required=True, help="the dataset folder to write, named Dataset<3 digits>_<name>")

    p = add_command(sub, "import-predictions", import_predictions,
                    "Check and copy an evaluation's predictions made by another tool (<case>.nii.gz label maps) "
                    "into the results, to be scored as an experiment's.")
    p.add_argument("--source", type=Path, required=True, help="the folder of <case>.nii.gz (or .nii) label maps")
    add_case_selection(p)
    p.add_argument("--label-map", type=json_arg, default={},
                   help='JSON {"value in the predictions": value in the dataset\'s convention}, e.g. {"3": 4}')
    p.add_argument("--out", type=Path, required=True)
