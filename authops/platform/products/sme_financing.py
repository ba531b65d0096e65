"""One-time financing requests (一次申请, 多家银行): an enterprise applies once, the platform matches the
request to several banks' loan products, each matched bank reports its progress, and the enterprise
follows every bank's progress in one view.

Who acts. Banks and enterprises are both *customer* organisations (the platform's users of data
services; there is no separate enterprise kind). A bank's staff hold the `bank_credit_officer` role
(loan products, matched requests, white list, pre-credit); an enterprise's staff hold the
`enterprise_finance` role. An enterprise organisation is identified by the USCC the bureau recorded
when it registered the organisation (`Organisation.uscc`): a request is always about the requesting
organisation's own USCC, so nobody can apply in another firm's name. An organisation with no USCC
on record cannot request financing (409, naming the field).

Sharing. The request carries the enterprise's authorization (`authorize_sharing: true`, recorded
with its time) to share its credit profile with the matched banks. What a matched bank sees is the
request (number, the enterprise's name and USCC, amount band, term, industry, purpose) and the
profile taken at submission from the precomputed answers (sme.Profile.shared: grade, bands, one
adverse-listing flag, the pre-credit band), never source data. A bank that was not matched gets
404 for the request, as for anything that does not exist.

Matching. Every active loan product of another organisation whose amount range overlaps the
requested band, whose term range holds the requested term, whose industries include the request's
(an empty list: every industry) and whose minimum grade the enterprise meets; one product per bank
(the lowest id), at most MAX_BANKS banks. An enterprise the registration data does not know has no
grade and matches nothing (the request is kept, unmatched).

Progress. Each match moves received → reviewing → approved → disbursed, or to declined (with a note)
from received or reviewing; only the matched bank moves it. A step is a compare-and-set on the
match's state and version (the client may send the version it saw): of two steps at once the second
is refused (409), an unknown state is 422 naming `state`, a step the current state does not allow is
409 saying what is allowed. Every step is audited (`sme.financing.progress`) and notifies the
enterprise (its title names the request, the bank and the new state only).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.clock import show, utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.platform.governance import notifications
from authops.platform.identity.models import Organisation
from authops.platform.products import sme
from authops.platform.products.sme_models import FinancingMatch, FinancingRequest, LoanProduct

MAX_BANKS = 10
MAX_TERM_MONTHS = 360
MAX_TEXT = 500
INDUSTRIES = {
    "agriculture": ("农林牧渔业", "Agriculture, forestry, fishing"),
    "manufacturing": ("制造业", "Manufacturing"),
    "construction": ("建筑业", "Construction"),
    "wholesale_retail": ("批发和零售业", "Wholesale and retail"),
    "transport_logistics": ("交通运输、仓储和邮政业", "Transport, storage and post"),
    "hospitality": ("住宿和餐饮业", "Accommodation and catering"),
    "information_technology": ("信息传输、软件和信息技术服务业", "Information technology and software"),
    "research_services": ("科学研究和技术服务业", "Scientific research and technical services"),
    "other": ("其他", "Other"),
}
# state -> the states a bank may move a match to
STEPS: dict[str, tuple[str, ...]] = {
    "received": ("reviewing", "declined"),
    "reviewing": ("approved", "declined"),
    "approved": ("disbursed",),
    "declined": (),
    "disbursed": (),
}
STATE_LABELS = {"received": "已受理", "reviewing": "审核中", "approved": "已批准", "declined": "已拒绝",
                "disbursed": "已放款"}
NOTIFICATION_MATCHED, NOTIFICATION_PROGRESS = "sme.financing.matched", "sme.financing.progress"


def _text(value: Any, field: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{field} is required text of at most {limit} characters", details={"field": field})
    return value.strip()


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} is a whole number from {low} to {high}", details={"field": field})
    return value


def _industry(value: Any, field: str = "industry") -> str:
    if value not in INDUSTRIES:
        raise InvalidInput(f"{field} must be one of {', '.join(INDUSTRIES)}", details={"field": field})
    return value


# --- loan products ---------------------------------------------------------------------------------

def create_loan_product(session: Session, *, principal: Principal | audit_log.Actor, name: Any,
                        min_amount_fen: Any, max_amount_fen: Any, min_term_months: Any, max_term_months: Any,
                        industries: Any = (), min_grade: Any = "C") -> LoanProduct:
    who = audit_log.as_actor(principal)
    name = _text(name, "name", 200)
    low = _whole(min_amount_fen, "min_amount_fen", 1, 10**13)
    high = _whole(max_amount_fen, "max_amount_fen", 1, 10**13)
    if high < low:
        raise InvalidInput("max_amount_fen must be at least min_amount_fen", details={"field": "max_amount_fen"})
    short = _whole(min_term_months, "min_term_months", 1, MAX_TERM_MONTHS)
    long_ = _whole(max_term_months, "max_term_months", 1, MAX_TERM_MONTHS)
    if long_ < short:
        raise InvalidInput("max_term_months must be at least min_term_months", details={"field": "max_term_months"})
    if not isinstance(industries, (list, tuple)):
        raise InvalidInput("industries is a list (empty: every industry)", details={"field": "industries"})
    chosen = sorted({_industry(i, f"industries[{k}]") for k, i in enumerate(industries)})
    sme.check_grade(min_grade, "min_grade")
    lp = LoanProduct(bank_org_id=who.org_id, name=name, min_amount_fen=low, max_amount_fen=high,
                     min_term_months=short, max_term_months=long_, industries=chosen, min_grade=min_grade,
                     created_by=who.name[:64])
    session.add(lp)
    session.flush()
    audit_log.record(session, who, "sme.loan_product.create", object_type="sme_loan_product", object_id=lp.id,
                     details={"min_grade": min_grade, "industries": len(chosen)})
    return lp


def get_loan_product(session: Session, product_id: int, *, org_id: int) -> LoanProduct:
    lp = session.get(LoanProduct, product_id)
    if lp is None or lp.bank_org_id != org_id:
        raise NotFound(f"no loan product {product_id}")
    return lp


def set_active(session: Session, lp: LoanProduct, active: Any, *, principal: Principal | audit_log.Actor
               ) -> LoanProduct:
    if not isinstance(active, bool):
        raise InvalidInput("active is true or false", details={"field": "active"})
    before = lp.active
    lp.active = active
    session.add(lp)
    session.flush()
    audit_log.record(session, audit_log.as_actor(principal), "sme.loan_product.update", object_type="sme_loan_product",
                     object_id=lp.id, details={"before": before, "after": active})
    return lp


def list_loan_products(session: Session, org_id: int) -> list[LoanProduct]:
    return list(session.exec(select(LoanProduct).where(LoanProduct.bank_org_id == org_id).order_by(LoanProduct.id)))


def loan_product_view(lp: LoanProduct) -> dict[str, Any]:
    return {"id": lp.id, "name": lp.name, "min_amount_fen": lp.min_amount_fen, "max_amount_fen": lp.max_amount_fen,
            "min_term_months": lp.min_term_months, "max_term_months": lp.max_term_months,
            "industries": lp.industries, "min_grade": lp.min_grade, "active": lp.active, "created_at": lp.created_at}


# --- requests and matching -----------------------------------------------------------------------

def matches_request(lp: LoanProduct, band: sme.Band, term_months: int, industry: str, grade: str | None) -> bool:
    overlaps = lp.max_amount_fen >= band.low_fen and (band.high_fen is None or lp.min_amount_fen < band.high_fen)
    return (overlaps and lp.min_term_months <= term_months <= lp.max_term_months
            and (not lp.industries or industry in lp.industries) and sme.grade_at_least(grade, lp.min_grade))


def match(session: Session, *, enterprise_org_id: int, band: sme.Band, term_months: int, industry: str,
          grade: str | None) -> list[LoanProduct]:
    """One matching product per bank (the lowest id), at most MAX_BANKS banks."""
    chosen: dict[int, LoanProduct] = {}
    for lp in session.exec(select(LoanProduct).where(LoanProduct.active, LoanProduct.bank_org_id != enterprise_org_id)
                           .order_by(LoanProduct.id)):
        if lp.bank_org_id not in chosen and matches_request(lp, band, term_months, industry, grade):
            chosen[lp.bank_org_id] = lp
            if len(chosen) == MAX_BANKS:
                break
    return list(chosen.values())


def submit(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, amount_band: Any,
           term_months: Any, industry: Any, purpose: Any, authorize_sharing: Any) -> FinancingRequest:
    """File the requesting enterprise's request and match it (flushes; the caller commits)."""
    who = audit_log.as_actor(principal)
    band = sme.band(amount_band)
    term = _whole(term_months, "term_months", 1, MAX_TERM_MONTHS)
    industry = _industry(industry)
    purpose = _text(purpose, "purpose")
    if authorize_sharing is not True:
        raise InvalidInput("authorize_sharing must be true: the matched banks see your credit grade and bands "
                           "(never your data); without it nothing can be matched",
                           details={"field": "authorize_sharing"})
    org = session.get(Organisation, who.org_id)
    if org is None or not org.uscc:
        raise Conflict("your organisation has no USCC on record; the bureau records it when registering the "
                       "organisation, and a financing request is always about your own USCC",
                       code="no_uscc", details={"field": "uscc"})
    profile = sme.Profiles(session, settings).get(org.uscc)
    now = utcnow()
    req = FinancingRequest(number=f"FR-pending-{uuid.uuid4().hex[:16]}", enterprise_org_id=org.id,
                           uscc=org.uscc, amount_band=band.code, term_months=term, industry=industry, purpose=purpose,
                           sharing_authorized_at=now, profile=profile.shared() if profile else {"found": False},
                           created_by=who.name[:64], created_at=now)
    session.add(req)
    session.flush()
    req.number = f"FR-{now.year}-{req.id:05d}"
    session.add(req)
    products = match(session, enterprise_org_id=org.id, band=band, term_months=term, industry=industry,
                     grade=profile.grade if profile else None)
    for lp in products:
        first = {"from": None, "to": "received", "by": "platform", "note": "", "at": now.isoformat()}
        m = FinancingMatch(request_id=req.id, loan_product_id=lp.id, bank_org_id=lp.bank_org_id, updated_at=now,
                           history=[first])
        session.add(m)
        session.flush()
        notifications.notify(session, [lp.bank_org_id], NOTIFICATION_MATCHED,
                             f"Financing request {req.number} matches your loan product {lp.name!r}",
                             f"Open /api/v1/sme/financing/matches/{m.id}.")
    session.flush()
    audit_log.record(session, who, "sme.financing.submit", object_type="sme_financing_request", object_id=req.id,
                     details={"number": req.number, "amount_band": band.code, "term_months": term,
                              "industry": industry, "found": profile is not None, "matched": len(products),
                              "banks": sorted(lp.bank_org_id for lp in products), "sharing_authorized": True})
    return req


