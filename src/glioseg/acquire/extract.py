"""Safe, atomic extraction of dataset archives (zip and tar, plain or compressed).

Archives come from third parties, so they are untrusted input: every member is
checked before anything is written, and only plain files and folders are ever
created. Extraction happens in a temporary sibling folder that replaces ``dest``
only once everything succeeded, so a killed job, a malicious member or a
truncated download never leaves a ``dest`` that looks complete.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from tqdm import tqdm

from glioseg.atomic import atomic_dir
from glioseg.errors import GliosegError

SUPPORTED_FORMATS = "zip, tar, tar.gz / tgz, tar.bz2, tar.xz"
NESTED_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_NESTING = 5
PROGRESS_MIN_MEMBERS = 100

Format = Literal["zip", "tar"]
T = TypeVar("T")

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_COMPRESSED_TAR_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO (named pipe)",
}
# Errors that mean the archive's bytes are bad, not that the disk is.
_CORRUPT_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
# Python >= 3.11.4 ships tarfile's "data" filter; use it as a second line of defence.
_TAR_FILTER: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


def extract_archive(archive: str | Path, dest: str | Path, *, nested: bool = True) -> Path:
    """Extract a zip / tar / tar.gz / tgz / tar.bz2 / tar.xz archive into `dest` atomically.

    The format is read from the file's content, not its name. With ``nested``,
    archives found inside are unpacked in place (into a folder named after each,
    which is then deleted) so the tree holds data only. ``dest`` is replaced only
    when everything succeeded; on any error it is left exactly as it was.
    """
    source, final = Path(archive), Path(dest)
    _check_inputs(source, final)
    try:
        with atomic_dir(final) as tmp:
            _extract_into(source, tmp, label=source, origin=source)
            if nested:
                _extract_nested(tmp, label=source, origin=source, level=1)
    except OSError as exc:  # archive-side OSErrors became GliosegError already: this is the disk
        raise GliosegError(
            f"could not write the extracted files ({exc.strerror or exc})",
            path=final,
            hint="Check free disk space and write permission for the destination folder.",
        ) from exc
    return final


def _check_inputs(source: Path, final: Path) -> None:
    """Refuse a missing archive, and one inside `dest`, which the final swap would delete."""
    if not source.is_file():
        raise GliosegError("archive not found", path=source, hint="Download it first, or fix the archive path in the config.")
    if final.resolve() in source.resolve().parents:
        raise GliosegError(
            f"the archive lies inside the destination folder {final}, which extraction replaces",
            path=source,
            hint="Extract into a folder that does not contain the archive.",
        )


def _extract_into(archive: Path, out: Path, *, label: Path, origin: Path) -> None:
    """Extract one archive into the existing folder `out`, turning bad bytes into a GliosegError.

    `label` names the archive in messages (``outer.zip/inner.tar`` for nested
    ones); `origin` is the file the user has to fetch again if the bytes are bad.
    """
    fmt = _detect_format(archive)
    if fmt is None:
        raise GliosegError(
            f"not a supported archive (supported: {SUPPORTED_FORMATS}), or it is truncated or corrupt",
            path=label,
            hint=f"Check that {origin} is the dataset archive; if so, delete it and download it again.",
        )
    try:
        if fmt == "zip":
            _extract_zip(archive, out, label)
        else:
            _extract_tar(archive, out, label)
    except _FILTER_ERRORS as exc:  # tarfile's filter caught something our own check let through
        raise _unsafe(label, str(exc)) from exc
    except _CORRUPT_ERRORS as exc:
        raise _corrupt(label, origin) from exc
    except OSError as exc:
        if exc.errno is not None:  # a real OS error (disk full, permissions): the caller reports it
            raise
        raise _corrupt(label, origin) from exc  # decompressors (gzip, bz2) raise errno-less OSErrors


def _detect_format(archive: Path) -> Format | None:
    """Tell zip from tar by content, because downloaded files are often misnamed.

    Magic bytes come first so a truncated archive (whose zip directory or tar
    header may be cut off) is still recognised and reported as truncated rather
    than as an unknown format.
    """
    with archive.open("rb") as fh:
        head = fh.read(512)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_COMPRESSED_TAR_MAGIC) or head[257:262] == b"ustar":
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    return "tar" if _is_old_tar(archive) else None


def _is_old_tar(archive: Path) -> bool:
    """Recognise pre-POSIX tars (no ``ustar`` magic) by their header checksum."""
    try:
        return tarfile.is_tarfile(archive)
    except (*_CORRUPT_ERRORS, OSError):
        return False


def _extract_zip(archive: Path, out: Path, label: Path) -> None:
    """Check every zip entry, then extract them all (zipfile writes plain files and folders only)."""
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_zip_member(info, label)
        for info in _progress(members, label):
            zf.extract(info, out)


def _check_zip_member(info: zipfile.ZipInfo, label: Path) -> None:
    """Refuse entries that could escape `out`, and ones zipfile cannot read (which would raise raw errors)."""
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _unsafe(label, f"member {info.filename!r} is a symbolic link")
    problem = _name_problem(info.filename)
    if problem:
        raise _unsafe(label, f"member {info.filename!r} {problem}")
    if info.flag_bits & 0x1:
        raise _unreadable(label, f"member {info.filename!r} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise _unreadable(label, f"member {info.filename!r} uses compression method {info.compress_type}, which Python cannot read")


def _extract_tar(archive: Path, out: Path, label: Path) -> None:
    """Check every tar member, then extract them with harmless permissions (and the data filter where available)."""
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_tar_member(member, label)
        tf.extractall(out, members=_progress([_defang(m) for m in members], label), **_TAR_FILTER)
        _read_to_end(tf)


def _read_to_end(tf: tarfile.TarFile) -> None:
    """Read the rest of the (decompressed) stream so gzip checks its CRC, which sits after the last member.

    Without this a tar.gz with flipped bytes in the middle extracts "successfully"
    with wrong data; the remainder is only end-of-archive padding, so it is cheap.
    """
    while tf.fileobj.read(1 << 20):
        pass


def _check_tar_member(member: tarfile.TarInfo, label: Path) -> None:
    """Allow regular files and folders with names that stay inside `out`; nothing else."""
    if not (member.isreg() or member.isdir()):
        kind = _TAR_KINDS.get(member.type, "a special file")
        raise _unsafe(label, f"member {member.name!r} is {kind}; only regular files and folders are allowed")
    problem = _name_problem(member.name)
    if problem:
        raise _unsafe(label, f"member {member.name!r} {problem}")


def _name_problem(name: str) -> str | None:
    """Say why a member name could land outside the destination, or None when it cannot.

    Backslashes count as separators too, so ``..\\evil`` is caught even though
    POSIX would treat it as one odd file name.
    """
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "has an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' component that climbs out of the destination folder"
    return None


def _defang(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Drop setuid/setgid/sticky and group/other-write bits and the archive's owner.

    The owner always keeps read/write (and search on folders) so a failed run
    can be cleaned up; the ownership reset matters on Pythons without the data
    filter, where extracting as root would otherwise chown to archive-chosen users.
    """
    owner_bits = 0o700 if member.isdir() else 0o600
    member.mode = (member.mode & 0o755) | owner_bits
    member.uid, member.gid = os.getuid(), os.getgid()
    member.uname = member.gname = ""
    return member


