"""Atomic outputs: a killed job never leaves a file or folder that looks complete.

Everything is written under a temporary sibling name in the same directory (so
every rename stays on one file system) and renamed into place only once it is
whole. A folder that already exists is never deleted in place: it is swapped
out by a rename and deleted afterwards, so the path holds the old tree or the
new one, whole, whenever the job is killed.

While it works, a writer holds a lock on ``.<name>.lock`` beside the final
path. A second writer of the same path fails at once, naming the first; and
since the kernel drops the lock of a dead process, a writer that gets the lock
knows that any temporary sibling of the same name is a killed writer's
leftover, and removes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from glioseg.locks import exclusive_lock

# The random part of tempfile's names (8 characters of this alphabet): how a leftover is told from other files.
_TOKEN = "[a-z0-9_]{8}"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success, delete it on error.

    The file gets the permissions the user's umask gives new files (not
    ``mkstemp``'s private 0600), so results are shared as any other file is.

    The temporary name ends with the final name's extensions, so writers that
    pick a format from the extension (nibabel's ``.nii.gz``, numpy's ``.npy``,
    matplotlib's ``.png``) behave as they would on the final path.
    """
    final = Path(path)
    with _writer(final):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + "".join(final.suffixes), dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; it replaces ``path`` only when the block succeeds."""
    final = Path(path)
    with _writer(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            _remove(_swap_in(tmp, final))
        finally:
            _remove(tmp)


def _swap_in(tmp: Path, final: Path) -> Path:
    """Rename ``tmp`` to ``final`` and return where the old ``final`` went, for the caller to delete.

    Where the kernel can swap two names in one step (Linux ``renameat2``) the
    path is never empty; elsewhere two renames leave it empty for an instant,
    and a kill in that instant leaves the old tree under a hidden ``.old``
    name for the next writer to remove. Never a partial tree.
    """
    if not os.path.lexists(final):
        os.rename(tmp, final)
        return tmp
    if _exchange(tmp, final):
        return tmp
    aside = tmp.with_name(tmp.name.removesuffix(".tmp") + ".old")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    return aside


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system or file system cannot (then nothing changed)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """glibc's ``renameat2`` (Linux 3.15+, glibc 2.28+), which Python's ``os`` does not expose; None elsewhere."""
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it is there; a link is removed, never followed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@contextlib.contextmanager
def _writer(final: Path) -> Iterator[None]:
    """Be the only writer of ``final`` for the block, and clear what killed writers of it left behind."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with _lock(final) as locked:
        if locked:  # without locks a leftover cannot be told from a live writer's work: leave them all
            _remove_leftovers(final)
        yield


def _lock(final: Path) -> contextlib.AbstractContextManager[bool]:
    """The lock of ``final`` (``.<name>.lock`` beside it); True inside when held, False without file-system locks."""
    return exclusive_lock(final.with_name(f".{final.name}.lock"), f"writing {final.name}", subject=final,
                          busy="another process is writing this right now",
                          hint="Wait for it to finish, or stop it, then run again; two writers of one path would undo "
                               "each other's work.")


def _remove_leftovers(final: Path) -> None:
    """Delete the temporary and set-aside siblings of ``final`` (only of that exact name) that killed writers left."""
    suffixes = re.escape("".join(final.suffixes))
    pattern = re.compile(rf"\.{re.escape(final.name)}\.{_TOKEN}\.(?:tmp|old)(?:{suffixes})?")
    with os.scandir(final.parent) as entries:
        stale = [Path(entry.path) for entry in entries if pattern.fullmatch(entry.name)]
    for leftover in stale:
        _remove(leftover)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, frame: Any) -> None:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
