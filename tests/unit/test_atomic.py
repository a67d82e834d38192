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


# ---------------------------------------------------------------- outputs that cannot or must not be written


def test_a_folder_is_not_put_in_a_files_place_nor_a_file_in_a_folders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GliosegError, match="is a file; a folder is written here") as err, atomic_dir(tmp_path / "notes.txt"):
        pass
    assert err.value.path == tmp_path / "notes.txt" and (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "results").mkdir()
    with pytest.raises(GliosegError, match="is a folder; a file is written here"), atomic_path(tmp_path / "results"):
        pass
    assert siblings(tmp_path / "results") == ["notes.txt", "results"]


def test_a_folder_holding_what_the_writer_does_not_write_is_refused_before_any_work(old_tree: Path) -> None:
    ran = []
    with pytest.raises(GliosegError) as err, atomic_dir(old_tree, replaces=lambda entry: entry.name == "case000.txt"):
        ran.append(True)
    assert not ran and err.value.path == old_tree
    assert "does not write (case001.txt, case002.txt, case003.txt, case004.txt, case005.txt and" in err.value.problem
    assert "delete them" in err.value.problem and "nothing was written" in err.value.hint
    assert contents(old_tree) == whole("old") and siblings(old_tree) == ["out"]
    with atomic_dir(old_tree, replaces=lambda entry: entry.suffix == ".txt") as tmp:  # its own earlier output: replaced
        (tmp / "a.txt").write_text("new")
    assert contents(old_tree) == {"a.txt": "new"}


def test_an_output_folder_that_cannot_be_written_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "readonly"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))  # root ignores modes
    for context in (atomic_dir, atomic_path):
        with pytest.raises(GliosegError, match=r"cannot write in this output folder \(read-only") as err, context(locked / "out"):
            pass
        assert err.value.path == locked and "nothing was written" in err.value.hint
    (tmp_path / "file").write_text("")
    with pytest.raises(GliosegError, match="cannot create this output folder") as err, atomic_path(tmp_path / "file" / "sub" / "x.csv"):
        pass
    assert str(tmp_path / "file") in err.value.message


@pytest.mark.parametrize("context", [atomic_dir, atomic_path], ids=["folder", "file"])
def test_a_full_disk_is_named_and_leaves_the_old_output(old_tree: Path, context) -> None:
    final = old_tree if context is atomic_dir else old_tree / "case000.txt"
    with pytest.raises(GliosegError, match=r"the disk is full \(No space left on device\); nothing was written") as err, \
            context(final):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert err.value.path == final and "df -h" in err.value.hint
    assert contents(old_tree) == whole("old") and siblings(old_tree) == ["out"]


def test_a_refused_write_is_still_the_oserror_it_stands_for(tmp_path):
    """Callers that word disk problems themselves (extraction, predict) catch OSError and read its errno."""
    (tmp_path / "out.nii.gz").mkdir()
    with pytest.raises(OSError) as caught, atomic_path(tmp_path / "out.nii.gz"):
        pass
    assert isinstance(caught.value, GliosegError) and caught.value.errno == errno.EISDIR
    assert caught.value.strerror == os.strerror(errno.EISDIR) and str(caught.value).startswith(f"{tmp_path / 'out.nii.gz'}: is a folder")
