"""SHA-256 of archives: the one check that a download or a copy is the file the config names."""

from __future__ import annotations

import hashlib
from pathlib import Path

from glioseg.errors import GliosegError


def sha256_of(path: str | Path) -> str:
    """Hex digest of a file, read in 1 MiB blocks (archives run to tens of GB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise a :class:`GliosegError` naming the file and both digests when they differ."""
    actual = sha256_of(path)
    if actual != expected.strip().lower():
        raise GliosegError(
            f"SHA-256 is {actual}, but the config expects {expected.strip().lower()}",
            path=path,
            hint="the archive is damaged or a different version: replace it with a good copy, or update the dataset's "
            "sha256 in the config if the new version is intended.",
        )
