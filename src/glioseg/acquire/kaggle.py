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
* The client sets no timeout on its requests, so a server that accepts the
  connection and never answers would hang the run. For the download's duration
  every requests session gets connect and read timeouts (:class:`DownloadLimits`,
  from ``GLIOSEG_KAGGLE_TIMEOUT`` / ``GLIOSEG_KAGGLE_ATTEMPTS``): the client makes
  a fresh session per call, authentication included, with no hook to set one.
  Its own retry loop (5 retries, 300 s each, about a minute of backoff) is
  turned off; here a timed-out or broken transfer is tried again as a whole, up
  to ``attempts`` times with backoff, each try resuming the partial file, and
  what is raised after the last one is translated.

The API host comes from the client: ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes
it call ``http://localhost/api/v1/...`` (port 80), which the tests use.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
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
TIMEOUT_VARIABLE = "GLIOSEG_KAGGLE_TIMEOUT"
ATTEMPTS_VARIABLE = "GLIOSEG_KAGGLE_ATTEMPTS"
_MAX_BACKOFF = 30  # seconds between two attempts, at most


@dataclass(frozen=True)
class DownloadLimits:
    """How long to wait for Kaggle, and how often to try, before the download gives up with an error.

    ``read`` bounds a silence (no byte for that long), not a whole transfer: a slow
    but steady multi-GB download is never cut off.
    """

    connect: float = 30.0
    read: float = 120.0
    attempts: int = 3

    @classmethod
    def from_environment(cls) -> DownloadLimits:
        """The defaults, changed by ``GLIOSEG_KAGGLE_TIMEOUT`` (``READ`` or ``CONNECT,READ`` seconds) and
        ``GLIOSEG_KAGGLE_ATTEMPTS``: the command line and the Snakemake rule have no flag for a slow link."""
        defaults = cls()
        connect, read = _timeouts_from_environment(defaults.connect, defaults.read)
        return cls(connect=connect, read=read, attempts=_attempts_from_environment(defaults.attempts))


def check_credentials() -> None:
    """Raise a GliosegError that says where to put credentials, unless the client would find some.

    Reads files and environment variables only: importing the client without
    credentials would print its help text and create folders.
    """
    _require_credentials()


def download_dataset(
    slug: str, out_zip: str | Path, *, sha256: str | None = None, limits: DownloadLimits | None = None
) -> Path:
    """Download Kaggle dataset ``slug`` (``OWNER/NAME``) as a zip to ``out_zip``; return ``out_zip``.

    ``out_zip`` appears only once the archive is whole: its zip directory is
    readable and, when ``sha256`` is given, its digest matches. A download that
    broke off is kept in a hidden folder next to ``out_zip`` and resumed by the
    next call. ``limits`` defaults to :meth:`DownloadLimits.from_environment`.
    """
    _check_slug(slug)
    limits = limits or DownloadLimits.from_environment()
    source = _require_credentials()
    final = Path(out_zip)
    work = final.parent / f".{final.name}.download"
    log.info("downloading Kaggle dataset %s to %s (credentials: %s)", slug, final, source)
    downloaded = _fetch(slug, work, limits)
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


# --- limits ----------------------------------------------------------------------------------------------


def _timeouts_from_environment(connect: float, read: float) -> tuple[float, float]:
    """``GLIOSEG_KAGGLE_TIMEOUT`` as (connect, read) seconds; one number sets only the read timeout."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return connect, read
    parts = [_seconds(part) for part in text.split(",")]
    if len(parts) not in (1, 2) or not all(parts):
        raise GliosegError(
            f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds (READ, or CONNECT,READ) greater than 0",
            hint=f"Set e.g. {TIMEOUT_VARIABLE}=300 (wait up to 300 s for data) or {TIMEOUT_VARIABLE}=60,300, "
            f"or unset it for the defaults ({connect:g},{read:g}).",
        )
    return (connect, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _seconds(text: str) -> float | None:
    """A positive, finite number of seconds, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value < math.inf else None


