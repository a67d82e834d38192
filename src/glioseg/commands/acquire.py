"""Getting a dataset onto disk: ``acquire`` (synthesise or download) and ``extract``."""

from __future__ import annotations

import argparse
from pathlib import Path

from glioseg.commands.arguments import Subcommands, add_command, json_arg
from glioseg.errors import GliosegError


def acquire(args: argparse.Namespace) -> None:
    """Synthesise the sample or download from Kaggle: either way, one archive at ``--out``."""
    if "synthetic" in args.source:
        from glioseg.datasets.synthetic import SyntheticSpec, write_sample_archive

        write_sample_archive(SyntheticSpec(**args.source["synthetic"]), args.out)
    elif "kaggle" in args.source:
        from glioseg.acquire.kaggle import download_dataset

        download_dataset(args.source["kaggle"], args.out, sha256=args.sha256)
    else:
        raise GliosegError(f"nothing to acquire for source {sorted(args.source)}", hint="use a synthetic: or kaggle: source.")


def extract(args: argparse.Namespace) -> None:
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


def add_commands(sub: Subcommands) -> None:
    p = add_command(sub, "acquire", acquire, "Get a dataset's archive: synthesise the sample, or download it from Kaggle.")
    p.add_argument("--source", type=json_arg, required=True,
                   help='the dataset\'s source as JSON: {"synthetic": {...}} or {"kaggle": "OWNER/NAME"}')
    p.add_argument("--sha256", help="expected SHA-256 of the downloaded archive")
    p.add_argument("--out", type=Path, required=True)

    p = add_command(sub, "extract", extract, "Extract an archive safely and atomically (archives inside it too).")
    p.add_argument("--archive", type=Path, required=True)
    p.add_argument("--sha256", help="verify the archive's SHA-256 first")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-ratio", type=float,
                   help="refuse a member (of 256 MiB or more) that expands more than this many times (default 1000)")
    p.add_argument("--max-size-gb", type=float,
                   help="refuse to write more than this many GB in all, inner archives included (default 2000)")
