"""A block takes effect on the very next request in every API process.

Two uvicorn worker processes serve the API on PostgreSQL. A key is used until both processes
have served it, over one kept-alive connection pinned to each process; then the key's
night-time burst is committed (the rule opens a case and blocks the key) and the next request
on each pinned connection must be refused. Which process holds a connection is read from
/proc (the server side of the TCP connection), so the test needs Linux.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from authops.audit import log as audit_log
from authops.audit.anomaly import rules as anomaly_rules
from authops.audit.anomaly import service as anomaly_service
from authops.core.identity import OrgKind
from tests.support.builders import PASSWORD, make_org, make_user

ROOT = Path(__file__).resolve().parents[2]
NIGHT = datetime(2026, 3, 10, 15, 0)  # 23:00 Asia/Shanghai


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


def _server_pid(response: httpx.Response, server_port: int, candidates: list[int]) -> int | None:
    """The process holding the server end of the connection that carried `response`."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if (int(fields[1].rsplit(":", 1)[1], 16) == server_port
                    and int(fields[2].rsplit(":", 1)[1], 16) == client_port):
                inode = fields[9]
    for pid in candidates:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


@pytest.fixture
def server(db_settings, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("finding which process serves a connection reads /proc (Linux only)")
    port = _free_port()
    log = open(tmp_path / "uvicorn.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "authops.app:create_app", "--factory", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the API did not start: " + (tmp_path / "uvicorn.log").read_text()[-2000:])
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_block_refuses_the_next_request_in_both_api_processes(server, session):
    proc, port = server
    base = f"http://127.0.0.1:{port}"
    customer = make_org(session, OrgKind.CUSTOMER)
    buyer = make_user(session, customer, "customer_admin")
    session.commit()
    token = httpx.post(f"{base}/api/v1/auth/login", json={"username": buyer.username, "password": PASSWORD})
    created = httpx.post(f"{base}/api/v1/api-keys", json={"name": "core banking", "scopes": ["self.read"]},
                         headers={"Authorization": f"Bearer {token.json()['access_token']}"}).json()
    key = {"Authorization": f"Bearer {created['key']}"}

    workers = _children(proc.pid)
    pinned: dict[int, httpx.Client] = {}  # worker pid -> a kept-alive connection it serves
    try:
        for _ in range(200):
            client = httpx.Client(base_url=base, timeout=5)
            r = client.get("/api/v1/me", headers=key)
            assert r.status_code == 200, r.text
            pid = _server_pid(r, port, workers)
            assert pid is not None, "no worker process holds the connection"
            if pid in pinned:
                client.close()
            else:
                pinned[pid] = client
            if len(pinned) == 2:
                break
        assert len(pinned) == 2, f"only {sorted(pinned)} of the workers {workers} served the key"

        rule = anomaly_rules.rule_by_name(session, "night_burst")
        anomaly_rules.update_rule(session, rule.id, actor=audit_log.SYSTEM, threshold=3)
        session.commit()
        who = audit_log.Actor(kind="key", id=created["id"], name="core banking", org_id=customer.id)
        for i in range(4):
            audit_log.record(session, who, "product.call", subjects=1).ts = NIGHT + timedelta(seconds=i)
        session.commit()  # the commit hands the events to the rules: a case and a block on the key
        committed_at = time.perf_counter()
        anomaly_service.settle()
        blocked_at = time.perf_counter()
        print(f"\nrule evaluation after commit: {(blocked_at - committed_at) * 1000:.1f} ms")

        latencies, report = {}, []
        for pid, client in pinned.items():
            sent = time.perf_counter()
            r = client.get("/api/v1/me", headers=key)
            done = time.perf_counter()
            latencies[pid] = done - blocked_at
            assert (r.status_code, r.json()["error"]["code"]) == (403, "access_blocked"), r.text
            assert _server_pid(r, port, workers) == pid, "the refusal came over the pinned connection"
            report.append(f"pid {pid}: refused on its first request, {latencies[pid] * 1000:.1f} ms after "
                          f"the commit (the request itself took {(done - sent) * 1000:.1f} ms)")
        print("\nblock latency per API process: " + "; ".join(report))
        assert max(latencies.values()) < 1.0
    finally:
        for client in pinned.values():
            client.close()
