"""Training: ``train`` one experiment on one fold, or ``import-model`` for an evaluation-only experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_command, json_arg, log

EXIT_RESUMABLE = 75
"""EX_TEMPFAIL: the job stopped on purpose with its state saved; run it again (Snakemake's --retries does)."""


def train(args: argparse.Namespace) -> int:
    from glioseg.cache import read_cache_properties
    from glioseg.evaluation import training_cases
    from glioseg.settings import TrainingSettings
    from glioseg.training.loop import FoldPaths, StopRequest, TrainingInterrupted, train_fold

    stop = StopRequest().install()
    settings = TrainingSettings.from_json(args.settings)
    cache = read_cache_properties(args.cache)
    train_cases, val_cases = training_cases(args.splits, args.fold, args.exclude)
    paths = FoldPaths(cache=args.cache, model=args.out_model, history=args.out_history, state=args.state, init=args.init)
    try:
        train_fold(settings, paths, train_cases, val_cases, cache.regions, len(cache.modalities), stop=stop)
    except TrainingInterrupted as stopped:
        log.warning("%s in %s; run the job again to resume", stopped, paths.state)
        return EXIT_RESUMABLE
    finally:
        stop.settle()
    if stop.signal is not None:
        log.info("the stop signal came after the last epoch: the training is complete")
    return 0


def import_model(args: argparse.Namespace) -> None:
    from glioseg.cache import read_cache_properties
    from glioseg.settings import TrainingSettings
    from glioseg.training.init_weights import import_model as write_imported_model

    cache = read_cache_properties(args.cache)
    write_imported_model(args.init, TrainingSettings.from_json(args.settings), cache.regions, len(cache.modalities), args.out)


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "train", train, "Train one experiment on one fold (resumes from its saved state).")
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--settings", type=json_arg, required=True, help="the experiment's training settings as JSON")
    p.add_argument("--out-model", type=Path, required=True)
    p.add_argument("--out-history", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="folder for last.pt/best.pt, kept across failed attempts")
    p.add_argument("--init", type=Path, help="weights to start from (read as the settings' init section says)")
    p.add_argument("--exclude", type=Path, nargs="+", default=[],
                   help="overlap tables (same scans in two datasets) whose case_b cases are left out of training and "
                        "validation")

    p = add_command(sub, "import-model", import_model, "A model file from initial weights alone, for an evaluation-only experiment.")
    p.add_argument("--cache", type=Path, required=True, help="the dataset's cache (its regions and modalities)")
    p.add_argument("--init", type=Path, required=True)
    p.add_argument("--settings", type=json_arg, required=True, help="the experiment's training settings as JSON")
    p.add_argument("--out", type=Path, required=True)
