"""Anomaly rule kinds: detectors run over the audit log as events arrive.

Each kind decides which new events it watches, whose they are (the subject: an API key, a
user, an organisation or an IP address) and whether the subject's recent events cross the
rule's threshold. Detectors use indexed COUNT/SUM queries over the rule's window, counting
only events after the last event an earlier case of the same rule and subject accounted
for, so one burst opens one case and a new burst after a release opens a new one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from functools import cached_property
from typing import Any

from sqlalchemy import func, or_, select
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.audit.anomaly.models import RULE_ACTIONS, AnomalyRule
from authops.audit.models import AuditEvent
from authops.core.clock import SHANGHAI, as_utc, utcnow
from authops.core.errors import InvalidInput, NotFound

DATA_ACTIONS = ["data.download", "product.call", "batch.download"]
THROTTLE_DEFAULT = 10
Subject = tuple[str, str]  # (subject_type, subject_id)


@dataclass(frozen=True)
class Ev:
    """The columns of a new audit event that the detectors look at."""

    seq: int
    ts: datetime
    actor_kind: str
    actor_id: int | None
    org_id: int | None
    action: str
    outcome: str
    ip: str | None
    region: str | None
    subjects: int | None
    canonical: bytes = field(repr=False)

    @cached_property
    def details(self) -> dict[str, Any]:
        return json.loads(self.canonical).get("details") or {}


@dataclass
class Hit:
    evidence: dict[str, Any]
    first_seq: int | None
    last_seq: int | None


@dataclass(frozen=True)
class Kind:
    watches: Callable[[AnomalyRule, Ev], bool]
    detect: Callable[[Session, AnomalyRule, Subject, list[Ev], int], Hit | None]
    pers: tuple[str, ...]
    defaults: dict[str, Any]


# --- parameters -----------------------------------------------------------------------------
def param(rule: AnomalyRule, key: str) -> Any:
    value = (rule.params or {}).get(key)
    return KINDS[rule.kind].defaults.get(key) if value is None else value


def _hhmm(text: str) -> time:
    return time(int(text[:2]), int(text[3:5]))


def _check_param(kind: str, key: str, value: Any) -> None:
    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"params.{key}: {why}", details={"field": f"params.{key}"})

    def whole(lo: int, hi: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise bad(f"give a whole number from {lo} to {hi}")

    if key == "actions":
        if (not isinstance(value, list) or not 1 <= len(value) <= 50
                or not all(isinstance(a, str) and 1 <= len(a) <= 64 for a in value)):
            raise bad("give a list of 1 to 50 action names, e.g. [\"product.call\"]")
    elif key == "per":
        if value not in KINDS[kind].pers:
            raise bad(f"a {kind} rule counts per one of: {', '.join(KINDS[kind].pers)}")
    elif key in ("night_start", "night_end"):
        if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise bad("give a time of day as HH:MM (Asia/Shanghai), e.g. \"22:00\"")
    elif key == "match":
        if value not in ("new_region", "bulk", "both"):
            raise bad("give new_region, bulk or both")
    elif key == "lookback_days":
        whole(1, 365)
    elif key == "detail":
        if not isinstance(value, str) or not re.fullmatch(r"[a-z_]{1,64}", value):
            raise bad("give the details key holding the integer amount, e.g. \"epsilon_micro\"")
    elif key == "throttle_per_minute":
        whole(1, 100_000)


def validate_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    allowed = {*KINDS[kind].defaults, "throttle_per_minute"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(f"unknown parameters for a {kind} rule: {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(allowed))}", details={"field": "params"})
    for key, value in params.items():
        _check_param(kind, key, value)
    return dict(params)


# --- queries --------------------------------------------------------------------------------
def subject_of(ev: Ev, per: str) -> Subject | None:
    if per == "actor":
        if ev.actor_id is not None and ev.actor_kind in ("key", "user"):
            return ("api_key" if ev.actor_kind == "key" else "user", str(ev.actor_id))
        return None
    if per == "org":
        return None if ev.org_id is None else ("org", str(ev.org_id))
    if per == "ip":
        return None if not ev.ip else ("ip", ev.ip)
    return None


def _scope(subject: Subject) -> list:
    kind, ident = subject
    if kind == "api_key":
        return [AuditEvent.actor_kind == "key", AuditEvent.actor_id == int(ident)]
    if kind == "user":
        return [AuditEvent.actor_kind == "user", AuditEvent.actor_id == int(ident)]
    if kind == "org":
        return [AuditEvent.org_id == int(ident)]
    return [AuditEvent.ip == ident]


def _where(subject: Subject, *, start: datetime, end: datetime, floor: int,
           actions: list[str] | None = None, outcome: str | None = None, region: str | None = None) -> list:
    conds = [*_scope(subject), AuditEvent.ts >= start, AuditEvent.ts <= end, AuditEvent.seq > floor]
    if actions is not None:
        conds.append(AuditEvent.action.in_(actions))
    if outcome is not None:
        conds.append(AuditEvent.outcome == outcome)
    if region is not None:
        conds.append(AuditEvent.region == region)
    return conds


def _count(session: Session, conds: list) -> tuple[int, int | None, int | None, int]:
    row = session.execute(select(func.count(), func.min(AuditEvent.seq), func.max(AuditEvent.seq),
                                 func.coalesce(func.sum(AuditEvent.subjects), 0)).where(*conds)).one()
    return int(row[0]), row[1], row[2], int(row[3] or 0)


def _candidates(evs: list[Ev], window: int) -> list[Ev]:
    """Where to evaluate: the newest event, or each one when they span more than a window."""
    evs = sorted(evs, key=lambda e: (e.ts, e.seq))
    if not evs:
        return []
    return evs if (evs[-1].ts - evs[0].ts).total_seconds() > window else [evs[-1]]


def _iso(dt: datetime) -> str:
    return as_utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def _base(rule: AnomalyRule, **extra: Any) -> dict[str, Any]:
    return {"rule": rule.name, "kind": rule.kind, "threshold": rule.threshold,
            "window_seconds": rule.window_seconds, **extra}


# --- kinds ------------------------------------------------------------------------------------
def _watched_ok(rule: AnomalyRule, ev: Ev) -> bool:
    return ev.outcome == "ok" and ev.action in param(rule, "actions")


def night_begin(ts: datetime, start: time, end: time) -> datetime | None:
    """When the night containing `ts` (naive UTC) began, as naive UTC; None by day."""
    local = as_utc(ts).astimezone(SHANGHAI)
    t, today = local.time(), local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if start <= end:
        begin = today if start <= t < end else None
    elif t >= start:
        begin = today
    elif t < end:
        begin = today - timedelta(days=1)
    else:
        begin = None
    return None if begin is None else begin.astimezone(timezone.utc).replace(tzinfo=None)


def _night_burst(session: Session, rule: AnomalyRule, subject: Subject, evs: list[Ev], floor: int) -> Hit | None:
    start, end = _hhmm(param(rule, "night_start")), _hhmm(param(rule, "night_end"))
    night = [e for e in evs if night_begin(e.ts, start, end) is not None]
    for e in _candidates(night, rule.window_seconds):
        begin = max(e.ts - timedelta(seconds=rule.window_seconds), night_begin(e.ts, start, end))
        n, first, last, _ = _count(session, _where(subject, start=begin, end=e.ts, floor=floor,
                                                    actions=param(rule, "actions"), outcome="ok"))
        if n > rule.threshold:
            return Hit(_base(rule, count=n, night=f"{param(rule, 'night_start')}-{param(rule, 'night_end')} "
                             "Asia/Shanghai", since=_iso(begin), until=_iso(e.ts)), first, last)
    return None


def _is_new_region(session: Session, rule: AnomalyRule, subject: Subject, ev: Ev, floor: int) -> bool:
    """The subject was active in the lookback period (before this window, or in events an
    earlier case already accounted for) but never from this region."""
    since = ev.ts - timedelta(days=int(param(rule, "lookback_days")))
    before = ev.ts - timedelta(seconds=rule.window_seconds)
    if before <= since:
        return False
    history = [*_scope(subject), AuditEvent.ts >= since, or_(AuditEvent.ts < before, AuditEvent.seq <= floor)]
    if session.execute(select(AuditEvent.seq).where(*history).limit(1)).first() is None:
        return False  # no history: a new key or user, not a move
    return session.execute(select(AuditEvent.seq).where(*history, AuditEvent.region == ev.region)
                           .limit(1)).first() is None


def _known_regions(session: Session, rule: AnomalyRule, subject: Subject, ev: Ev) -> list[str]:
    since = ev.ts - timedelta(days=int(param(rule, "lookback_days")))
    rows = session.execute(select(AuditEvent.region).where(
        *_scope(subject), AuditEvent.ts >= since, AuditEvent.region.is_not(None),
        AuditEvent.region != ev.region).distinct().limit(10)).all()
    return sorted(r[0] for r in rows)


def _cross_region(session: Session, rule: AnomalyRule, subject: Subject, evs: list[Ev], floor: int) -> Hit | None:
    match, window, actions = param(rule, "match"), rule.window_seconds, param(rule, "actions")
    if match == "bulk":
        for e in _candidates(evs, window):
            n, first, last, total = _count(session, _where(
                subject, start=e.ts - timedelta(seconds=window), end=e.ts, floor=floor, actions=actions,
                outcome="ok"))
            if total > rule.threshold:
                return Hit(_base(rule, subjects=total, events=n, until=_iso(e.ts)), first, last)
        return None
    by_region: dict[str, list[Ev]] = {}
    for e in sorted(evs, key=lambda e: e.seq):
        if e.region:
            by_region.setdefault(e.region, []).append(e)
    for region, group in by_region.items():
        if not _is_new_region(session, rule, subject, group[0], floor):
            continue
        known = _known_regions(session, rule, subject, group[0])
        lookback = int(param(rule, "lookback_days"))
        if match == "new_region":
            return Hit(_base(rule, region=region, known_regions=known, lookback_days=lookback),
                       group[0].seq, group[-1].seq)
        e = group[-1]
        n, first, last, total = _count(session, _where(
            subject, start=e.ts - timedelta(seconds=window), end=e.ts, floor=floor, actions=actions,
            outcome="ok", region=region))
        if total > rule.threshold:
            return Hit(_base(rule, region=region, known_regions=known, lookback_days=lookback,
                             subjects=total, events=n), first, last)
    return None


def _budget_burn(session: Session, rule: AnomalyRule, subject: Subject, evs: list[Ev], floor: int) -> Hit | None:
    key = param(rule, "detail")
    for e in _candidates(evs, rule.window_seconds):
        rows = session.execute(select(AuditEvent.seq, AuditEvent.canonical).where(*_where(
            subject, start=e.ts - timedelta(seconds=rule.window_seconds), end=e.ts, floor=floor,
            actions=param(rule, "actions"), outcome="ok")).order_by(AuditEvent.seq)).all()
        total = 0
        for _seq, data in rows:
            amount = (json.loads(data).get("details") or {}).get(key)
            total += amount if isinstance(amount, int) and not isinstance(amount, bool) else 0
        if total > rule.threshold:
            return Hit(_base(rule, **{key: total}, charges=len(rows), until=_iso(e.ts)),
                       rows[0][0], rows[-1][0])
    return None


def _refusals(session: Session, rule: AnomalyRule, subject: Subject, evs: list[Ev], floor: int) -> Hit | None:
    for e in _candidates(evs, rule.window_seconds):
        n, first, last, _ = _count(session, _where(
            subject, start=e.ts - timedelta(seconds=rule.window_seconds), end=e.ts, floor=floor,
            outcome="denied"))
        if n > rule.threshold:
            return Hit(_base(rule, refusals=n, until=_iso(e.ts)), first, last)
    return None


def _outside_watches(rule: AnomalyRule, ev: Ev) -> bool:
    # the flag's bytes are looked for before the event is parsed: most events (product calls) lack it
    return ev.action in param(rule, "actions") or (
        b'"agreement_expired":true' in ev.canonical and ev.details.get("agreement_expired") is True)


def _outside_term(session: Session, rule: AnomalyRule, subject: Subject, evs: list[Ev], floor: int) -> Hit | None:
    hits = sorted(e.seq for e in evs if e.seq > floor)
    if len(hits) > rule.threshold:
        return Hit(_base(rule, events=len(hits), actions=sorted({e.action for e in evs})), hits[0], hits[-1])
    return None


KINDS: dict[str, Kind] = {
    "night_burst": Kind(_watched_ok, _night_burst, ("actor", "org"),
                        {"actions": DATA_ACTIONS, "per": "actor", "night_start": "22:00", "night_end": "06:00"}),
    "cross_region": Kind(_watched_ok, _cross_region, ("actor",),
                         {"actions": DATA_ACTIONS, "per": "actor", "match": "new_region", "lookback_days": 30}),
    "budget_burn": Kind(_watched_ok, _budget_burn, ("actor", "org"),
                        {"actions": ["budget.charge"], "per": "org", "detail": "epsilon_micro"}),
    "refusals": Kind(lambda rule, ev: ev.outcome == "denied", _refusals, ("actor", "ip"), {"per": "actor"}),
    "outside_term": Kind(_outside_watches, _outside_term, ("actor", "org"),
                         {"actions": ["agreement.outside_term"], "per": "actor"}),
}


def _rule(name: str, kind: str, threshold: int, window: int, action: str, description: str,
          **params: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "threshold": threshold, "window_seconds": window,
            "action": action, "description": description, "params": {**KINDS[kind].defaults, **params}}


# Seeded when missing (idempotently, on first use); the bureau tunes them over the API.
DEFAULT_RULES: list[dict[str, Any]] = [
    _rule("night_burst", "night_burst", 200, 600, "block",
          "More than 200 downloads or product calls by one key or user within 10 minutes at night "
          "(22:00-06:00 Asia/Shanghai)"),
    _rule("new_region", "cross_region", 0, 3600, "alert",
          "A key or user calls data from a region it has not used in the previous 30 days",
          match="new_region"),
    _rule("bulk_pull", "cross_region", 10_000, 600, "throttle",
          "One key or user touches more than 10,000 data subjects within 10 minutes",
          match="bulk", throttle_per_minute=THROTTLE_DEFAULT),
    _rule("cross_region_bulk_pull", "cross_region", 1_000, 3600, "block",
          "More than 1,000 data subjects pulled within an hour from a region new to the key or user",
          match="both"),
    _rule("budget_burn", "budget_burn", 3_000_000, 86_400, "block",
          "An organisation spends more than 3 epsilon of privacy budget within a day"),
    _rule("refusals_actor", "refusals", 30, 300, "alert",
          "More than 30 refused requests by one key or user within 5 minutes", per="actor"),
    _rule("refusals_ip", "refusals", 100, 300, "alert",
          "More than 100 refused requests from one IP address within 5 minutes", per="ip"),
    _rule("outside_term", "outside_term", 0, 60, "block",
          "Any use of data outside the term of the usage agreement"),
]


# --- rule administration ------------------------------------------------------------------
def ensure_default_rules(session: Session) -> list[AnomalyRule]:
    """Every rule, seeding the built-in ones that are missing (idempotent; flushes)."""
    rules = list(session.execute(select(AnomalyRule).order_by(AnomalyRule.id)).scalars().all())
    have = {r.name for r in rules}
    missing = [d for d in DEFAULT_RULES if d["name"] not in have]
    if missing:
        # ON CONFLICT DO NOTHING: another process seeding the same rules at once is not an error
        dialect = session.get_bind().dialect.name
        from sqlalchemy.dialects import postgresql, sqlite

        insert = (postgresql if dialect == "postgresql" else sqlite).insert
        session.flush()
        for d in missing:
            row = AnomalyRule(**{**d, "params": dict(d["params"])})
            values = {c.name: getattr(row, c.name) for c in AnomalyRule.__table__.columns if c.name != "id"}
            session.execute(insert(AnomalyRule.__table__).values(**values).on_conflict_do_nothing(index_elements=["name"]))
        rules = list(session.execute(select(AnomalyRule).order_by(AnomalyRule.id)).scalars().all())
    return rules


def get_rule(session: Session, rule_id: int) -> AnomalyRule:
    rule = session.get(AnomalyRule, rule_id)
    if rule is None:
        raise NotFound(f"anomaly rule {rule_id} not found; GET /api/v1/supervision/rules lists them")
    return rule


def rule_by_name(session: Session, name: str) -> AnomalyRule:
    ensure_default_rules(session)
    rule = session.execute(select(AnomalyRule).where(AnomalyRule.name == name)).scalars().first()
    if rule is None:
        raise NotFound(f"anomaly rule '{name}' not found")
    return rule


def update_rule(session: Session, rule_id: int, *, actor: audit_log.Actor, threshold: int | None = None,
                window_seconds: int | None = None, action: str | None = None, enabled: bool | None = None,
                params: dict[str, Any] | None = None) -> AnomalyRule:
    """Change a rule; takes effect for the next event in every process. Audited."""
    rule = get_rule(session, rule_id)
    changed: dict[str, Any] = {}
    if threshold is not None:
        if threshold < 0:
            raise InvalidInput("threshold must be 0 or more", details={"field": "threshold"})
        changed["threshold"] = threshold
    if window_seconds is not None:
        if not 1 <= window_seconds <= 90 * 86_400:
            raise InvalidInput("window_seconds must be from 1 to 7776000 (90 days)",
                               details={"field": "window_seconds"})
        changed["window_seconds"] = window_seconds
    if action is not None:
        if action not in RULE_ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(RULE_ACTIONS)}", details={"field": "action"})
        changed["action"] = action
    if enabled is not None:
        changed["enabled"] = enabled
    if params is not None:
        changed["params"] = {**(rule.params or {}), **validate_params(rule.kind, params)}
    for key, value in changed.items():
        setattr(rule, key, value)
    rule.updated_at = utcnow()
    rule.updated_by = f"{actor.kind}:{actor.id}"
    session.add(rule)
    session.flush()
    audit_log.record(session, actor, "supervision.rule_updated", object_type="anomaly_rule",
                     object_id=rule.id, details={"rule": rule.name, **changed})
    return rule
