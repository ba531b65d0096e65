"""SME credit services routes (prefix /api/v1/sme): the white list, pre-credit suggestions, banks' loan
products and one-time financing requests. Objects of another organisation answer 404.

Banks act with `whitelist.subscribe`, `product.call` (pre-credit, metered under the bank credit
assessment agreement), `loan_product.manage` and `financing.handle`; enterprises with
`financing.request` (see authops.platform.products.sme_financing for who is who).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from authops.core.identity import Principal
from authops.billing.prices import MAX_FEN
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of, require
from authops.platform.products import sme, sme_financing, sme_whitelist
from authops.platform.products.router import committing_refusals

router = APIRouter(prefix="/sme", tags=["SME credit services"])

Grade = Literal["A", "B", "C", "D", "E"]


class SubscriptionIn(BaseModel):
    min_grade: Literal["A", "B"] = Field(default="B", description="the lowest grade on the list")
    interval_hours: int = Field(default=24, ge=sme_whitelist.MIN_INTERVAL_HOURS, le=sme_whitelist.MAX_INTERVAL_HOURS,
                                description="how often the list is pushed")


class PrecreditIn(BaseModel):
    uscc: str = Field(max_length=18, description="the enterprise's unified social credit code")
    purpose: str = Field(max_length=500, description="the purpose the enterprise's consent names")


class LoanProductIn(BaseModel):
    name: str = Field(max_length=200)
    min_amount_fen: int = Field(ge=1, le=MAX_FEN, description="smallest loan, in fen")
    max_amount_fen: int = Field(ge=1, le=MAX_FEN, description="largest loan, in fen")
    min_term_months: int = Field(ge=1, le=sme_financing.MAX_TERM_MONTHS)
    max_term_months: int = Field(ge=1, le=sme_financing.MAX_TERM_MONTHS)
    industries: list[str] = Field(default_factory=list, max_length=len(sme_financing.INDUSTRIES),
                                  description="industry codes served; empty: every industry")
    min_grade: Grade = Field(default="C", description="the lowest credit grade served")


class LoanProductPatch(BaseModel):
    active: bool


class FinancingIn(BaseModel):
    amount_band: str = Field(max_length=16, description=f"one of {', '.join(sme.BANDS)}")
    term_months: int = Field(ge=1, le=sme_financing.MAX_TERM_MONTHS)
    industry: str = Field(max_length=32, description=f"one of {', '.join(sme_financing.INDUSTRIES)}")
    purpose: str = Field(max_length=500, description="what the loan is for")
    authorize_sharing: bool = Field(description="true: share my credit grade and bands with the matched banks")


class ProgressIn(BaseModel):
    state: str = Field(max_length=16, description=f"one of {', '.join(sme_financing.STEPS)}")
    note: str = Field(default="", max_length=500, description="required when declining")
    version: int | None = Field(default=None, ge=1, le=2_147_483_647, description="the version you saw (refused if it changed)")


# --- white list --------------------------------------------------------------------------------------

@router.post("/whitelist/subscriptions", status_code=201)
def subscribe(body: SubscriptionIn, session: SessionDep,
              principal: Annotated[Principal, require("whitelist.subscribe")]):
    """Subscribe to the white list of healthy enterprises that authorized your bank (needs an active usage
    agreement for bank_credit_assessment; enterprises consent with the purpose shown as consent_purpose)."""
    sub = sme_whitelist.subscribe(session, principal=actor_of(principal), min_grade=body.min_grade,
                                  interval_hours=body.interval_hours)
    return sme_whitelist.subscription_view(session, sub)


@router.get("/whitelist/subscriptions")
def list_subscriptions(session: SessionDep, principal: Annotated[Principal, require("whitelist.subscribe")]):
    return [sme_whitelist.subscription_view(session, s)
            for s in sme_whitelist.list_subscriptions(session, principal.org_id)]


@router.post("/whitelist/subscriptions/{subscription_id}/cancel")
def cancel_subscription(subscription_id: ObjectId, session: SessionDep,
                        principal: Annotated[Principal, require("whitelist.subscribe")]):
    sub = sme_whitelist.get_subscription(session, subscription_id, org_id=principal.org_id)
    return sme_whitelist.subscription_view(session, sme_whitelist.cancel(session, sub, principal=actor_of(principal)))


@router.get("/whitelist/deliveries/{delivery_id}")
def get_delivery(delivery_id: ObjectId, session: SessionDep,
                 principal: Annotated[Principal, require("whitelist.subscribe")]):
    """One pushed version of your white list: USCC and grade per enterprise."""
    d = sme_whitelist.get_delivery(session, delivery_id, org_id=principal.org_id)
    return sme_whitelist.read_delivery(session, d, principal=actor_of(principal))


# --- pre-credit ----------------------------------------------------------------------------------------

@router.post("/precredit")
def precredit(body: PrecreditIn, session: SessionDep, settings: SettingsDep,
              principal: Annotated[Principal, require("product.call")]):
    """A pre-credit limit band (never an amount) for an enterprise that authorized your bank; metered as one
    bank_credit_assessment call."""
    return committing_refusals(session, sme.precredit, session, settings, principal=actor_of(principal),
                                uscc=body.uscc, purpose=body.purpose)


# --- loan products -----------------------------------------------------------------------------------

@router.post("/loan-products", status_code=201)
def create_loan_product(body: LoanProductIn, session: SessionDep,
                        principal: Annotated[Principal, require("loan_product.manage")]):
    lp = sme_financing.create_loan_product(session, principal=actor_of(principal), **body.model_dump())
    return sme_financing.loan_product_view(lp)


@router.get("/loan-products")
def list_loan_products(session: SessionDep, principal: Annotated[Principal, require("loan_product.manage")]):
    return [sme_financing.loan_product_view(lp) for lp in sme_financing.list_loan_products(session, principal.org_id)]


@router.patch("/loan-products/{product_id}")
def update_loan_product(product_id: ObjectId, body: LoanProductPatch, session: SessionDep,
                        principal: Annotated[Principal, require("loan_product.manage")]):
    lp = sme_financing.get_loan_product(session, product_id, org_id=principal.org_id)
    return sme_financing.loan_product_view(sme_financing.set_active(session, lp, body.active,
                                                                    principal=actor_of(principal)))


# --- financing requests --------------------------------------------------------------------------------

@router.post("/financing/requests", status_code=201)
def submit_request(body: FinancingIn, session: SessionDep, settings: SettingsDep,
                   principal: Annotated[Principal, require("financing.request")]):
    """Apply once: the request is matched to several banks' loan products; follow their progress here."""
    req = sme_financing.submit(session, settings, principal=actor_of(principal), **body.model_dump())
    return sme_financing.request_view(session, req)


