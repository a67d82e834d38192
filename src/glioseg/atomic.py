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

from glioseg.errors import GliosegError
from glioseg.locks import exclusive_lock

# The random part of tempfile's names (8 characters of this alphabet): how a leftover is told from other files.
_TOKEN = "[a-z0-9_]{8}"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteRefused(GliosegError, OSError):
    """A write that cannot happen (a folder where a file goes, a full disk, a read-only place), said to the user as a
    :class:`GliosegError` and still the :class:`OSError` it stands for (``errno``, ``strerror``, ``filename``), so a
    caller that words its own disk problems (extraction, predict) keeps doing so."""

    def __init__(self, code: int, problem: str, *, path: str | Path, hint: str) -> None:
        super().__init__(problem, path=path, hint=hint)
        self.errno, self.strerror, self.filename = code, os.strerror(code), str(path)

    def __str__(self) -> str:
        return self.message  # OSError's own would print "[Errno 28] …" once errno is set


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
    if final.is_dir():  # os.replace cannot put a file in a folder's place, and the folder may be someone's work
        raise WriteRefused(errno.EISDIR, "is a folder; a file is written here", path=final,
                           hint="give a file path (the folder may hold your own files), or remove the folder.")
    with _writer(final), _full_disk_named(final):
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
def atomic_dir(path: str | Path, replaces: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; it replaces ``path`` only when the block succeeds.

    Replacing deletes the old folder whole. ``replaces`` says which of its
    entries this writer may delete (its own earlier output): a folder holding
    anything else, or a file at ``path``, is refused before any work, since
    a mistyped output path would otherwise delete the user's files.
    """
    final = Path(path)
    _check_replaceable(final, replaces)
    with _writer(final), _full_disk_named(final):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            _remove(_swap_in(tmp, final))
        finally:
            _remove(tmp)


def _check_replaceable(final: Path, replaces: Callable[[Path], bool] | None) -> None:
    """Refuse a file at ``final``, or (with ``replaces``) a folder there holding entries ``replaces`` does not accept."""
    if final.is_symlink() or not os.path.lexists(final):
        return
    if not final.is_dir():
        raise WriteRefused(errno.ENOTDIR, "is a file; a folder is written here", path=final,
                           hint="give a folder path, or remove the file if it is not needed.")
    if replaces is None:
        return
    foreign = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in final.iterdir() if not replaces(entry))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise GliosegError(f"the folder exists and holds what this command does not write ({shown}); writing here "
                           "would replace the folder and delete them", path=final,
                           hint="give a new folder path (or this folder's own earlier output), or move those files "
                                "away; nothing was written.")


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
    _writable_folder(final.parent)
    with _lock(final) as locked:
        if locked:  # without locks a leftover cannot be told from a live writer's work: leave them all
            _remove_leftovers(final)
        yield


@contextlib.contextmanager
def _full_disk_named(final: Path) -> Iterator[None]:
    """A full disk or quota while writing ``final`` as a :class:`GliosegError` naming it, not a bare OSError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise WriteRefused(exc.errno, f"the disk is full ({exc.strerror}); nothing was written and what was here is unchanged",
                           path=final, hint="free space on that file system (df -h shows how much is left), or write "
                                            "elsewhere, then run again.") from None


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed; one this process cannot write in (a read-only mount, no permission) is named."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteRefused(exc.errno, f"cannot create this output folder ({exc.strerror})", path=exc.filename or folder,
                           hint="choose an output path under a folder you can write to; nothing was written.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteRefused(errno.EACCES, "cannot write in this output folder (read-only, or not permitted)", path=folder,
                           hint="choose an output path under a folder you can write to, or make this one writable; "
                                "nothing was written.")


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
