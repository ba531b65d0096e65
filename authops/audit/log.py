"""Appending to the audit log in the same transaction as the action it records.

`record()` queues an event on the session; just before that session commits, every queued
event is chained (seq, prev hash) under a lock on the chain head and inserted. If the insert
fails the commit fails, so an action cannot commit without its event. Events of one
transaction share one head update (batching without loosening the guarantee). The head is
locked last (after the transaction's other writes are flushed) and held only for the append
and the COMMIT; transactions in every process queue on that one lock, so the chain has no gaps
and no forks. On PostgreSQL a transaction's single event (a product call's) is locked, chained,
inserted and the head moved in one statement, hashed by the database (`_append_in_database`),
so the lock spans that statement and the COMMIT only, not the application's work in between.
Several events, and SQLite, take three statements (claim the tip, insert, move the tip).
A layer above may hand that one statement a `Gate`: another hot-row write (the operator's revenue
total, taken by a paid call) that runs first in the same statement, the append happening only if
the gate's write did; so both row locks are taken in one statement and released by the COMMIT
right after it. When the gate does not pass (or the one-statement path does not apply) its
fallback runs first, in the ordinary way, and the events are appended as usual.
Events carry who, what, when, where from, outcome and sizes: never data values.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Text, bindparam, cast, column, event, exists, func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession

from authops.audit import canonical
from authops.audit.models import AuditEvent, AuditHead
from authops.core.clock import utcnow
from authops.core.identity import Principal

PENDING_KEY = "authops.audit.pending"
APPENDED_KEY = "authops.audit.appended"
GATE_KEY = "authops.audit.gate"
OUTCOMES = {"ok", "denied", "error", "blocked"}
_installed = threading.Lock()
_listening = False


@dataclass
class Actor:
    kind: str  # user | key | system | anonymous
    id: int | None = None
    name: str = ""
    org_id: int | None = None
    ip: str | None = None
    region: str | None = None

    @classmethod
    def of(cls, principal: Principal | None, *, region: str | None = None) -> "Actor":
        if principal is None:
            return cls(kind="anonymous")
        return cls(kind=principal.kind, id=principal.id, name=principal.name, org_id=principal.org_id,
                   ip=principal.ip, region=region or principal.region)


SYSTEM = Actor(kind="system", name="authops")


def as_actor(actor: Actor | Principal | None) -> Actor:
    """Who acted, as the log records it: an Actor as is, a request's Principal converted."""
    return actor if isinstance(actor, Actor) else Actor.of(actor)
_EVENT = AuditEvent.__table__
_HEAD = AuditHead.__table__
_SET_TIP = _HEAD.update().where(_HEAD.c.id == 1).values(hash=bindparam("tip"))


@dataclass
class PendingEvent:
    actor: Actor
    action: str
    outcome: str = "ok"
    object_type: str | None = None
    object_id: str | None = None
    rows: int | None = None
    bytes: int | None = None
    subjects: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    ts: datetime = field(default_factory=utcnow)


def record(session: OrmSession, actor: Actor | Principal | None, action: str, *, outcome: str = "ok",
           object_type: str | None = None, object_id: Any = None, rows: int | None = None,
           bytes: int | None = None, subjects: int | None = None,  # noqa: A002 - the domain word
           details: dict[str, Any] | None = None) -> PendingEvent:
    """Queue an event; it is written when (and only if) this session commits."""
    install()
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
    actor = as_actor(actor)
    ev = PendingEvent(actor=actor, action=action, outcome=outcome, object_type=object_type,
                      object_id=None if object_id is None else str(object_id), rows=rows, bytes=bytes,
                      subjects=subjects, details=dict(details or {}))
    canonical.encode(ev.details)  # refuse unencodable details now, not at commit
    session.connection()  # begin the transaction, so a rollback is seen and drops the event
    session.info.setdefault(PENDING_KEY, []).append(ev)
    return ev


def pending(session: OrmSession) -> list[PendingEvent]:
    return list(session.info.get(PENDING_KEY, []))


