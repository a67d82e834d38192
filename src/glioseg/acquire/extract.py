"""Safe, atomic extraction of dataset archives (zip and tar, plain or compressed).

Archives come from third parties, so they are untrusted input: every member is
checked before anything is written, and only plain files and folders are ever
created. The sizes an archive declares are checked against limits and against
the free space before anything is written, and while writing no member may grow
past its declared size, so a decompression bomb never fills the disk.
Extraction happens in a temporary sibling folder that replaces ``dest`` only
once everything succeeded, so a killed job, a malicious member or a truncated
download never leaves a ``dest`` that looks complete.
"""

from __future__ import annotations

import copy
import errno
import functools
import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TypeVar

from tqdm import tqdm

from glioseg.atomic import atomic_dir
from glioseg.errors import GliosegError

SUPPORTED_FORMATS = "zip, tar, tar.gz / tgz, tar.bz2, tar.xz"
NESTED_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_NESTING = 5
PROGRESS_MIN_MEMBERS = 100

DEFAULT_MAX_RATIO = 1000.0
"""Most times a member may expand (uncompressed / compressed size); checked only from RATIO_MIN_BYTES up."""
RATIO_MIN_BYTES = 256 * 2**20
"""Smallest member (or whole tar) the ratio applies to.

Real data needs this floor: an uncompressed 240x240x155 label volume with a
small or no tumour deflates 950-1030-fold (the most deflate can do) and
xz / bzip2 compress it thousands-fold, so a ratio limit alone would refuse
real datasets; but such volumes are 9-72 MB, far below this size.
"""
DEFAULT_MAX_TOTAL_BYTES = 2 * 10**12
"""Most bytes one extraction may write, nested archives included (2 TB)."""
FREE_SPACE_MARGIN = 64 * 2**20
"""Free space left over after extraction, so the file system is never filled to the last byte."""

Format = Literal["zip", "tar"]
T = TypeVar("T")

_CHUNK = 1 << 20
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
# Python >= 3.11.4 ships tarfile's "data" filter; it checks every member again, as a second line of defence.
_DATA_FILTER: Callable[[tarfile.TarInfo, str], tarfile.TarInfo] | None = getattr(tarfile, "data_filter", None)
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
# Write errors that are the disk's or the destination's fault: (what happened, what to do in `where`).
_DISK_PROBLEMS = {
    errno.ENOSPC: ("the file system is full", "Free space on the file system of {where}, or extract to another one."),
    errno.EDQUOT: ("your disk quota is used up", "Delete files to get under your quota on {where}, or extract where "
                   "your quota is larger."),
    errno.EACCES: ("permission denied", "Make sure you may create and delete folders in {where}, or extract elsewhere."),
    errno.EPERM: ("operation not permitted", "Make sure you may create and delete folders in {where}, or extract "
                  "elsewhere."),
    errno.EROFS: ("the file system is read-only", "Extract to a writable location instead of {where}."),
}


@dataclass(frozen=True)
class _Member:
    """One entry of an archive as the checks and the writer see it, whatever the format."""

    index: int  # 1-based position in the archive, to tell two entries of the same name apart
    name: str  # as stored, for messages
    parts: tuple[str, ...]  # where it is written, below the output folder
    is_dir: bool
    size: int
    packed: int | None  # compressed size of a zip entry; None in a tar, which is compressed as a whole


@dataclass
class _Guard:
    """The decompression limits of one extraction, and the bytes it has written so far (all nesting levels)."""

    dest: Path
    max_ratio: float | None
    max_total_bytes: int | None
    written: int = 0


def extract_archive(
    archive: str | Path,
    dest: str | Path,
    *,
    nested: bool = True,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
    max_total_bytes: int | None = DEFAULT_MAX_TOTAL_BYTES,
) -> Path:
    """Extract a zip / tar / tar.gz / tgz / tar.bz2 / tar.xz archive into `dest` atomically.

    The format is read from the file's content, not its name. With ``nested``,
    archives found inside are unpacked in place (into a folder named after each,
    which is then deleted) so the tree holds data only. ``dest`` is replaced only
    when everything succeeded; on any error it is left exactly as it was.

    ``max_ratio`` caps how many times a member of at least ``RATIO_MIN_BYTES``
    (or a whole compressed tar) may expand, ``max_total_bytes`` the bytes written
    in all; None lifts a limit. Both exist to stop decompression bombs: raise
    them only for an archive known to be genuine.
    """
    source, final = Path(archive), Path(dest)
    _check_inputs(source, final)
    guard = _Guard(final, max_ratio, max_total_bytes)
    try:
        with atomic_dir(final) as tmp:
            _extract_into(source, tmp, label=source, origin=source, guard=guard)
            if nested:
                _extract_nested(tmp, label=source, origin=source, level=1, guard=guard)
    except OSError as exc:  # archive-side OSErrors became GliosegError already: this is the disk
        raise _write_error(exc, final) from exc
    return final


