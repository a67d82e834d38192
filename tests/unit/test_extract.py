"""Tests for glioseg.acquire.extract: round trips, nesting, hostile and broken archives."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from glioseg.acquire import extract
from glioseg.acquire.extract import extract_archive
from glioseg.errors import GliosegError

PAYLOAD = {
    "README.txt": b"hello\n",
    "Case1/t1.nii.gz": gzip.compress(b"\x00\x01" * 300, mtime=0),
    "Case1/sub/seg.bin": bytes(range(256)) * 8,
}
TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}


# ---------------------------------------------------------------- fixtures


def make_zip(path: Path, files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding `files` (name -> bytes); names are stored verbatim, even hostile ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def make_tar(path: Path, files: dict[str, bytes], *, mode: str = "w", extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    """A tar holding `files` as regular members, then any hand-built `extra` members (links, devices...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
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
        monkeypatch.setattr(extract, "_TAR_FILTER", {})
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
    with pytest.raises(GliosegError, match="escape.txt"):
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
        "tar_chardev": (make_tar(build / "h.tar.gz", ok, mode="w:gz", extra=[tar_entry("null", tarfile.CHRTYPE)]), "null", "character device"),
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