@dataclass
class Gate:
    """A write to run in the same statement as this transaction's audit append, ahead of it.

    `cte()` builds a data-modifying CTE (UPDATE ... RETURNING) that returns a row when its write
    happened; the statement for a `key` is built once. `params` binds it (names not starting "e_"
    or "before_"/"after_"). `fallback(session)` runs, before an ordinary append, when the gate
    did not pass or when the one-statement path does not apply (several events, SQLite): it does the write the slow way
    and may raise, or queue more events."""
    key: str
    cte: Callable[[], Any]
    params: dict[str, Any]
    fallback: Callable[[OrmSession], None]


def gate(session: OrmSession, g: Gate) -> None:
    """Have this transaction's audit append carry `g` (see Gate). Only with an event queued: the
    append that consumes the gate is then sure to run at commit."""
    if not session.info.get(PENDING_KEY):
        raise RuntimeError("an audit gate needs an event queued in the same transaction")
    if GATE_KEY in session.info:
        raise RuntimeError("one audit gate per transaction")
    session.info[GATE_KEY] = g


# Called after a commit that appended events, with (engine, [seq, ...]); e.g. anomaly rules.
_subscribers: list[Callable[[Engine, list[int]], None]] = []


def subscribe(callback: Callable[[Engine, list[int]], None]) -> None:
    """Run `callback(engine, seqs)` after every commit that appended events (in this process)."""
    if callback not in _subscribers:
        _subscribers.append(callback)


def install() -> None:
    """Hook the append into every session's commit (once per process)."""
    global _listening
    with _installed:
        if not _listening:
            event.listen(OrmSession, "before_commit", _append_pending)
            event.listen(OrmSession, "after_commit", _notify)
            event.listen(OrmSession, "after_soft_rollback", _drop_pending)
            _listening = True


def _drop_pending(session: OrmSession, *_: object) -> None:
    session.info.pop(PENDING_KEY, None)
    session.info.pop(APPENDED_KEY, None)
    session.info.pop(GATE_KEY, None)


def _append_pending(session: OrmSession) -> None:
    g: Gate | None = session.info.pop(GATE_KEY, None)
    events: list[PendingEvent] = session.info.pop(PENDING_KEY, [])
    if g is not None:
        session.flush()
        if len(events) == 1 and session.connection().dialect.name == "postgresql":
            row = _append_in_database(session.connection(), events[0], g)
            if row is not None:
                session.info[APPENDED_KEY] = [int(row[0])]
                return
        g.fallback(session)  # the gate's write the ordinary way (it may raise, or queue events)
        events += session.info.pop(PENDING_KEY, [])
    if events:
        session.flush()  # the transaction's own writes first: the chain head stays locked only for the append
        first = append(session, events)
        session.info[APPENDED_KEY] = list(range(first, first + len(events)))


def _notify(session: OrmSession) -> None:
    seqs = session.info.pop(APPENDED_KEY, None)
    if seqs:
        notify(session.get_bind(), seqs)


def notify(engine: Engine, seqs: list[int]) -> None:
    """Tell the subscribers about events a commit appended (for appends made outside an ORM session)."""
    if not seqs or not _subscribers:
        return
    for callback in list(_subscribers):
        try:
            callback(engine, seqs)
        except Exception:  # a failing subscriber must not undo or hide a committed action
            logging.getLogger(__name__).exception("audit subscriber %r failed", callback)


def append(session: OrmSession, events: list[PendingEvent]) -> int:
    """Chain and insert events now, in the session's transaction; returns the first seq."""
    return append_on(session.connection(), events)


def append_on(conn, events: list[PendingEvent]) -> int:
    """`append` on a Core connection in a transaction (the caller commits, then calls `notify`)."""
    if len(events) == 1 and conn.dialect.name == "postgresql":
        return _append_in_database(conn, events[0])
    seq, prev = _claim(conn, len(events))
    first = seq + 1
    rows = []
    for ev in events:
        seq += 1
        data = canonical.encode(_body(ev, seq, prev))
        digest = canonical.chain_hash(data)
        rows.append({**_columns(ev), "seq": seq, "prev_hash": prev, "hash": digest, "canonical": data})
        prev = digest
    # Core statements on the session's connection (the ORM's bulk path costs more than the I/O).
    conn.execute(_EVENT.insert(), rows)
    conn.execute(_SET_TIP, {"tip": prev})
    return first


# --- appending on a raw asynchronous psycopg connection (the batched product-call writer) -------------

