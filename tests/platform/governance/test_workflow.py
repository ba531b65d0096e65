"""The workflow engine on a small two-level machine registered here (every lifecycle runs on it)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from authops.audit import log as audit_log
from authops.audit.models import AuditEvent
from authops.core.clock import utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind
from authops.core.storage.store import get_object_store
from authops.platform.governance import workflow
from authops.platform.governance.models import CaseTransition
from authops.platform.governance.workflow import Machine, Step
from tests.support.builders import make_org, make_user

KIND = "wf_test"
MACHINE = workflow.register(Machine(
    kind=KIND, prefix="WT", initial="draft", en="Test application",
    states=("draft", "level1", "level2", "returned", "approved", "rejected", "expired"),
    steps=(
        Step("submit", ("draft",), "level1", by="applicant"),
        Step("pass", ("level1",), "level2"),
        Step("approve", ("level2",), "approved"),
        Step("reject", ("level1", "level2"), "rejected", needs_reason=True),
        Step("return", ("level1", "level2"), "returned", needs_reason=True),
        Step("resubmit", ("returned",), "level1", by="applicant"),
        Step("expire", ("draft", "level1", "level2", "returned"), "expired", by="system"),
    ),
    final=frozenset({"approved", "rejected", "expired"})))


def _actor(session, kind: OrgKind):
    org = make_org(session, kind)
    user = make_user(session, org)
    return org, audit_log.Actor(kind="user", id=user.id, name=user.username, org_id=org.id)


@pytest.fixture
def world(session):
    partner, applicant = _actor(session, OrgKind.PARTNER)
    provider, reviewer = _actor(session, OrgKind.PROVIDER)
    bureau, final = _actor(session, OrgKind.BUREAU)
    _, stranger = _actor(session, OrgKind.PARTNER)
    session.commit()
    return {"partner": partner, "applicant": applicant, "provider": provider, "reviewer": reviewer,
            "bureau": bureau, "final": final, "stranger": stranger}


def _open(session, w, **kw):
    return workflow.open_case(session, kind=KIND, applicant_org_id=w["partner"].id, title="Credit scoring pilot",
                              payload={"goal": "score SMEs"}, actor=w["applicant"], **kw)


def _events(session, prefix):
    rows = session.exec(select(AuditEvent).where(AuditEvent.action.like(prefix + "%")).order_by(AuditEvent.seq)).all()
    return [(e.action, json.loads(e.canonical)["details"], e) for e in rows]


def test_illegal_transition_names_the_state_and_what_is_allowed(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    with pytest.raises(workflow.IllegalTransition) as exc:  # skipping the first review level
        workflow.transition(session, case, "approve", actor=world["final"])
    err = exc.value
    assert err.status_code == 409 and err.code == "illegal_transition"
    assert "is level1" in err.message and "only when it is level2" in err.message
    assert err.details == {"state": "level1", "action": "approve",
                           "allowed": ["pass", "reject", "return", "expire"]}
    assert case.state == "level1"
    with pytest.raises(InvalidInput, match="there is no action 'publish'"):
        workflow.transition(session, case, "publish", actor=world["final"])


def test_a_final_state_allows_nothing_more(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    workflow.transition(session, case, "reject", actor=world["reviewer"], reason="scope too wide")
    with pytest.raises(workflow.IllegalTransition, match="Nothing more can happen to it") as exc:
        workflow.transition(session, case, "pass", actor=world["reviewer"])
    assert exc.value.details["allowed"] == []


def test_reviewer_cannot_decide_on_own_organisations_application(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    colleague = audit_log.Actor(kind="user", id=999, name="colleague", org_id=world["partner"].id)
    with pytest.raises(workflow.OwnApplication) as exc:
        workflow.transition(session, case, "pass", actor=colleague)
    assert exc.value.status_code == 403 and exc.value.code == "own_application"
    assert case.number in exc.value.message
    assert case.state == "level1"


def test_applicant_only_steps_look_missing_to_others(session, world):
    case = _open(session, world)
    with pytest.raises(NotFound):
        workflow.transition(session, case, "submit", actor=world["stranger"])
    with pytest.raises(NotFound):
        workflow.transition(session, case, "submit", actor=world["final"])
    assert case.state == "draft"
    workflow.transition(session, case, "submit", actor=world["applicant"])
    assert case.state == "level1"


def test_system_only_steps_refuse_people(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    with pytest.raises(Forbidden) as exc:
        workflow.transition(session, case, "expire", actor=world["final"])
    assert exc.value.code == "system_only"
    workflow.transition(session, case, "expire", actor=audit_log.SYSTEM)
    assert case.state == "expired"


def test_reasons_are_required_to_reject_or_return(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    for action in ("reject", "return"):
        with pytest.raises(InvalidInput) as exc:
            workflow.transition(session, case, action, actor=world["reviewer"], reason="   ")
        assert exc.value.details == {"field": "reason"} and "written reasons" in exc.value.message
    with pytest.raises(InvalidInput) as exc:
        workflow.record_review(session, case, stage="level1", actor=world["reviewer"], decision="return")
    assert exc.value.details == {"field": "reasons"}
    with pytest.raises(InvalidInput, match="score must be between 0 and 100"):
        workflow.record_review(session, case, stage="level1", actor=world["reviewer"], decision="score", score=101)
    assert case.state == "level1"


def test_history_and_audit_record_every_step_with_before_and_after(session, world):
    case = _open(session, world, awaiting_orgs=[world["provider"].id])
    workflow.transition(session, case, "submit", actor=world["applicant"])
    workflow.transition(session, case, "return", actor=world["reviewer"], reason="add the security measures",
                        awaiting_orgs=[world["partner"].id])
    case.round += 1
    workflow.transition(session, case, "resubmit", actor=world["applicant"], awaiting_orgs=[world["provider"].id])
    workflow.transition(session, case, "pass", actor=world["reviewer"], awaiting_orgs=[world["bureau"].id])
    workflow.transition(session, case, "approve", actor=world["final"])
    session.commit()

    rows = workflow.history(session, case)
    assert [(r.seq, r.action, r.from_state, r.to_state) for r in rows] == [
        (1, "submit", "", "draft"), (2, "submit", "draft", "level1"), (3, "return", "level1", "returned"),
        (4, "resubmit", "returned", "level1"), (5, "pass", "level1", "level2"), (6, "approve", "level2", "approved")]
    assert rows[2].actor_org_id == world["provider"].id and rows[2].reason == "add the security measures"
    assert rows[5].actor_name == world["final"].name and rows[5].actor_kind == "user"

    events = _events(session, f"gov.{KIND}.")
    assert [(a, d["before"], d["after"]) for a, d, _ in events] == [
        (f"gov.{KIND}.submit", None, "draft"), (f"gov.{KIND}.submit", "draft", "level1"),
        (f"gov.{KIND}.return", "level1", "returned"), (f"gov.{KIND}.resubmit", "returned", "level1"),
        (f"gov.{KIND}.pass", "level1", "level2"), (f"gov.{KIND}.approve", "level2", "approved")]
    ret = events[2]
    assert ret[1]["number"] == case.number and ret[2].actor_id == world["reviewer"].id
    assert ret[2].org_id == world["provider"].id and ret[2].object_id == str(case.id)
    # The reason itself stays in the case history; the audit trail holds its digest.
    assert "add the security measures" not in ret[2].canonical.decode()
    assert ret[1]["reason_sha256"] == workflow._digest("add the security measures")
    assert events[3][1]["round"] == 2


def test_history_rows_cannot_share_a_sequence_number(session, world):
    case = _open(session, world)
    session.add(CaseTransition(case_id=case.id, seq=1, action="forged", from_state="", to_state="approved",
                               actor_kind="user"))
    with pytest.raises(Exception):  # the unique (case_id, seq) constraint
        session.flush()
    session.rollback()


def test_final_states_clear_who_must_act_and_the_deadline(session, world):
    due = utcnow()
    case = _open(session, world, awaiting_orgs=[world["provider"].id], due_at=due)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    assert case.awaiting_orgs == [world["provider"].id] and case.due_at == due and case.decided_at is None
    workflow.transition(session, case, "pass", actor=world["reviewer"], awaiting_orgs=[world["bureau"].id],
                        due_at=None)
    assert case.awaiting_orgs == [world["bureau"].id] and case.due_at is None
    workflow.transition(session, case, "approve", actor=world["final"], awaiting_orgs=[world["bureau"].id])
    assert case.state == "approved" and case.awaiting_orgs == [] and case.due_at is None
    assert case.decided_at is not None
    assert workflow.view(session, case)["allowed_actions"] == []


def test_a_returned_application_goes_back_to_the_stage_that_returned_it(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    workflow.transition(session, case, "pass", actor=world["reviewer"])
    workflow.transition(session, case, "return", actor=world["final"], reason="explain the technical route",
                        facts={"returned_from": "level2"})
    workflow.transition(session, case, "resubmit", actor=world["applicant"], target=case.facts["returned_from"])
    assert case.state == "level2"


def test_a_reviewer_decides_once_per_stage_and_round(session, world):
    case = _open(session, world)
    workflow.transition(session, case, "submit", actor=world["applicant"])
    workflow.record_review(session, case, stage="level1", actor=world["reviewer"], decision="return",
                           reasons="missing field list")
    with pytest.raises(Conflict) as exc:
        workflow.record_review(session, case, stage="level1", actor=world["reviewer"], decision="approve")
    assert exc.value.code == "already_reviewed" and "(return)" in exc.value.message
    case.round += 1  # resubmitted: a new round may be decided again
    r = workflow.record_review(session, case, stage="level1", actor=world["reviewer"], decision="approve")
    assert r.round == 2
    assert [(x.round, x.decision) for x in workflow.reviews(session, case, "level1")] == [(1, "return"), (2, "approve")]


def test_documents_are_encrypted_at_rest(session, world, db_settings):
    case = _open(session, world)
    store = get_object_store(db_settings)
    secret = "营业执照 统一社会信用代码 91320500MA1XYZ1234 PLAINTEXT-MARKER".encode()
    doc = workflow.add_document(session, store, case, material="business licence", filename="licence.txt",
                                content=secret, actor=world["applicant"], content_type="text/plain")
    session.commit()
    raw = store.backend.read(doc.object_key)
    assert raw and b"PLAINTEXT-MARKER" not in raw and "91320500MA1XYZ1234".encode() not in raw
    assert store.get(doc.object_key) == secret
    assert doc.size == len(secret) and workflow.missing_materials(session, case, ["business licence", "plan"]) == ["plan"]
    with pytest.raises(InvalidInput, match="the file is empty"):
        workflow.add_document(session, store, case, material="plan", filename="plan.pdf", content=b"",
                              actor=world["applicant"])


def test_unknown_kind_and_blank_title_are_refused(session, world):
    with pytest.raises(InvalidInput, match="unknown case kind 'nope'"):
        workflow.open_case(session, kind="nope", applicant_org_id=world["partner"].id, title="x", payload={},
                           actor=world["applicant"])
    with pytest.raises(InvalidInput) as exc:
        workflow.open_case(session, kind=KIND, applicant_org_id=world["partner"].id, title="  ", payload={},
                           actor=world["applicant"])
    assert exc.value.details == {"field": "title"}
