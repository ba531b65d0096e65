"""The seven first products (plan annex 3): declarative specs plus their contracts.

Each product is a sandbox job spec in `specs/<code>.yaml` (what it reads, how rows flow, what it
releases under which policy) and a `ProductDef` here: names, category, subject, consent, the
request and response contracts, release policy, pricing basis and suggested price, and an example.

    PRODUCTS["bank_credit_assessment"].spec          # the JobSpec
    PRODUCTS[code].claim({"uscc": "9132..."})         # -> (output name, claim value) for the gate
    load_spec(code)

Answers are scores, grades, bands, flags and reason codes, never amounts, names or identifiers;
the response contract never echoes the subject's identifier (the caller knows whom it asked about).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from authops.sandbox.spec import JobSpec
from authops.sandbox.spec import load_spec as _load

SPECS = Path(__file__).with_name("specs")
USCC = {"type": "string", "pattern": "^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$",
        "description": "Unified social credit code (18 characters, check digit)."}
RESIDENT_ID = {"type": "string", "pattern": "^[0-9]{17}[0-9Xx]$", "description": "Resident ID number (18, check digit)."}
VIN = {"type": "string", "pattern": "^[A-HJ-NPR-Z0-9]{17}$", "description": "Vehicle identification number."}
PLATE = {"type": "string", "minLength": 7, "maxLength": 8, "description": "Plate number, e.g. 苏E12345."}
YES_NO = ("yes", "no")
BANDS3 = ("none", "1-2", "3+")

Category = Literal["industry", "public_governance"]
SubjectKind = Literal["enterprise", "person", "vehicle", "none"]


@dataclass(frozen=True)
class AnswerField:
    """One field of a product's answer: its type and the values or range it may take."""

    name: str
    type: Literal["string", "number", "integer", "boolean", "array"]
    meaning: str
    values: tuple[str, ...] | None = None  # text from this set (for a code list: each code)
    bounds: tuple[float, float] | None = None
    column: str | None = None  # the released column it is read from (default: name)

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": self.type, "description": self.meaning}
        if self.type == "array" and self.values is not None:
            s["items"] = {"type": "string", "enum": list(self.values)}
        elif self.type == "array":
            s["items"] = {"type": "object"}
        elif self.values is not None:
            s["enum"] = list(self.values)
        if self.bounds is not None:
            s["minimum"], s["maximum"] = self.bounds
        return s


