"""Tests for glioseg.acquire.extract: round trips, nesting, hostile and broken archives."""

from __future__ import annotations

import builtins
import errno
import gzip
import io
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
import warnings
import zipfile
from collections import namedtuple
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from glioseg.acquire import extract
from glioseg.acquire.extract import extract_archive
from glioseg.cli import main as cli_main
from glioseg.errors import GliosegError

PAYLOAD = {
    "README.txt": b"hello\n",
    "Case1/t1.nii.gz": gzip.compress(b"\x00\x01" * 300, mtime=0),
    "Case1/sub/seg.bin": bytes(range(256)) * 8,
}
TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}
OLD_DISK_HINT = "Check free disk space and write permission"  # what every write problem used to say

Files = Mapping[str, bytes] | Sequence[tuple[str, bytes]]


# ---------------------------------------------------------------- fixtures


def entries(files: Files) -> Sequence[tuple[str, bytes]]:
    """(name, bytes) pairs from a dict, or from a list of pairs (which can repeat a name)."""
    return list(files.items()) if isinstance(files, Mapping) else files


def make_zip(path: Path, files: Files, *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding `files` (name -> bytes); names are stored verbatim, even hostile or repeated ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" warning
        for name, data in entries(files):
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
    return path


def make_tar(path: Path, files: Files, *, mode: str = "w", extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    """A tar holding `files` as regular members, then any hand-built `extra` members (links, devices...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, data in entries(files):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return path


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A data-less tar member of type `kind` (link, device, FIFO, folder)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative POSIX path -> bytes): the whole observable result."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def truncate(path: Path) -> Path:
    """Cut the file in half, like an interrupted download."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / "dataset"


# ---------------------------------------------------------------- round trips


def test_zip_round_trip_gives_exact_bytes(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    assert extract_archive(archive, dest) == dest
    assert tree(dest) == PAYLOAD


@pytest.mark.parametrize("fmt", sorted(TAR_MODES))
def test_tar_round_trip_gives_exact_bytes(tmp_path: Path, dest: Path, fmt: str) -> None:
    archive = make_tar(tmp_path / "in" / f"data.{fmt}", PAYLOAD, mode=TAR_MODES[fmt])
    extract_archive(archive, dest)
    assert tree(dest) == PAYLOAD


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("really_a_tgz.zip", lambda p: make_tar(p, PAYLOAD, mode="w:gz")),
        ("really_a_zip.tar.gz", lambda p: make_zip(p, PAYLOAD)),
        ("no_extension", lambda p: make_tar(p, PAYLOAD, mode="w:xz")),
    ],
)
def test_format_is_detected_from_content_not_extension(tmp_path: Path, dest: Path, name: str, build) -> None:
    archive = build(tmp_path / "in" / name)
    extract_archive(archive, dest)
    assert tree(dest) == PAYLOAD


def test_unknown_format_names_archive_and_supported_formats(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "in" / "notes.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"just some text, not an archive\n" * 40)
    with pytest.raises(GliosegError, match="supported") as err:
        extract_archive(archive, dest)
    assert str(archive) in str(err.value)
    assert "tar.gz" in str(err.value) and "zip" in str(err.value)
    assert not dest.exists()


def test_missing_archive_is_a_gliosegerror(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(GliosegError, match="not found"):
        extract_archive(tmp_path / "nope.zip", dest)


def test_archive_inside_dest_is_refused_before_it_could_be_deleted(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "data" / "raw.zip", PAYLOAD)
    with pytest.raises(GliosegError, match="inside the destination"):
        extract_archive(archive, tmp_path / "data")
    assert archive.is_file()


@pytest.mark.parametrize("data_filter", [True, False], ids=["with_data_filter", "python_without_it"])
def test_setuid_and_readonly_bits_are_not_preserved(
    tmp_path: Path, dest: Path, data_filter: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not data_filter:
        monkeypatch.setattr(extract, "_DATA_FILTER", None)
    tool = tarfile.TarInfo("locked/tool")
    tool.mode = 0o4777
    locked = tar_entry("locked", tarfile.DIRTYPE)
    locked.mode = 0o555
    archive = make_tar(tmp_path / "in" / "modes.tar", {}, extra=[locked, tool])
    extract_archive(archive, dest)
    tool_mode = (dest / "locked" / "tool").stat().st_mode
    assert not tool_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH)
    assert (dest / "locked").stat().st_mode & stat.S_IWUSR  # still removable by us


# ---------------------------------------------------------------- nested archives


def test_nested_tar_in_zip_is_unpacked_in_place_and_removed(tmp_path: Path, dest: Path) -> None:
    scan = gzip.compress(b"NIfTI bytes", mtime=0)
    plain = gzip.compress(b"plain image", mtime=0)
    inner = make_tar(tmp_path / "build" / "BraTS_Data.tar", {"Case1/a.nii.gz": scan})
    archive = make_zip(tmp_path / "in" / "brats.zip", {"BraTS_Data.tar": inner.read_bytes(), "b.nii.gz": plain})
    extract_archive(archive, dest)
    assert tree(dest) == {"BraTS_Data/Case1/a.nii.gz": scan, "b.nii.gz": plain}


def test_nesting_is_recursive_across_formats(tmp_path: Path, dest: Path) -> None:
    case = make_tar(tmp_path / "build" / "case.tar", {"x.txt": b"deep"})
    middle = make_tar(tmp_path / "build" / "middle.tar.gz", {"Case/case.tar": case.read_bytes()}, mode="w:gz")
    archive = make_zip(tmp_path / "in" / "outer.zip", {"middle.tar.gz": middle.read_bytes()})
    extract_archive(archive, dest)
    assert tree(dest) == {"middle/Case/case/x.txt": b"deep"}


def test_nesting_deeper_than_the_limit_is_refused(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "MAX_NESTING", 1)
    case = make_tar(tmp_path / "build" / "case.tar", {"x.txt": b"deep"})
    middle = make_tar(tmp_path / "build" / "middle.tar", {"case.tar": case.read_bytes()})
    archive = make_zip(tmp_path / "in" / "outer.zip", {"middle.tar": middle.read_bytes()})
    with pytest.raises(GliosegError, match="nested more than 1 levels") as err:
        extract_archive(archive, dest)
    assert str(archive / "middle.tar" / "case.tar") in str(err.value)
    assert not dest.exists()


def test_macos_sidecar_files_named_like_archives_are_left_alone(tmp_path: Path, dest: Path) -> None:
    inner = make_tar(tmp_path / "build" / "inner.tar", {"a.txt": b"a"}).read_bytes()
    sidecar = b"\x00\x05\x16\x07 AppleDouble resource fork"
    archive = make_zip(tmp_path / "in" / "outer.zip", {"inner.tar": inner, "__MACOSX/._inner.tar": sidecar})
    extract_archive(archive, dest)
    assert tree(dest) == {"inner/a.txt": b"a", "__MACOSX/._inner.tar": sidecar}


def test_nested_false_leaves_inner_archives_alone(tmp_path: Path, dest: Path) -> None:
    inner = make_tar(tmp_path / "build" / "inner.tar", {"a.txt": b"a"}).read_bytes()
    archive = make_zip(tmp_path / "in" / "outer.zip", {"inner.tar": inner})
    extract_archive(archive, dest, nested=False)
    assert tree(dest) == {"inner.tar": inner}


def test_corrupt_inner_archive_names_it_and_leaves_no_dest(tmp_path: Path, dest: Path) -> None:
    inner = truncate(make_tar(tmp_path / "build" / "inner.tar.gz", PAYLOAD, mode="w:gz")).read_bytes()
    archive = make_zip(tmp_path / "in" / "outer.zip", {"ok.txt": b"ok", "inner.tar.gz": inner})
    with pytest.raises(GliosegError, match="truncated or corrupt") as err:
        extract_archive(archive, dest)
    assert str(archive / "inner.tar.gz") in str(err.value)
    assert not dest.exists()


def test_unsafe_member_in_inner_archive_is_refused(tmp_path: Path, dest: Path) -> None:
    inner = make_tar(tmp_path / "build" / "inner.tar", {"../../escape.txt": b"x"}).read_bytes()
    archive = make_zip(tmp_path / "in" / "outer.zip", {"inner.tar": inner})
    with pytest.raises(GliosegError, match=r"escape\.txt"):
        extract_archive(archive, dest)
    assert not dest.exists()
    assert not list(tmp_path.rglob("escape.txt"))


def test_inner_archive_clashing_with_a_folder_is_refused(tmp_path: Path, dest: Path) -> None:
    inner = make_tar(tmp_path / "build" / "Case1.tar", {"a.txt": b"a"}).read_bytes()
    archive = make_zip(tmp_path / "in" / "outer.zip", {"Case1.tar": inner, "Case1/b.txt": b"b"})
    with pytest.raises(GliosegError, match="already exists"):
        extract_archive(archive, dest)
    assert not dest.exists()


# ---------------------------------------------------------------- hostile archives


def _zip_symlink(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        link = zipfile.ZipInfo("evil_link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return path


def _hostile_cases(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (archive, offending member, phrase of OUR message); each archive has a harmless member first.

    The phrase proves our own check refused the member, not tarfile's data
    filter (whose wording differs, and which lets some of these through).
    """
    absolute = str(tmp_path / "abs" / "evil.txt")
    ok = {"ok.txt": b"fine"}
    build = tmp_path / "in"
    return {
        "tar_dotdot": (make_tar(build / "a.tar", {**ok, "../evil.txt": b"x"}), "../evil.txt", "'..'"),
        "tar_absolute": (make_tar(build / "b.tar", {**ok, absolute: b"x"}), absolute, "absolute path"),
        "tar_drive": (make_tar(build / "c.tar", {**ok, "C:/evil.txt": b"x"}), "C:/evil.txt", "absolute path"),
        "tar_backslash": (make_tar(build / "d.tar", {**ok, "sub\\..\\..\\evil.txt": b"x"}), "evil.txt", "'..'"),
        "tar_symlink": (make_tar(build / "e.tar", ok, extra=[tar_entry("link", tarfile.SYMTYPE, "/etc")]), "link", "symbolic link"),
        "tar_hardlink": (make_tar(build / "f.tar", ok, extra=[tar_entry("hard", tarfile.LNKTYPE, "ok.txt")]), "hard", "hard link"),
        "tar_fifo": (make_tar(build / "g.tar", ok, extra=[tar_entry("pipe", tarfile.FIFOTYPE)]), "pipe", "FIFO"),
        "tar_chardev": (make_tar(build / "h.tar.gz", ok, mode="w:gz", extra=[tar_entry("null", tarfile.CHRTYPE)]),
                        "null", "character device"),
        "zip_dotdot": (make_zip(build / "i.zip", {**ok, "../evil.txt": b"x"}), "../evil.txt", "'..'"),
        "zip_absolute": (make_zip(build / "j.zip", {**ok, absolute: b"x"}), absolute, "absolute path"),
        "zip_backslash": (make_zip(build / "k.zip", {**ok, "..\\evil.txt": b"x"}), "evil.txt", "'..'"),
        "zip_symlink": (_zip_symlink(build / "l.zip"), "evil_link", "symbolic link"),
    }


HOSTILE = [
    "tar_dotdot", "tar_absolute", "tar_drive", "tar_backslash", "tar_symlink", "tar_hardlink",
    "tar_fifo", "tar_chardev", "zip_dotdot", "zip_absolute", "zip_backslash", "zip_symlink",
]  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_member_is_refused_before_anything_is_written(tmp_path: Path, dest: Path, case: str) -> None:
    archive, member, phrase = _hostile_cases(tmp_path)[case]
    with pytest.raises(GliosegError, match="refusing") as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert member in message and str(archive) in message and phrase in message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no leftover temporary folder either
    written = {p for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink()}
    assert written == set((tmp_path / "in").iterdir())  # only the fixture archives


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="Python without tarfile's data filter")
def test_data_filter_still_refuses_if_our_check_missed_something(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extract, "_check_tar_member", lambda member, label: None)
    archive = make_tar(tmp_path / "in" / "a.tar", {"../evil.txt": b"x"})
    with pytest.raises(GliosegError, match="refusing") as err:
        extract_archive(archive, dest)
    assert "evil.txt" in str(err.value) and "corrupt" not in str(err.value)
    assert not list(tmp_path.rglob("evil.txt")) and not dest.exists()


def test_encrypted_zip_member_is_a_gliosegerror(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "in" / "secret.zip", {"secret.txt": b"ciphertext"})
    raw = bytearray(archive.read_bytes())  # zipfile cannot encrypt, so set the flag bit by hand
    raw[raw.find(b"PK\x03\x04") + 6] |= 0x1  # local header
    raw[raw.find(b"PK\x01\x02") + 8] |= 0x1  # central directory
    archive.write_bytes(bytes(raw))
    with pytest.raises(GliosegError, match="encrypted"):
        extract_archive(archive, dest)
    assert not dest.exists()


# ---------------------------------------------------------------- broken archives


@pytest.mark.parametrize("fmt", ["zip", *sorted(TAR_MODES)])
def test_truncated_archive_says_so_and_leaves_no_dest(tmp_path: Path, dest: Path, fmt: str) -> None:
    big = {**PAYLOAD, "noise.bin": os.urandom(64 * 1024)}
    path = tmp_path / "in" / f"data.{fmt}"
    archive = make_zip(path, big) if fmt == "zip" else make_tar(path, big, mode=TAR_MODES[fmt])
    truncate(archive)
    with pytest.raises(GliosegError, match="archive is truncated or corrupt") as err:
        extract_archive(archive, dest)
    assert str(archive) in str(err.value)
    assert "download it again" in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def flip_middle_byte(path: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("fmt", ["tar.bz2", "tar.xz"])
def test_flipped_byte_in_compressed_tar_is_caught(tmp_path: Path, dest: Path, fmt: str) -> None:
    archive = make_tar(tmp_path / "in" / f"data.{fmt}", {"noise.bin": os.urandom(64 * 1024)}, mode=TAR_MODES[fmt])
    with pytest.raises(GliosegError, match="archive is truncated or corrupt"):
        extract_archive(flip_middle_byte(archive), dest)
    assert not dest.exists()


def test_flipped_byte_in_tar_gz_is_caught_by_the_trailing_crc(tmp_path: Path, dest: Path) -> None:
    # Stored (level 0) deflate blocks hold the bytes verbatim, so only gzip's CRC at the very end notices.
    tar_bytes = make_tar(tmp_path / "build" / "data.tar", {"noise.bin": os.urandom(64 * 1024)}).read_bytes()
    archive = tmp_path / "in" / "data.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(gzip.compress(tar_bytes, compresslevel=0, mtime=0))
    with pytest.raises(GliosegError, match="archive is truncated or corrupt") as err:
        extract_archive(flip_middle_byte(archive), dest)
    assert "download it again" in str(err.value)
    assert not dest.exists()


def test_zip_member_with_bad_crc_is_corrupt(tmp_path: Path, dest: Path) -> None:
    content = b"exactly these bytes " * 50
    archive = make_zip(tmp_path / "in" / "crc.zip", {"a.txt": content}, compression=zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    raw[raw.find(content)] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(GliosegError, match="truncated or corrupt"):
        extract_archive(archive, dest)
    assert not dest.exists()


# ---------------------------------------------------------------- atomic replacement


def test_failed_reextraction_keeps_the_earlier_good_dest(tmp_path: Path, dest: Path) -> None:
    good = make_tar(tmp_path / "in" / "good.tar.gz", PAYLOAD, mode="w:gz")
    extract_archive(good, dest)
    before = tree(dest)
    bad = truncate(make_zip(tmp_path / "in" / "bad.zip", {"other.bin": os.urandom(32 * 1024)}))
    with pytest.raises(GliosegError):
        extract_archive(bad, dest)
    assert tree(dest) == before == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_unwritable_destination_is_a_gliosegerror_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where a folder should be")
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    with pytest.raises(GliosegError, match="could not write") as err:
        extract_archive(archive, blocker / "dataset")
    assert str(blocker / "dataset") in str(err.value)


def test_successful_reextraction_replaces_dest_entirely(tmp_path: Path, dest: Path) -> None:
    extract_archive(make_zip(tmp_path / "in" / "old.zip", {"stale.txt": b"old"}), dest)
    extract_archive(make_zip(tmp_path / "in" / "new.zip", PAYLOAD), dest)
    assert tree(dest) == PAYLOAD


# ---------------------------------------------------------------- decompression bombs

Usage = namedtuple("Usage", "total used free")


def zip_of(path: Path, name: str, data_chunks: int, *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip whose one member `name` is `data_chunks` MiB of zeros, written in chunks (never all in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf, zf.open(name, "w") as member:
        for _ in range(data_chunks):
            member.write(bytes(1 << 20))
    return path


def expansion(archive: Path, name: str) -> str:
    info = zipfile.ZipFile(archive).getinfo(name)
    return f"{info.file_size / info.compress_size:.0f}-fold"


def fake_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The defect as reported: a zip of about 300 KB whose one member writes 300 MiB."""
    return zip_of(tmp_path_factory.mktemp("bomb") / "bomb.zip", "zeros.bin", 300)


def test_zip_bomb_is_refused_with_the_defaults_naming_member_and_ratio(zip_bomb: Path, dest: Path) -> None:
    assert zip_bomb.stat().st_size < 400_000
    with pytest.raises(GliosegError, match=r"refusing to extract: member 'zeros\.bin' would expand") as err:
        extract_archive(zip_bomb, dest)
    message = str(err.value)
    assert str(zip_bomb) in message and expansion(zip_bomb, "zeros.bin") in message and "--max-ratio" in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_an_empty_label_volume_is_not_taken_for_a_bomb(tmp_path: Path, dest: Path) -> None:
    # An uncompressed 240x240x155 uint8 NIfTI label with no tumour deflates ~1030-fold: as far as deflate goes.
    empty_label = bytes(352 + 240 * 240 * 155)
    archive = make_zip(tmp_path / "in" / "labels.zip", {"Case1/seg.nii": empty_label})
    extract_archive(archive, dest)
    assert tree(dest) == {"Case1/seg.nii": empty_label}


@pytest.fixture
def small_ratio_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge ratios from 1 MiB up, so a few MiB show what the defaults do to hundreds."""
    monkeypatch.setattr(extract, "RATIO_MIN_BYTES", 1 << 20, raising=False)


@pytest.mark.usefixtures("small_ratio_floor")
def test_max_ratio_can_be_raised_for_a_genuine_archive(tmp_path: Path, dest: Path) -> None:
    archive = zip_of(tmp_path / "in" / "masks.zip", "masks/empty.nii", 4, compression=zipfile.ZIP_BZIP2)
    with pytest.raises(GliosegError, match=expansion(archive, "masks/empty.nii")):
        extract_archive(archive, dest)
    assert not dest.exists()
    extract_archive(archive, dest, max_ratio=1e9)
    assert tree(dest) == {"masks/empty.nii": bytes(4 << 20)}


@pytest.mark.usefixtures("small_ratio_floor")
def test_compressed_tar_is_judged_by_its_file_size_against_its_declared_total(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "in" / "masks.tar.bz2", {"a.nii": bytes(2 << 20), "b.nii": bytes(2 << 20)}, mode="w:bz2")
    ratio = f"{(4 << 20) / archive.stat().st_size:.0f}-fold"
    with pytest.raises(GliosegError, match="its contents would expand") as err:
        extract_archive(archive, dest)
    assert ratio in str(err.value) and str(archive) in str(err.value)
    extract_archive(archive, dest, max_ratio=None)
    assert tree(dest) == {"a.nii": bytes(2 << 20), "b.nii": bytes(2 << 20)}


@pytest.mark.usefixtures("small_ratio_floor")
def test_inner_archives_get_the_ratio_check_too(tmp_path: Path, dest: Path) -> None:
    inner = zip_of(tmp_path / "build" / "inner.zip", "zeros.bin", 4, compression=zipfile.ZIP_BZIP2)
    archive = make_zip(tmp_path / "in" / "outer.zip", {"inner.zip": inner.read_bytes()})
    with pytest.raises(GliosegError, match=r"member 'zeros\.bin' would expand") as err:
        extract_archive(archive, dest)
    assert str(archive / "inner.zip") in str(err.value)
    assert not dest.exists()


def test_total_size_limit_counts_nested_archives_and_can_be_raised(tmp_path: Path, dest: Path) -> None:
    inner = make_tar(tmp_path / "build" / "inner.tar", {"noise.bin": os.urandom(20_000)})
    archive = make_zip(tmp_path / "in" / "outer.zip", {"inner.tar": inner.read_bytes()})
    outer_total = inner.stat().st_size
    with pytest.raises(GliosegError, match="over the limit of") as err:
        extract_archive(archive, dest, max_total_bytes=outer_total + 10_000)
    assert str(archive / "inner.tar") in str(err.value) and "--max-size-gb" in str(err.value)
    assert not dest.exists()
    extract_archive(archive, dest, max_total_bytes=outer_total + 30_000)
    assert list(tree(dest)) == ["inner/noise.bin"]


def test_not_enough_free_space_is_refused_before_writing(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    fake_free_space(monkeypatch, extract.FREE_SPACE_MARGIN)  # the margin, and not a byte for the files
    with pytest.raises(GliosegError, match="not enough free space") as err:
        extract_archive(archive, dest)
    assert str(dest) in str(err.value) and str(archive) in str(err.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_free_space_is_checked_again_for_each_inner_archive(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = make_tar(tmp_path / "build" / "inner.tar.bz2", {"zeros.bin": bytes(1 << 20)}, mode="w:bz2")
    archive = make_zip(tmp_path / "in" / "outer.zip", {"inner.tar.bz2": inner.read_bytes()})
    fake_free_space(monkeypatch, extract.FREE_SPACE_MARGIN + 100_000)  # room for the outer zip, not for the inner tar
    with pytest.raises(GliosegError, match="not enough free space") as err:
        extract_archive(archive, dest)
    assert str(archive / "inner.tar.bz2") in str(err.value)
    assert not dest.exists()


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
@pytest.mark.parametrize(("real", "declared"), [(1 << 20, 1000), (8 << 20, 1000), (3 << 20, 1 << 20)],
                         ids=["ends_in_the_first_read", "goes_on_and_on", "declares_whole_chunks"])
def test_member_longer_than_its_header_declares_is_stopped(
    tmp_path: Path, dest: Path, compression: int, real: int, declared: int
) -> None:
    archive = tmp_path / "in" / "liar.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", compression=compression) as zf:
        zf.writestr("scan.nii", bytes(real))
    raw = bytearray(archive.read_bytes())
    struct.pack_into("<I", raw, raw.find(b"PK\x03\x04") + 22, declared)  # uncompressed size, local header
    struct.pack_into("<I", raw, raw.find(b"PK\x01\x02") + 24, declared)  # and central directory
    archive.write_bytes(bytes(raw))
    with pytest.raises(GliosegError, match=f"member 'scan.nii' holds more data than the {declared} bytes its header"):
        extract_archive(archive, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


@pytest.mark.usefixtures("small_ratio_floor")
def test_cli_flags_raise_the_limits(tmp_path: Path) -> None:
    masks = zip_of(tmp_path / "in" / "masks.zip", "empty.nii", 2, compression=zipfile.ZIP_BZIP2)
    data = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    out = tmp_path / "out"
    assert cli_main(["extract", "--archive", str(masks), "--out", str(out / "masks")]) == 2
    assert cli_main(["extract", "--archive", str(masks), "--out", str(out / "masks"), "--max-ratio", "1e9"]) == 0
    assert tree(out / "masks") == {"empty.nii": bytes(2 << 20)}
    assert cli_main(["extract", "--archive", str(data), "--out", str(out / "data"), "--max-size-gb", "0.000001"]) == 2
    assert not (out / "data").exists()
    assert cli_main(["extract", "--archive", str(data), "--out", str(out / "data"), "--max-size-gb", "1"]) == 0
    assert tree(out / "data") == PAYLOAD


# ---------------------------------------------------------------- members that cannot all be written


def make_archive(fmt: str, path: Path, files: Files) -> Path:
    return make_zip(path, files) if fmt == "zip" else make_tar(path, files)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("second", ["a/b.nii.gz", "a//b.nii.gz", "./a/b.nii.gz"], ids=["same", "double_slash", "dot"])
def test_two_members_written_to_one_path_are_refused_naming_both(tmp_path: Path, dest: Path, fmt: str, second: str) -> None:
    files = [("ok.txt", b"ok"), ("a/b.nii.gz", b"first"), (second, b"second")]
    archive = make_archive(fmt, tmp_path / "in" / f"dup.{fmt}", files)
    with pytest.raises(GliosegError, match=r"both written to 'a/b\.nii\.gz'") as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert f"'a/b.nii.gz' (entry 2) and {second!r} (entry 3)" in message and str(archive) in message
    assert OLD_DISK_HINT not in message
    assert not dest.exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("files", [[("x", b"file"), ("x/y", b"in a folder")], [("x/y", b"in a folder"), ("x", b"file")]],
                         ids=["file_first", "folder_first"])
def test_a_file_and_a_folder_of_the_same_name_are_refused_naming_both(tmp_path: Path, dest: Path, fmt: str, files) -> None:
    archive = make_archive(fmt, tmp_path / "in" / f"clash.{fmt}", files)
    with pytest.raises(GliosegError, match=r"member 'x' .* is a file, but member 'x/y' .* needs a folder") as err:
        extract_archive(archive, dest)
    assert str(archive) in str(err.value) and OLD_DISK_HINT not in str(err.value)
    assert not dest.exists()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_member_name_over_the_file_system_limit_is_named(tmp_path: Path, dest: Path, fmt: str) -> None:
    name = "c" * 300 + "/seg.nii.gz"
    archive = make_archive(fmt, tmp_path / "in" / f"long.{fmt}", {"ok.txt": b"ok", name: b"x"})
    with pytest.raises(GliosegError, match="has a name part of 300 bytes") as err:
        extract_archive(archive, dest)
    assert name in str(err.value) and OLD_DISK_HINT not in str(err.value)
    assert not dest.exists()


def test_member_path_over_the_system_limit_is_named(tmp_path: Path, dest: Path) -> None:
    name = "/".join(["d" * 200] * 25) + "/seg.nii.gz"
    archive = make_zip(tmp_path / "in" / "deep.zip", {name: b"x"})
    with pytest.raises(GliosegError, match=r"would get a path of .* bytes below the destination") as err:
        extract_archive(archive, dest)
    assert name in str(err.value) and "shorter path" in str(err.value) and OLD_DISK_HINT not in str(err.value)
    assert not dest.exists()


def test_inner_archive_named_only_by_its_extension_is_a_clear_error(tmp_path: Path, dest: Path) -> None:
    inner = make_zip(tmp_path / "build" / "inner.zip", {"a.txt": b"a"}).read_bytes()
    archive = make_zip(tmp_path / "in" / "outer.zip", {"sub/.zip": inner})
    with pytest.raises(GliosegError, match="only an extension") as err:
        extract_archive(archive, dest)
    assert str(archive / "sub" / ".zip") in str(err.value)
    assert not dest.exists()


# ---------------------------------------------------------------- destinations that are not what they seem


def test_destination_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(real)
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    with pytest.raises(GliosegError, match="the destination is a symbolic link") as err:
        extract_archive(archive, link)
    assert str(real) in str(err.value) and OLD_DISK_HINT not in str(err.value)
    assert link.is_symlink() and tree(real) == {"keep.txt": b"keep"}


def test_destination_that_is_a_file_is_refused_not_replaced(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    before = archive.read_bytes()
    with pytest.raises(GliosegError, match="is a file, not a folder") as err:
        extract_archive(archive, archive)  # --out given the archive's own path by mistake
    assert OLD_DISK_HINT not in str(err.value)
    assert archive.read_bytes() == before


def test_destination_below_a_broken_symlink_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    with pytest.raises(GliosegError, match=r"is a symbolic link to .*gone, which does not exist") as err:
        extract_archive(archive, tmp_path / "out" / "dataset")
    assert OLD_DISK_HINT not in str(err.value)
    assert not (tmp_path / "gone").exists()


def test_destination_below_a_symlinked_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "data").symlink_to(tmp_path / "scratch")
    extract_archive(make_zip(tmp_path / "in" / "data.zip", PAYLOAD), tmp_path / "data" / "raw")
    assert tree(tmp_path / "scratch" / "raw") == PAYLOAD


# A first extraction that stops (as if slow) right before it writes, after saying so.
PAUSED_EXTRACTION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from glioseg.acquire import extract

    archive, dest, ready = map(Path, sys.argv[1:])
    real_progress = extract._progress

    def paused(members, label):
        ready.write_text("extracting")
        time.sleep(120)
        return real_progress(members, label)

    extract._progress = paused
    extract.extract_archive(archive, dest)
    """
)


def test_second_extraction_into_the_same_dest_fails_at_once_naming_the_first(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    ready = tmp_path / "ready"
    first = subprocess.Popen([sys.executable, "-c", PAUSED_EXTRACTION, str(archive), str(dest), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the first extraction never started (exit code {first.poll()})"
        started = time.monotonic()
        with pytest.raises(GliosegError, match="another process is writing this right now") as err:
            extract_archive(archive, dest)
        assert time.monotonic() - started < 5  # at once, not after the first one finished
        assert f"host {socket.gethostname()}, pid {first.pid}" in str(err.value) and str(dest) in str(err.value)
    finally:
        first.kill()
        first.wait()
    extract_archive(archive, dest)  # the killed first one's leftovers are no obstacle, and are cleared
    assert tree(dest) == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


# ---------------------------------------------------------------- real disk problems


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "the file system is full"),
        (errno.EDQUOT, "your disk quota is used up"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EIO, "Input/output error"),
    ],
    ids=["ENOSPC", "EDQUOT", "EACCES", "EROFS", "other"],
)
def test_write_failures_say_what_happened_per_errno(
    tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    archive = make_zip(tmp_path / "in" / "data.zip", PAYLOAD)
    real_open = builtins.open

    def failing_open(file, mode="r", *args, **kwargs):
        if str(dest.parent) in str(file) and ("w" in mode or "x" in mode):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    with pytest.raises(GliosegError, match=f"could not write the extracted files: {words}") as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert str(dest) in message and OLD_DISK_HINT not in message
    assert ("Free space" in message) == (code == errno.ENOSPC)
    assert not dest.exists()