def _extract_nested(root: Path, *, label: Path, origin: Path, level: int) -> None:
    """Unpack every archive under `root` into a folder named after it, delete it, and recurse.

    Datasets such as BraTS 2021 on Kaggle are a zip of tars; unpacking them here
    keeps downstream stages free of archive handling. The list is taken before
    any unpacking, so each archive is handled once, at its own level.
    """
    inner_archives = sorted(p for p in root.rglob("*") if p.is_file() and _is_archive_name(p.name))
    for inner in inner_archives:
        inner_label = label / inner.relative_to(root)
        if level > MAX_NESTING:
            raise GliosegError(
                f"archives are nested more than {MAX_NESTING} levels deep",
                path=inner_label,
                hint="This looks like a decompression bomb; get the dataset from its official source.",
            )
        target = inner.with_name(_strip_archive_suffix(inner.name))
        if target.exists():
            raise GliosegError(
                f"cannot unpack this inner archive: {target.name!r} already exists next to it",
                path=inner_label,
                hint="Extract with nested=False and unpack the inner archives by hand.",
            )
        target.mkdir()
        _extract_into(inner, target, label=inner_label, origin=origin)
        inner.unlink()
        _extract_nested(target, label=inner_label, origin=origin, level=level + 1)


def _is_archive_name(name: str) -> bool:
    """True for names of nested archives; ``.nii.gz`` images and macOS ``._`` sidecar files are not archives."""
    return not name.startswith("._") and name.lower().endswith(NESTED_SUFFIXES)


def _strip_archive_suffix(name: str) -> str:
    """``BraTS2021_00495.tar`` -> ``BraTS2021_00495``: the folder an inner archive is unpacked into."""
    suffix = next(s for s in NESTED_SUFFIXES if name.lower().endswith(s))
    return name[: -len(suffix)]


def _progress(members: Sequence[T], label: Path) -> Iterable[T]:
    """Wrap members in a progress bar when there are enough to be worth watching (tqdm hides it off a TTY)."""
    disable = True if len(members) < PROGRESS_MIN_MEMBERS else None
    return tqdm(members, desc=f"Extracting {label.name}", unit="file", disable=disable)


def _unsafe(label: Path, problem: str) -> GliosegError:
    """The error for a member that could write outside the destination or create a special file."""
    return GliosegError(
        f"refusing to extract: {problem}",
        path=label,
        hint="The archive is unsafe (it could write outside the destination folder); nothing was extracted. "
        "Get the dataset from its official source.",
    )


def _unreadable(label: Path, problem: str) -> GliosegError:
    """The error for a zip entry using a feature Python's zipfile does not support."""
    return GliosegError(
        f"cannot extract: {problem}",
        path=label,
        hint="Unpack the archive with another tool (e.g. 7z) and point the config at the unpacked folder.",
    )


def _corrupt(label: Path, origin: Path) -> GliosegError:
    """The error for an archive whose bytes are bad: most often an interrupted download."""
    return GliosegError(
        "archive is truncated or corrupt, so it cannot be extracted",
        path=label,
        hint=f"Delete {origin} and download it again, or point the config at a good copy.",
    )