def _check_inputs(source: Path, final: Path) -> None:
    """Refuse a missing or unreadable archive, one inside `dest` (which the final swap would delete), and a bad `dest`."""
    if not source.is_file():
        raise GliosegError("archive not found", path=source, hint="Download it first, or fix the archive path in the config.")
    try:
        source.open("rb").close()
    except PermissionError as exc:
        raise GliosegError("cannot read the archive (permission denied)", path=source,
                           hint="Make it readable for you (chmod u+r), or use a copy you can read.") from exc
    if final.resolve() in source.resolve().parents:
        raise GliosegError(
            f"the archive lies inside the destination folder {final}, which extraction replaces",
            path=source,
            hint="Extract into a folder that does not contain the archive.",
        )
    _check_destination(final)


def _check_destination(final: Path) -> None:
    """Refuse a `dest` that is a link or a file, or lies below a file or a broken link: replacing it would go wrong."""
    if final.is_symlink():
        raise GliosegError(
            f"the destination is a symbolic link (to {os.readlink(final)}); extraction replaces the folder at this "
            "path, so it would replace the link, not fill the folder it points to",
            path=final,
            hint=f"Give the folder itself as the destination ({final.resolve()}), or delete the link.",
        )
    for folder in [*reversed(final.parents), final]:
        if not os.path.lexists(folder):
            return  # it and everything below it are created
        problem = _not_a_folder(folder)
        if problem:
            fix = "Give the path of a folder (new, or one to replace) as the destination" if folder == final else \
                f"Fix or remove {folder}, or extract somewhere else"
            raise GliosegError(f"could not write the extracted files: {problem}", path=final,
                               hint=f"{fix}; nothing was changed.")


def _not_a_folder(path: Path) -> str | None:
    """Why an existing `path` cannot hold a folder (a file, a link to a file, a broken link); None when it can."""
    if path.is_dir():
        return None
    if path.is_symlink():
        state = "is not a folder" if path.exists() else "does not exist"
        return f"{path} is a symbolic link to {os.readlink(path)}, which {state}"
    return f"{path} is a file, not a folder"


def _extract_into(archive: Path, out: Path, *, label: Path, origin: Path, guard: _Guard) -> None:
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
            _extract_zip(archive, out, label, guard)
        else:
            _extract_tar(archive, out, label, guard)
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


