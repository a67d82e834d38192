"""Kaggle downloads against a stand-in Kaggle API on 127.0.0.1:80.

The official client has no setting for the API address: ``KAGGLE_API_ENVIRONMENT=LOCALHOST``
is the only value ``KaggleApi`` honours besides production, and it means
``http://localhost/api/v1/...`` on port 80. So the stand-in binds port 80 (tests run
as root) and the tests that need it skip when the port is taken.

The stand-in speaks what kaggle 2.2.4 does for a dataset download (logged from the
client): ``POST /api/v1/datasets.DatasetApiService/DownloadDataset`` with a JSON body
and HTTP Basic auth, answered by a redirect to the file, which is fetched with GET
(with ``Range`` / ``If-Range`` when the client resumes).

A stand-in that stalls holds its answer until the test ends, or for ``STALL_LIMIT`` seconds
at most, then hangs up: a client without timeouts then fails the test instead of hanging it.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.server
import importlib
import importlib.util
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from glioseg.acquire.kaggle import DownloadLimits, check_credentials, download_dataset
from glioseg.errors import GliosegError

SLUG = "someone/brain-scans"
USER = "glioseg-test-user"
KEY = "0123456789abcdef-secret-key-glioseg"
BASIC = base64.b64encode(f"{USER}:{KEY}".encode()).decode()
API_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
FILE_PATH = "/files/brain-scans.zip"
ETAG = '"fixture-v1"'
ONE_CHUNK = 1 << 20  # the client writes in 1 MiB chunks; a resumable partial needs at least one
STALL_LIMIT = 30  # seconds a stalling stand-in waits before it hangs up
IMPATIENT = DownloadLimits(connect=0.5, read=0.3, attempts=2)


def _fixture_zip() -> bytes:
    """A valid zip of ~1.6 MB (random, stored) so a truncated transfer still leaves a full chunk on disk."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("BraTS2021_00000/BraTS2021_00000_t1.nii.gz", os.urandom(1_600_000))
        zf.writestr("README.txt", "fixture\n")
    return buf.getvalue()


FIXTURE = _fixture_zip()
FIXTURE_SHA256 = hashlib.sha256(FIXTURE).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when the client hangs up on a kept-alive connection; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class StandIn:
    """What the stand-in serves, and the requests it saw (method, path, headers, body)."""

    mode: str = "ok"  # ok | truncate | notzip | 401 | 403 | 404 | silent (API call) | stall (mid-file)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # ends every stall