@dataclass(frozen=True)
class ProductDef:
    code: str
    no: int
    name_zh: str
    name_en: str
    category: Category
    subject_kind: SubjectKind
    consent_required: bool  # every call needs the subject's valid authorization
    personal_information: bool
    share_mode: Literal["verify", "query", "batch"]
    invocation: Literal["sync", "report"]  # a per-subject call, or an asynchronous aggregate report
    description: str
    request_schema: dict[str, Any]
    response: tuple[AnswerField, ...]
    release_policy: str
    release_notes: str
    pricing_basis: str
    price_fen: int
    price_unit: Literal["call", "record", "month", "batch"]
    example_request: dict[str, Any]
    example_response: dict[str, Any]
    claim: Callable[[Mapping[str, Any]], tuple[str, str]] | None = None  # request -> (output, claim)
    params: dict[str, Any] = field(default_factory=dict)  # spec parameters used when precomputing

    @property
    def free(self) -> bool:
        return self.category != "industry"

    @functools.cached_property
    def spec(self) -> JobSpec:
        return load_spec(self.code)

    @property
    def spec_path(self) -> Path:
        return SPECS / f"{self.code}.yaml"

    @property
    def resources(self) -> tuple[str, ...]:
        """The catalogue resources the product reads (from its spec)."""
        return tuple(dict.fromkeys(i.resource for i in self.spec.inputs))

    @property
    def fields_read(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for i in self.spec.inputs:
            out[i.resource] = tuple(dict.fromkeys(out.get(i.resource, ()) + i.fields))
        return out

    def response_schema(self) -> dict[str, Any]:
        """The answer's JSON schema. A subject the product has no answer for (a score product's
        "found": false, a verify product's unknown claim) has null scores and labels: nullable."""

        def field(f: AnswerField) -> dict[str, Any]:
            s = f.schema()
            if f.name != "found" and f.type != "array":
                s["type"] = [s["type"], "null"]
                if "enum" in s:
                    s["enum"] = [*s["enum"], None]
            return s

        return {"type": "object", "additionalProperties": False,
                "required": [f.name for f in self.response],
                "properties": {f.name: field(f) for f in self.response}}

    def shape(self, generic: Mapping[str, Any]) -> dict[str, Any]:
        """The contract's answer from the platform's generic call answer (runtime.shaping: each output
        under its name, labels under theirs, "<output>.<label>" when outputs share labels, and
        {"status": "not_found"} for a score product's unknown subject). Of outputs sharing a label
        (e.g. a truck asked by VIN or by plate) the one that answered wins."""
        found = generic.get("status") != "not_found"
        flat: dict[str, Any] = {}
        for key, value in generic.items():
            base = key.rsplit(".", 1)[-1]
            if key != "status" and (value is not None or base not in flat):
                flat[base] = value
        for o in self.spec.outputs:
            alias = "answer" if o.release.policy == "verify" else "score"
            if generic.get(o.name) is not None or alias not in flat:
                flat[alias] = generic.get(o.name)
        out: dict[str, Any] = {}
        for f in self.response:
            value = found if f.name == "found" else flat.get(f.column or f.name)
            out[f.name] = [] if f.type == "array" and value is None and f.name != "rows" else value
        return out

    def answer(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The response body from one released row (the gate's output for one claim): the contract's
        fields only, reason-code lists split; the claim (the caller's own subject key) is not echoed."""
        out: dict[str, Any] = {}
        for f in self.response:
            v = row.get(f.column or f.name)
            if f.name == "found":
                v = row.get("score") is not None
            elif f.type == "array":
                v = [c for c in (v or "").split(";") if c]
            out[f.name] = v
        return out


def load_spec(code: str) -> JobSpec:
    """The product's job spec, validated against the spec schema."""
    path = SPECS / f"{code}.yaml"
    if not path.is_file():
        raise KeyError(f"no product spec {code!r}")
    return _load(path)


def _obj(props: dict[str, Any], required: list[str], one_of: list[list[str]] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": required, "properties": props}
    if one_of:
        s["oneOf"] = [{"required": r} for r in one_of]
    return s


def _need(request: Mapping[str, Any], name: str) -> str:
    v = request.get(name)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"the request needs {name}")
    return v.strip().upper()


PURPOSE = {"type": "string", "maxLength": 200, "description": "The purpose of use, matched against the consent."}
PREMIUM_FACTORS = tuple(f"{0.80 + 0.05 * k:.2f}" for k in range(25))
CREDIT_REASONS = ("TAX_VIOLATION", "SOCIAL_INSURANCE_ARREARS", "HOUSING_FUND_ARREARS", "LAWSUIT", "BLACKLIST",
                  "SERIOUS_DISHONEST", "ABNORMAL_OPERATION", "MAJOR_RISK", "LOW_CREDIT_RATING", "REGISTRATION_REVOKED")
LIMIT_BANDS = ("none", "<500k", "500k-2M", "2M-10M", "10M-50M", ">=50M")
LOAN_BANDS = ("none", "<300k", "300k-1.5M", "1.5M-6M", "6M-30M", ">=30M")
AMOUNT_BANDS = ("<1M", "1M-5M", "5M-20M", "20M-100M", ">=100M")
COUNT_BANDS = ("0", "1-2", "3-9", "10+")

_DEFS: list[ProductDef] = [
    ProductDef(
        code="bank_credit_assessment", no=1, name_zh="银行授信评估服务", name_en="Bank credit assessment service",
        category="industry", subject_kind="enterprise", consent_required=True, personal_information=False,
        share_mode="query", invocation="sync",
        description="For an enterprise that has authorized the bank: a credit score 0-100, a grade A-E and "
                    "reason codes from tax, social-insurance, housing-fund, court, blacklist, serious-dishonesty, "
                    "abnormal-operation and credit-rating records, as bands and flags, never amounts.",
        request_schema=_obj({"uscc": USCC, "purpose": PURPOSE}, ["uscc"]),
        response=(
            AnswerField("found", "boolean", "Whether the enterprise is in the registration data."),
            AnswerField("score", "number", "Credit score; 100 = no adverse record.", bounds=(0, 100)),
            AnswerField("grade", "string", "A >= 85, B >= 70, C >= 55, D >= 40, E below.", values=tuple("ABCDE")),
            AnswerField("reason_codes", "array", "Why points were deducted.", values=CREDIT_REASONS),
            AnswerField("tax_violation_band", "string", "Months with a tax violation record.", values=BANDS3),
            AnswerField("social_insurance_arrears_band", "string", "Months of social-insurance arrears.",
                        values=BANDS3),
            AnswerField("lawsuit_band", "string", "Court cases naming the enterprise.", values=BANDS3),
            AnswerField("blacklist_flag", "string", "On the enterprise blacklist or the serious-dishonesty list.",
                        values=YES_NO),
            AnswerField("abnormal_operation_flag", "string", "Currently listed for abnormal operation.",
                        values=YES_NO),
            AnswerField("major_risk_flag", "string", "The credit-rating bureau records a major risk.", values=YES_NO),
        ),
        release_policy="model",
        release_notes="model release keyed by USCC: the gate answers the caller's claim only; score clamped to "
                      "[0, 100] and rounded; every label checked against its declared values.",
        pricing_basis="Cost-plus: data governance and computation of 9 joined resources, refreshed daily; "
                      "benchmark against commercial enterprise credit reports (5-20 yuan per query); at or below "
                      "the bureau's cap.",
        price_fen=800, price_unit="call",
        example_request={"uscc": "91320505MA1XY8KP3T", "purpose": "working-capital loan pre-approval"},
        example_response={"found": True, "score": 77.0, "grade": "B", "reason_codes": ["TAX_VIOLATION", "LAWSUIT"],
                          "tax_violation_band": "1-2", "social_insurance_arrears_band": "none",
                          "lawsuit_band": "1-2", "blacklist_flag": "no", "abnormal_operation_flag": "no",
                          "major_risk_flag": "no"},
        claim=lambda r: ("credit_assessment", _need(r, "uscc"))),
    ProductDef(
        code="tech_finance", no=2, name_zh="科技金融服务", name_en="Sci-tech finance service",
        category="industry", subject_kind="enterprise", consent_required=True, personal_information=False,
        share_mode="query", invocation="sync",
        description="A technology-enterprise profile: tech-SME / high-tech / SRDI tags, invention, PCT patent and "
                    "software-copyright counts in bands, R&D intensity band (R&D expense ratio from R&D project "
                    "applications; 'no_data' when the enterprise filed none) and a score 0-100.",
        request_schema=_obj({"uscc": USCC, "purpose": PURPOSE}, ["uscc"]),
        response=(
            AnswerField("found", "boolean", "Whether the enterprise is in the registration data."),
            AnswerField("score", "number", "Technology-innovation score; higher is stronger.", bounds=(0, 100)),
            AnswerField("tech_level", "string", "strong >= 60, moderate >= 35, weak >= 10, none below.",
                        values=("strong", "moderate", "weak", "none")),
            AnswerField("high_tech_enterprise", "string", "Recognised high-tech enterprise.", values=YES_NO),
            AnswerField("srdi_sme", "string", "On the city-or-above SRDI (专精特新) list.", values=YES_NO),
            AnswerField("tech_sme", "string", "Registered technology SME.", values=YES_NO,
                        column="tech_sme_tag"),
            AnswerField("invention_patent_band", "string", "Invention patents held.", values=COUNT_BANDS),
            AnswerField("pct_patent_band", "string", "PCT patents held.", values=COUNT_BANDS),
            AnswerField("software_copyright_band", "string", "Software copyrights registered.", values=COUNT_BANDS),
            AnswerField("rd_intensity_band", "string", "R&D expense ratio.",
                        values=("<3%", "3-5%", "5-10%", ">=10%", "no_data")),
        ),
        release_policy="model",
        release_notes="model release keyed by USCC; counts only as bands; R&D ratio only as a band.",
        pricing_basis="Cost-plus on 6 resources refreshed weekly to yearly; lower than the credit product as "
                      "most inputs are L1/L2 public registrations.",
        price_fen=500, price_unit="call",
        example_request={"uscc": "91320505MA1XY8KP3T"},
        example_response={"found": True, "score": 55.0, "tech_level": "moderate", "high_tech_enterprise": "yes",
                          "srdi_sme": "no", "tech_sme": "yes", "invention_patent_band": "3-9",
                          "pct_patent_band": "0", "software_copyright_band": "1-2", "rd_intensity_band": "5-10%"},
        claim=lambda r: ("tech_profile", _need(r, "uscc"))),
    ProductDef(
        code="bid_win_loan", no=3, name_zh="企业“中标贷”数据产品服务", name_en="Enterprise bid-win loan data product",
        category="industry", subject_kind="enterprise", consent_required=True, personal_information=False,
        share_mode="verify", invocation="sync",
        description="Verifies a claimed won tender: did this enterprise win this project? With the winning amount "
                    "band, how recent the award is, and a suggested loan limit band (about 30% of the contract, "
                    "none when the award is over 24 months old or the enterprise is blacklisted, seriously "
                    "dishonest or flagged for major risk). The caller compares its claimed amount band and date "
                    "window with the answer.",
        request_schema=_obj({"uscc": USCC, "project_number": {"type": "string", "maxLength": 64},
                             "claimed_amount_band": {"enum": list(AMOUNT_BANDS)},
                             "claimed_award_window": {"enum": ["within_6m", "6_12m", "12_24m", "over_24m"]},
                             "purpose": PURPOSE}, ["uscc", "project_number"]),
        response=(
            AnswerField("won", "string", "yes: the enterprise is the recorded winner of the project.", values=YES_NO,
                        column="answer"),
            AnswerField("amount_band", "string", "Winning bid amount band (yuan).", values=AMOUNT_BANDS),
            AnswerField("award_recency", "string", "Time since the award was published.",
                        values=("within_6m", "6_12m", "12_24m", "over_24m")),
            AnswerField("loan_limit_band", "string", "Suggested loan limit (yuan).", values=LOAN_BANDS),
        ),
        release_policy="verify",
        release_notes="verify release: the claim is '<USCC>|<project number>'; an unknown pair answers 'no' with "
                      "no bands; labels checked against their declared values.",
        pricing_basis="Per verification; tender records are public (L1/L2) so the price covers matching, credit "
                      "screening and serving.",
        price_fen=300, price_unit="call",
        example_request={"uscc": "91320505MA1XY8KP3T", "project_number": "JSGC2024-000123",
                         "claimed_amount_band": "5M-20M", "claimed_award_window": "within_6m"},
        example_response={"won": "yes", "amount_band": "5M-20M", "award_recency": "within_6m",
                          "loan_limit_band": "1.5M-6M"},
        claim=lambda r: ("tender_verification", f"{_need(r, 'uscc')}|{_need(r, 'project_number')}"),
        params={"as_of": "2025-06-30"}),
    ProductDef(
        code="trading_limit_and_guarantee", no=4, name_zh="交易系统限额和保函服务",
        name_en="Trading-system credit limit and letter-of-guarantee service",
        category="industry", subject_kind="enterprise", consent_required=True, personal_information=False,
        share_mode="query", invocation="sync",
        description="A recommended transaction limit band and letter-of-guarantee amount band, from the "
                    "enterprise's size (registered capital band) lowered step by step for credit, judicial "
                    "(enforcement, bankruptcy, lawsuits) and tax records; 'none' for blacklisted or seriously "
                    "dishonest enterprises.",
        request_schema=_obj({"uscc": USCC, "purpose": PURPOSE}, ["uscc"]),
        response=(
            AnswerField("found", "boolean", "Whether the enterprise is in the registration data."),
            AnswerField("score", "number", "Counterparty score; 100 = no adverse record.", bounds=(0, 100)),
            AnswerField("transaction_limit_band", "string", "Recommended transaction limit (yuan).",
                        values=LIMIT_BANDS),
            AnswerField("guarantee_band", "string", "Recommended letter-of-guarantee amount (yuan).",
                        values=LIMIT_BANDS),
            AnswerField("risk_level", "string", "Counterparty risk.", values=("low", "medium", "high", "prohibited")),
        ),
        release_policy="model",
        release_notes="model release keyed by USCC; capital only enters as a band level.",
        pricing_basis="Cost-plus on 6 resources; per call, same tier as the credit product.",
        price_fen=600, price_unit="call",
        example_request={"uscc": "91320505MA1XY8KP3T"},
        example_response={"found": True, "score": 85.0, "transaction_limit_band": "2M-10M",
                          "guarantee_band": "500k-2M", "risk_level": "low"},
        claim=lambda r: ("trading_limit", _need(r, "uscc"))),
    ProductDef(
        code="commercial_insurance_underwriting", no=5, name_zh="商业保险智能核保服务",
        name_en="Commercial insurance smart underwriting service",
        category="industry", subject_kind="person", consent_required=True, personal_information=True,
        share_mode="query", invocation="sync",
        description="For a person who signed an authorization: an underwriting risk class from basic "
                    "medical-insurance enrollment, settlements, chronic and special disease registrations and "
                    "hospital visits, with bands for each. No diagnosis, disease name, visit, institution, date or "
                    "amount is ever returned; severe registrations only raise the class.",
        request_schema=_obj({"id_number": RESIDENT_ID, "purpose": PURPOSE}, ["id_number", "purpose"]),
        response=(
            AnswerField("found", "boolean", "Whether the person is enrolled in basic medical insurance."),
            AnswerField("score", "number", "Risk points; higher is riskier.", bounds=(0, 100)),
            AnswerField("risk_class", "string", "preferred < 10, standard < 30, rated < 55, refer (manual "
                        "underwriting) otherwise.", values=("preferred", "standard", "rated", "refer")),
            AnswerField("enrollment", "string", "Basic medical insurance enrollment.",
                        values=("enrolled", "suspended", "terminated")),
            AnswerField("chronic_registration_band", "string", "Chronic/special disease registrations.",
                        values=("0", "1", "2+")),
            AnswerField("hospitalization_band", "string", "Inpatient or day-surgery settlements.",
                        values=("0", "1", "2+")),
            AnswerField("visit_frequency_band", "string", "Visits recorded.", values=("0-2", "3-9", "10-19", "20+")),
            AnswerField("medical_cost_band", "string", "Total settled medical cost (yuan).",
                        values=("<1k", "1k-5k", "5k-20k", "20k-100k", ">=100k")),
        ),
        release_policy="model",
        release_notes="model release keyed by resident ID; served only under the subject's consent; bands only.",
        pricing_basis="Per call under consent; priced to the L4 handling cost (consent verification, encrypted "
                      "storage, audit) plus computation.",
        price_fen=1000, price_unit="call",
        example_request={"id_number": "320505198001010012", "purpose": "critical-illness policy underwriting"},
        example_response={"found": True, "score": 12.0, "risk_class": "standard", "enrollment": "enrolled",
                          "chronic_registration_band": "0", "hospitalization_band": "1",
                          "visit_frequency_band": "3-9", "medical_cost_band": "5k-20k"},
        claim=lambda r: ("underwriting", _need(r, "id_number"))),
    ProductDef(
        code="medical_insurance_spending_supervision", no=6, name_zh="医保消费监管服务",
        name_en="Medical insurance spending supervision service",
        category="public_governance", subject_kind="none", consent_required=False, personal_information=False,
        share_mode="query", invocation="report",
        description="For the medical-insurance bureau: differentially private spending statistics by region and "
                    "month and by institution, and a billing-anomaly flag per institution derived from the noisy "
                    "statistics (share of visits split into several settlements), only for institutions with "
                    "enough distinct insured persons.",
        request_schema=_obj({"report": {"enum": ["spending_by_region_month", "institution_billing"]},
                             "purpose": PURPOSE}, ["report"]),
        response=(
            AnswerField("rows", "array", "Report rows: the group columns, noisy statistics and, for institutions, "
                        "split_visit_share and billing_flag (normal | anomalous)."),
        ),
        release_policy="aggregate",
        release_notes="aggregate release with DP (persons are the privacy unit): spending_by_region_month "
                      "epsilon 1, institution_billing epsilon 3, delta 1e-6 for private group selection, minimum "
                      "cells of distinct persons; flags are post-processing of the noisy figures.",
        pricing_basis="Public governance: free (BRIEF 7).",
        price_fen=0, price_unit="batch",
        example_request={"report": "institution_billing"},
        example_response={"rows": [{"designated_institution_code": "H320506000036", "person_months": 99,
                                    "visits_sum": 90, "split_visits_sum": 95, "cost_fen_sum": 55512807,
                                    "split_visit_share": 1.0, "billing_flag": "anomalous"}]}),
    ProductDef(
        code="freight_truck_underwriting_pricing", no=7, name_zh="货运汽车核保定价服务",
        name_en="Freight truck underwriting and pricing service",
        category="industry", subject_kind="vehicle", consent_required=False, personal_information=False,
        share_mode="query", invocation="sync",
        description="For a freight truck (VIN or plate): a risk score 0-100 and a premium factor 0.80-2.00 in "
                    "0.05 steps, from traffic violations (serious ones weigh more), accidents, an overdue annual "
                    "inspection, hazardous cargo, transport frequency and vehicle age; with bands. Routes are "
                    "free text in the catalogue and are not used.",
        request_schema=_obj({"vin": VIN, "plate_number": PLATE, "purpose": PURPOSE}, [],
                            one_of=[["vin"], ["plate_number"]]),
        response=(
            AnswerField("found", "boolean", "Whether the vehicle is registered."),
            AnswerField("score", "number", "Risk score; higher is riskier.", bounds=(0, 100)),
            AnswerField("premium_factor", "string", "Multiplier on the base premium.", values=PREMIUM_FACTORS),
            AnswerField("risk_level", "string", "low < 15, medium < 35, high < 60, very_high otherwise.",
                        values=("low", "medium", "high", "very_high")),
            AnswerField("violation_band", "string", "Traffic violations on record.",
                        values=("0", "1-2", "3-5", "6-9", "10+")),
            AnswerField("accident_band", "string", "Accidents on record.", values=("0", "1", "2+")),
            AnswerField("inspection_status", "string", "Annual inspection within the last year.",
                        values=("current", "overdue")),
            AnswerField("hazardous_cargo", "string", "Registered to carry hazardous goods.", values=YES_NO),
            AnswerField("frequency_band", "string", "Transport frequency (trips per month).",
                        values=("<15", "15-24", "25-39", "40+")),
        ),
        release_policy="model",
        release_notes="model release keyed by VIN (output by_vin) or plate (output by_plate); score clamped to "
                      "[0, 100]; labels checked against their values.",
        pricing_basis="Per quote; cost-plus on 7 vehicle resources refreshed daily to monthly; below the "
                      "insurers' per-policy data cost.",
        price_fen=200, price_unit="call",
        example_request={"vin": "LFWZ07FX3R6123456"},
        example_response={"found": True, "score": 26.0, "premium_factor": "1.10", "risk_level": "medium",
                          "violation_band": "3-5", "accident_band": "0", "inspection_status": "current",
                          "hazardous_cargo": "no", "frequency_band": "15-24"},
        claim=lambda r: (("by_vin", _need(r, "vin")) if r.get("vin") else ("by_plate", _need(r, "plate_number"))),
        params={"as_of": "2025-06-30"}),
]

PRODUCTS: dict[str, ProductDef] = {p.code: p for p in _DEFS}

__all__ = ["PRODUCTS", "SPECS", "AnswerField", "ProductDef", "load_spec"]
