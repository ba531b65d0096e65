"""Route-matrix cases for the operator lifecycle (authops/platform/governance/routes_operator.py).

Each prepare builds what its call consumes for the organisation on `org`'s side (home or away):
the notice, the case in the right state, the operator's authorization. The whole-city rule (one
operator authorization at a time) would refuse a fresh one while another exists, so prepares that
need a clean slate park the other authorizations (state set aside) and every prepare first puts
parked ones back, as it restores the store's objects a destruction call shredded: the module's last
route leaves the world as it found it.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from itertools import count

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.core.settings import get_settings
from authops.core.storage.backends import LocalBackend
from authops.core.storage.keyring import load_keyring
from authops.core.storage.store import RESERVED_PREFIX, ObjectStore, get_object_store
from authops.platform.governance import destruction, operator, workdays, workflow
from authops.platform.governance.models import Agreement, Case
from authops.platform.identity.models import Organisation
from tests.support.matrix import Case as MCase
from tests.support.matrix import World

G = "/api/v1/governance/operator"
_n = count(1)
_ids: dict[tuple[str, int], int] = {}
_parked: dict[int, str] = {}
_backup: dict[str, bytes] = {}
PAYLOAD = {"security_officer": {"name": "王安全"}, "internal_security_rules": ["数据安全管理制度"]}
SHARES = {"shares_pct": {"provider_departments": 30, "operator": 50, "partners": 20}}


def _side(w: World, org: Organisation) -> dict[OrgKind, Organisation]:
    return w.away if org.id == w.away[OrgKind(org.kind)].id else w.home


def _op(w: World, org: Organisation) -> Organisation:
    return _side(w, org)[OrgKind.OPERATOR]


def _as(org: Organisation) -> audit_log.Actor:
    return audit_log.Actor(kind="user", id=None, name=f"matrix-{org.id}", org_id=org.id)


def _today():
    return workdays.shanghai_date(utcnow())


# --- keeping the world as it was -----------------------------------------------------------------------
def _reset(session: Session) -> None:
    for ag_id, state in _parked.items():
        ag = session.get(Agreement, ag_id)
        if ag is not None:
            ag.state = state
            session.add(ag)
    _parked.clear()
    if _backup:
        backend = get_object_store(get_settings()).backend
        for name, data in _backup.items():
            backend.write(name, [data])
        _backup.clear()
    session.commit()


def _park(session: Session, org_id: int | None = None) -> None:
    q = select(Agreement).where(Agreement.kind == operator.AGREEMENT_KIND,
                                Agreement.state.in_(("active", "pending", "exited")))
    if org_id is not None:
        q = q.where(Agreement.party_b_org_id == org_id)
    for ag in session.exec(q):
        _parked[ag.id] = ag.state
        ag.state = "terminated"
        session.add(ag)
    session.flush()


def _back_up_store() -> None:
    backend = get_object_store(get_settings()).backend
    for prefix in destruction.OPERATION_PREFIXES:
        for name in [*backend.list(prefix), *backend.list(RESERVED_PREFIX + prefix)]:
            _backup[name] = backend.read(name)


# --- builders ----------------------------------------------------------------------------------------
def _notice(session: Session, w: World, org: Organisation, *, closed: bool = False):
    bureau = w.home[OrgKind.BUREAU]
    expert = _side(w, org)[OrgKind.EXPERT]
    now = utcnow()
    return operator.publish_notice(session, actor=_as(bureau), title=f"matrix notice {next(_n)}",
                                   deadline_at=now - timedelta(hours=1) if closed else now + timedelta(days=30),
                                   committee_org_ids=[expert.id], materials=["plan"],
                                   now=now - timedelta(days=2) if closed else now)


def _draft(session: Session, w: World, org: Organisation) -> Case:
    op = _op(w, org)
    call = _notice(session, w, org)
    return operator.file_application(session, call=call, actor=_as(op), title="matrix application",
                                     payload=dict(PAYLOAD))


def _attach(session: Session, case: Case, org: Organisation, materials: list[str]) -> None:
    store = get_object_store(get_settings())
    for m in materials:
        operator.add_document(session, store, case, material=m, filename=f"{m}.pdf", content=f"{m} {case.id}".encode(),
                              actor=_as(org))


def _submitted(session: Session, w: World, org: Organisation) -> Case:
    case = _draft(session, w, org)
    _attach(session, case, _op(w, org), ["plan"])
    operator.submit(session, case, actor=_as(_op(w, org)))
    return case


def _advance(session: Session, case: Case, *actions: str, **kw) -> None:
    for action in actions:
        workflow.transition(session, case, action, actor=audit_log.SYSTEM, **(kw if action == actions[-1] else {}))


def _publicity(session: Session, w: World, org: Organisation, *, ended: bool) -> Case:
    case = _submitted(session, w, org)
    ends = utcnow() - timedelta(minutes=1) if ended else utcnow() + timedelta(days=9)
    _advance(session, case, "qualify", "select",
             facts={"publicity": {"starts_at": utcnow().isoformat(), "ends_at": ends.replace(microsecond=0).isoformat(),
                                  "ends_local": ""}, "objections": []})
    return case


def _authorize(session: Session, op: Organisation, w: World, *, starts=None, ends=None) -> Agreement:
    _park(session, op.id)
    today = _today()
    ag = Agreement(kind=operator.AGREEMENT_KIND, number=f"OA-M-{next(_n):05d}", party_a_org_id=w.home[OrgKind.BUREAU].id,
                   party_b_org_id=op.id, terms={"scope": "whole city"}, text="matrix authorization",
                   text_sha256="0" * 64, starts_on=starts or today - timedelta(days=30),
                   ends_on=ends or workdays.add_months(today, 35), state="active")
    session.add(ag)
    session.flush()
    return ag


def _close_open(session: Session, kind: str, op: Organisation) -> None:
    for c in session.exec(select(Case).where(Case.kind == kind, Case.applicant_org_id == op.id,
                                             Case.state.in_(("draft", "submitted")))):
        c.state = "withdrawn"
        session.add(c)
    session.flush()


def _keep(name: str, org: Organisation, value: int) -> None:
    _ids[(name, org.id)] = value


def _prep(name: str, build):
    def prepare(session: Session, w: World, org: Organisation) -> None:
        _reset(session)
        _keep(name, org, build(session, w, org))
        session.commit()
    return prepare


def _param(name: str, param: str):
    return lambda w, org: {param: _ids.get((name, org.id), 1)}


# --- what each route consumes ---------------------------------------------------------------------------
def _open_notice(session, w, org):
    return _notice(session, w, org).id


def _closed_notice(session, w, org):
    return _notice(session, w, org, closed=True).id


def _draft_id(session, w, org):
    return _draft(session, w, org).id


def _ready(session, w, org):
    case = _draft(session, w, org)
    _attach(session, case, _op(w, org), ["plan"])
    return case.id


def _submitted_id(session, w, org):
    return _submitted(session, w, org).id


def _objected(session, w, org):
    case = _publicity(session, w, org, ended=False)
    operator.file_objection(session, case, text="matrix objection to the selection", contact="matrix@example.cn")
    return case.id


def _publicity_over(session, w, org):
    _park(session)
    return _publicity(session, w, org, ended=True).id


def _scoring(session, w, org):
    case = _submitted(session, w, org)
    _advance(session, case, "qualify")
    return case.id


def _renewable(session, w, org):
    op = _op(w, org)
    today = _today()
    # Inside the renewal window: 12 to 6 months before the term ends.
    _authorize(session, op, w, starts=workdays.add_months(today, -27), ends=workdays.add_months(today, 9))
    _close_open(session, operator.RENEWAL, op)
    return op.id


def _exitable(session, w, org):
    op = _op(w, org)
    _authorize(session, op, w)
    _close_open(session, operator.EXIT, op)
    return op.id


def _exit_submitted(session, w, org):
    op = _op(w, org)
    _exitable(session, w, org)
    case = operator.open_exit(session, actor=_as(op), exit_on=workdays.add_months(_today(), 7), reason="matrix")
    _attach(session, case, op, operator.EXIT_MATERIALS)
    operator.submit(session, case, actor=_as(op))
    return case.id


def _forcible(session, w, org):
    op = _op(w, org)
    _authorize(session, op, w)
    operator.record_fact(session, operator_org_id=op.id, kind="fraud", summary="matrix fraud", actor=_as(org))
    return op.id


def _exited(session, w, org):
    _back_up_store()
    op = _op(w, org)
    today = _today()
    ag = Agreement(kind=operator.AGREEMENT_KIND, number=f"OA-M-{next(_n):05d}", party_a_org_id=w.home[OrgKind.BUREAU].id,
                   party_b_org_id=op.id, terms={"scope": "whole city", "exit_on": str(today)}, text="matrix exited",
                   text_sha256="0" * 64, starts_on=today - timedelta(days=400), ends_on=today + timedelta(days=600),
                   state="exited")
    session.add(ag)
    session.flush()
    _numbers[ag.id] = ag.number
    return ag.id


_numbers: dict[int, str] = {}


def _certificate(session, w, org):
    ag = session.get(Agreement, _exited(session, w, org))
    _backup.clear()  # nothing of the real store is touched: the certificate comes from an empty store
    settings = get_settings()
    empty = ObjectStore(LocalBackend(tempfile.mkdtemp(prefix="matrix-store-")), load_keyring(settings))
    return destruction.destroy_operation(session, empty, ag, actor=_as(org), settings=settings,
                                         returned="matrix: returned", confirm=ag.number).id


CASES: dict[tuple[str, str], MCase] = {
    ("POST", f"{G}/notices"): MCase(body=lambda w, org: {
        "title": "matrix notice", "deadline_at": (utcnow() + timedelta(days=30)).isoformat() + "Z",
        "committee_org_ids": [w.home[OrgKind.EXPERT].id], "materials": ["plan"]}),
    ("GET", f"{G}/notices"): MCase(),
    ("POST", f"{G}/notices/{{call_id}}/conclude"): MCase(
        prepare=_prep("closed_notice", _closed_notice), params=_param("closed_notice", "call_id"),
        body=lambda w, org: {}, cross_org="authorization.manage"),
    ("GET", f"{G}/notices/{{call_id}}/applications"): MCase(
        prepare=_prep("notice", _open_notice), params=_param("notice", "call_id"), cross_org="authorization.manage"),
    ("POST", f"{G}/applications"): MCase(
        prepare=_prep("notice", _open_notice),
        body=lambda w, org: {"call_id": _ids.get(("notice", org.id), 1), "title": "matrix", "payload": PAYLOAD}),
    ("GET", f"{G}/applications"): MCase(),
    ("GET", f"{G}/applications/{{case_id}}"): MCase(prepare=_prep("draft", _draft_id), params=_param("draft", "case_id")),
    ("POST", f"{G}/applications/{{case_id}}/documents"): MCase(
        prepare=_prep("draft", _draft_id), params=_param("draft", "case_id"),
        files=lambda w, org: {"file": ("plan.pdf", b"%PDF-1.4 operating plan", "application/pdf")}),
    ("POST", f"{G}/applications/{{case_id}}/submit"): MCase(prepare=_prep("ready", _ready),
                                                             params=_param("ready", "case_id")),
    ("GET", f"{G}/authorization"): MCase(),
    ("POST", f"{G}/renewals"): MCase(prepare=_prep("renewable", _renewable), body=lambda w, org: {}),
    ("POST", f"{G}/exits"): MCase(prepare=_prep("exitable", _exitable), body=lambda w, org: {
        "exit_on": workdays.add_months(_today(), 7).isoformat(), "reason": "matrix exit"}),
    ("GET", f"{G}/bureau/applications/{{case_id}}"): MCase(
        prepare=_prep("draft", _draft_id), params=_param("draft", "case_id"), cross_org="authorization.manage"),
    ("POST", f"{G}/applications/{{case_id}}/qualification"): MCase(
        prepare=_prep("submitted", _submitted_id), params=_param("submitted", "case_id"),
        body=lambda w, org: {"passed": False, "reasons": "matrix: conditions not shown"},
        cross_org="authorization.manage"),
    ("POST", f"{G}/applications/{{case_id}}/objections/{{n}}/resolve"): MCase(
        prepare=_prep("objected", _objected), params=lambda w, org: {**_param("objected", "case_id")(w, org), "n": 1},
        body=lambda w, org: {"upheld": False, "reasons": "matrix: checked"}, cross_org="authorization.manage"),
    ("POST", f"{G}/applications/{{case_id}}/agreement"): MCase(
        prepare=_prep("publicity_over", _publicity_over), params=_param("publicity_over", "case_id"),
        body=lambda w, org: {"revenue_distribution": SHARES}, cross_org="authorization.manage"),
    ("POST", f"{G}/applications/{{case_id}}/decision"): MCase(
        prepare=_prep("exit_submitted", _exit_submitted), params=_param("exit_submitted", "case_id"),
        body=lambda w, org: {"approve": False, "reasons": "matrix: not now"}, cross_org="authorization.manage"),
    ("POST", f"{G}/exits/forced"): MCase(
        prepare=_prep("forcible", _forcible), body=lambda w, org: {
            "operator_org_id": _ids.get(("forcible", org.id), 1), "cause": "fraud", "reasons": "matrix: fraud"}),
    ("POST", f"{G}/facts"): MCase(body=lambda w, org: {
        "operator_org_id": w.home[OrgKind.OPERATOR].id, "kind": "assessment_qualified", "year": 2026,
        "summary": "matrix: qualified"}),
    ("GET", f"{G}/facts"): MCase(query=lambda w, org: {"operator_org_id": w.home[OrgKind.OPERATOR].id}),
    ("POST", f"{G}/agreements/{{agreement_id}}/destruction"): MCase(
        prepare=_prep("exited", _exited), params=_param("exited", "agreement_id"),
        body=lambda w, org: {"returned": "matrix: returned to the providers",
                             "confirm": _numbers.get(_ids.get(("exited", org.id), 0), "OA-none")},
        cross_org="authorization.manage"),
    ("GET", f"{G}/destruction-certificates/{{cert_id}}"): MCase(
        prepare=_prep("cert", _certificate), params=_param("cert", "cert_id"), cross_org="authorization.manage"),
    ("POST", f"{G}/destruction-certificates/{{cert_id}}/verify"): MCase(
        prepare=_prep("cert", _certificate), params=_param("cert", "cert_id"), cross_org="authorization.manage"),
    ("GET", f"{G}/expert/applications"): MCase(),
    ("POST", f"{G}/applications/{{case_id}}/scores"): MCase(
        prepare=_prep("scoring", _scoring), params=_param("scoring", "case_id"),
        body=lambda w, org: {"score": 80, "comments": "matrix: reviewed"}),
}
