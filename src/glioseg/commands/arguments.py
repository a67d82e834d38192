"""Argument types and option groups that several commands share."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("glioseg")

Subcommands = Any
"""argparse's private ``_SubParsersAction``: what ``add_subparsers`` returns."""

Handler = Callable[[argparse.Namespace], "int | None"]


def add_command(sub: Subcommands, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose help and description are ``help_text`` and which runs ``handler``."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=handler)
    return parser


def json_arg(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def json_list(text: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a JSON list, got {type(value).__name__}")
    return value


def fold_path(text: str) -> tuple[int, Path]:
    fold, _, path = text.partition("=")
    if not path or not fold.isdigit():
        raise argparse.ArgumentTypeError(f"expected FOLD=PATH, got {text!r}")
    return int(fold), Path(path)


def add_case_selection(parser: argparse.ArgumentParser) -> None:
    """The dataset files, the fold and the subset that select which cases an evaluation stage works on."""
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--info", type=Path, required=True)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--fold", type=int, required=True, help="the fold whose model is evaluated")
    parser.add_argument("--subset", choices=("val", "test", "all"), default="val",
                        help="val: the fold's validation cases; test: the held-out cases; all: every case (another dataset)")
    parser.add_argument("--exclude", type=Path, nargs="+", default=[],
                        help="overlap tables (same scans in two datasets) whose case_b cases are left out")