def _extract_zip(archive: Path, out: Path, label: Path, guard: _Guard) -> None:
    """Check every zip entry and the archive as a whole, then write the entries."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_zip_member(info, label)
        members = [_Member(i, info.filename, _parts(info.filename), info.is_dir(), info.file_size, info.compress_size)
                   for i, info in enumerate(infos, start=1)]
        _check_members(members, archive, out, label, guard)
        for info, member in _progress(list(zip(infos, members)), label):
            _write_member(member, out, functools.partial(zf.open, _past_declared_size(info)), label, guard)


def _past_declared_size(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """The entry, readable for one chunk past its declared size, so data longer than its header says shows.

    zipfile stops at the declared size and checks the CRC right there, which
    turns a lying header into a CRC error at best. With a chunk and a byte to
    spare, the read that crosses the declared size returns its bytes and the
    copy loop stops the member; an honest member still ends, CRC checked, at
    its real end.
    """
    longer = copy.copy(info)
    longer.file_size += _CHUNK + 1
    return longer


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


def _extract_tar(archive: Path, out: Path, label: Path, guard: _Guard) -> None:
    """Check every tar member and the archive as a whole, then write the members with harmless permissions."""
    with tarfile.open(archive) as tf:
        infos = tf.getmembers()
        for info in infos:
            _check_tar_member(info, label)
            if _DATA_FILTER is not None:
                _DATA_FILTER(info, str(out))
        members = [_Member(i, info.name, _parts(info.name), info.isdir(), 0 if info.isdir() else info.size, None)
                   for i, info in enumerate(infos, start=1)]
        _check_members(members, archive, out, label, guard)
        for info, member in _progress(list(zip(infos, members)), label):
            _write_member(member, out, functools.partial(tf.extractfile, info), label, guard)
            os.chmod(out.joinpath(*member.parts), _safe_mode(info))
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


def _safe_mode(member: tarfile.TarInfo) -> int:
    """The member's permissions without setuid/setgid/sticky and group/other write.

    The owner always keeps read/write (and search on folders) so a failed run
    can be cleaned up.
    """
    owner_bits = 0o700 if member.isdir() else 0o600
    return (member.mode & 0o755) | owner_bits


def _parts(name: str) -> tuple[str, ...]:
    """Where a member is written, below the output folder: empty and ``.`` components dropped, as tar and unzip do."""
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _check_members(members: Sequence[_Member], archive: Path, out: Path, label: Path, guard: _Guard) -> None:
    """Everything about an archive that can be known before writing: its layout, names and sizes."""
    _check_layout(members, label)
    _check_name_lengths(members, out, label)
    total = sum(member.size for member in members)
    _check_ratios(members, total, archive, label, guard)
    _check_total(total, label, guard)
    _check_free_space(total, out, label, guard)


def _check_layout(members: Sequence[_Member], label: Path) -> None:
    """Refuse two members written to one path (the last would silently win) and a file where a folder must be."""
    files: dict[tuple[str, ...], _Member] = {}
    folders: dict[tuple[str, ...], _Member] = {}  # each folder path -> the first member that needs it
    for member in members:
        if not member.parts and not member.is_dir:
            raise _malformed(label, f"member {member.name!r} (entry {member.index}) has no file name")
        folder_depth = len(member.parts) if member.is_dir else len(member.parts) - 1
        for depth in range(1, folder_depth + 1):
            folders.setdefault(member.parts[:depth], member)
        if member.is_dir:
            continue
        first = files.setdefault(member.parts, member)
        if first is not member:
            raise _malformed(label, f"members {first.name!r} (entry {first.index}) and {member.name!r} (entry "
                                    f"{member.index}) are both written to {'/'.join(member.parts)!r}, so one would "
                                    "silently replace the other")
    for parts, member in files.items():
        if parts in folders:
            other = folders[parts]
            raise _malformed(label, f"member {member.name!r} (entry {member.index}) is a file, but member "
                                    f"{other.name!r} (entry {other.index}) needs a folder of the same name")


def _check_name_lengths(members: Sequence[_Member], out: Path, label: Path) -> None:
    """Refuse names this file system cannot hold, which would otherwise fail half-way with a bare OS error."""
    name_max = _pathconf(out, "PC_NAME_MAX", 255)
    path_max = _pathconf(out, "PC_PATH_MAX", 4096)
    base = len(os.fsencode(out))
    for member in members:
        sizes = [len(os.fsencode(part)) for part in member.parts]
        if max(sizes, default=0) > name_max:
            raise GliosegError(
                f"cannot extract: member {member.name!r} has a name part of {max(sizes)} bytes, and this file system "
                f"allows at most {name_max}",
                path=label,
                hint="No file here can have that name. Unpack the archive with a tool that can rename members, or get "
                "a fixed archive from the dataset's source.",
            )
        length = base + sum(size + 1 for size in sizes)
        if length >= path_max:
            raise GliosegError(
                f"cannot extract: member {member.name!r} would get a path of {length} bytes below the destination, "
                f"and this system allows at most {path_max - 1}",
                path=label,
                hint="Extract into a folder with a shorter path, or unpack the archive by hand and shorten its folder names.",
            )


def _pathconf(path: Path, name: str, default: int) -> int:
    """A file-system limit for `path`; `default` where the system does not say (or says there is none)."""
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return default
    return value if value > 0 else default


def _check_ratios(members: Sequence[_Member], total: int, archive: Path, label: Path, guard: _Guard) -> None:
    """Refuse a member that expands absurdly; a tar is compressed as a whole, so there the whole archive is judged."""
    if guard.max_ratio is None:
        return
    if all(member.packed is None for member in members):
        checks = [("its contents", archive.stat().st_size, total)]
    else:
        checks = [(f"member {member.name!r}", member.packed or 0, member.size) for member in members]
    for what, packed, size in checks:
        problem = _expansion(what, packed, size, guard.max_ratio)
        if problem:
            raise _bomb(label, problem)


def _expansion(what: str, packed: int, size: int, max_ratio: float) -> str | None:
    """Say how far `what` expands when that is over `max_ratio` and big enough to matter; None otherwise."""
    ratio = size / max(packed, 1)
    if size < RATIO_MIN_BYTES or ratio <= max_ratio:
        return None
    return (f"{what} would expand {ratio:.0f}-fold ({_size(packed)} to {_size(size)}), over the limit of "
            f"{max_ratio:g}-fold")


def _check_total(total: int, label: Path, guard: _Guard) -> None:
    """Refuse an extraction whose files add up to more than the limit, counting the archives around this one."""
    if guard.max_total_bytes is None or guard.written + total <= guard.max_total_bytes:
        return
    before = f", after {_size(guard.written)} from the archives around it," if guard.written else ""
    raise GliosegError(
        f"refusing to extract: its files add up to {_size(total)}{before} over the limit of {_size(guard.max_total_bytes)}",
        path=label,
        hint="If the dataset really is that large, raise the limit (glioseg extract --max-size-gb, or "
        "extract_archive(max_total_bytes=...)); otherwise this is a decompression bomb: get the dataset from its "
        "official source.",
    )


def _check_free_space(total: int, out: Path, label: Path, guard: _Guard) -> None:
    """Refuse before writing when the files cannot fit, rather than fill the disk and fail half-way."""
    free = shutil.disk_usage(out).free
    if total + FREE_SPACE_MARGIN <= free:
        return
    raise GliosegError(
        f"not enough free space to extract it: its files take {_size(total)}, and the file system of {guard.dest} "
        f"has {_size(free)} free",
        path=label,
        hint=f"Free at least {_size(total + FREE_SPACE_MARGIN - free)} there, or extract to a file system with more room.",
    )


def _write_member(member: _Member, out: Path, source: Callable[[], IO[bytes] | None], label: Path, guard: _Guard) -> None:
    """Create a member's folder, or copy its bytes from `source` into a new file, counting them."""
    path = out.joinpath(*member.parts)
    if member.is_dir:
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with source() as data, open(path, "xb") as target:
        guard.written += _copy(data, target, member, label)


