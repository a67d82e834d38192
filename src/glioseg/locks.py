"""Exclusive locks beside outputs, so two processes never write one result at once.

A lock is an advisory ``flock`` on a small file that also says who holds it
(host, process id, what it is doing). The kernel drops the lock when its
process dies, however it dies, so a ``kill -9`` never leaves a stale lock for
someone to delete by hand; the text is there only to name the holder in the
second process's error. The file is deleted when the lock is released, so
finished work leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from glioseg.errors import GliosegError

# flock errors that mean this file system has no locks (some NFS, Lustre and FUSE mounts), not that it is taken.
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


@contextlib.contextmanager
def exclusive_lock(path: str | Path, purpose: str, *, busy: str, hint: str,
                   subject: str | Path | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` for the block, or fail at once naming the holder.

    Yields True when locked, False on a file system without locks (the block
    then runs unguarded: refusing would make glioseg unusable there).
    ``purpose`` is written for the next process's error; ``busy`` begins that
    error and ``hint`` says what to do; ``subject`` is the path the error is
    about (default: the lock file).
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, busy, hint, subject)
    if fd is None:
        yield False
        return
    try:
        record = {"purpose": purpose, "host": socket.gethostname(), "pid": os.getpid(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield True
    finally:
        lock.unlink(missing_ok=True)  # still locked: whoever opened this file meanwhile sees it is gone, and retries
        os.close(fd)


def _acquire(lock: Path, busy: str, hint: str, subject: str | Path | None) -> int | None:
    """An open, locked descriptor of ``lock``; None where the file system has no locks."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GliosegError(f"{busy} ({_holder(lock)})", path=subject or lock, hint=hint) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_LOCKS:
                raise
            lock.unlink(missing_ok=True)
            return None
        if _still_named(fd, lock):
            return fd
        os.close(fd)


def _still_named(fd: int, lock: Path) -> bool:
    """True when ``lock`` still names the file open as ``fd`` (its holder may have deleted it meanwhile)."""
    try:
        here = os.stat(lock)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its file says (best effort: the holder may not have written it yet)."""
    try:
        who = json.loads(lock.read_text(encoding="utf-8"))
        return f"{who['purpose']}: host {who['host']}, pid {who['pid']}, since {who['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "it has not said which yet"