@router.get("/financing/requests")
def list_requests(session: SessionDep, principal: Annotated[Principal, require("financing.request")]):
    return [sme_financing.request_view(session, r) for r in sme_financing.list_requests(session, principal.org_id)]


@router.get("/financing/requests/{request_id}")
def get_request(request_id: ObjectId, session: SessionDep,
                principal: Annotated[Principal, require("financing.request")]):
    """Your request and every matched bank's progress."""
    return sme_financing.request_view(session, sme_financing.get_request(session, request_id,
                                                                          org_id=principal.org_id))


@router.get("/financing/matches")
def list_matches(session: SessionDep, principal: Annotated[Principal, require("financing.handle")]):
    return [sme_financing.match_view(session, m) for m in sme_financing.list_matches(session, principal.org_id)]


@router.get("/financing/matches/{match_id}")
def get_match(match_id: ObjectId, session: SessionDep, principal: Annotated[Principal, require("financing.handle")]):
    """A request matched to your bank: the enterprise, the request, its shared credit profile, your progress."""
    return sme_financing.match_view(session, sme_financing.get_match(session, match_id, org_id=principal.org_id))


@router.post("/financing/matches/{match_id}/progress")
def move_match(match_id: ObjectId, body: ProgressIn, session: SessionDep,
               principal: Annotated[Principal, require("financing.handle")]):
    """Move your progress: received → reviewing → approved → disbursed, or declined (with a note)."""
    m = sme_financing.get_match(session, match_id, org_id=principal.org_id)
    m = sme_financing.progress(session, m, body.state, principal=actor_of(principal), note=body.note,
                               version=body.version)
    return sme_financing.match_view(session, m)
