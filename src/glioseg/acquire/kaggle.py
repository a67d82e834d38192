"""Download a dataset archive from Kaggle with the official client, verified and atomic.

Why the care:

* ``import kaggle`` creates the client's config folder and authenticates:
  without credentials it prints a help text, and ``KaggleApi.authenticate()``
  calls ``exit(1)``. So :func:`check_credentials` looks for credentials itself,
  where the client does, and the client is imported only once some were found.
* The client's own unzip has no safety filter and deletes the archive, so it
  only downloads (``unzip=False``); :mod:`glioseg.acquire.extract` extracts.
* The client checks a download by Content-Length only, and on a resumed or
  retried download can keep bytes that are not the archive's. So the archive
  must have a readable zip central directory (and the configured SHA-256)
  before it is renamed to ``out_zip``; a bad one is deleted.
* The client downloads into ``<work>/<name>.zip`` with a ``.kaggle-partial``
  marker and resumes from them on the next run (HTTP Range), so ``<work>`` is a
  fixed hidden folder next to ``out_zip`` that survives a failed run.
* The client retries a broken transfer 5 times with backoff (about a minute)
  before giving up; the error raised after that is translated here. Its first
  request has no timeout, so a server that accepts and never answers hangs.

The API host comes from the client: ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes
it call ``http://localhost/api/v1/...`` (port 80), which the tests use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

from glioseg.acquire.checksum import sha256_of
from glioseg.errors import GliosegError

log = logging.getLogger(__name__)

TOKEN_URL = "https://www.kaggle.com/settings/api"
OFFLINE = (
    "Or skip Kaggle: download the archive yourself (browser or a mirror) and set "
    "`source: {path: /path/to/archive.zip}` for the dataset in the config."
)
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERBOSE_FLAGS = ("--verbose", "-v")
_CLIENT_SIZE_CHECK = "does not match expected size"  # the message of the client's ValueError


def check_credentials() -> None:
    """Raise a GliosegError that says where to put credentials, unless the client would find some.

    Reads files and environment variables only: importing the client without
    credentials would print its help text and create folders.
    """
    _require_credentials()


def download_dataset(slug: str, out_zip: str | Path, *, sha256: str | None = None) -> Path:
    """Download Kaggle dataset ``slug`` (``OWNER/NAME``) as a zip to ``out_zip``; return ``out_zip``.

    ``out_zip`` appears only once the archive is whole: its zip directory is
    readable and, when ``sha256`` is given, its digest matches. A download that
    broke off is kept in a hidden folder next to ``out_zip`` and resumed by the
    next call.
    """
    _check_slug(slug)
    source = _require_credentials()
    final = Path(out_zip)
    work = final.parent / f".{final.name}.download"
    log.info("downloading Kaggle dataset %s to %s (credentials: %s)", slug, final, source)
    downloaded = _fetch(slug, work)
    _verify(downloaded, slug, sha256, final, work)
    os.replace(downloaded, final)
    shutil.rmtree(work)
    log.info("downloaded Kaggle dataset %s to %s", slug, final)
    return final


def _check_slug(slug: str) -> None:
    """Refuse anything but ``OWNER/NAME``: the client would otherwise read extra parts as a version."""
    if not _SLUG.match(slug):
        raise GliosegError(
            f"{slug!r} is not a Kaggle dataset slug of the form OWNER/NAME",
            hint=f"Copy OWNER/NAME from the dataset's address, https://www.kaggle.com/datasets/OWNER/NAME. {OFFLINE}",
        )


# --- credentials -----------------------------------------------------------------------------------------


def _require_credentials() -> str:
    """Return where the client will find credentials; raise the how-to paragraph when it finds none."""
    source = _credential_source()
    if source is None:
        raise GliosegError(
            "no Kaggle API credentials found. The Kaggle client looks, in this order, for an access token "
            "in the KAGGLE_API_TOKEN environment variable (the token, or a file holding it) or in "
            "~/.kaggle/access_token; then for a legacy API key as KAGGLE_USERNAME and KAGGLE_KEY or in "
            f"{_config_dir() / 'kaggle.json'} (set KAGGLE_CONFIG_DIR to use another folder); then for OAuth "
            "credentials in ~/.kaggle/credentials.json (written by `kaggle auth login`).",
            hint=(
                f"Sign in on kaggle.com, open {TOKEN_URL}, click 'Generate New Token' and either "
                "`export KAGGLE_API_TOKEN=<token>` or save the token to ~/.kaggle/access_token "
                f"(chmod 600). {OFFLINE}"
            ),
        )
    return source


def _credential_source() -> str | None:
    """Name where the client will find credentials (never their value), or None; in the client's order."""
    if _has_token():
        return "access token"
    config = _read_json(_config_dir() / "kaggle.json")
    if (os.environ.get("KAGGLE_USERNAME") or config.get("username")) and (
        os.environ.get("KAGGLE_KEY") or config.get("key")
    ):
        return "API key (KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json)"
    if _read_json(Path("~/.kaggle/credentials.json").expanduser()).get("refresh_token"):
        return "OAuth credentials (~/.kaggle/credentials.json)"
    return None


