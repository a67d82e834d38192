"""Tests for glioseg.atomic: a replaced path always holds one whole tree, and killed writers leave nothing for long."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from glioseg import atomic
from glioseg.atomic import atomic_dir, atomic_path, write_text
from glioseg.errors import GliosegError

CASES = 200

# A writer that replaces `final` (CASES old files) with CASES new ones and is killed by SIGKILL while the
# old tree is being deleted: shutil.rmtree deletes half of what it was given, says so, and waits for the kill.
KILLED_WRITER = textwrap.dedent(
    """
    import shutil, sys, time
    from pathlib import Path
    from glioseg import atomic

    final, ready, strategy = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    if strategy == "renames":
        atomic._exchange = lambda a, b: False  # a file system without an atomic swap

    def killed_while_deleting(path, *args, **kwargs):
        for old in sorted(Path(path).iterdir())[: {cases} // 2]:
            old.unlink()
        ready.write_text("deleting")
        time.sleep(120)

    shutil.rmtree = killed_while_deleting
    with atomic.atomic_dir(final) as tmp:
        for i in range({cases}):
            (tmp / f"case{{i:03}}.txt").write_text("new")
    """
).format(cases=CASES)


def fill(root: Path, tag: str) -> None:
    for i in range(CASES):
        (root / f"case{i:03}.txt").write_text(tag)


def contents(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(root.iterdir())}


def whole(tag: str) -> dict[str, str]:
    return {f"case{i:03}.txt": tag for i in range(CASES)}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture
def old_tree(tmp_path: Path) -> Path:
    final = tmp_path / "out"
    final.mkdir()
    fill(final, "old")
    return final


# ---------------------------------------------------------------- killed replacement


@pytest.mark.parametrize("strategy", ["exchange", "renames"])
def test_kill_while_replacing_leaves_one_whole_tree_and_the_next_run_cleans_up(old_tree: Path, strategy: str) -> None:
    ready = old_tree.parent.parent / f"ready-{strategy}"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(old_tree), str(ready), strategy])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the writer never started deleting (exit code {child.poll()})"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert contents(old_tree) == whole("new")  # whole: the new tree was swapped in before the old one was deleted
    with atomic_dir(old_tree) as tmp:
        fill(tmp, "newer")
    assert contents(old_tree) == whole("newer")
    assert siblings(old_tree) == ["out"]  # the half-deleted old tree and the stale lock are gone


def test_failure_to_rename_the_new_tree_in_keeps_the_old_one(old_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False, raising=False)
    real_rename, real_replace = os.rename, os.replace

    def refuse_new_tree(rename):
        def fake(src, dst, *args, **kwargs):
            if Path(src).name.endswith(".tmp") and Path(dst) == old_tree:
                raise OSError(errno.EIO, "simulated I/O error", str(src))
            return rename(src, dst, *args, **kwargs)
        return fake

    monkeypatch.setattr(os, "rename", refuse_new_tree(real_rename))
    monkeypatch.setattr(os, "replace", refuse_new_tree(real_replace))
    with pytest.raises(OSError, match="simulated"), atomic_dir(old_tree) as tmp:
        fill(tmp, "new")
    assert contents(old_tree) == whole("old")
    assert siblings(old_tree) == ["out"]


def test_a_symlink_at_the_path_is_replaced_and_its_target_left_alone(tmp_path: Path, old_tree: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(old_tree)
    with atomic_dir(link) as tmp:
        (tmp / "a.txt").write_text("new")
    assert not link.is_symlink() and contents(link) == {"a.txt": "new"}
    assert contents(old_tree) == whole("old")


# ---------------------------------------------------------------- leftovers of killed writers


def test_folder_leftovers_of_the_same_name_are_removed_and_others_kept(old_tree: Path) -> None:
    parent = old_tree.parent
    stale = [".out.k1ll3d_0.tmp", ".out.abcdefgh.old"]
    others = [".out.v2.abcdefgh.tmp", ".outer.abcdefgh.tmp", ".out.toolongtoken.tmp", "out.abcdefgh.tmp", ".out.notes"]
    for name in stale + others:
        (parent / name).mkdir()
        (parent / name / "case000.txt").write_text("partial")
    with atomic_dir(old_tree) as tmp:
        fill(tmp, "new")
    assert contents(old_tree) == whole("new")
    assert siblings(old_tree) == sorted(["out", *others])


def test_file_leftovers_of_the_same_name_are_removed_and_others_kept(tmp_path: Path) -> None:
    final = tmp_path / "scores.csv"
    stale = [".scores.csv.abcdefgh.tmp.csv", ".scores.csv.12345678.tmp", ".scores.csv.lock"]
    others = [".scores.csv2.abcdefgh.tmp.csv2", ".scores.abcdefgh.tmp", ".scores.csv.backup"]
    for name in stale + others:
        (tmp_path / name).write_text("partial")
    write_text(final, "a,b\n")
    assert final.read_text() == "a,b\n"
    assert siblings(final) == sorted(["scores.csv", *others])


# ---------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("context", [atomic_dir, atomic_path], ids=["folder", "file"])
def test_a_second_writer_of_the_same_path_fails_at_once_naming_the_first(tmp_path: Path, context) -> None:
    final = tmp_path / "out"
    with context(final) as first:
        with pytest.raises(GliosegError, match="another process is writing") as err, context(final):
            pass
        message = str(err.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}" in message and str(final) in message
        assert first.exists()  # the first writer's work is untouched
    assert os.path.lexists(final) and siblings(final) == ["out"]  # and no lock file is left


def test_writers_of_different_paths_do_not_block_each_other(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "a") as a, atomic_dir(tmp_path / "a.b") as ab, atomic_path(tmp_path / "a.txt") as at:
        (a / "x").write_text("a")
        (ab / "x").write_text("ab")
        at.write_text("at")
    assert siblings(tmp_path / "a") == ["a", "a.b", "a.txt"]
