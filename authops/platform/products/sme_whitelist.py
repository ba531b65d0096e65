"""The SME white list (白名单): healthy enterprises pushed to the banks that subscribed, USCC and grade only.

A bank (a customer organisation holding an active usage agreement for `bank_credit_assessment`)
subscribes with a minimum grade (A or B) and an interval. `push_due` (the maintenance loop) pushes
every subscription that is due; `push` pushes one:

    the bank's enterprise consents in force for `bank_credit_assessment` with the purpose
    WHITELIST_PURPOSE → their USCCs, found by pseudonymizing the registered enterprises' USCCs
    (`enterprise_basic_info`, read inside the trusted process, once per pass) → each one's precomputed grade and
    flags (sme.Profiles) → kept when the grade is at least the minimum and no blacklist,
    abnormal-operation or major-risk flag is set → a new version of the subscription's delivery,
    entries [{uscc, grade}] and nothing else → a notification to the bank (email/webhook through the
    outbox: number, version and count only; the list is pulled from GET /sme/whitelist/deliveries/{id})
    → the audit event `sme.whitelist.push` (counts and versions, no USCC).

A consent that is revoked or expires drops the enterprise from the next push. Reading a delivery
is audited as `sme.whitelist.read`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import show, utcnow
from authops.core.data.datasets import read_dataset
from authops.core.db import session_scope
from authops.core.errors import AuthopsError, Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import service as catalog
from authops.platform.catalog.models import Dataset
from authops.platform.governance import agreements, consent, notifications
from authops.platform.governance.models import Consent
from authops.platform.products import calls, sme
from authops.platform.products.sme_models import WhitelistDelivery, WhitelistSubscription

log = logging.getLogger(__name__)

WHITELIST_PURPOSE = "白名单推送"  # the purpose an enterprise's consent names to be put on a bank's white list
REGISTRY = "enterprise_basic_info"
NOTIFICATION = "sme.whitelist"
MIN_GRADES = ("A", "B")
MIN_INTERVAL_HOURS, MAX_INTERVAL_HOURS = 1, 24 * 31


def subscribe(session: Session, *, principal: Principal | audit_log.Actor, min_grade: Any = "B",
              interval_hours: Any = 24) -> WhitelistSubscription:
    who = audit_log.as_actor(principal)
    sme.check_grade(min_grade, "min_grade", MIN_GRADES)
    if not isinstance(interval_hours, int) or not MIN_INTERVAL_HOURS <= interval_hours <= MAX_INTERVAL_HOURS:
        raise InvalidInput(f"interval_hours is a whole number from {MIN_INTERVAL_HOURS} to {MAX_INTERVAL_HOURS}",
                           details={"field": "interval_hours"})
    credit = calls.product_by_code(session, sme.CREDIT)
    agreements.require_active_usage(session, int(who.org_id or 0), credit.id)
    sub = WhitelistSubscription(bank_org_id=who.org_id, min_grade=min_grade, interval_hours=interval_hours,
                                created_by=who.name[:64])
    session.add(sub)
    session.flush()
    audit_log.record(session, who, "sme.whitelist.subscribe", object_type="sme_whitelist_subscription",
                     object_id=sub.id, details={"min_grade": min_grade, "interval_hours": interval_hours})
    return sub


def get_subscription(session: Session, subscription_id: int, *, org_id: int) -> WhitelistSubscription:
    sub = session.get(WhitelistSubscription, subscription_id)
    if sub is None or sub.bank_org_id != org_id:
        raise NotFound(f"no white-list subscription {subscription_id}")
    return sub


def cancel(session: Session, sub: WhitelistSubscription, *, principal: Principal | audit_log.Actor
           ) -> WhitelistSubscription:
    if sub.state != "active":
        raise Conflict(f"white-list subscription {sub.id} is already {sub.state}", code="illegal_transition")
    sub.state = "cancelled"
    session.add(sub)
    session.flush()
    audit_log.record(session, audit_log.as_actor(principal), "sme.whitelist.cancel",
                     object_type="sme_whitelist_subscription", object_id=sub.id,
                     details={"before": "active", "after": "cancelled"})
    return sub


def list_subscriptions(session: Session, org_id: int) -> list[WhitelistSubscription]:
    return list(session.exec(select(WhitelistSubscription).where(WhitelistSubscription.bank_org_id == org_id)
                             .order_by(WhitelistSubscription.id)))


# --- computing -----------------------------------------------------------------------------------

def _authorized_keys(session: Session, product_id: int, bank_org_id: int, now: datetime) -> set[str]:
    rows = session.exec(select(Consent).where(Consent.product_id == product_id, Consent.customer_org_id == bank_org_id,
                                              Consent.subject_kind == "enterprise", Consent.state == "active",
                                              Consent.valid_from <= now, Consent.valid_until >= now))
    return {c.subject_key for c in rows if consent.same_purpose(c.purpose, WHITELIST_PURPOSE)}


def registry(session: Session, settings: Settings) -> dict[str, str]:
    """{consent pseudonym: USCC} for every enterprise of the registry's current dataset (read inside the
    trusted process; about 1 s per 100,000 enterprises, so a pass computes it once for all subscriptions)."""
    res = catalog.get_resource(session, REGISTRY)
    ds = session.get(Dataset, res.dataset_id) if res.dataset_id else None
    if ds is None:
        return {}
    table = read_dataset(get_object_store(settings), ds.object_key, columns=["uscc"])
    return {consent.subject_key(settings, u): u for u in table.column("uscc").to_pylist() if u}


def compute(session: Session, settings: Settings, sub: WhitelistSubscription, now: datetime | None = None,
            known: dict[str, str] | None = None) -> tuple[list[dict[str, str]], int]:
    """(entries [{uscc, grade}] sorted by USCC, the credit answer-set version they come from); `known` is
    the registry's pseudonyms when the caller has them already."""
    profiles = sme.Profiles(session, settings)
    credit = calls.product_by_code(session, sme.CREDIT)
    keys = _authorized_keys(session, credit.id, sub.bank_org_id, now or utcnow())
    entries: dict[str, str] = {}
    if keys:
        known = registry(session, settings) if known is None else known
        for uscc in (known[k] for k in keys if k in known):
            p = profiles.get(uscc)
            if p is not None and not p.flagged and sme.grade_at_least(p.grade, sub.min_grade):
                entries[uscc] = p.grade
    return [{"uscc": u, "grade": g} for u, g in sorted(entries.items())], profiles.version


