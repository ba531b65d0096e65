"""Anomaly rules over synthetic audit streams: each fires exactly where it should.

Events are written with `audit_log.record` (their times set by hand) and committed; the
commit runs the evaluator, as it does in the API and the workers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from authops.audit import log as audit_log
from authops.audit.anomaly import rules as anomaly_rules
from authops.audit.anomaly import service as anomaly
from authops.audit.anomaly.models import AccessBlock, AnomalyCase
from authops.core.errors import Forbidden, InvalidInput
from authops.core.identity import OrgKind, Principal

NIGHT = datetime(2026, 3, 10, 15, 0)  # 23:00 in Asia/Shanghai (stored times are naive UTC)
DAY = datetime(2026, 3, 10, 4, 0)  # 12:00 in Asia/Shanghai


def actor(kind: str = "key", id: int = 7, org: int = 3, ip: str = "10.1.2.3",
          region: str = "intranet") -> audit_log.Actor:
    return audit_log.Actor(kind=kind, id=id, name=f"{kind}{id}", org_id=org, ip=ip, region=region)


def emit(session, who: audit_log.Actor, action: str, n: int = 1, *, at: datetime,
         step: timedelta = timedelta(seconds=1), **kw) -> list[int]:
    """Record n events from `at`, `step` apart, and commit (which evaluates the rules)."""
    events = []
    for i in range(n):
        ev = audit_log.record(session, who, action, **kw)
        ev.ts = at + i * step
        events.append(ev)
    session.commit()
    anomaly.settle()  # the rules run on the evaluator thread; wait for them
    return events


def tune(session, name: str, **changes) -> None:
    rule = anomaly_rules.rule_by_name(session, name)
    anomaly_rules.update_rule(session, rule.id, actor=audit_log.SYSTEM, **changes)
    session.commit()


def cases(session, name: str, **where) -> list[AnomalyCase]:
    rule = anomaly_rules.rule_by_name(session, name)
    stmt = select(AnomalyCase).where(AnomalyCase.rule_id == rule.id).order_by(AnomalyCase.id)
    for key, value in where.items():
        stmt = stmt.where(getattr(AnomalyCase, key) == value)
    session.expire_all()
    return list(session.execute(stmt).scalars().all())


def active_blocks(session, subject_type: str, subject_id: str) -> list[AccessBlock]:
    session.expire_all()
    return list(session.execute(select(AccessBlock).where(
        AccessBlock.subject_type == subject_type, AccessBlock.subject_id == subject_id,
        AccessBlock.active.is_(True))).scalars().all())


def principal(kind: str = "key", id: int = 7, org: int = 3, ip: str = "10.1.2.3") -> Principal:
    return Principal(kind=kind, id=id, org_id=org, org_kind=OrgKind.CUSTOMER, name="p", ip=ip)


def test_built_in_rules_are_seeded_once(session):
    first = anomaly_rules.ensure_default_rules(session)
    session.commit()
    again = anomaly_rules.ensure_default_rules(session)
    assert [r.name for r in first] == [r.name for r in again] == [d["name"] for d in anomaly_rules.DEFAULT_RULES]
    assert {r.kind for r in first} == set(anomaly_rules.KINDS)


def test_night_burst_fires_above_threshold_at_night_only_once_per_burst(session):
    tune(session, "night_burst", threshold=5, window_seconds=600)
    emit(session, actor(id=7), "product.call", 5, at=NIGHT)
    assert cases(session, "night_burst") == [], "5 calls is the threshold, not above it"

    emit(session, actor(id=7), "product.call", at=NIGHT + timedelta(seconds=10))
    [case] = cases(session, "night_burst")
    assert (case.subject_type, case.subject_id, case.org_id, case.state) == ("api_key", "7", 3, "open")
    assert case.evidence["count"] == 6 and case.first_seq < case.last_seq
    [block] = active_blocks(session, "api_key", "7")
    assert block.mode == "block" and case.block_id == block.id and block.case_id == case.id

    case_id, last_seq = case.id, case.last_seq
    emit(session, actor(id=7), "product.call", 10, at=NIGHT + timedelta(seconds=20))
    [same] = cases(session, "night_burst")
    assert same.id == case_id and same.last_seq > last_seq, "the same burst extends its case"
    assert same.evidence["later_events"] == 10

    # Day-time burst, slow night-time calls, other actions and other keys: no case.
    emit(session, actor(id=8), "product.call", 30, at=DAY)
    emit(session, actor(id=9), "product.call", 8, at=NIGHT, step=timedelta(minutes=3))
    emit(session, actor(id=10), "catalog.read", 30, at=NIGHT)
    emit(session, actor(id=11), "product.call", 30, at=NIGHT, outcome="denied")
    assert [c.subject_id for c in cases(session, "night_burst")] == ["7"]


def test_night_window_starts_at_night_start(session):
    tune(session, "night_burst", threshold=5, window_seconds=3600)
    start = datetime(2026, 3, 10, 13, 55)  # 21:55 Shanghai
    emit(session, actor(id=21), "data.download", 5, at=start, step=timedelta(seconds=30))
    emit(session, actor(id=21), "data.download", 5, at=start + timedelta(minutes=5))  # 22:00-22:00:04
    assert cases(session, "night_burst") == [], "evening calls before 22:00 do not count"
    emit(session, actor(id=21), "data.download", at=start + timedelta(minutes=6))
    assert len(cases(session, "night_burst")) == 1
    # Early morning (05:59 Shanghai) is still night; 06:00 is day.
    emit(session, actor(id=22), "batch.download", 6, at=datetime(2026, 3, 10, 21, 59))
    emit(session, actor(id=23), "batch.download", 6, at=datetime(2026, 3, 10, 22, 0))
    assert sorted(c.subject_id for c in cases(session, "night_burst")) == ["21", "22"]


def test_after_release_only_a_new_burst_opens_a_new_case(session):
    tune(session, "night_burst", threshold=5)
    emit(session, actor(id=7), "product.call", 6, at=NIGHT)
    [case] = cases(session, "night_burst")
    anomaly.release_case(session, case.id, actor=audit_log.SYSTEM, reason="batch job announced in advance")
    session.commit()
    assert active_blocks(session, "api_key", "7") == []

    emit(session, actor(id=7), "product.call", 5, at=NIGHT + timedelta(seconds=30))
    assert len(cases(session, "night_burst")) == 1, "the released burst is not counted again"
    emit(session, actor(id=7), "product.call", at=NIGHT + timedelta(seconds=40))
    first, second = cases(session, "night_burst")
    assert (first.state, second.state) == ("released", "open") and second.first_seq > first.last_seq
    assert len(active_blocks(session, "api_key", "7")) == 1


def test_new_region_alerts_once_and_familiar_or_first_use_does_not(session):
    home, away = actor(id=31, region="intranet"), actor(id=31, region="external")
    emit(session, home, "product.call", 3, at=NIGHT - timedelta(days=10))
    emit(session, home, "product.call", at=NIGHT)
    assert cases(session, "new_region") == []
    emit(session, away, "product.call", 2, at=NIGHT + timedelta(minutes=1))
    [case] = cases(session, "new_region")
    assert case.evidence["region"] == "external" and case.evidence["known_regions"] == ["intranet"]
    assert active_blocks(session, "api_key", "31") == [], "new_region only alerts"
    emit(session, away, "product.call", at=NIGHT + timedelta(minutes=2))
    assert len(cases(session, "new_region")) == 1
    # A key with no history is not "moving"; a region used 40 days ago is no longer familiar.
    emit(session, actor(id=32, region="external"), "product.call", at=NIGHT)
    emit(session, actor(id=33, region="external"), "product.call", at=NIGHT - timedelta(days=40))
    emit(session, actor(id=33, region="intranet"), "product.call", at=NIGHT - timedelta(days=5))
    emit(session, actor(id=33, region="external"), "product.call", at=NIGHT)
    assert sorted(c.subject_id for c in cases(session, "new_region")) == ["31", "33"]
    # Released: the region is now familiar.
    anomaly.release_case(session, case.id, actor=audit_log.SYSTEM, reason="staff travelling")
    session.commit()
    emit(session, away, "product.call", at=NIGHT + timedelta(minutes=5))
    assert len(cases(session, "new_region", subject_id="31")) == 1


def test_bulk_pull_sums_subjects_in_the_window_and_throttles(session):
    tune(session, "bulk_pull", threshold=100, window_seconds=300)
    emit(session, actor(id=41), "batch.download", at=DAY, subjects=60)
    emit(session, actor(id=41), "batch.download", at=DAY + timedelta(seconds=10), subjects=40)
    emit(session, actor(id=41), "batch.download", at=DAY + timedelta(seconds=400), subjects=100)
    assert cases(session, "bulk_pull") == []
    emit(session, actor(id=41), "batch.download", at=DAY + timedelta(seconds=410), subjects=1)
    [case] = cases(session, "bulk_pull")
    assert case.evidence["subjects"] == 101
    [block] = active_blocks(session, "api_key", "41")
    assert (block.mode, block.limit_per_minute) == ("throttle", 10)


def test_cross_region_bulk_pull_needs_both_a_new_region_and_volume(session):
    home, away = actor(id=51, region="intranet"), actor(id=51, region="external")
    emit(session, home, "batch.download", at=DAY - timedelta(days=3), subjects=5)
    emit(session, home, "batch.download", 3, at=DAY, subjects=600)  # familiar region: fine
    emit(session, away, "batch.download", at=DAY, subjects=600)
    assert cases(session, "cross_region_bulk_pull") == []
    emit(session, away, "batch.download", at=DAY + timedelta(minutes=5), subjects=401)
    [case] = cases(session, "cross_region_bulk_pull")
    assert case.evidence["subjects"] == 1001 and case.evidence["region"] == "external"
    assert [b.mode for b in active_blocks(session, "api_key", "51")] == ["block"]


def test_budget_burn_blocks_the_organisation_data_access(session):
    for i in range(3):
        emit(session, actor(id=61, org=9), "budget.charge", at=DAY + timedelta(minutes=i),
             details={"epsilon_micro": 1_000_000})
    emit(session, actor(id=61, org=8), "budget.charge", at=DAY, details={"epsilon_micro": 2_500_000})
    assert cases(session, "budget_burn") == [], "3.0 epsilon is the limit, not above it"
    emit(session, actor(id=62, org=9), "budget.charge", at=DAY + timedelta(minutes=5),
         details={"epsilon_micro": 1})
    [case] = cases(session, "budget_burn")
    assert (case.subject_type, case.subject_id, case.evidence["epsilon_micro"]) == ("org", "9", 3_000_001)
    anomaly.check_access(session, principal(id=99, org=9), action="self.read")  # housekeeping stays open
    with pytest.raises(Forbidden) as err:
        anomaly.check_access(session, principal(id=99, org=9), action="product.call")
    assert err.value.code == "access_blocked" and f"case {case.id}" in err.value.message
    anomaly.check_access(session, principal(id=99, org=8), action="product.call")


def test_refusals_by_actor_and_by_ip(session):
    emit(session, actor(id=71), "authz.denied", 30, at=DAY, outcome="denied")
    assert cases(session, "refusals_actor") == []
    emit(session, actor(id=71), "authz.denied", at=DAY + timedelta(seconds=31), outcome="denied")
    [case] = cases(session, "refusals_actor")
    assert case.evidence["refusals"] == 31 and active_blocks(session, "api_key", "71") == []

    tune(session, "refusals_ip", threshold=10, action="block")
    anonymous = audit_log.Actor(kind="anonymous", ip="203.0.113.9", region="external")
    emit(session, anonymous, "auth.rejected", 10, at=DAY, outcome="denied")
    assert cases(session, "refusals_ip", subject_id="203.0.113.9") == []
    emit(session, anonymous, "auth.login", at=DAY + timedelta(seconds=20), outcome="denied")
    assert len(cases(session, "refusals_ip", subject_id="203.0.113.9")) == 1
    with pytest.raises(Forbidden, match="access from this address is blocked"):
        anomaly.check_access(session, principal(id=5, ip="203.0.113.9"), action="self.read")


def test_outside_term_blocks_on_the_first_event(session):
    emit(session, actor(id=81), "product.call", at=DAY, details={"agreement_expired": False})
    assert cases(session, "outside_term") == []
    emit(session, actor(id=81), "product.call", at=DAY, details={"agreement_expired": True})
    emit(session, actor(kind="user", id=82), "agreement.outside_term", at=DAY)
    assert sorted((c.subject_type, c.subject_id) for c in cases(session, "outside_term")) == [
        ("api_key", "81"), ("user", "82")]
    assert active_blocks(session, "user", "82")


def test_disabled_rules_and_supervision_events_are_not_evaluated(session):
    tune(session, "night_burst", threshold=1, enabled=False)
    emit(session, actor(id=91), "product.call", 5, at=NIGHT)
    emit(session, actor(id=92), "supervision.case_opened", 5, at=NIGHT)
    tune(session, "night_burst", enabled=True, params={"actions": ["supervision.case_opened"]})
    emit(session, actor(id=92), "supervision.case_opened", 5, at=NIGHT)
    assert cases(session, "night_burst") == []


def test_check_access_blocks_and_throttles_until_lifted(session):
    block = anomaly.create_block(session, subject_type="api_key", subject_id="7", reason="test")
    session.commit()
    with pytest.raises(Forbidden) as err:
        anomaly.check_access(session, principal(id=7))
    assert (err.value.code, err.value.status_code) == ("access_blocked", 403)
    anomaly.check_access(session, principal(kind="user", id=7))  # a user 7 is someone else
    anomaly.lift_block(session, block.id, actor=audit_log.SYSTEM, reason="manual block ends")
    session.commit()
    anomaly.check_access(session, principal(id=7))

    anomaly.create_block(session, subject_type="user", subject_id="8", mode="throttle", limit_per_minute=2)
    session.commit()
    anomaly.check_access(session, principal(kind="user", id=8))
    anomaly.check_access(session, principal(kind="user", id=8))
    with pytest.raises(Forbidden) as err:
        anomaly.check_access(session, principal(kind="user", id=8))
    assert (err.value.code, err.value.status_code) == ("throttled", 429)
    assert "2 requests per minute" in err.value.message


def test_decisions_need_reasons_and_confirmed_major_incidents_count(session):
    tune(session, "outside_term", action="alert")
    emit(session, actor(id=101, org=4), "agreement.outside_term", at=DAY)
    emit(session, actor(id=102, org=4), "agreement.outside_term", at=DAY)
    first, second = cases(session, "outside_term")
    with pytest.raises(InvalidInput, match="reason"):
        anomaly.confirm_case(session, first.id, actor=audit_log.SYSTEM, reason="  ", severity="major")
    case, incident = anomaly.confirm_case(session, first.id, actor=audit_log.SYSTEM,
                                          reason="customer kept calling after expiry", severity="major")
    anomaly.confirm_case(session, second.id, actor=audit_log.SYSTEM, reason="one call", severity="minor")
    session.commit()
    assert (case.state, incident.org_id, incident.case_id) == ("confirmed", 4, case.id)
    assert [i.id for i in anomaly.major_incidents(session, 4, since=DAY - timedelta(days=1))] == [incident.id]
    assert anomaly.major_incidents(session, 4, since=datetime(2099, 1, 1)) == []
    with pytest.raises(Exception, match="already confirmed"):
        anomaly.release_case(session, case.id, actor=audit_log.SYSTEM, reason="too late")


def test_rule_parameters_are_validated(session):
    rule = anomaly_rules.rule_by_name(session, "night_burst")
    for params, field in [({"night_start": "25:00"}, "params.night_start"), ({"colour": 1}, "params"),
                          ({"per": "ip"}, "params.per"), ({"actions": []}, "params.actions")]:
        with pytest.raises(InvalidInput) as err:
            anomaly_rules.update_rule(session, rule.id, actor=audit_log.SYSTEM, params=params)
        assert err.value.details == {"field": field}
    with pytest.raises(InvalidInput, match="action must be one of"):
        anomaly_rules.update_rule(session, rule.id, actor=audit_log.SYSTEM, action="shout")