def _attempts_from_environment(default: int) -> int:
    text = os.environ.get(ATTEMPTS_VARIABLE, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise GliosegError(
            f"{ATTEMPTS_VARIABLE}={text!r} is not a whole number of attempts of at least 1",
            hint=f"Set e.g. {ATTEMPTS_VARIABLE}=5, or unset it for the default ({default}).",
        )
    return int(text)


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


def _fetch(slug: str, work: Path, limits: DownloadLimits) -> Path:
    """Download the dataset zip into ``work`` with the client (no unzip); return the file it wrote."""
    api = _client(slug, limits)
    work.mkdir(parents=True, exist_ok=True)
    try:
        with _default_timeout((limits.connect, limits.read)):
            _attempts(api, slug, work, limits)
    except Exception as exc:
        with contextlib.suppress(OSError):
            work.rmdir()  # kept only when it holds a partial download to resume
        error = _translate(exc, slug, work, limits)
        if error is None:
            raise
        raise error from exc
    return work / f"{slug.split('/')[1]}.zip"


def _client(slug: str, limits: DownloadLimits) -> Any:
    """A KaggleApi whose verbose mode is off (it prints request headers, Authorization included), and
    whose file transfer has our timeouts and no retry loop of its own (the retries are :func:`_attempts`)."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise GliosegError(
            f"the Kaggle client is not installed, so dataset {slug} cannot be downloaded",
            hint=f"pip install 'glioseg[kaggle]'. {OFFLINE}",
        ) from exc
    api = KaggleApi()
    api.args = [arg for arg in api.args if arg not in _VERBOSE_FLAGS]
    api.download_file = functools.partial(api.download_file, max_retries=0, timeout=(limits.connect, limits.read))
    return api


@contextlib.contextmanager
def _default_timeout(timeout: tuple[float, float]) -> Iterator[None]:
    """Give every requests call without a timeout this (connect, read) one, while the block runs.

    kagglesdk builds a new ``requests.Session`` per client and sends with no
    timeout; ``Session.send`` is the one place all its requests (and redirects) pass.
    """
    import requests

    send = requests.Session.send

    def send_with_timeout(session: requests.Session, request: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout
        return send(session, request, **kwargs)

    requests.Session.send = send_with_timeout  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.send = send  # type: ignore[method-assign]


def _attempts(api: Any, slug: str, work: Path, limits: DownloadLimits) -> None:
    """Authenticate and download, again after a timeout or a broken transfer: each try resumes the partial file."""
    for attempt in range(1, limits.attempts + 1):
        try:
            _authenticate(api, slug)
            api.dataset_download_files(slug, path=str(work), quiet=False, unzip=False)
            return
        except Exception as exc:
            if attempt == limits.attempts or not _worth_retrying(exc):
                raise
            delay = min(2**attempt, _MAX_BACKOFF)
            reason = _wait_that_ran_out(exc, limits) if _timed_out(exc) else "the transfer broke off"
            log.warning("Kaggle dataset %s, attempt %d of %d: %s; trying again in %d s", slug, attempt,
                        limits.attempts, reason, delay)
            time.sleep(delay)


def _worth_retrying(exc: Exception) -> bool:
    """A timeout or a transfer cut short; not a refusal, an unknown host or an HTTP error, which a retry repeats."""
    import requests

    return _timed_out(exc) or isinstance(exc, requests.exceptions.ChunkedEncodingError)


def _timed_out(exc: Exception) -> bool:
    """Whether a request timed out: requests raises a Timeout, or, for a body that stalls, a ConnectionError."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    stalled_body = isinstance(exc, requests.ConnectionError) and any(
        isinstance(arg, ReadTimeoutError) for arg in exc.args
    )
    return isinstance(exc, requests.Timeout) or stalled_body


def _authenticate(api: Any, slug: str) -> None:
    """Authenticate; an access token is checked online, so this can raise HTTP and network errors too."""
    try:
        api.authenticate()
    except SystemExit as exc:  # the client accepted none of the credentials it found (e.g. an expired token)
        raise _rejected(slug, "the Kaggle client did not accept the credentials it found") from exc


def _translate(exc: Exception, slug: str, work: Path, limits: DownloadLimits) -> GliosegError | None:
    """Turn what the client raises into one GliosegError; None for anything unforeseen (a bug: keep its traceback).

    Measured with kaggle 2.2.4: HTTP errors on the API call are ``requests.HTTPError``
    (with ``response.status_code``); a body shorter than its Content-Length is
    ``requests.exceptions.ChunkedEncodingError``; no server / no network / DNS is
    ``requests.ConnectionError``, as is a body that stalls past the read timeout. The
    client's own size check raises a ``ValueError`` (when the transport let a wrong
    length through).
    """
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return _http_error(exc.response.status_code, slug)
    if _timed_out(exc):
        return _timeout_error(exc, slug, limits)
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


def _timeout_error(exc: Exception, slug: str, limits: DownloadLimits) -> GliosegError:
    """Say which wait ran out, after how many tries, and which knobs allow for a slow link."""
    return GliosegError(
        f"{_wait_that_ran_out(exc, limits)} while downloading dataset {slug} "
        f"(gave up after {_tries(limits.attempts)})",
        hint="Kaggle or the network is down or very slow: try again later; a partial download is kept and "
        f"resumed. On a slow link, wait longer or try more often with {TIMEOUT_VARIABLE}=CONNECT,READ seconds "
        f"(now {limits.connect:g},{limits.read:g}) and {ATTEMPTS_VARIABLE} (now {limits.attempts}). {OFFLINE}",
    )


def _wait_that_ran_out(exc: Exception, limits: DownloadLimits) -> str:
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection to Kaggle within {limits.connect:g} s"
    return f"no answer from Kaggle within {limits.read:g} s"


def _tries(attempts: int) -> str:
    return f"{attempts} attempt" if attempts == 1 else f"{attempts} attempts"


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

