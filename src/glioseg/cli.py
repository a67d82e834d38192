"""The ``glioseg`` command: one subcommand per pipeline stage, explicit paths in and out.

Snakemake rules call these; so can a person, a notebook or a SLURM script.
Heavy imports (torch, MONAI) happen inside each command, so ``glioseg --help``
and the light stages start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from glioseg.errors import GliosegError

log = logging.getLogger("glioseg")

EXIT_USER_ERROR = 2
EXIT_RESUMABLE = 75
"""EX_TEMPFAIL: the job stopped on purpose with its state saved; run it again (Snakemake's --retries does)."""


def _json_arg(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _fold_path(text: str) -> tuple[int, Path]:
    fold, _, path = text.partition("=")
    if not path or not fold.isdigit():
        raise argparse.ArgumentTypeError(f"expected FOLD=PATH, got {text!r}")
    return int(fold), Path(path)


def cmd_acquire(args: argparse.Namespace) -> None:
    """Synthesise the sample or download from Kaggle: either way, one archive at ``--out``."""
    if "synthetic" in args.source:
        from glioseg.datasets.synthetic import SyntheticSpec, write_sample_archive

        write_sample_archive(SyntheticSpec(**args.source["synthetic"]), args.out)
    elif "kaggle" in args.source:
        from glioseg.acquire.kaggle import download_dataset

        download_dataset(args.source["kaggle"], args.out, sha256=args.sha256)
    else:
        raise GliosegError(f"nothing to acquire for source {sorted(args.source)}", hint="use a synthetic: or kaggle: source.")


def cmd_extract(args: argparse.Namespace) -> None:
    from glioseg.acquire.checksum import verify_sha256
    from glioseg.acquire.extract import extract_archive

    if args.sha256:
        verify_sha256(args.archive, args.sha256)
    limits: dict[str, float] = {}  # flags left out keep extract_archive's defaults
    if args.max_ratio is not None:
        limits["max_ratio"] = args.max_ratio
    if args.max_size_gb is not None:
        limits["max_total_bytes"] = round(args.max_size_gb * 1e9)
    extract_archive(args.archive, args.out, **limits)


def cmd_stack_slices(args: argparse.Namespace) -> None:
    from glioseg.datasets.lgg import stack_lgg

    stack_lgg(args.raw, args.out)


def cmd_manifest(args: argparse.Namespace) -> None:
    from glioseg.manifest import build_manifest, write_manifest

    frame, info = build_manifest(args.raw, args.layout, args.dataset, args.layout_options)
    write_manifest(frame, info, args.out_csv, args.out_json)


def cmd_split(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.splits import write_splits

    info = read_dataset_info(args.info)
    table = write_splits(read_manifest(args.manifest), info.modalities, args.folds, args.test_fraction, args.seed,
                         args.out_json, args.out_csv, tuple(args.holdout) if args.holdout else None)
    patients = table.drop_duplicates("patient")
    log.info("%s: %d patients; per fold %s; %d held out for testing", info.name, len(patients),
             patients[patients["fold"] >= 0]["fold"].value_counts().sort_index().to_dict(),
             int((patients["subset"] == "test").sum()))


def cmd_preprocess(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.preprocess import preprocess_dataset

    preprocess_dataset(read_manifest(args.manifest), read_dataset_info(args.info), args.out, args.margin, args.background)


def cmd_fingerprint(args: argparse.Namespace) -> None:
    from glioseg.datasets.overlap import fingerprint_dataset

    fingerprint_dataset(args.manifest, args.info, args.out, role=args.role)


def cmd_overlap(args: argparse.Namespace) -> None:
    from glioseg.datasets.overlap import overlap_datasets

    overlap_datasets(args.train, args.evaluated, args.out, threshold=args.threshold)


def _fold_split(path: Path, fold: int, exclude: list[Path]) -> tuple[list[str], list[str]]:
    """A fold's training and validation cases, minus the cases listed in overlap tables."""
    from glioseg.evaluation import excluded_cases
    from glioseg.splits import fold_cases

    train, val = fold_cases(json.loads(path.read_text(encoding="utf-8")), fold)
    left_out = excluded_cases(exclude)
    if left_out:
        log.info("leaving out %d training and %d validation cases that are scans of the excluded datasets",
                 len(set(train) & left_out), len(set(val) & left_out))
    train, val = [c for c in train if c not in left_out], [c for c in val if c not in left_out]
    if not train or not val:
        raise GliosegError(f"fold {fold} has no {'training' if not train else 'validation'} cases left after leaving "
                           "out the overlap", path=path, hint="check exclude_overlap_with in the experiment's config.")
    return train, val


def _cache_properties(cache: Path) -> tuple[list[str], int]:
    """The cache's regions and number of modalities: what a model's output and input must match."""
    properties = json.loads((cache / "properties.json").read_text(encoding="utf-8"))
    return properties["regions"], len(properties["dataset"]["modalities"])


def cmd_train(args: argparse.Namespace) -> int:
    from glioseg.training.loop import FoldPaths, StopRequest, TrainingInterrupted, train_fold

    stop = StopRequest().install()
    regions, in_channels = _cache_properties(args.cache)
    train, val = _fold_split(args.splits, args.fold, args.exclude)
    paths = FoldPaths(cache=args.cache, model=args.out_model, history=args.out_history, state=args.state, init=args.init)
    try:
        train_fold(args.settings, paths, train, val, regions, in_channels, stop=stop)
    except TrainingInterrupted as stopped:
        log.warning("%s in %s; run the job again to resume", stopped, paths.state)
        return EXIT_RESUMABLE
    if stop.signal is not None:
        log.info("the stop signal came after the last epoch: the training is complete")
    return 0


def cmd_import_model(args: argparse.Namespace) -> None:
    from glioseg.training.init_weights import import_model

    regions, in_channels = _cache_properties(args.cache)
    import_model(args.init, args.settings, regions, in_channels, args.out)


def cmd_infer(args: argparse.Namespace) -> None:
    from glioseg.evaluation import cases_for
    from glioseg.inference import infer_cases
    from glioseg.manifest import read_dataset_info, read_manifest

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    infer_cases(args.model, args.cache, read_manifest(args.manifest), read_dataset_info(args.info), cases, args.settings, args.out)


def cmd_score(args: argparse.Namespace) -> None:
    from glioseg.atomic import write_csv
    from glioseg.evaluation import cases_for
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.scoring import score_predictions

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    scores = score_predictions(args.predictions, read_manifest(args.manifest), read_dataset_info(args.info), cases,
                               args.experiment, args.fold, args.label)
    write_csv(args.out, scores)
    means = scores.groupby("region")["dice"].mean()
    log.info("%s fold %d: mean Dice %s", args.experiment, args.fold, ", ".join(f"{r} {v:.3f}" for r, v in means.items()))


def cmd_score_slices(args: argparse.Namespace) -> None:
    from glioseg.atomic import write_csv
    from glioseg.evaluation import cases_for
    from glioseg.manifest import read_dataset_info, read_manifest
    from glioseg.scoring import score_prediction_slices

    cases = cases_for(args.splits, args.fold, args.subset, args.exclude)
    scores = score_prediction_slices(args.predictions, read_manifest(args.manifest), read_dataset_info(args.info), cases,
                                     args.experiment, args.fold, args.label)
    write_csv(args.out, scores)
    tumour = scores[scores["truth_pixels"] > 0]
    log.info("%s fold %d: %d slices, %d with tumour (mean Dice %.3f, IoU %.3f), %d without (%d with a false positive)",
             args.experiment, args.fold, len(scores), len(tumour), tumour["dice"].mean(), tumour["iou"].mean(),
             len(scores) - len(tumour), int(((scores["truth_pixels"] == 0) & (scores["pred_pixels"] > 0)).sum()))


def cmd_plot_gallery(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_manifest
    from glioseg.report.gallery import plot_gallery

    plot_gallery(args.slice_scores, read_manifest(args.manifest), dict(args.predictions), out=args.out)


def cmd_summarize(args: argparse.Namespace) -> None:
    from glioseg.report.summary import write_summary

    write_summary(args.scores, args.out_csv, args.out_md)


def cmd_plot_curves(args: argparse.Namespace) -> None:
    from glioseg.report.figures import plot_training_curves

    plot_training_curves(dict(args.history), out=args.out, title=args.title)


def cmd_plot_boxplots(args: argparse.Namespace) -> None:
    from glioseg.report.figures import plot_score_boxplots
    from glioseg.report.summary import load_scores

    plot_score_boxplots(load_scores([args.scores]), out=args.out)


def cmd_plot_montage(args: argparse.Namespace) -> None:
    from glioseg.manifest import read_manifest
    from glioseg.report.figures import plot_case_montage
    from glioseg.report.summary import load_scores

    scores = load_scores(args.scores)
    plot_case_montage(scores, read_manifest(args.manifest), dict(args.predictions), out=args.out)


def _fold_inputs(p: argparse.ArgumentParser) -> None:
    """The dataset files, the fold and the subset that select which cases a stage works on."""
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--fold", type=int, required=True, help="the fold whose model is evaluated")
    p.add_argument("--subset", choices=("val", "test", "all"), default="val",
                   help="val: the fold's validation cases; test: the held-out cases; all: every case (another dataset)")
    p.add_argument("--exclude", type=Path, nargs="+", default=[], help="overlap tables whose case_b cases are left out")


def _scoring_inputs(p: argparse.ArgumentParser) -> None:
    """What both scoring stages read and write."""
    p.add_argument("--predictions", type=Path, required=True)
    _fold_inputs(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--label", help="the evaluation's name in the dataset column (default: the dataset's name)")
    p.add_argument("--out", type=Path, required=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glioseg", description=__doc__.splitlines()[0])
    # --log-file: under torchrun, whose parser takes '--log' for an abbreviation of its own --log-dir.
    parser.add_argument("--log", "--log-file", dest="log", type=Path,
                        help="also write the log to this file (created with its folder)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], None], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("acquire", cmd_acquire, "Get a dataset's archive: synthesise the sample, or download it from Kaggle.")
    p.add_argument("--source", type=_json_arg, required=True,
                   help='the dataset\'s source as JSON: {"synthetic": {...}} or {"kaggle": "OWNER/NAME"}')
    p.add_argument("--sha256", help="expected SHA-256 of the downloaded archive")
    p.add_argument("--out", type=Path, required=True)

    p = command("extract", cmd_extract, "Extract an archive safely and atomically (archives inside it too).")
    p.add_argument("--archive", type=Path, required=True)
    p.add_argument("--sha256", help="verify the archive's SHA-256 first")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-ratio", type=float,
                   help="refuse a member (of 256 MiB or more) that expands more than this many times (default 1000)")
    p.add_argument("--max-size-gb", type=float,
                   help="refuse to write more than this many GB in all, inner archives included (default 2000)")

    p = command("stack-slices", cmd_stack_slices, "Stack the LGG kaggle_3m 2D tif slices of each case into NIfTI volumes.")
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = command("manifest", cmd_manifest, "Find and validate every case of an extracted dataset; write its manifest.")
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--layout", required=True)
    p.add_argument("--layout-options", type=_json_arg, default={}, help="the custom layout's options as JSON")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-json", type=Path, required=True)

    p = command("split", cmd_split, "Patient-level K-fold split, stratified by group; MONAI fold JSON + CSV.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--holdout", type=int, nargs=2, metavar=("VAL", "TEST"),
                   help="a train/validation/test split by patient counts instead of folds (validation is fold 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-json", type=Path, required=True)
    p.add_argument("--out-csv", type=Path, required=True)

    p = command("fingerprint", cmd_fingerprint, "Content fingerprints of a dataset's cases, to find the same scans elsewhere.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--role", default="flair", help="the image fingerprinted: flair, t1ce, t1, t2 (or a modality name)")
    p.add_argument("--out", type=Path, required=True)

    p = command("overlap", cmd_overlap, "Cases of an evaluated dataset that are the same scans as training cases.")
    p.add_argument("--train", type=Path, required=True, help="fingerprints of the training dataset")
    p.add_argument("--evaluated", type=Path, required=True, help="fingerprints of the evaluated dataset")
    p.add_argument("--threshold", type=float, default=0.8, help="similarity at or above which two scans are the same")
    p.add_argument("--out", type=Path, required=True)

    p = command("preprocess", cmd_preprocess, "Crop to the brain, z-score each channel, labels to regions: the training cache.")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--margin", type=int, default=0)
    p.add_argument("--background", choices=("zero", "mode"), default="zero",
                   help="how to find the brain in cases without a brain mask: voxels nonzero in any channel (zero), "
                        "or voxels differing from their channel's most frequent value in any channel (mode)")
    p.add_argument("--out", type=Path, required=True)

    p = command("train", cmd_train, "Train one experiment on one fold (resumes from its saved state).")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--settings", type=_json_arg, required=True, help="the experiment's training settings as JSON")
    p.add_argument("--out-model", type=Path, required=True)
    p.add_argument("--out-history", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="folder for last.pt/best.pt, kept across failed attempts")
    p.add_argument("--init", type=Path, help="weights to start from (read as the settings' init section says)")
    p.add_argument("--exclude", type=Path, nargs="+", default=[],
                   help="overlap tables whose case_b cases are left out of training and validation")

    p = command("import-model", cmd_import_model, "A model file from initial weights alone, for an evaluation-only experiment.")
    p.add_argument("--cache", type=Path, required=True, help="the dataset's cache (its regions and modalities)")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--settings", type=_json_arg, required=True, help="the experiment's training settings as JSON")
    p.add_argument("--out", type=Path, required=True)

    p = command("infer", cmd_infer, "Predict an evaluation's cases; NIfTI label maps in the original geometry.")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="a model file, or several to ensemble")
    p.add_argument("--cache", type=Path, required=True)
    _fold_inputs(p)
    p.add_argument("--settings", type=_json_arg, required=True, help="the experiment's inference settings as JSON")
    p.add_argument("--out", type=Path, required=True)

    _scoring_inputs(command("score", cmd_score, "Score an evaluation's predictions per case and region "
                            "(Dice, IoU, HD95, sensitivity, specificity, precision, voxel counts)."))
    _scoring_inputs(command("score-slices", cmd_score_slices,
                            "Per-slice Dice, IoU and missed tumour parts of an evaluation (2D datasets)."))

    p = command("summarize", cmd_summarize, "Collect score tables into scores.csv and a markdown summary.")
    p.add_argument("--scores", type=Path, nargs="+", required=True)
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-md", type=Path, required=True)

    p = command("plot-curves", cmd_plot_curves, "Training curves of one experiment, one line per fold.")
    p.add_argument("--history", type=_fold_path, nargs="+", required=True, metavar="FOLD=CSV")
    p.add_argument("--title", default="")
    p.add_argument("--out", type=Path, required=True)

    p = command("plot-boxplots", cmd_plot_boxplots, "Per-case score distributions per region and experiment.")
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)

    p = command("plot-montage", cmd_plot_montage, "Best, median and worst case of one experiment on one dataset.")
    p.add_argument("--scores", type=Path, nargs="+", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--predictions", type=_fold_path, nargs="+", required=True, metavar="FOLD=DIR")
    p.add_argument("--out", type=Path, required=True)

    p = command("plot-gallery", cmd_plot_gallery, "Slices by kind of result (good, missed, false positive...), from slice scores.")
    p.add_argument("--slice-scores", type=Path, nargs="+", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--predictions", type=_fold_path, nargs="+", required=True, metavar="FOLD=DIR")
    p.add_argument("--out", type=Path, required=True)
    return parser


def _configure_logging(log_file: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.log)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    log.info("glioseg %s", " ".join(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args) or 0
    except GliosegError as exc:
        log.error("%s", exc.message)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
