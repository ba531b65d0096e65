"""SME credit services (seeds 003/004: 白名单, 预授信, 一次申请 多家银行): the shared credit profile and
the pre-credit limit suggestion. The white list is in sme_whitelist.py, financing requests in
sme_financing.py, the routes in sme_router.py.

The credit profile of an enterprise is read from precomputed answer sets only (never from source
data at request time): grade, tax-violation band, social-insurance-arrears band, lawsuit band and
the blacklist / abnormal-operation / major-risk flags from `bank_credit_assessment`; the scale band
from `trading_limit_and_guarantee`'s transaction-limit band (its size level from the registered
capital band, already lowered for credit, judicial and tax records). What leaves is grades, bands
and flags, never an amount or a name.

Pre-credit limit suggestion (预授信): part of the bank credit assessment product. A call is refused
(and audited, charging nothing) unless the bank holds an active usage agreement for
`bank_credit_assessment` and the enterprise's consent for that product, that bank and the call's
purpose is in force (an enterprise consent is checked although the product holds no personal
information: the seeds require the enterprise's authorization). It answers a limit BAND, never an
amount: the scale level capped by the grade (A: 5, B: 4, C: 2, D/E: 0), lowered one step per tax
band step, and "none" for a blacklisted, abnormally operating or major-risk enterprise. The call is
metered at the agreement's price and written to the audit trail as `sme.precredit`, naming the
enterprise only by its consent pseudonym.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from authops.audit import log as audit_log
from authops.billing import metering
from authops.core.errors import AuthopsError, InvalidInput
from authops.core.identity import Principal
from authops.core.settings import Settings
from authops.platform.governance import consent
from authops.platform.governance.products import guard_call
from authops.platform.products import calls, serving
from authops.products.catalog import LIMIT_BANDS, USCC
from authops.products.runtime import answers as rt

CREDIT = "bank_credit_assessment"
SCALE = "trading_limit_and_guarantee"
GRADES = ("A", "B", "C", "D", "E")
GRADE_CAP = {"A": 5, "B": 4, "C": 2, "D": 0, "E": 0}
TAX_STEPS = {"none": 0, "1-2": 1, "3+": 2}
USCC_PATTERN = USCC["pattern"]


@dataclass(frozen=True)
class Band:
    code: str
    zh: str
    en: str
    low_fen: int
    high_fen: int | None  # None: no upper bound

    def view(self) -> dict[str, str]:
        return {"code": self.code, "zh": self.zh, "en": self.en}


# Loan amount bands (yuan shown, fen stored). A pre-credit suggestion of level k is AMOUNT_BANDS[k - 1].
AMOUNT_BANDS: tuple[Band, ...] = (
    Band("lt_500k", "0-50万", "under 500k yuan", 0, 50_000_000),
    Band("500k_1m", "50-100万", "500k-1M yuan", 50_000_000, 100_000_000),
    Band("1m_3m", "100-300万", "1M-3M yuan", 100_000_000, 300_000_000),
    Band("3m_5m", "300-500万", "3M-5M yuan", 300_000_000, 500_000_000),
    Band("5m_10m", "500-1000万", "5M-10M yuan", 500_000_000, 1_000_000_000),
    Band("ge_10m", "1000万以上", "10M yuan or more", 1_000_000_000, None),
)
BANDS = {b.code: b for b in AMOUNT_BANDS}
NO_PRECREDIT = {"code": "none", "zh": "暂不建议预授信", "en": "no pre-credit suggested"}


def band(code: Any, field: str = "amount_band") -> Band:
    if code not in BANDS:
        raise InvalidInput(f"{field} must be one of {', '.join(BANDS)}", details={"field": field})
    return BANDS[code]


def check_grade(grade: Any, field: str, allowed: tuple[str, ...] = GRADES) -> str:
    if grade not in allowed:
        raise InvalidInput(f"{field} must be one of {', '.join(allowed)}", details={"field": field})
    return grade


def grade_at_least(grade: str | None, minimum: str) -> bool:
    return grade in GRADES and GRADES.index(grade) <= GRADES.index(minimum)


# --- the credit profile ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """An enterprise's precomputed credit features (bands and flags only)."""

    grade: str
    tax_band: str
    social_insurance_band: str
    lawsuit_band: str
    flagged: bool  # blacklisted or seriously dishonest, abnormal operation, or a major risk
    scale_band: str  # the transaction-limit band of trading_limit_and_guarantee

    @property
    def precredit_level(self) -> int:
        """0 (none) to 5: the scale level capped by the grade, lowered per tax band step."""
        if self.flagged:
            return 0
        scale = LIMIT_BANDS.index(self.scale_band)  # the release gate checked every label's values
        return max(0, min(scale, GRADE_CAP[self.grade]) - TAX_STEPS[self.tax_band])

    def precredit(self) -> dict[str, Any]:
        level = self.precredit_level
        return {"level": level, **(AMOUNT_BANDS[level - 1].view() if level else NO_PRECREDIT)}

    def shared(self) -> dict[str, Any]:
        """What a matched bank sees: grade, bands, a flag and the pre-credit band."""
        return {"found": True, "grade": self.grade, "tax_violation_band": self.tax_band,
                "social_insurance_arrears_band": self.social_insurance_band, "lawsuit_band": self.lawsuit_band,
                "adverse_listing_flag": "yes" if self.flagged else "no", "precredit_band": self.precredit()}