def get_request(session: Session, request_id: int, *, org_id: int) -> FinancingRequest:
    req = session.get(FinancingRequest, request_id)
    if req is None or req.enterprise_org_id != org_id:
        raise NotFound(f"no financing request {request_id}")
    return req


def list_requests(session: Session, org_id: int) -> list[FinancingRequest]:
    return list(session.exec(select(FinancingRequest).where(FinancingRequest.enterprise_org_id == org_id)
                             .order_by(FinancingRequest.id.desc())))


def matches_of(session: Session, request_id: int) -> list[FinancingMatch]:
    return list(session.exec(select(FinancingMatch).where(FinancingMatch.request_id == request_id)
                             .order_by(FinancingMatch.id)))


def _org_name(session: Session, org_id: int) -> str:
    org = session.get(Organisation, org_id)
    return org.name_zh if org else str(org_id)


def _state(m: FinancingMatch) -> dict[str, Any]:
    return {"state": m.state, "state_zh": STATE_LABELS[m.state], "version": m.version, "updated_at": m.updated_at,
            "next_states": list(STEPS[m.state]), "history": m.history}


def request_view(session: Session, req: FinancingRequest) -> dict[str, Any]:
    """The enterprise's one view: its request and every matched bank's progress."""
    band = sme.BANDS[req.amount_band]
    banks = []
    for m in matches_of(session, int(req.id or 0)):
        lp = session.get(LoanProduct, m.loan_product_id)
        banks.append({"match_id": m.id, "bank": _org_name(session, m.bank_org_id), "bank_org_id": m.bank_org_id,
                      "loan_product": lp.name if lp else None, **_state(m)})
    return {"id": req.id, "number": req.number, "uscc": req.uscc, "amount_band": band.view(),
            "term_months": req.term_months, "industry": req.industry, "purpose": req.purpose,
            "sharing_authorized_at": req.sharing_authorized_at, "created_at": req.created_at,
            "shared_profile": req.profile, "matches": banks}


