"""Applying trained models to new scans: ``predict``, and ``export`` of a portable bundle (issue 14)."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_command, json_arg, log


def modality_pattern(text: str) -> tuple[str, str]:
    name, _, pattern = text.partition("=")
    if not name or not pattern:
        raise argparse.ArgumentTypeError(f"expected NAME=PATTERN (e.g. t1='{{case}}_T1.nii.gz'), got {text!r}")
    return name, pattern


def predict(args: argparse.Namespace) -> None:
    from glioseg.errors import GliosegError
    from glioseg.predict import predict as run

    overrides = {key: value for key, value in (("overlap", args.overlap), ("sw_batch_size", args.sw_batch_size),
                                               ("roi_size", args.roi_size), ("threshold", args.threshold),
                                               ("tta", args.tta)) if value is not None}
    if not args.input and args.manifest is None:
        raise GliosegError("give the scans to predict: --input, or a dataset's --manifest",
                           hint="e.g. --input results/raw/sample, or --manifest results/manifests/sample.csv.")
    manifest = (args.manifest, args.info or args.manifest.with_suffix(".json")) if args.manifest else None
    report = run(args.model, args.input or [], args.output, patterns=dict(args.modality) if args.modality else None,
                 folds=args.fold, overrides=overrides, labels=args.labels, probabilities=args.probabilities,
                 manifest=manifest, record=args.record, mask=args.mask)
    log.info("predicted %d cases (%d were already there) into %s", len(report.written), len(report.skipped), args.output)


def export(args: argparse.Namespace) -> None:
    from glioseg.bundle import from_results, write_bundle

    bundle = from_results(args.model)
    path = write_bundle(bundle, args.out)
    log.info("exported %s (folds %s, modalities %s, checksum %s) to %s", bundle.experiment,
             ", ".join(map(str, bundle.folds)), ", ".join(bundle.modalities), bundle.checksum()[:12], path)


def describe_experiment(args: argparse.Namespace) -> None:
    from glioseg.atomic import write_json
    from glioseg.config import EXPERIMENT_RECORD_FORMAT
    from glioseg.errors import GliosegError

    missing = sorted({"format", "experiment", "dataset", "folds", "preprocess", "inference", "config"} - set(args.record))
    if missing or args.record.get("format") != EXPERIMENT_RECORD_FORMAT:
        raise GliosegError(f"not an experiment record (missing {missing}, format {args.record.get('format')!r})",
                           hint="pass glioseg.config.experiment_record(config, experiment) as JSON (the rule does).")
    write_json(args.out, args.record)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "predict", predict, "Apply a trained model to new scans: one label map per case, in the scans' "
                                             "own geometry (GPU when present).")
    p.add_argument("--model", type=Path, required=True,
                   help="a bundle (glioseg export), or an experiment's folder results/models/<experiment>")
    p.add_argument("--input", type=Path, nargs="+",
                   help="a folder of cases (searched at any depth), one case folder, or one case's files; for a model "
                        "trained on LGG kaggle_3m, a case folder of <case>_<n>.tif slices or a folder of them (each "
                        "slice's mask is also written, as <case>/<case>_<n>_mask.tif)")
    p.add_argument("--manifest", type=Path,
                   help="or a dataset's manifest (results/manifests/<dataset>.csv): its cases, with the files its layout "
                        "found, each modality read from the dataset's modality of the same name")
    p.add_argument("--info", type=Path, help="with --manifest: its sidecar (default: the .json beside it)")
    p.add_argument("--output", type=Path, required=True, help="the folder <case>.nii.gz are written into")
    p.add_argument("--modality", type=modality_pattern, action="append", metavar="NAME=PATTERN",
                   help="the files of each modality, in the model's order: a glob relative to the case folder, "
                        "{case} being the folder's name (default: BraTS file names of any release)")
    p.add_argument("--mask", metavar="PATTERN",
                   help="each case's brain-mask file, a glob relative to the case folder ({case}: the case's name), "
                        "required by a model trained with brain masks (layout_options → mask) and refused by others")
    p.add_argument("--fold", type=int, nargs="+", help="the fold models to use (default: the ensemble of all)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the predictions of every mirroring of the input (default: the experiment's setting)")
    p.add_argument("--overlap", type=float, help="sliding-window overlap (default: the experiment's)")
    p.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the experiment's)")
    p.add_argument("--roi-size", type=int, nargs="+", help="sliding-window size (default: the experiment's)")
    p.add_argument("--threshold", type=float, help="probability threshold of each region (default: the experiment's)")
    p.add_argument("--labels", help="label convention of the written maps: brats, brats2023 (ET = 3) or lgg "
                                    "(default: the training dataset's)")
    p.add_argument("--record", type=Path, help="where the run record goes (default: <output>/predict.json); "
                                              "elsewhere, the output holds only <case>.nii.gz")
    p.add_argument("--probabilities", action="store_true",
                   help="also write each region's probability as probabilities/<case>.nii.gz (float32, regions last)")

    p = add_command(sub, "export", export, "Write an experiment's portable model bundle: every fold's weights and all "
                                           "that predict needs, nothing from the results tree.")
    p.add_argument("--model", type=Path, required=True, help="the experiment's folder results/models/<experiment>")
    p.add_argument("--out", type=Path, required=True, help="a .pt file, or a folder to write <experiment>.pt into")

    p = add_command(sub, "describe-experiment", describe_experiment,
                    "Write an experiment's record (preprocessing, sliding window, config excerpt) beside its fold models.")
    p.add_argument("--record", type=json_arg, required=True, help="glioseg.config.experiment_record as JSON")
    p.add_argument("--out", type=Path, required=True)