@dataclass(frozen=True)
class Unchained:
    """An event encoded before its place in the chain is known: its columns, and its canonical
    text around `prev` and `seq` (sorted keys put them together), so chaining it under the head's
    lock is two string joins and one SHA-256."""
    columns: dict[str, Any]
    before_prev: str
    after_seq: str


def unchained(ev: PendingEvent) -> Unchained:
    stand_in = secrets.token_hex(16)
    text = canonical.encode(_body(ev, 0, stand_in)).decode("utf-8")
    joint = f'"prev":"{stand_in}","seq":0,'
    at = text.index(joint)
    return Unchained(_columns(ev), text[:at] + '"prev":"', "," + text[at + len(joint):])


def _chained(events: list[Unchained], seq: int, prev: str) -> tuple[list[dict[str, Any]], str]:
    rows = []
    for ev in events:
        seq += 1
        text = f'{ev.before_prev}{prev}","seq":{seq}{ev.after_seq}'
        digest = canonical.chain_hash(text.encode("utf-8"))
        rows.append({**ev.columns, "seq": seq, "prev_hash": prev, "hash": digest, "canonical": text})
        prev = digest
    return rows, prev


def _raw_statements() -> dict[str, tuple[str, dict]]:
    from authops.core.db import psycopg_sql

    named = [c for c in _EVENT.columns if c.name != "canonical"]
    v = (func.json_to_recordset(cast(bindparam("rows", type_=Text()), JSON()))
         .table_valued(*(column(c.name, c.type) for c in named), column("canonical", Text()))
         .render_derived(with_types=True))
    insert_rows = _EVENT.insert().from_select([c.name for c in named] + ["canonical"],
                                              select(*(v.c[c.name] for c in named),
                                                     func.convert_to(v.c.canonical, "UTF8")))
    return {"claim": psycopg_sql(_HEAD.update().where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + bindparam("n"))
                                 .returning(_HEAD.c.seq, _HEAD.c.hash)),
            "insert": psycopg_sql(insert_rows), "tip": psycopg_sql(_SET_TIP)}


_RAW: dict[str, tuple[str, dict]] = {}


async def append_async(aconn, events: list[Unchained]) -> int:
    """Chain and insert events in the transaction open on `aconn` (a psycopg AsyncConnection);
    returns the first seq. The head's row lock, taken by the first statement, is held until the
    caller commits: the same chain, in the same order across processes, as `append`."""
    if not _RAW:
        _RAW.update(_raw_statements())
    sql, defaults = _RAW["claim"]
    row = await (await aconn.execute(sql, {**defaults, "n": len(events)}, prepare=True)).fetchone()
    if row is None:
        raise RuntimeError("audit_head row missing: run `authops db upgrade`")
    first = int(row[0]) - len(events) + 1
    rows, tip = _chained(events, first - 1, row[1])
    sql, defaults = _RAW["insert"]
    await aconn.execute(sql, {**defaults, "rows": json.dumps(rows, default=_iso, ensure_ascii=False)}, prepare=True)
    sql, defaults = _RAW["tip"]
    await aconn.execute(sql, {**defaults, "tip": tip}, prepare=True)
    return first


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _body(ev: PendingEvent, seq: int, prev: str) -> dict[str, Any]:
    return {
        "v": canonical.VERSION, "seq": seq, "ts": canonical.timestamp(ev.ts), "prev": prev,
        "actor": {"kind": ev.actor.kind, "id": ev.actor.id, "name": ev.actor.name,
                  "org": ev.actor.org_id, "ip": ev.actor.ip, "region": ev.actor.region},
        "action": ev.action, "outcome": ev.outcome,
        "object": {"type": ev.object_type, "id": ev.object_id},
        "size": {"rows": ev.rows, "bytes": ev.bytes, "subjects": ev.subjects},
        "details": ev.details,
    }


def _columns(ev: PendingEvent) -> dict[str, Any]:
    return {"ts": ev.ts, "actor_kind": ev.actor.kind, "actor_id": ev.actor.id, "actor_name": ev.actor.name[:200],
            "org_id": ev.actor.org_id, "action": ev.action, "object_type": ev.object_type,
            "object_id": ev.object_id, "outcome": ev.outcome, "ip": ev.actor.ip, "region": ev.actor.region,
            "rows": ev.rows, "nbytes": ev.bytes, "subjects": ev.subjects}