# --- the bank's side -----------------------------------------------------------------------------

def get_match(session: Session, match_id: int, *, org_id: int) -> FinancingMatch:
    m = session.get(FinancingMatch, match_id)
    if m is None or m.bank_org_id != org_id:
        raise NotFound(f"no financing request match {match_id}")
    return m


def list_matches(session: Session, org_id: int) -> list[FinancingMatch]:
    return list(session.exec(select(FinancingMatch).where(FinancingMatch.bank_org_id == org_id)
                             .order_by(FinancingMatch.id.desc())))


def match_view(session: Session, m: FinancingMatch) -> dict[str, Any]:
    """What the matched bank sees: the request, the enterprise, the shared profile, its own progress."""
    req = session.get(FinancingRequest, m.request_id)
    lp = session.get(LoanProduct, m.loan_product_id)
    return {"id": m.id, "request_number": req.number, "enterprise": _org_name(session, req.enterprise_org_id),
            "uscc": req.uscc, "amount_band": sme.BANDS[req.amount_band].view(), "term_months": req.term_months,
            "industry": req.industry, "purpose": req.purpose, "submitted_at": req.created_at,
            "loan_product": {"id": lp.id, "name": lp.name}, "profile": req.profile, **_state(m)}


def progress(session: Session, m: FinancingMatch, to_state: Any, *, principal: Principal | audit_log.Actor,
             note: Any = "", version: Any = None) -> FinancingMatch:
    """Move the match to `to_state` (see the module docstring); flushes, the caller commits."""
    who = audit_log.as_actor(principal)
    if to_state not in STEPS:
        raise InvalidInput(f"state must be one of {', '.join(STEPS)}", details={"field": "state"})
    if not isinstance(note, str) or len(note) > MAX_TEXT:
        raise InvalidInput(f"note is text of at most {MAX_TEXT} characters", details={"field": "note"})
    if to_state == "declined" and not note.strip():
        raise InvalidInput("declining needs a note for the enterprise saying why", details={"field": "note"})
    if version is not None and version != m.version:
        raise Conflict(f"match {m.id} is at version {m.version}, not {version}: it changed since you read it "
                       "(reload it and decide again)", code="match_changed", details={"version": m.version})
    before = m.state
    if to_state not in STEPS[before]:
        allowed = STEPS[before]
        raise Conflict(f"match {m.id} is {before}; it can move to {' or '.join(allowed)}, not {to_state}" if allowed
                       else f"match {m.id} is {before}, a final state: it cannot move to {to_state}",
                       code="illegal_transition", details={"state": before, "allowed": list(allowed)})
    now = utcnow()
    history = [*m.history, {"from": before, "to": to_state, "by": who.name[:64], "note": note.strip(),
                            "at": now.isoformat()}]
    moved = session.execute(update(FinancingMatch).where(FinancingMatch.id == m.id, FinancingMatch.state == before,
                                                         FinancingMatch.version == m.version)
                            .values(state=to_state, version=m.version + 1, history=history, updated_at=now)
                            .execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        raise Conflict(f"match {m.id} was changed by someone else meanwhile; nothing of yours was recorded: "
                       "reload it and try again", code="match_changed")
    m.state, m.version, m.history, m.updated_at = to_state, m.version + 1, history, now
    req = session.get(FinancingRequest, m.request_id)
    audit_log.record(session, who, "sme.financing.progress", object_type="sme_financing_match", object_id=m.id,
                     details={"request": req.number, "before": before, "after": to_state, "version": m.version})
    notifications.notify(session, [req.enterprise_org_id], NOTIFICATION_PROGRESS,
                         f"{req.number}: {_org_name(session, m.bank_org_id)} moved your request to {to_state} "
                         f"({STATE_LABELS[to_state]})",
                         f"Follow every bank's progress at /api/v1/sme/financing/requests/{req.id} "
                         f"({show(now)} Asia/Shanghai).")
    session.flush()
    return m