def _copy(data: IO[bytes], target: IO[bytes], member: _Member, label: Path) -> int:
    """Copy in chunks, stopping as soon as the member grows past the size its header declares; return the bytes."""
    written = 0
    while chunk := data.read(_CHUNK):
        written += len(chunk)
        if written > member.size:
            raise _bomb(
                label,
                f"member {member.name!r} holds more data than the {member.size} bytes its header declares",
                hint="The archive lies about its sizes, as decompression bombs do; nothing was extracted. Get the "
                "dataset from its official source.",
            )
        target.write(chunk)
    return written


def _extract_nested(root: Path, *, label: Path, origin: Path, level: int, guard: _Guard) -> None:
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
        target = _unpack_folder(inner, inner_label)
        target.mkdir()
        _extract_into(inner, target, label=inner_label, origin=origin, guard=guard)
        inner.unlink()
        _extract_nested(target, label=inner_label, origin=origin, level=level + 1, guard=guard)


def _unpack_folder(inner: Path, inner_label: Path) -> Path:
    """The new folder an inner archive is unpacked into: its name without the archive suffix."""
    name = _strip_archive_suffix(inner.name)
    if not name:
        raise GliosegError(
            f"cannot unpack this inner archive: its name {inner.name!r} is only an extension, so there is no folder "
            "name to unpack it into",
            path=inner_label,
            hint="Give it a name in the archive, or extract with nested=False and unpack it by hand.",
        )
    target = inner.with_name(name)
    if os.path.lexists(target):
        raise GliosegError(
            f"cannot unpack this inner archive: {target.name!r} already exists next to it",
            path=inner_label,
            hint="Extract with nested=False and unpack the inner archives by hand.",
        )
    return target


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


def _size(count: float) -> str:
    """A byte count for people: ``314.6 MB``."""
    if count < 1000:
        return f"{count:.0f} bytes"
    for unit in ("kB", "MB", "GB"):
        count /= 1000
        if count < 1000:
            return f"{count:.1f} {unit}"
    return f"{count / 1000:,.1f} TB"


def _write_error(exc: OSError, final: Path) -> GliosegError:
    """The error for a failed write: the disk's problem and its fix where it is one, the system's words otherwise."""
    problem, hint = _DISK_PROBLEMS.get(exc.errno, (None, None))
    if problem is not None:
        return GliosegError(f"could not write the extracted files: {problem}", path=final,
                            hint=hint.format(where=final.parent) + " Nothing was extracted; the destination is as it was.")
    where = f" ({exc.filename})" if exc.filename else ""
    return GliosegError(f"could not write the extracted files: {exc.strerror or exc}{where}", path=final,
                        hint="Nothing was extracted; the destination is as it was. Fix the cause the system names, "
                        "then run again.")


def _unsafe(label: Path, problem: str) -> GliosegError:
    """The error for a member that could write outside the destination or create a special file."""
    return GliosegError(
        f"refusing to extract: {problem}",
        path=label,
        hint="The archive is unsafe (it could write outside the destination folder); nothing was extracted. "
        "Get the dataset from its official source.",
    )


def _malformed(label: Path, problem: str) -> GliosegError:
    """The error for an archive whose members cannot all be written as they are: duplicates, file/folder clashes."""
    return GliosegError(
        f"refusing to extract: {problem}",
        path=label,
        hint="The archive is malformed; nothing was extracted. Get a fixed copy from the dataset's source, or unpack "
        "it by hand and point the config at the unpacked folder.",
    )


def _bomb(label: Path, problem: str, hint: str | None = None) -> GliosegError:
    """The error for a member or archive that expands absurdly, as decompression bombs do."""
    return GliosegError(
        f"refusing to extract: {problem}",
        path=label,
        hint=hint or "This looks like a decompression bomb; nothing was extracted. If the archive is genuine, raise "
        "the limit (glioseg extract --max-ratio, or extract_archive(max_ratio=...)).",
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