class Profiles:
    """The current credit and scale answer sets, for looking up many enterprises."""

    def __init__(self, session: Session, settings: Settings) -> None:
        credit, scale = calls.product_by_code(session, CREDIT), calls.product_by_code(session, SCALE)
        self.credit = serving.answers(session, settings, credit.id, credit.code)
        self.scale = serving.answers(session, settings, scale.id, scale.code)

    @property
    def version(self) -> int:
        return self.credit.version

    def get(self, uscc: str) -> Profile | None:
        """The enterprise's profile, or None when the registration data does not know it."""
        row = self.credit.lookup.get(rt.subject_digest(self.credit.key, uscc))
        if row is None or row.get("credit_assessment.grade") is None:
            return None
        scale = self.scale.lookup.get(rt.subject_digest(self.scale.key, uscc)) or {}
        flags = ("credit_assessment.blacklist_flag", "credit_assessment.abnormal_operation_flag",
                 "credit_assessment.major_risk_flag")
        return Profile(grade=row["credit_assessment.grade"], tax_band=row["credit_assessment.tax_violation_band"],
                       social_insurance_band=row["credit_assessment.social_insurance_arrears_band"],
                       lawsuit_band=row["credit_assessment.lawsuit_band"],
                       flagged=any(row.get(f) != "no" for f in flags),
                       scale_band=scale.get("trading_limit.transaction_limit_band") or "none")


def check_uscc(uscc: Any) -> str:
    if not isinstance(uscc, str) or not re.fullmatch(USCC_PATTERN, uscc.strip().upper()):
        raise InvalidInput("uscc must be an 18-character unified social credit code", details={"field": "uscc"})
    return uscc.strip().upper()


# --- pre-credit limit suggestion ------------------------------------------------------------------

def _refused(session: Session, who: audit_log.Actor, product_id: int, subject_key: str, exc: AuthopsError) -> None:
    audit_log.record(session, who, "sme.precredit.refused", outcome="denied", object_type="product",
                     object_id=product_id, details={"code": exc.code, "subject_key": subject_key})


def precredit(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, uscc: Any,
              purpose: Any) -> dict[str, Any]:
    """Suggest a pre-credit limit band for an enterprise that authorized the calling bank (see the
    module docstring). Flushes, never commits; a refusal is raised after its audit event was queued."""
    who = audit_log.as_actor(principal)
    uscc = check_uscc(uscc)
    if not isinstance(purpose, str) or not purpose.strip():
        raise InvalidInput("purpose is required: the enterprise's consent is checked for it",
                           details={"field": "purpose"})
    if who.org_id is None:
        raise InvalidInput("pre-credit suggestions are made for a bank (an organisation)")
    p = calls.product_by_code(session, CREDIT)
    guard = guard_call(session, customer_org_id=who.org_id, product_id=p.id, subject_id=uscc, purpose=purpose,
                       actor=who, settings=settings)
    subject_key = consent.subject_key(settings, uscc)
    try:
        c = consent.check(session, p.id, who.org_id, uscc, purpose=purpose, settings=settings)
    except AuthopsError as exc:
        _refused(session, who, p.id, subject_key, exc)
        raise
    profiles = Profiles(session, settings)
    profile = profiles.get(uscc)
    answer = ({"found": True, "grade": profile.grade, "precredit_band": profile.precredit()} if profile
              else {"found": False, "grade": None, "precredit_band": None})
    a = calls.agreement_of(session, guard["agreement"])
    method, price = calls.price_of(a)
    request_id = calls.new_request_id()
    response = {"request_id": request_id, "registration_number": p.registration_number, "product": p.code,
                "service": "precredit", "answer": answer, "served_from": {"answer_set": profiles.version},
                "metered": {"units": 1, "amount_fen": 0}}
    rec = metering.meter(session, customer_org_id=who.org_id, product_id=p.id, agreement_id=a.id,
                         request_id=request_id, pricing_method=method, price_fen=price, units=1, channel="call",
                         response=response)
    response["metered"]["amount_fen"] = rec.amount_fen
    audit_log.record(session, who, "sme.precredit", object_type="product", object_id=p.id, subjects=1,
                     details={"request_id": request_id, "subject_key": subject_key, "consent_id": c.id,
                              "agreement": a.number, "answer_set": profiles.version, "found": profile is not None,
                              "level": profile.precredit_level if profile else None, "amount_fen": rec.amount_fen})
    return response