def _claim(conn, n: int) -> tuple[int, str]:
    """Reserve `n` sequence numbers: (seq, hash) of the tip before them, which stays locked until
    commit (the UPDATE's row lock on PostgreSQL, the database write lock on SQLite), so concurrent
    transactions chain one after the other whatever process they run in."""
    row = conn.execute(_HEAD.update().where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + n)
                       .returning(_HEAD.c.seq, _HEAD.c.hash)).first()
    if row is None:
        raise RuntimeError("audit_head row missing: run `authops db upgrade`")
    return int(row[0]) - n, row[1]


def _append_in_database(conn, ev: PendingEvent, g: Gate | None = None) -> Any:
    """One event on PostgreSQL, in one statement that locks the tip, chains, inserts and moves the
    tip, so the lock is held for that statement and the COMMIT only: none of this process's work
    (which may wait for a CPU or the GIL) sits between taking the lock and asking to release it.

    The canonical bytes are this event's JSON with `prev` and `seq` filled in by the database:
    sorted keys put `"prev":"…","seq":…,` together, so the text around them is prepared here (the
    split is found through a random stand-in for prev) and the database joins the three parts with
    the tip's hash and the next seq, and hashes the result with sha256(): the same bytes and hash
    `canonical.encode` and `chain_hash` give, which the verifiers recompute.

    With a gate: returns the row (seq,), or None when the gate's write did not happen (then neither
    did the append)."""
    stand_in = secrets.token_hex(16)
    text = canonical.encode(_body(ev, 0, stand_in)).decode("utf-8")
    joint = f'"prev":"{stand_in}","seq":0,'
    at = text.index(joint)
    params = {**{"e_" + k: v for k, v in _columns(ev).items()},
              "before_prev": text[:at] + '"prev":"', "before_seq": '","seq":', "after_seq": "," + text[at + len(joint):]}
    if g is not None:
        stmt = _GATED.get(g.key)
        if stmt is None:
            stmt = _GATED.setdefault(g.key, _append_one_statement(g.cte()))
        return conn.execute(stmt, {**params, **g.params}).first()
    row = conn.execute(_APPEND_ONE, params).first()
    if row is None:
        raise RuntimeError("audit_head row missing: run `authops db upgrade`")
    return int(row[0])


def _append_one_statement(gate_cte: Any = None):
    tip = select((_HEAD.c.seq + 1).label("seq"), _HEAD.c.hash.label("prev")).where(_HEAD.c.id == 1)
    if gate_cte is not None:  # the append happens only if the gate's write did
        tip = tip.where(exists(select(literal(1)).select_from(gate_cte)))
    tip = tip.with_for_update().cte("tip")
    joined = (bindparam("before_prev", type_=Text()) + tip.c.prev + bindparam("before_seq", type_=Text())
              + cast(tip.c.seq, Text()) + bindparam("after_seq", type_=Text()))
    body = select(tip.c.seq, tip.c.prev, func.convert_to(joined, "UTF8").label("data")).cte("body")
    named = [c for c in _EVENT.columns if c.name not in ("seq", "prev_hash", "hash", "canonical")]
    inserted = (_EVENT.insert().from_select(
        ["seq", *(c.name for c in named), "prev_hash", "hash", "canonical"],
        select(body.c.seq, *(bindparam("e_" + c.name, type_=c.type) for c in named), body.c.prev,
               func.encode(func.sha256(body.c.data), "hex"), body.c.data))
        .returning(_EVENT.c.seq, _EVENT.c.hash).cte("inserted"))
    move = (_HEAD.update().where(_HEAD.c.id == 1)
            .values(seq=select(inserted.c.seq).scalar_subquery(), hash=select(inserted.c.hash).scalar_subquery()))
    if gate_cte is not None:
        move = move.where(exists(select(inserted.c.seq)))
    return move.returning(_HEAD.c.seq)


_APPEND_ONE = _append_one_statement()  # built once: its compiled form is cached
_GATED: dict[str, Any] = {}  # the gated forms, one per Gate.key, built on first use
