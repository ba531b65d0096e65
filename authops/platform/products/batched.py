"""Batched product calls: the hot path of `POST /api/v1/products/{code}/calls` on PostgreSQL.

A call whose API key and product terms this process has seen admit a call before is answered on
the event loop from the in-process answer set, and its usage record and audit event are handed to
this process's call writer, an asyncio task on the same loop. The writer commits the calls that
queued while its last batch was committing in ONE transaction (group commit), and only then are
they answered:

    1. check again, in the database and for every call of the batch in one statement, everything
       that could have changed since this process saw it admit a call: the key is not revoked or
       expired and its organisation is active; no block or throttle names the key, the organisation
       or the address; the usage agreement is in force today for a registered product; the
       operator's price and the bureau's cap in force are those the call was rated at; and, for a
       product that needs it, the subject's consents for this product and customer, of which the
       newest in force for the call's purpose admits it (consent.first_in_force, as admit_call);
    2. insert the usage records (a record whose Idempotency-Key or request id exists is skipped);
    3. add each operator's calls to its revenue total in one conditional UPDATE, which passes only
       within the ceiling and when no warning threshold is crossed;
    4. record the keys' last use (at most once a minute per key);
    5. chain and append the audit events (one `product.call` each, as the ordinary path writes);
    6. COMMIT, then tell the audit subscribers (anomaly rules).

A call that fails a check in step 1, or whose record step 2 skipped, or whose batch cannot charge
in step 3 (the ceiling, a warning threshold, no counter yet) or fails in any way, is not answered
here: the route runs the ordinary path for it (`calls.call` in its own transaction), which refuses
with the reason and audits the refusal, replays a stored response, records the warning, or stops
exactly at the ceiling. So what a call's answer relies on is read in the same transaction as its
charge and its audit event, as on the ordinary path, and nothing is answered before it is durable.

What the caches hold: an API key's principal by the SHA-256 of the key (never the key), learned
when the ordinary path authenticated it; per customer and product code, the product, agreement and
the price terms in force (learned again after PRODUCT_SECONDS). Only admissions are cached, never
refusals, and each is checked again at commit (step 1), so a revocation, block, withdrawal or price
change takes effect with the next call in every process, as on the ordinary path. Consent is never
cached: each call's subject is looked up in step 1. SQLite (the embedded default) uses the
ordinary path only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, column, exists, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from authops.audit import log as audit_log
from authops.audit.anomaly import service as anomaly
from authops.billing import metering
from authops.billing.models import UsageRecord
from authops.billing.rating import shanghai_year
from authops.core.clock import utcnow
from authops.core.db import psycopg_sql
from authops.core.errors import AuthopsError
from authops.core.identity import Principal
from authops.core.regions import region_of
from authops.core.settings import Settings
from authops.platform.governance import agreements, consent
from authops.platform.governance.models import Agreement, Consent, Product
from authops.platform.governance.products import Admitted
from authops.platform.identity import service as identity_service
from authops.platform.identity.models import ApiKey, Organisation
from authops.platform import limits
from authops.platform.products import calls, serving
from authops.products.runtime import idempotency

log = logging.getLogger(__name__)

# Cached admissions are learned again after this long. Not for correctness: everything a call relies
# on that can change (the key, blocks, the agreement's state and dates, the product's registration,
# the consent, the price and cap in force) is checked at commit. An active agreement's terms and a
# registered product's number and category do not change.
KEY_SECONDS = PRODUCT_SECONDS = 60.0
MAX_BATCH = 256
MAX_ENTRIES = 100_000  # per cache; a full cache is emptied (it refills from the ordinary path)


# --- what this process has seen admit a call ------------------------------------------------------

@dataclass(frozen=True)
class _Key:
    principal: Principal  # without ip and region (the request's own are set per call)
    learned: float


@dataclass(frozen=True)
class _Terms:
    admitted: Admitted  # consent_id None: the consent is per subject
    needs_consent: bool
    learned: float


class Caches:
    def __init__(self) -> None:
        self.keys: dict[bytes, _Key] = {}
        self.terms: dict[tuple[int, str], _Terms] = {}
        self.lock = threading.Lock()

    def clear(self) -> None:
        with self.lock:
            self.keys.clear()
            self.terms.clear()

    def _put(self, d: dict, k: Any, v: Any) -> None:
        with self.lock:
            if len(d) >= MAX_ENTRIES:
                d.clear()
            d[k] = v

    def forget(self, item: "_Item", *, key: bool = True, terms: bool = True) -> None:
        """Drop what admitted a call whose key or terms no longer hold (the ordinary path decides)."""
        with self.lock:
            if key:
                self.keys.pop(item.token_digest, None)
            if terms:
                self.terms.pop((item.customer, item.code), None)


CACHES = Caches()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def learn(request, settings: Settings, principal: Principal, admitted: Admitted) -> None:
    """After the ordinary path admitted (and committed) an API-key call: remember what admitted it.
    A product that needs consent is admitted with one (admit_call and guard_call refuse without)."""
    needs_consent = admitted.consent_id is not None
    if principal.kind != "key" or admitted.billing_terms is None or not batching_on(settings):
        return
    token = bearer_key(request.headers.get("authorization", ""))
    if token is None:
        return
    now = time.monotonic()
    CACHES._put(CACHES.keys, _digest(token), _Key(replace(principal, ip=None, region=None), now))
    CACHES._put(CACHES.terms, (principal.org_id, admitted.code),
                _Terms(replace(admitted, consent_id=None, at=None), needs_consent, now))


# --- the writer ----------------------------------------------------------------------------------

@dataclass
class _Item:
    future: asyncio.Future
    row: dict[str, Any]  # the usage record's columns
    event: audit_log.PendingEvent
    key_id: int
    ip: str
    subject_key: str
    purpose: str | None
    needs_consent: bool
    price: int | None  # the price terms the call was rated at (checked at commit)
    cap: int | None
    at: datetime
    response: dict[str, Any]
    token_digest: bytes
    customer: int
    code: str


class _Refit(Exception):
    """The batch cannot be committed as a batch (e.g. its charge would cross a threshold)."""


def _recordset(name: str, columns: list[tuple[str, Any]]):
    """The batch as rows: one JSON parameter (a list of objects) read by json_to_recordset. One
    json.dumps for the whole batch costs far less than adapting an array per column."""
    return (func.json_to_recordset(sa.cast(bindparam(name, type_=sa.Text()), sa.JSON()))
            .table_valued(*(column(n, t) for n, t in columns)).render_derived(with_types=True))


def _as_json(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def _check_statement():
    """Step 1 for a whole batch: per call, its subject's consents (when needed) and whether its key
    and its terms still hold at `now`. Keys and terms are checked once per distinct value (a batch
    is mostly one customer's calls of one product), then joined back to the calls."""
    rows = _recordset("batch", [
        ("idx", sa.Integer()), ("key_id", sa.Integer()), ("customer", sa.Integer()), ("ip", sa.Text()),
        ("product", sa.Integer()), ("agreement", sa.Integer()), ("subject_key", sa.Text()),
        ("needs_consent", sa.Boolean()), ("operator", sa.Integer()), ("unit", sa.Text()), ("price", sa.BigInteger()),
        ("cap", sa.BigInteger())])
    v = select(*rows.c).cte("calls")
    now, today = bindparam("now", type_=sa.DateTime()), bindparam("today", type_=sa.Date())
    keys = select(v.c.key_id, v.c.customer, v.c.ip).distinct().cte("keys")
    k, o = ApiKey.__table__.c, Organisation.__table__.c
    key_ok = (exists().where(k.id == keys.c.key_id, k.org_id == keys.c.customer, k.revoked_at.is_(None),
                             k.expires_at > now, o.id == k.org_id, o.is_active.is_(True))
              & ~anomaly.block_named(api_key_id=keys.c.key_id, org_id=keys.c.customer, ip=keys.c.ip))
    keys_ok = select(keys.c.key_id, keys.c.customer, keys.c.ip, key_ok.label("ok")).cte("keys_ok")
    terms = select(v.c.customer, v.c.agreement, v.c.product, v.c.operator, v.c.unit, v.c.price, v.c.cap
                   ).distinct().cte("terms")
    a, p = Agreement.__table__.c, Product.__table__.c
    price, cap = metering.terms_columns(terms.c.product, terms.c.operator, terms.c.unit, now)
    term_ok = (exists().where(a.id == terms.c.agreement, a.kind == "usage", a.product_id == terms.c.product,
                              a.party_b_org_id == terms.c.customer, a.state == "active", a.starts_on <= today,
                              a.ends_on >= today, p.id == terms.c.product, p.state == "registered",
                              p.registration_number.is_not(None))
               & price.is_not_distinct_from(terms.c.price) & cap.is_not_distinct_from(terms.c.cap))
    terms_ok = select(*terms.c, term_ok.label("ok")).cte("terms_ok")
    c = Consent.__table__.c
    return (select(v.c.idx, c.id, c.state, c.valid_from, c.valid_until, c.purpose, keys_ok.c.ok, terms_ok.c.ok)
            .select_from(
                v.join(keys_ok, sa.and_(keys_ok.c.key_id == v.c.key_id, keys_ok.c.customer == v.c.customer,
                                        keys_ok.c.ip == v.c.ip))
                .join(terms_ok, sa.and_(*(terms_ok.c[n].is_not_distinct_from(v.c[n])
                                          for n in ("customer", "agreement", "product", "operator", "unit", "price",
                                                    "cap"))))
                .outerjoin(Consent.__table__, sa.and_(v.c.needs_consent, c.product_id == v.c.product,
                                                      c.customer_org_id == v.c.customer,
                                                      c.subject_key == v.c.subject_key))))


_CHECK = _check_statement()
_CHARGE = metering.charge_within()  # built once (its compiled form is cached)
_USAGE = UsageRecord.__table__
_USAGE_COLUMNS = [c.name for c in _USAGE.columns if c.name != "id"]


def _insert_statement():
    """The batch's usage records in one statement of fixed text; a record whose request id or
    (customer, Idempotency-Key) exists is skipped; returns the inserted request ids."""
    v = _recordset("rows", [(c.name, c.type) for c in _USAGE.columns if c.name != "id"])
    return (pg_insert(_USAGE).from_select(_USAGE_COLUMNS, select(*(v.c[n] for n in _USAGE_COLUMNS)))
            .on_conflict_do_nothing().returning(_USAGE.c.request_id))


_INSERT = _insert_statement()


def _raw_statements() -> dict[str, tuple[str, dict]]:
    k = ApiKey.__table__
    cutoff = bindparam("cutoff", type_=sa.DateTime())
    stale = (select(k.c.id).where(k.c.id == sa.any_(bindparam("ids", type_=ARRAY(sa.Integer()))),
                                  sa.or_(k.c.last_used_at.is_(None), k.c.last_used_at <= cutoff))
             .with_for_update(skip_locked=True))
    touch = sa.update(k).where(k.c.id.in_(stale.scalar_subquery())).values(last_used_at=bindparam("now"))
    return {"check": psycopg_sql(_CHECK), "insert": psycopg_sql(_INSERT), "charge": psycopg_sql(_CHARGE),
            "touch": psycopg_sql(touch)}


_RAW: dict[str, tuple[str, dict]] = {}


class Writer:
    """One per event loop (an API process has one): an asyncio task that commits queued calls in
    batches (see the module) over its own psycopg asynchronous connection, on the loop's own thread.
    While a batch waits for PostgreSQL the loop goes on reading requests, which queue for the next
    batch; no thread hands the interpreter lock back and forth for each round trip, and the
    statements, compiled once, run as prepared statements without the ORM or Core in between."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # the process's ordinary engine: the audit subscribers are told about it
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = None
        self._queue: list[_Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._touched: dict[int, float] = {}  # key id -> when this writer last recorded its use
        self.batches = 0  # batches committed, and calls in them (for tests and the benchmark)
        self.calls = 0
        self.handed_back = 0  # calls left to the ordinary path

    async def close(self) -> None:
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    def submit(self, item: _Item) -> None:
        self._queue.append(item)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="authops-call-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if self._queue:
                self._wake.set()
            if not batch:
                continue
            try:
                done, seqs = await self._write(batch)
            except _Refit:
                done, seqs = set(), []
            except Exception:  # the ordinary path will answer these (and report what is wrong)
                log.warning("batched product calls: a batch of %d was handed to the ordinary path", len(batch),
                            exc_info=True)
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                done, seqs = set(), []
            self.handed_back += len(batch) - len(done)
            for i, it in enumerate(batch):
                if not it.future.done():
                    it.future.set_result(it.response if i in done else None)
            if seqs:
                audit_log.notify(self.engine, seqs)

    async def _connection(self):
        if self._conn is None or self._conn.closed:
            import psycopg

            from authops.core.db import CONNECT_TIMEOUT_SECONDS

            self._conn = await psycopg.AsyncConnection.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        if not _RAW:
            _RAW.update(_raw_statements())
        return self._conn

    async def _write(self, batch: list[_Item]) -> tuple[set[int], list[int]]:
        conn = await self._connection()

        async def run(name: str, params: dict[str, Any]):
            sql, defaults = _RAW[name]
            return await conn.execute(sql, {**defaults, **params}, prepare=True)

        now = utcnow()  # every check is made as of now, when the batch commits
        # Pipeline mode: statements whose results are not needed at once go out together (the charges,
        # the last-use touch and the chain's claim; the events, the new tip and the COMMIT), so a batch
        # is four round trips.
        async with conn.pipeline(), conn.transaction():
            checks = [{"idx": i, "key_id": it.key_id, "customer": it.customer, "ip": it.ip,
                       "product": it.row["product_id"], "agreement": it.row["agreement_id"],
                       "subject_key": it.subject_key, "needs_consent": it.needs_consent,
                       "operator": it.row["operator_org_id"], "unit": it.row["unit"], "price": it.price,
                       "cap": it.cap} for i, it in enumerate(batch)]
            found: dict[int, list[consent.ConsentTerms]] = {}
            for idx, cid, state, valid_from, valid_until, purpose, key_ok, terms_ok in await (
                    await run("check", {"batch": json.dumps(checks), "now": now,
                                        "today": agreements.today(now)})).fetchall():
                if not (key_ok and terms_ok):  # the ordinary path decides (and this process learns again)
                    CACHES.forget(batch[idx], key=not key_ok, terms=not terms_ok)
                    continue
                found.setdefault(idx, [])
                if cid is not None:
                    found[idx].append(consent.ConsentTerms(cid, state, valid_from, valid_until, purpose))
            valid = []
            for idx in sorted(found):  # as admit_call: the newest consent in force for this purpose
                it = batch[idx]
                if it.needs_consent:
                    c = consent.first_in_force(found[idx], it.purpose, now)
                    if c is None:
                        continue  # the ordinary path refuses it, saying why
                    it.event.details["consent_id"] = c.id
                valid.append(idx)
            if not valid:
                return set(), []
            rows = [batch[i].row for i in valid]
            inserted = {r[0] for r in await (await run("insert", {"rows": json.dumps(rows, default=_as_json)})
                                             ).fetchall()}
            done = [i for i in valid if batch[i].row["request_id"] in inserted]
            if not done:
                return set(), []
            events = [audit_log.unchained(batch[i].event) for i in done]  # encoded before the hot rows' locks
            totals: dict[tuple[int, int], int] = {}
            for i in done:
                r = batch[i].row
                if r["amount_fen"] and r["operator_org_id"] is not None:
                    k = (r["operator_org_id"], shanghai_year(r["at"]))
                    totals[k] = totals.get(k, 0) + r["amount_fen"]
            charges = [await run("charge", {"g_operator": operator, "g_year": year, "g_total": total})
                       for (operator, year), total in sorted(totals.items())]
            mono = time.monotonic()
            stale = sorted({batch[i].key_id for i in done
                            if mono - self._touched.get(batch[i].key_id, -1e9) >= identity_service.TOUCH_SECONDS})
            if stale:
                await run("touch", {"ids": stale, "now": now,
                                    "cutoff": now - timedelta(seconds=identity_service.TOUCH_SECONDS)})
            first = await audit_log.append_async(conn, events)
            for charged in charges:  # answered with the chain's claim
                if await charged.fetchone() is None:
                    raise _Refit  # rolls back: each call takes the ordinary path (ceiling, warning, new counter)
        for k in stale:
            self._touched[k] = mono
        self.batches += 1
        self.calls += len(done)
        return set(done), list(range(first, first + len(done)))


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Writer]]" = weakref.WeakKeyDictionary()


def writer_for(settings: Settings, engine: Engine) -> Writer:
    """This event loop's writer for the settings' database (made on first use)."""
    url = settings.effective_database_url
    mine = _writers.setdefault(asyncio.get_running_loop(), {})
    w = mine.get(url)
    if w is None:
        w = mine[url] = Writer(engine)
    return w


async def close_writers() -> None:
    """At shutdown: let this loop's writers finish their queued batches, then close their connections."""
    for w in list(_writers.pop(asyncio.get_running_loop(), {}).values()):
        await w.close()


def writers() -> list[Writer]:
    """Every writer of this process (for tests and the benchmark)."""
    return [w for by_url in list(_writers.values()) for w in by_url.values()]


def batching_on(settings: Settings) -> bool:
    return settings.call_batching and settings.effective_database_url.startswith("postgresql")


# --- the route's side ------------------------------------------------------------------------------

def bearer_key(authorization: str) -> str | None:
    """The API key of an `Authorization: Bearer ak_…` header, else None."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value.startswith(identity_service.KEY_PREFIX):
        return None
    return value


def knows(token: str) -> bool:
    """Has this process seen this key admitted (the batched path may answer its calls)?"""
    cached = CACHES.keys.get(_digest(token))
    return cached is not None and time.monotonic() - cached.learned <= KEY_SECONDS


def attempt(settings: Settings, engine: Engine, authorizer, token: str, ip: str | None, code: str, subject: Any,
            claims: dict[str, Any] | None, purpose: Any, idempotency_key: str | None) -> _Item | None:
    """The call queued for the writer, or None when the ordinary path must answer it (nothing cached
    admits it yet, or the request is not an ordinary one). Runs on the event loop: no I/O but the rate
    limiter's; its 429 is raised from here. Once the limiter counted the call, the ordinary path must
    not count it again (the caller marks the request `call_admitted`)."""
    if not batching_on(settings):
        return None
    digest = _digest(token)
    mono = time.monotonic()
    cached = CACHES.keys.get(digest)
    if cached is None or mono - cached.learned > KEY_SECONDS:
        return None
    try:
        key = idempotency.check_key(idempotency_key)
        subject = calls.check_subject(subject)
        purpose = calls.check_purpose(purpose)
    except AuthopsError:
        return None
    principal = cached.principal
    terms = CACHES.terms.get((principal.org_id, code))
    if terms is None or mono - terms.learned > PRODUCT_SECONDS:
        return None
    loaded = serving.CACHE.fresh(settings, terms.admitted.product_id, terms.admitted.code)
    if loaded is None:
        return None
    if not authorizer.allowed(principal, "product.call"):
        return None
    principal = replace(principal, ip=ip, region=region_of(settings, ip))
    now = utcnow()
    admitted = replace(terms.admitted, at=now)  # its consent is found at commit (the writer's check)
    try:
        prep = calls.prepare(settings, admitted, loaded, subject, claims, purpose)
    except AuthopsError:
        return None
    limits.admit_call(settings, principal)  # 429 over the per-key / per-organisation limit
    row = metering.rated(customer_org_id=principal.org_id, product_id=admitted.product_id,
                         agreement_id=admitted.agreement_id, request_id=prep.request_id, pricing_method=prep.method,
                         price_fen=prep.price, units=1, channel="call", idempotency_key=key,
                         request_sha256=prep.request_sha256, response=prep.response, at=now,
                         terms=admitted.billing_terms)
    who = audit_log.Actor(kind=principal.kind, id=principal.id, name=principal.name, org_id=principal.org_id,
                          ip=principal.ip, region=principal.region)
    event = audit_log.PendingEvent(actor=who, action="product.call", object_type="product",
                                   object_id=str(admitted.product_id), subjects=1, ts=now,
                                   details=prep.audit_details(admitted, row["amount_fen"], key))
    loop = asyncio.get_running_loop()
    _, _, price, cap = admitted.billing_terms
    item = _Item(future=loop.create_future(), row=row, event=event, key_id=principal.id, ip=ip or "",
                 subject_key=prep.subject_key, purpose=purpose, needs_consent=terms.needs_consent, price=price,
                 cap=cap, at=now, response=prep.response, token_digest=digest,
                 customer=principal.org_id, code=code)
    writer_for(settings, engine).submit(item)
    return item


async def answered(item: _Item) -> dict[str, Any] | None:
    """The call's response once its batch committed; None: the ordinary path must answer it."""
    return await item.future
