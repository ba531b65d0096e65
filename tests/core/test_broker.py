"""The embedded valkey broker: a real server process, shared, persistent, local-only."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from celery import Celery

from authops.core import broker
from authops.core.broker import JOB_QUEUE, RUN_JOB_TASK, EmbeddedBroker
from authops.core.settings import Settings
from tests.support.workers import REPO_ROOT, worker_env

ENSURE_SCRIPT = (
    "import json, sys; from pathlib import Path; from authops.core import broker; "
    "from authops.core.settings import Settings; "
    "s = Settings(data_dir=Path(sys.argv[1]), broker_url=''); url = broker.ensure_broker(s); "
    "print(json.dumps({'url': url, 'pid': broker.broker_info(s).pid}))"
)


@pytest.fixture
def broker_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "data", broker_url="")
    yield settings
    broker.stop_broker(settings)


def _client(url: str | None = None, **kwargs: object) -> redis.Redis:
    """A client without retries, so refused passwords fail at once."""
    options = {"socket_timeout": 2, "socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0)}
    if url is None:
        return redis.Redis(host="127.0.0.1", **options, **kwargs)  # type: ignore[arg-type]
    return redis.Redis.from_url(url, **options)


def _listening(port: int) -> list[tuple[str, str]]:
    """(file, hex local address) of every LISTEN socket on `port`, from /proc/net/tcp{,6}."""
    found = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.append((name, address))
    return found


def _valkeys_in(folder: Path) -> list[int]:
    """Valkey processes whose working directory is `folder`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"valkey" in (entry / "cmdline").read_bytes() and (entry / "cwd").resolve() == folder:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_starts_answers_and_listens_only_on_localhost(broker_settings: Settings) -> None:
    with EmbeddedBroker(broker_settings) as embedded:
        assert embedded.started
        url = embedded.url
        assert url.startswith("redis://:") and "@127.0.0.1:" in url
        client = _client(url)
        assert client.ping()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        port = embedded.record.port  # type: ignore[union-attr]
        sockets = _listening(port)
        assert sockets == [("tcp", "0100007F")], sockets  # 127.0.0.1 only, no IPv6/any
        # The password is required, and it and the record are private to the owner.
        with pytest.raises(redis.AuthenticationError):
            _client(port=port, password="wrong").ping()
        with pytest.raises((redis.AuthenticationError, redis.ResponseError), match="(?i)auth"):
            _client(port=port).set("k", "v")
        for name in ("broker.json", "valkey.conf"):
            mode = stat.S_IMODE((broker_settings.broker_dir / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
        client.close()
    assert broker.broker_info(broker_settings) is None
    assert not _valkeys_in(broker_settings.broker_dir.resolve())


def test_second_ensure_reuses_the_first_even_from_another_process(broker_settings: Settings) -> None:
    url = broker.ensure_broker(broker_settings)
    pid = broker.broker_info(broker_settings).pid  # type: ignore[union-attr]
    assert broker.ensure_broker(broker_settings) == url
    out = subprocess.run([sys.executable, "-c", ENSURE_SCRIPT, str(broker_settings.data_dir)],
                         env=worker_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"url": url, "pid": pid}
    with EmbeddedBroker(broker_settings) as embedded:
        assert not embedded.started and embedded.url == url
    assert broker.broker_info(broker_settings) is not None  # the context did not own it


def test_concurrent_ensure_starts_exactly_one_server(broker_settings: Settings) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", ENSURE_SCRIPT, str(broker_settings.data_dir)],
                              env=worker_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert len({(r["url"], r["pid"]) for r in results}) == 1, results
    assert _valkeys_in(broker_settings.broker_dir.resolve()) == [results[0]["pid"]]


def test_queued_message_survives_kill_9_and_restart(broker_settings: Settings) -> None:
    url = broker.ensure_broker(broker_settings)
    sender = Celery("test-sender", broker=url, set_as_current=False)
    sender.conf.task_default_queue = JOB_QUEUE
    sender.send_task(RUN_JOB_TASK, args=[4242])
    sender.close()
    record = broker.broker_info(broker_settings)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while broker.broker_info(broker_settings) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.broker_info(broker_settings) is None

    assert broker.ensure_broker(broker_settings) == url  # same port and password: clients reconnect
    restarted = broker.broker_info(broker_settings)
    assert restarted is not None and restarted.pid != record.pid
    client = _client(url)
    messages = client.lrange(JOB_QUEUE, 0, -1)
    client.close()
    assert len(messages) == 1
    body = json.loads(base64.b64decode(json.loads(messages[0])["body"]))
    assert body[0] == [4242]


def test_stale_record_is_replaced(broker_settings: Settings) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = broker_settings.broker_dir
    folder.mkdir(parents=True)
    (folder / "broker.json").write_text(json.dumps({"pid": dead.pid, "port": 1, "password": "x"}))
    url = broker.ensure_broker(broker_settings)
    record = broker.broker_info(broker_settings)
    assert record is not None and record.pid != dead.pid and record.port != 1
    assert _client(url).ping()
    assert broker.stop_broker(broker_settings)
    assert not broker.stop_broker(broker_settings)
    assert broker.broker_info(broker_settings) is None
