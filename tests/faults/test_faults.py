"""Fault injection with real parts, CI-sized: nothing accepted is lost, nothing is done twice.

One world for the module (bench/faults.py builds it): a private PostgreSQL cluster, a private
redis-server as the broker, moto's S3 behind a proxy that can cut or refuse connections, two API
processes and two Celery workers, a registered product with consents and a partner workspace with
a privacy budget. Each test breaks one part under load through the two APIs and then counts, from
the database, what every accepted job and call left behind; the books (usage records against the
revenue counter and the audit log, privacy budget against its reservations) must balance after
each. The same scenarios at full size (100 jobs, longer outages): `python -m bench.faults`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from bench import faults
from tests.support.faults import missing_tools
from tests.support.services import services_required

pytestmark = [pytest.mark.slow, pytest.mark.services]

RESULTS: dict[str, Any] = {}
OUTAGE = 3.0  # seconds each outage lasts
OUTAGE_JOBS = 6  # jobs submitted while each outage scenario runs (sandbox and batch in turn)
RATE = 15.0  # new product calls a second during the outages


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[faults.World]:
    why = missing_tools()
    if why and services_required():
        pytest.fail(why + " and AUTHOPS_REQUIRE_SERVICES=1", pytrace=False)
    if why:
        pytest.skip(why)
    seed = random.randrange(1_000_000)
    with faults.World(tmp_path_factory.mktemp("faults"), workers=2, concurrency=1, scale=0.01, subjects=30,
                      seed=seed) as w:
        RESULTS["seed"] = seed
        yield w
        RESULTS["books"] = faults.account_books(w, faults.sandbox_succeeded(w))
    print(f"\nfault injection (seed {seed}):\n{faults.table(RESULTS)}")


def _books_balance(world: faults.World) -> None:
    books = faults.account_books(world, faults.sandbox_succeeded(world))
    assert books["balanced"], books


def _jobs_all_done(world: faults.World, j: dict[str, Any]) -> None:
    assert j["submitted"] >= 1
    why = (j["problems"], world.workers.log_tails())
    assert (j["duplicated"], j["lost"], j["failed_clean"], j["phantom"]) == (0, 0, 0, 0), why
    assert j["completed"] == j["submitted"], why


def _calls_all_once(c: dict[str, Any]) -> None:
    assert c["sent"] >= 10
    assert c["accepted"] == c["sent"] and c["refused"] == {}, c  # every call ended accepted (after retries)
    assert (c["recorded"], c["duplicated"], c["lost"], c["mismatched"], c["phantom"]) == (c["accepted"], 0, 0, 0, 0), c
    assert c["recorded_fen"] == c["charged_fen"], c  # charged what the answers said, once


def test_sigkilled_workers_complete_every_job_exactly_once(world):
    r = RESULTS["kill"] = faults.scenario_kill(world, jobs=20, kills=5, gap=(0.3, 1.5), say=lambda _: None)
    assert r["kills_total"] >= 3 and r["rerun"] >= 1, f"the kills hit no running job: {r}"
    _jobs_all_done(world, r)
    assert r["submitted"] == 20 and r["unaccepted"] == 0, r
    _books_balance(world)


def test_a_broker_restart_loses_and_doubles_no_call_and_no_job(world):
    r = RESULTS["broker"] = faults.scenario_broker(world, outage=OUTAGE, jobs=OUTAGE_JOBS, rate=RATE,
                                                   say=lambda _: None)
    _jobs_all_done(world, r["jobs"])
    # jobs accepted while the broker was down were sent afterwards from the outbox
    assert r["jobs"]["accepted_in_outage"] >= 1, r["jobs"]
    _calls_all_once(r["calls"])
    assert r["calls"]["failed_attempts"] == 0, r["calls"]  # a call needs no broker
    _books_balance(world)


def test_a_postgres_restart_fails_calls_fast_and_clearly_then_serves_them_once(world):
    r = RESULTS["postgres"] = faults.scenario_postgres(world, outage=OUTAGE, jobs=OUTAGE_JOBS, rate=RATE,
                                                       say=lambda _: None)
    c = r["calls"]
    assert c["failed_in_outage"] >= 1, c  # the outage was felt
    # answered at once with a code a client can act on (not a hang, a reset or an internal error)
    assert set(c["failure_codes"]) == {"503 database_unavailable"}, c["failure_codes"]
    assert c["first_success_after_s"] is not None, c  # and served again afterwards
    _calls_all_once(c)
    _jobs_all_done(world, r["jobs"])
    assert set(r["jobs"]["submit_errors"]) <= {"database_unavailable"}, r["jobs"]["submit_errors"]
    _books_balance(world)


def test_an_object_store_outage_fails_cleanly_and_nothing_half_written_is_read(world):
    r = RESULTS["store"] = faults.scenario_store(world, outage=OUTAGE, jobs=OUTAGE_JOBS, rate=RATE,
                                                 say=lambda _: None)
    j = r["jobs"]
    assert (j["duplicated"], j["lost"], j["phantom"]) == (0, 0, 0), j["problems"]
    assert j["completed"] + j["failed_clean"] == j["submitted"], j["problems"]
    # a job the outage stopped says why, and gave its budget back (failed_clean)
    assert all("object storage" in p for p in j["problems"]), j["problems"]
    assert set(j["submit_errors"]) <= {"unavailable"}, j["submit_errors"]
    assert r["half_written_reads"] == 0, r["half_written_examples"]
    assert set(r["reads"]) <= {"whole", "not_ready", "503 unavailable"}, r["reads"]
    store = r["store"]
    assert store["referenced_unreadable"] == [] and store["orphans_readable"] == 0, store
    _calls_all_once(r["calls"])  # the answers are served from memory: calls go on
    _books_balance(world)


def test_a_frozen_attempt_resuming_after_its_lease_never_touches_the_committed_release(world):
    """SIGSTOP lands while the first attempt stores the release (its write held by the proxy); the lease
    expires, the other worker runs the job to the end; then the first attempt resumes and writes."""
    r = RESULTS["stale"] = faults.scenario_stale_attempt(world)
    assert r["state"] == "succeeded" and [o for _, o in r["attempts"]] == ["lost", "succeeded"], r
    assert r["committed_release"] == "unchanged", r
    _books_balance(world)


def test_two_uploads_of_one_resource_loaded_at_once_both_land_intact(world):
    """The first load's dataset write is held until the second load finished (or waits for the first)."""
    r = RESULTS["uploads"] = faults.scenario_concurrent_uploads(world)
    assert [state for state, _ in r["runs"].values()] == ["succeeded", "succeeded"], r
    assert len(r["datasets"]) >= 2 and all(state == "intact" for *_, state in r["datasets"]), r
