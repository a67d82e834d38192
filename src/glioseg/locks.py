"""Exclusive locks on output folders, so two jobs never write one result at once.

A lock is an advisory ``flock`` on a small file that also holds who took it
(host, process id, time, what it is doing). The kernel drops the lock when its
process dies, however it dies, so a ``kill -9`` never leaves a stale lock that
someone has to delete by hand; the text stays only to name the holder in the
error the second process gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from glioseg.errors import GliosegError


def _holder(path: Path) -> str:
    """Who holds the lock, as its file says (best effort: the holder may be writing it right now)."""
    try:
        who = json.loads(path.read_text(encoding="utf-8"))
        return f"{who['purpose']} (host {who['host']}, pid {who['pid']}, since {who['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def exclusive_lock(path: str | Path, purpose: str, *, hint: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, or fail at once naming the holder.

    ``purpose`` says what the holder does (written for the next process's
    error); ``hint`` says what a user should do when the lock is taken.
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GliosegError(f"locked by {_holder(lock)}", path=lock, hint=hint) from None
        record = {"purpose": purpose, "host": socket.gethostname(), "pid": os.getpid(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)