def _handler(state: StandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5  # idle keep-alive connections end soon after a test

        def log_message(self, format: str, *args: object) -> None:  # keep stderr free of request lines
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(("POST", self.path, dict(self.headers), body))
            if state.mode == "silent":  # connection accepted, request read, never an answer
                self._stall()
            elif self.path != API_PATH:
                self._send(400, b"unexpected path", "text/plain")
            elif state.mode in ("401", "403"):  # Kaggle's JSON error body: the client raises from "code"
                error = json.dumps({"code": int(state.mode), "message": "no"}).encode()
                self._send(int(state.mode), error, "application/json")
            elif state.mode == "404":  # a plain error page: the client's raise_for_status path
                self._send(404, b"Not Found", "text/html")
            else:
                self.send_response(302)
                self.send_header("Location", FILE_PATH)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, dict(self.headers), b""))
            payload = b"<html>not a zip</html>".ljust(len(FIXTURE), b" ") if state.mode == "notzip" else FIXTURE
            start = self._range_start()
            body = payload[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", ETAG)
            self.end_headers()
            if state.mode == "truncate":  # announce all, send 80 %, hang up
                self.wfile.write(body[: len(body) * 4 // 5])
                self.close_connection = True
            elif state.mode == "stall":  # announce all, send the file's first MiB, then nothing more
                self.wfile.write(body[: max(ONE_CHUNK - start, 0)])
                self.wfile.flush()
                self._stall()
            else:
                self.wfile.write(body)

        def _range_start(self) -> int:
            wanted = self.headers.get("Range", "")
            if not wanted.startswith("bytes=") or self.headers.get("If-Range", ETAG) != ETAG:
                return 0
            return int(wanted[len("bytes=") :].split("-")[0])

        def _stall(self) -> None:
            state.release.wait(STALL_LIMIT)
            self.close_connection = True

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(autouse=True)
def kaggle_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean home and config folder, the client pointed at localhost, and no real credentials."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "kaggle-config"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "XDG_CONFIG_HOME", "VERBOSE", "VERBOSE_OUTPUT",
                 "GLIOSEG_KAGGLE_TIMEOUT", "GLIOSEG_KAGGLE_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    return home


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the backoff between attempts (``time.sleep`` everywhere); the retries themselves still happen."""
    client_module = importlib.import_module("kaggle.api.kaggle_api_extended")  # `kaggle.api` is an instance, not this
    monkeypatch.setattr(client_module.time, "sleep", lambda _seconds: None)


def _require_client() -> None:
    """Skip without the client; not importorskip, as importing it authenticates against the current home."""
    if importlib.util.find_spec("kaggle") is None:
        pytest.skip("the kaggle extra is not installed")


@pytest.fixture
def server(credentials: None) -> Iterator[StandIn]:
    _require_client()
    state = StandIn()
    try:
        httpd = _Server(("127.0.0.1", 80), _handler(state))
    except OSError as exc:
        pytest.skip(f"the client's LOCALHOST environment needs 127.0.0.1:80, which cannot be bound: {exc}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def port_80_closed() -> None:
    """Skip unless nothing listens on 127.0.0.1:80, so a connection there is refused."""
    _require_client()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 80)) != errno.ECONNREFUSED:
            pytest.skip("something listens on 127.0.0.1:80; cannot test a refused connection")


@pytest.fixture
def port_80_unanswered(credentials: None) -> Iterator[None]:
    """127.0.0.1:80 listening with a full accept queue: the kernel drops new SYNs, so a connect never completes."""
    _require_client()
    with socket.socket() as listener, socket.socket() as filler:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the stand-in: an earlier test's TIME_WAIT
        try:
            listener.bind(("127.0.0.1", 80))
        except OSError as exc:
            pytest.skip(f"cannot bind 127.0.0.1:80: {exc}")
        listener.listen(0)
        filler.connect(("127.0.0.1", 80))  # takes the queue's only place
        yield


def _write_files(home: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert BASIC not in text


def _error(out_zip: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, **kwargs: str) -> str:
    """Run a download that must fail; check nothing complete-looking and no secret was left; return the message."""
    with caplog.at_level(logging.DEBUG), pytest.raises(GliosegError) as info:
        download_dataset(SLUG, out_zip, **kwargs)
    message = str(info.value)
    captured = capsys.readouterr()
    _assert_no_secret(message, caplog.text, captured.out, captured.err)
    assert not out_zip.exists()
    assert "source: {path:" in message
    return message


def test_success_downloads_the_zip_verified(server: StandIn, tmp_path: Path, capsys, caplog) -> None:
    out_zip = tmp_path / "data" / "brats.zip"
    with caplog.at_level(logging.DEBUG):
        assert download_dataset(SLUG, out_zip, sha256=FIXTURE_SHA256.upper()) == out_zip
    assert out_zip.read_bytes() == FIXTURE
    assert sorted(p.name for p in out_zip.parent.iterdir()) == ["brats.zip"]  # the work folder is gone
    method, path, headers, body = server.requests[0]
    assert (method, path) == ("POST", API_PATH)
    assert json.loads(body) == {"ownerSlug": "someone", "datasetSlug": "brain-scans"}
    assert headers["Authorization"] == f"Basic {BASIC}"
    captured = capsys.readouterr()
    _assert_no_secret(caplog.text, captured.out, captured.err)


def test_client_verbose_mode_cannot_print_the_key(server: StandIn, tmp_path: Path, capsys, monkeypatch) -> None:
    from kaggle.api.kaggle_api_extended import KaggleApi

    monkeypatch.setattr(KaggleApi, "args", ["--local", "--verbose"])  # what VERBOSE=1 at import sets
    download_dataset(SLUG, tmp_path / "brats.zip")
    captured = capsys.readouterr()
    _assert_no_secret(captured.out, captured.err)


def test_wrong_sha256_deletes_the_download(server: StandIn, tmp_path: Path, capsys, caplog) -> None:
    out_zip = tmp_path / "brats.zip"
    message = _error(out_zip, capsys, caplog, sha256="0" * 64)
    assert "0" * 64 in message and FIXTURE_SHA256 in message and str(out_zip) in message
    assert not (tmp_path / ".brats.zip.download").exists()


def test_a_body_that_is_not_a_zip_is_refused(server: StandIn, tmp_path: Path, capsys, caplog) -> None:
    server.mode = "notzip"
    message = _error(tmp_path / "brats.zip", capsys, caplog)
    assert "not a readable zip" in message
    assert not (tmp_path / ".brats.zip.download").exists()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("401", "rejected the credentials"), ("403", "accept its terms"), ("404", "Check the slug")],
)
def test_http_errors_are_explained(server: StandIn, tmp_path: Path, capsys, caplog, mode: str, expected: str) -> None:
    server.mode = mode
    message = _error(tmp_path / "brats.zip", capsys, caplog)
    assert expected in message and f"HTTP {mode}" in message and SLUG in message


def test_connection_refused(port_80_closed: None, credentials: None, tmp_path: Path, capsys, caplog) -> None:
    message = _error(tmp_path / "brats.zip", capsys, caplog)
    assert "could not reach Kaggle" in message and "refused" in message and SLUG in message
    assert not (tmp_path / ".brats.zip.download").exists()  # no empty work folder left behind


def test_truncated_body_is_kept_for_resume(server: StandIn, no_backoff: None, tmp_path: Path, capsys, caplog) -> None:
    out_zip = tmp_path / "brats.zip"
    server.mode = "truncate"
    message = _error(out_zip, capsys, caplog)
    assert "incomplete" in message and SLUG in message
    partial = tmp_path / ".brats.zip.download" / "brain-scans.zip"
    assert partial.stat().st_size == ONE_CHUNK  # the first chunk survived the cut

    server.mode = "ok"
    server.requests.clear()
    download_dataset(SLUG, out_zip, sha256=FIXTURE_SHA256)
    assert out_zip.read_bytes() == FIXTURE
    assert server.requests[-1][2].get("Range") == f"bytes={ONE_CHUNK}-"  # resumed, not restarted


def test_a_server_that_never_answers_ends_in_a_clear_error(
    server: StandIn, no_backoff: None, tmp_path: Path, capsys, caplog
) -> None:
    server.mode = "silent"
    message = _error(tmp_path / "brats.zip", capsys, caplog, limits=IMPATIENT)
    assert "no answer from Kaggle within 0.3 s" in message and "after 2 attempts" in message and SLUG in message
    assert "GLIOSEG_KAGGLE_TIMEOUT" in message and "GLIOSEG_KAGGLE_ATTEMPTS" in message
    assert [(method, path) for method, path, *_ in server.requests] == [("POST", API_PATH)] * 2
    assert not (tmp_path / ".brats.zip.download").exists()


def test_a_download_that_stalls_is_kept_incomplete_and_resumed(
    server: StandIn, no_backoff: None, tmp_path: Path, capsys, caplog
) -> None:
    out_zip = tmp_path / "brats.zip"
    server.mode = "stall"
    message = _error(out_zip, capsys, caplog, limits=IMPATIENT)
    assert "no answer from Kaggle within 0.3 s" in message and "after 2 attempts" in message and SLUG in message
    file_requests = [headers for method, _, headers, _ in server.requests if method == "GET"]
    assert file_requests[-1].get("Range") == f"bytes={ONE_CHUNK}-"  # the second attempt resumed
    partial = tmp_path / ".brats.zip.download" / "brain-scans.zip"
    assert partial.stat().st_size == ONE_CHUNK  # incomplete, and marked as such for the client's resume
    assert partial.with_name("brain-scans.zip.kaggle-partial").is_file()

    server.mode = "ok"
    server.requests.clear()
    download_dataset(SLUG, out_zip, sha256=FIXTURE_SHA256, limits=IMPATIENT)
    assert out_zip.read_bytes() == FIXTURE
    assert server.requests[-1][2].get("Range") == f"bytes={ONE_CHUNK}-"


def test_no_connection_within_the_connect_timeout(
    port_80_unanswered: None, no_backoff: None, tmp_path: Path, capsys, caplog
) -> None:
    message = _error(tmp_path / "brats.zip", capsys, caplog, limits=IMPATIENT)
    assert "no connection to Kaggle within 0.5 s" in message and "after 2 attempts" in message and SLUG in message


def test_timeouts_and_attempts_come_from_the_environment(
    server: StandIn, tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    monkeypatch.setenv("GLIOSEG_KAGGLE_TIMEOUT", "2,0.2")
    monkeypatch.setenv("GLIOSEG_KAGGLE_ATTEMPTS", "1")
    server.mode = "silent"
    message = _error(tmp_path / "brats.zip", capsys, caplog)
    assert "no answer from Kaggle within 0.2 s" in message and "after 1 attempt)" in message
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [("GLIOSEG_KAGGLE_TIMEOUT", "soon"), ("GLIOSEG_KAGGLE_TIMEOUT", "0"), ("GLIOSEG_KAGGLE_TIMEOUT", "1,2,3"),
     ("GLIOSEG_KAGGLE_ATTEMPTS", "0"), ("GLIOSEG_KAGGLE_ATTEMPTS", "2.5")],
)
def test_a_bad_limit_in_the_environment_is_named(
    server: StandIn, tmp_path: Path, monkeypatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(GliosegError, match=name) as info:
        download_dataset(SLUG, tmp_path / "brats.zip")
    assert repr(value) in str(info.value)
    assert server.requests == []


def test_missing_credentials_fail_before_any_request(server: StandIn, monkeypatch, tmp_path, capsys, caplog) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    message = _error(tmp_path / "brats.zip", capsys, caplog)
    assert server.requests == []
    for where in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "settings/api"):
        assert where in message


@pytest.mark.parametrize(
    ("env", "files"),
    [
        ({"KAGGLE_API_TOKEN": "tok"}, {}),
        ({}, {".kaggle/access_token": "tok\n"}),
        ({}, {"kaggle-config/kaggle.json": '{"username": "u", "key": "k"}'}),
        ({"KAGGLE_USERNAME": "u"}, {"kaggle-config/kaggle.json": '{"key": "k"}'}),
        ({}, {".kaggle/credentials.json": '{"refresh_token": "r"}'}),
    ],
    ids=["token-env", "token-file", "kaggle-json", "env-plus-json", "oauth"],
)
def test_check_credentials_finds_what_the_client_finds(env: dict, files: dict, kaggle_env: Path, monkeypatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _write_files(kaggle_env, files)
    check_credentials()


@pytest.mark.parametrize(
    "files",
    [
        {},
        {".kaggle/access_token": "  \n"},
        {"kaggle-config/kaggle.json": '{"username": "u"}'},
        {".kaggle/credentials.json": "{}"},
    ],
    ids=["nothing", "empty-token", "user-without-key", "oauth-without-token"],
)
def test_check_credentials_refuses_what_the_client_refuses(files: dict, kaggle_env: Path) -> None:
    _write_files(kaggle_env, files)
    with pytest.raises(GliosegError, match="no Kaggle API credentials found"):
        check_credentials()


def test_check_credentials_has_no_side_effects(kaggle_env: Path) -> None:
    """Without credentials: the paragraph, no output, no folders, and the client never imported."""
    probe = (
        "import sys\n"
        "from glioseg.acquire.kaggle import check_credentials\n"
        "from glioseg.errors import GliosegError\n"
        "try:\n    check_credentials()\nexcept GliosegError as exc:\n    sys.stderr.write(str(exc))\n"
        "assert 'kaggle' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == ""
    assert "no Kaggle API credentials found" in done.stderr and "source: {path:" in done.stderr
    assert list(kaggle_env.iterdir()) == []


@pytest.mark.parametrize("slug", ["brain-scans", "a/b/c", "a/../b", "/abs", "owner/", ""])
def test_bad_slug_is_named(slug: str, credentials: None, tmp_path: Path) -> None:
    with pytest.raises(GliosegError, match="OWNER/NAME") as info:
        download_dataset(slug, tmp_path / "x.zip")
    assert repr(slug) in str(info.value)
