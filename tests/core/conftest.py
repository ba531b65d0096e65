"""Core fixtures: a real S3 endpoint (moto's standalone server in a subprocess) for storage tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_url(tmp_path_factory) -> Iterator[str]:
    """URL of a moto S3 server running for this test session."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # moto logs every request: to a file, never to a pipe nobody drains (it would block when full)
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port), "-H", "127.0.0.1"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited early: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {url} within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on which nothing listens."""
    return f"http://127.0.0.1:{_free_port()}"
