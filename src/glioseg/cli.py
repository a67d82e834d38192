"""The ``glioseg`` command: one subcommand per pipeline stage, explicit paths in and out.

Snakemake rules call these; so can a person, a notebook or a SLURM script.
This module only dispatches: each stage's parser and handler live together in
:mod:`glioseg.commands`, and the stage logic in the package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from glioseg.commands import acquire, datasets, evaluation, exchange, predict, report, training, views
from glioseg.errors import GliosegError

log = logging.getLogger("glioseg")

EXIT_USER_ERROR = 2

STAGES = (acquire, datasets, views, training, evaluation, exchange, predict, report)
"""Command modules in the order of the pipeline, which is the order ``glioseg --help`` lists them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glioseg", description=__doc__.splitlines()[0])
    # --log-file: under torchrun, whose parser takes '--log' for an abbreviation of its own --log-dir.
    parser.add_argument("--log", "--log-file", dest="log", type=Path,
                        help="also write the log to this file (created with its folder)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads: torch's (default: torch's choice), and the worker processes of the stages that "
                             "work case by case, such as manifest (default: 1)")
    parser.set_defaults(torch_threads=True)  # a subcommand sets False when --threads sizes no torch
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        stage.add_commands(sub)
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
    if args.threads and args.torch_threads:  # a stage that never runs torch need not import it (~3 s)
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