def _has_token() -> bool:
    """Whether the client's access-token lookup (kagglesdk ``get_access_token_from_env``) finds one."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    files = ["~/.kaggle/access_token", "~/.kaggle/access_token.txt"]
    in_notebook = all(os.environ.get(name) for name in ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_DATA_PROXY_URL"))
    if in_notebook and os.environ.get("KAGGLE_API_V1_TOKEN"):
        files.append(os.environ["KAGGLE_API_V1_TOKEN"])
    return any(_non_empty(Path(name).expanduser()) for name in files)


def _config_dir() -> Path:
    """The folder the client reads kaggle.json from (KaggleApi.config_dir's rule)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path("~/.kaggle").expanduser()
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()) / "kaggle"


def _non_empty(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object the way the client does: anything unreadable counts as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- the client ------------------------------------------------------------------------------------------


def _fetch(slug: str, work: Path) -> Path:
    """Download the dataset zip into ``work`` with the client (no unzip); return the file it wrote."""
    api = _client(slug)
    work.mkdir(parents=True, exist_ok=True)
    try:
        _authenticate(api, slug)
        api.dataset_download_files(slug, path=str(work), quiet=False, unzip=False)
    except Exception as exc:
        with contextlib.suppress(OSError):
            work.rmdir()  # kept only when it holds a partial download to resume
        error = _translate(exc, slug, work)
        if error is None:
            raise
        raise error from exc
    return work / f"{slug.split('/')[1]}.zip"


def _client(slug: str) -> Any:
    """A KaggleApi whose verbose mode is off (it prints request headers, Authorization included)."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise GliosegError(
            f"the Kaggle client is not installed, so dataset {slug} cannot be downloaded",
            hint=f"pip install 'glioseg[kaggle]'. {OFFLINE}",
        ) from exc
    api = KaggleApi()
    api.args = [arg for arg in api.args if arg not in _VERBOSE_FLAGS]
    return api


def _authenticate(api: Any, slug: str) -> None:
    """Authenticate; an access token is checked online, so this can raise HTTP and network errors too."""
    try:
        api.authenticate()
    except SystemExit as exc:  # the client accepted none of the credentials it found (e.g. an expired token)
        raise _rejected(slug, "the Kaggle client did not accept the credentials it found") from exc


def _translate(exc: Exception, slug: str, work: Path) -> GliosegError | None:
    """Turn what the client raises into one GliosegError; None for anything unforeseen (a bug: keep its traceback).

    Measured with kaggle 2.2.4: HTTP errors on the API call are ``requests.HTTPError``
    (with ``response.status_code``); a body shorter than its Content-Length, after the
    client's retries, is ``requests.exceptions.ChunkedEncodingError``; no server / no
    network / DNS is ``requests.ConnectionError``. The client's own size check raises
    a ``ValueError`` (when the transport let a wrong length through).
    """
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return _http_error(exc.response.status_code, slug)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or (
        isinstance(exc, ValueError) and _CLIENT_SIZE_CHECK in str(exc)
    ):
        return GliosegError(
            f"the download of Kaggle dataset {slug} is incomplete: the connection broke off before all "
            "the bytes the server announced had arrived",
            hint=f"Run again: the partial file in {work} is kept and the download resumes. {OFFLINE}",
        )
    if isinstance(exc, requests.RequestException):
        return GliosegError(
            f"could not reach Kaggle to download dataset {slug}: {_network_reason(exc)}",
            hint="Check the network connection (and any proxy settings), then run again; a partial "
            f"download is kept and resumed. {OFFLINE}",
        )
    if isinstance(exc, OSError):
        return GliosegError(
            f"could not write the download of Kaggle dataset {slug} ({exc.strerror or exc})",
            path=work,
            hint="Check free disk space and write permission for the output folder.",
        )
    return None


def _http_error(status: int, slug: str) -> GliosegError:
    """Say what an HTTP status from Kaggle means for the user, and what to do about it."""
    page = f"https://www.kaggle.com/datasets/{slug}"
    if status == 401:
        return _rejected(slug, "Kaggle rejected the credentials (HTTP 401)")
    if status == 403:
        return GliosegError(
            f"Kaggle refused access to dataset {slug} (HTTP 403): its terms have not been accepted with "
            "this account, or it is private",
            hint=f"Sign in on kaggle.com with the account of these credentials, open {page} and accept its "
            f"terms (or ask its owner for access), then run again. {OFFLINE}",
        )
    if status == 404:
        return GliosegError(
            f"Kaggle has no dataset {slug} (HTTP 404)",
            hint=f"Check the slug against {page}; if the dataset was removed, download the archive from a "
            f"mirror. {OFFLINE}",
        )
    return GliosegError(
        f"Kaggle answered HTTP {status} when asked for dataset {slug}",
        hint=f"Try again later; if it persists, check https://www.kaggle.com for outages. {OFFLINE}",
    )


def _rejected(slug: str, problem: str) -> GliosegError:
    return GliosegError(
        f"{problem} while downloading dataset {slug}",
        hint=f"Create a new token at {TOKEN_URL} and replace the old one (KAGGLE_API_TOKEN, "
        f"~/.kaggle/access_token, or KAGGLE_USERNAME/KAGGLE_KEY / kaggle.json). {OFFLINE}",
    )


def _network_reason(exc: Exception) -> str:
    """Describe a connection failure without echoing the exception (it carries URLs)."""
    text = str(exc)
    if "NameResolution" in text or "Name or service not known" in text or "name resolution" in text:
        return "the host name could not be resolved (no network, or DNS is down)"
    if "Connection refused" in text:
        return "the connection was refused"
    if "timed out" in text.lower():
        return "the connection timed out"
    return f"the connection failed ({type(exc).__name__})"


# --- verification ----------------------------------------------------------------------------------------


def _verify(downloaded: Path, slug: str, sha256: str | None, final: Path, work: Path) -> None:
    """Refuse an archive that is not whole; delete it (and the client's resume marker) if so."""
    try:
        _check_zip(downloaded, slug, final)
        if sha256:
            _check_sha256(downloaded, slug, sha256, final)
    except GliosegError:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _check_zip(downloaded: Path, slug: str, final: Path) -> None:
    """Read the central directory, which sits at the end of a zip, so a cut-off file fails here.

    Member CRCs are checked by the extraction, which reads every byte anyway;
    doing it here too would read a multi-GB archive twice.
    """
    try:
        with zipfile.ZipFile(downloaded):  # opening parses the central directory
            pass
    except (zipfile.BadZipFile, EOFError) as exc:
        raise GliosegError(
            f"the download of Kaggle dataset {slug} is not a readable zip (truncated or corrupt); it was deleted",
            path=final,
            hint=f"Run again to download it afresh. {OFFLINE}",
        ) from exc


def _check_sha256(downloaded: Path, slug: str, expected: str, final: Path) -> None:
    actual = sha256_of(downloaded)
    if actual != expected.strip().lower():
        raise GliosegError(
            f"the download of Kaggle dataset {slug} has SHA-256 {actual}, but the config expects "
            f"{expected}; it was deleted",
            path=final,
            hint="If the dataset got a new version on Kaggle, check it and update `sha256` in the config; "
            f"otherwise run again to download it afresh. {OFFLINE}",
        )