def latest(session: Session, subscription_id: int) -> WhitelistDelivery | None:
    return session.exec(select(WhitelistDelivery).where(WhitelistDelivery.subscription_id == subscription_id)
                        .order_by(WhitelistDelivery.version.desc()).limit(1)).first()


def push(session: Session, settings: Settings, sub: WhitelistSubscription, now: datetime | None = None,
         known: dict[str, str] | None = None) -> WhitelistDelivery:
    """Compute and record the subscription's next version and notify the bank (flushes; the caller commits)."""
    now = now or utcnow()
    if sub.state != "active":
        raise Conflict(f"white-list subscription {sub.id} is {sub.state}; nothing is pushed", code="illegal_transition")
    entries, answer_set = compute(session, settings, sub, now, known)
    before = latest(session, sub.id)
    old = {e["uscc"] for e in before.entries} if before else set()
    new = {e["uscc"] for e in entries}
    version = (before.version if before else 0) + 1
    d = WhitelistDelivery(subscription_id=sub.id, bank_org_id=sub.bank_org_id, version=version,
                          answer_set_version=answer_set, entries=entries, added=len(new - old),
                          removed=len(old - new), created_at=now)
    session.add(d)
    sub.last_pushed_at = now
    session.add(sub)
    session.flush()
    notifications.notify(session, [sub.bank_org_id], NOTIFICATION,
                         f"White list WL-{sub.id} version {d.version}: {len(entries)} enterprises "
                         f"({d.added} added, {d.removed} removed)",
                         f"Pull it from /api/v1/sme/whitelist/deliveries/{d.id} (USCC and grade per enterprise; "
                         f"credit answers version {answer_set}, {show(now)} Asia/Shanghai).")
    audit_log.record(session, audit_log.Actor(kind="system", name="sme white list", org_id=sub.bank_org_id),
                     "sme.whitelist.push", object_type="sme_whitelist_delivery", object_id=d.id,
                     subjects=len(entries), details={"subscription_id": sub.id, "version": d.version,
                                                     "entries": len(entries), "added": d.added,
                                                     "removed": d.removed, "answer_set": answer_set})
    return d


def due(sub: WhitelistSubscription, now: datetime) -> bool:
    return sub.last_pushed_at is None or now - sub.last_pushed_at >= timedelta(hours=sub.interval_hours)


def push_due(settings: Settings, now: datetime | None = None) -> list[int]:
    """Push every active subscription that is due, each in its own transaction; the delivery ids.
    Rows are taken FOR UPDATE SKIP LOCKED (PostgreSQL), so two workers never push the same one."""
    now = now or utcnow()
    pushed: list[int] = []
    known: dict[str, str] | None = None
    with session_scope(settings) as session:
        ids = list(session.exec(select(WhitelistSubscription.id).where(WhitelistSubscription.state == "active")
                                .order_by(WhitelistSubscription.id)))
    for sub_id in ids:
        try:
            with session_scope(settings) as session:
                sub = session.exec(select(WhitelistSubscription).where(WhitelistSubscription.id == sub_id)
                                   .with_for_update(skip_locked=True)).first()
                if sub is None or sub.state != "active" or not due(sub, now):
                    continue
                known = registry(session, settings) if known is None else known
                pushed.append(int(push(session, settings, sub, now, known).id or 0))
        except AuthopsError as exc:  # e.g. no answers yet: the next pass tries again
            log.warning("white list %s not pushed: %s", sub_id, exc.message)
    return pushed


# --- reading ---------------------------------------------------------------------------------------

def get_delivery(session: Session, delivery_id: int, *, org_id: int) -> WhitelistDelivery:
    d = session.get(WhitelistDelivery, delivery_id)
    if d is None or d.bank_org_id != org_id:
        raise NotFound(f"no white-list delivery {delivery_id}")
    return d


def read_delivery(session: Session, d: WhitelistDelivery, *, principal: Principal | audit_log.Actor
                  ) -> dict[str, Any]:
    audit_log.record(session, audit_log.as_actor(principal), "sme.whitelist.read", object_type="sme_whitelist_delivery",
                     object_id=d.id, subjects=len(d.entries), details={"version": d.version})
    return {"id": d.id, "subscription_id": d.subscription_id, "version": d.version,
            "answer_set_version": d.answer_set_version, "created_at": d.created_at, "added": d.added,
            "removed": d.removed, "count": len(d.entries),
            "entries": [{"uscc": e["uscc"], "grade": e["grade"]} for e in d.entries]}


def subscription_view(session: Session, sub: WhitelistSubscription) -> dict[str, Any]:
    last = latest(session, int(sub.id or 0))
    return {"id": sub.id, "min_grade": sub.min_grade, "interval_hours": sub.interval_hours, "state": sub.state,
            "consent_purpose": WHITELIST_PURPOSE, "created_at": sub.created_at, "last_pushed_at": sub.last_pushed_at,
            "latest_delivery": None if last is None else {"id": last.id, "version": last.version,
                                                          "count": len(last.entries), "created_at": last.created_at}}
