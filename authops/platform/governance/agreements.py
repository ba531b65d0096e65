"""Agreements and their electronic acceptance; usage agreements (a customer buys a product).

Any agreement (operator authorization, partner agreement, usage agreement) is a fixed text with
its SHA-256. Each party organisation accepts it once, naming the hash of the text it read: if the
text changed since, the acceptance is refused. The acceptance (who, when, from where, which hash)
is a row and an audit event; when both parties have accepted, the agreement becomes active.

An agreement is in force from `starts_on` to `ends_on` (Shanghai dates, both inclusive). Past
`ends_on` it is treated as expired on every read, and `sweep_expired` marks it so.

Usage agreements (BRIEF 5, issue item 7): a customer applies to buy a registered product
(`apply_usage`, state "applied"); the product's operator drafts the terms (`draft_usage_terms`:
delivery method, pricing method and price not above the registered price, scenario, conditions
of use, term, security duties, breach liability; state "pending"); both sides accept; calls are
served only under an active one (`require_active_usage`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.core.clock import show, to_shanghai, utcnow
from authops.core.errors import Conflict, Forbidden, IntegrityViolation, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.platform.governance.models import Acceptance, Agreement, Product
from authops.platform.identity.models import Organisation

KINDS = ("operator_authorization", "partner", "usage")
PREFIX = {"operator_authorization": "OA", "partner": "PA", "usage": "UA"}
DELIVERY_METHODS = {"api": ("接口调用", "API calls"), "batch": ("批量交付", "Batch delivery"),
                    "file": ("文件交付", "File delivery")}
# pricing method -> (the product's price unit it prices against, zh, en)
PRICING_METHODS = {"per_call": ("call", "按次计费", "per call"), "per_record": ("record", "按条计费", "per record"),
                   "monthly": ("month", "按月计费", "monthly"), "per_batch": ("batch", "按批计费", "per batch"),
                   "free": (None, "免费", "free of charge")}
ENDED = ("expired", "terminated", "exited", "declined")


class NoActiveAgreement(Forbidden):
    code = "no_active_agreement"


class TextChanged(Conflict):
    code = "text_changed"



def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def today(at: datetime | None = None) -> date:
    """The Shanghai date of `at` (naive UTC; now when None): what an agreement's dates mean."""
    return to_shanghai(at or utcnow()).date()


def org_name(session: Session, org_id: int | None) -> str:
    org = session.get(Organisation, org_id) if org_id else None
    return f"{org.name_zh} ({org.code})" if org is not None else f"organisation {org_id}"


# --- the text ----------------------------------------------------------------------------------

_TITLES = {"usage": ("数据产品使用协议", "Data Product Usage Agreement"),
           "operator_authorization": ("公共数据授权运营协议", "Public Data Authorized Operation Agreement"),
           "partner": ("合伙人合作协议", "Partner Agreement")}
# Known terms with their headings, in the order the text shows them; any other term follows,
# sorted by name, under its own name.
_HEADINGS: list[tuple[str, str, str]] = [
    ("parties", "当事人", "Parties"),
    ("product", "数据产品", "Product"),
    ("scope", "授权范围", "Scope"),
    ("scenario", "应用场景", "Scenario"),
    ("purpose", "使用目的", "Purpose"),
    ("delivery_method", "交付方式", "Delivery method"),
    ("pricing", "计价方式与价格", "Pricing"),
    ("conditions", "使用条件", "Conditions of use"),
    ("term", "期限", "Term"),
    ("revenue", "收益分配", "Revenue distribution"),
    ("duties", "义务", "Duties"),
    ("security_duties", "安全责任", "Security duties"),
    ("breach_liability", "违约责任", "Breach liability"),
    ("exit", "退出", "Exit"),
]
_NUMERALS = "一二三四五六七八九十"


def _numeral(n: int) -> str:
    if n <= 10:
        return _NUMERALS[n - 1]
    if n < 20:
        return "十" + _NUMERALS[n - 11]
    return str(n)


def _render_value(value: Any) -> list[str]:
    if value is None or value == "":
        return ["（无 none）"]
    if isinstance(value, str):
        return [line.rstrip() for line in value.strip().splitlines()] or ["（无 none）"]
    if isinstance(value, bool):
        return ["是 yes" if value else "否 no"]
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            lines = _render_value(item)
            out.append(f"- {lines[0]}")
            out.extend(f"  {x}" for x in lines[1:])
        return out or ["（无 none）"]
    if isinstance(value, dict):
        out = []
        for k in sorted(value):
            lines = _render_value(value[k])
            if len(lines) == 1:
                out.append(f"{k}: {lines[0]}")
            else:
                out.append(f"{k}:")
                out.extend(f"  {x}" for x in lines)
        return out or ["（无 none）"]
    return [json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)]


def render_text(kind: str, terms: dict[str, Any]) -> str:
    """The agreement's wording from its terms: the same terms always give the same text."""
    zh, en = _TITLES.get(kind, ("协议", "Agreement"))
    lines = [f"{zh}", f"{en}", ""]
    known = {k for k, _, _ in _HEADINGS}
    sections = [(k, hz, he) for k, hz, he in _HEADINGS if k in terms]
    sections += [(k, k, k.replace("_", " ")) for k in sorted(terms) if k not in known]
    for n, (key, hz, he) in enumerate(sections, start=1):
        lines.append(f"{_numeral(n)}、{hz} {he}" if hz != he else f"{_numeral(n)}、{he}")
        lines.extend(f"    {x}" for x in _render_value(terms[key]))
        lines.append("")
    lines.append("双方以电子方式接受本协议文本（以其SHA-256摘要为准）。")
    lines.append("Both parties accept this text electronically; the acceptance names its SHA-256 digest.")
    return "\n".join(lines) + "\n"


# --- creating, reading --------------------------------------------------------------------------

def _number(session: Session, kind: str, at: datetime) -> str:
    prefix = f"{PREFIX.get(kind, 'AG')}-{at.year}-"
    n = session.exec(select(func.count()).select_from(Agreement).where(Agreement.number.like(prefix + "%"))).one()
    while True:
        n += 1
        number = f"{prefix}{n:05d}"
        if session.exec(select(Agreement.id).where(Agreement.number == number)).first() is None:
            return number


def create(session: Session, *, kind: str, party_a_org_id: int, party_b_org_id: int, terms: dict[str, Any],
           starts_on: date, ends_on: date, actor: audit_log.Actor | Principal, case_id: int | None = None,
           product_id: int | None = None, text: str | None = None, state: str = "pending") -> Agreement:
    """A new agreement awaiting both parties' acceptance; its text is rendered from `terms` unless given."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", details={"field": "kind"})
    if party_a_org_id == party_b_org_id:
        raise InvalidInput("an agreement needs two different parties", details={"field": "party_b_org_id"})
    if ends_on < starts_on:
        raise InvalidInput(f"the term ends ({ends_on}) before it starts ({starts_on})", details={"field": "ends_on"})
    who = audit_log.as_actor(actor)
    body = render_text(kind, terms) if text is None else text
    a = Agreement(kind=kind, number=_number(session, kind, utcnow()), case_id=case_id, party_a_org_id=party_a_org_id,
                  party_b_org_id=party_b_org_id, product_id=product_id, terms=terms, text=body,
                  text_sha256=sha256_text(body) if body else "", starts_on=starts_on, ends_on=ends_on, state=state,
                  created_by=who.name[:64])
    session.add(a)
    session.flush()
    audit_log.record(session, who, "gov.agreement.create", object_type="agreement", object_id=a.id,
                     details={"number": a.number, "kind": kind, "after": state, "party_a": party_a_org_id,
                              "party_b": party_b_org_id, "text_sha256": a.text_sha256 or None})
    return a


def get_agreement(session: Session, agreement_id: int, *, org_id: int | None = None) -> Agreement:
    """The agreement; NotFound also when `org_id` is given and is not one of its parties."""
    a = session.get(Agreement, agreement_id)
    if a is None or (org_id is not None and org_id not in (a.party_a_org_id, a.party_b_org_id)):
        raise NotFound(f"no agreement {agreement_id}")
    return a


def list_for(session: Session, org_id: int, *, kind: str | None = None) -> list[Agreement]:
    q = select(Agreement).where((Agreement.party_a_org_id == org_id) | (Agreement.party_b_org_id == org_id))
    if kind:
        q = q.where(Agreement.kind == kind)
    return list(session.exec(q.order_by(Agreement.id.desc())))


def effective_state(a: Agreement, at: datetime | None = None) -> str:
    """The state as of `at`: an active agreement past its last day is expired, whatever the row says."""
    if a.state == "active" and today(at) > a.ends_on:
        return "expired"
    return a.state


def in_force(a: Agreement, at: datetime | None = None) -> bool:
    return a.state == "active" and a.starts_on <= today(at) <= a.ends_on


def get_active(session: Session, kind: str, party_a: int | None = None, party_b: int | None = None,
               product_id: int | None = None, at: datetime | None = None) -> Agreement | None:
    """The agreement of `kind` in force on `at` between these parties (for this product), if any."""
    d = today(at)
    q = select(Agreement).where(Agreement.kind == kind, Agreement.state == "active", Agreement.starts_on <= d,
                                Agreement.ends_on >= d)
    if party_a is not None:
        q = q.where(Agreement.party_a_org_id == party_a)
    if party_b is not None:
        q = q.where(Agreement.party_b_org_id == party_b)
    if product_id is not None:
        q = q.where(Agreement.product_id == product_id)
    return session.exec(q.order_by(Agreement.ends_on.desc(), Agreement.id.desc())).first()


def sweep_expired(session: Session, at: datetime | None = None,
                  actor: audit_log.Actor | Principal = audit_log.SYSTEM) -> list[Agreement]:
    """Mark every active agreement past its last day as expired (one audit event each)."""
    who = audit_log.as_actor(actor)
    d = today(at)
    done = []
    for a in session.exec(select(Agreement).where(Agreement.state == "active", Agreement.ends_on < d)):
        a.state, a.ended_at, a.end_reason = "expired", utcnow(), f"the term ended on {a.ends_on.isoformat()}"
        session.add(a)
        audit_log.record(session, who, "gov.agreement.expire", object_type="agreement", object_id=a.id,
                         details={"number": a.number, "kind": a.kind, "before": "active", "after": "expired",
                                  "ends_on": a.ends_on.isoformat()})
        done.append(a)
    session.flush()
    return done


def acceptances(session: Session, a: Agreement) -> list[Acceptance]:
    return list(session.exec(select(Acceptance).where(Acceptance.agreement_id == a.id).order_by(Acceptance.id)))


def waiting_for(session: Session, a: Agreement) -> list[int]:
    """The parties that have not accepted the current text yet."""
    done = {x.org_id for x in acceptances(session, a) if x.text_sha256 == a.text_sha256}
    return [o for o in (a.party_a_org_id, a.party_b_org_id) if o not in done]


# --- accepting ----------------------------------------------------------------------------------

def require_operator_authorization(session: Session, operator_org_id: int, at: datetime | None = None) -> Any:
    """The operator's authorization in force, or Forbidden: operator actions need one.

    Delegates to operator.require_active_authorization when the operator lifecycle is installed;
    otherwise applies the same rule to the agreements table (an active operator_authorization
    agreement whose grantee is the operator)."""
    try:
        from authops.platform.governance import operator as operator_mod
    except ModuleNotFoundError as e:
        if e.name != "authops.platform.governance.operator":
            raise
        operator_mod = None
    check = getattr(operator_mod, "require_active_authorization", None)
    if check is not None:
        return check(session, operator_org_id)
    auth = get_active(session, "operator_authorization", party_b=operator_org_id, at=at)
    if auth is None:
        raise Forbidden(f"{org_name(session, operator_org_id)} holds no active operator authorization; "
                        "operator actions are refused outside one", code="no_active_authorization")
    return auth


def accept(session: Session, agreement: Agreement, actor: audit_log.Actor | Principal, ip: str | None = None,
           *, text_sha256: str | None = None) -> Acceptance:
    """The actor's organisation accepts the agreement's exact text, whose SHA-256 it names.

    `text_sha256` is the digest of the text the accepting party read (the API always requires
    it); a service that showed the party the stored text itself may pass None. Refused when the
    actor's organisation is not a party (NotFound), the agreement is not awaiting
    acceptance, the text changed since it was read, or the party already accepted. When both
    parties have accepted, the agreement becomes active."""
    who = audit_log.as_actor(actor)
    if who.org_id not in (agreement.party_a_org_id, agreement.party_b_org_id):
        raise NotFound(f"no agreement {agreement.id}")
    state = effective_state(agreement)
    if state == "applied":
        raise Conflict(f"agreement {agreement.number} has no terms yet: {org_name(session, agreement.party_a_org_id)} "
                       "drafts them first", code="illegal_transition")
    if state != "pending":
        raise Conflict(f"agreement {agreement.number} is {state}; only a pending agreement can be accepted",
                       code="illegal_transition", details={"state": state})
    if today() > agreement.ends_on:
        raise Conflict(f"agreement {agreement.number}'s term ended on {agreement.ends_on}; it can no longer be "
                       "accepted", code="expired")
    if sha256_text(agreement.text) != agreement.text_sha256:
        raise IntegrityViolation(f"agreement {agreement.number}'s stored text does not match its digest")
    if text_sha256 is not None and text_sha256.strip().lower() != agreement.text_sha256:
        raise TextChanged("the agreement text changed; read it again",
                          details={"field": "text_sha256", "current_sha256": agreement.text_sha256})
    prior = session.exec(select(Acceptance).where(Acceptance.agreement_id == agreement.id,
                                                  Acceptance.org_id == who.org_id)).first()
    if prior is not None:
        raise Conflict(f"{org_name(session, who.org_id)} already accepted agreement {agreement.number} on "
                       f"{show(prior.at)}", code="already_accepted")
    if agreement.kind == "usage" and who.org_id == agreement.party_a_org_id:
        require_operator_authorization(session, agreement.party_a_org_id)
    acc = Acceptance(agreement_id=agreement.id, org_id=int(who.org_id), actor_kind=who.kind, actor_id=who.id,
                     actor_name=who.name[:100], text_sha256=agreement.text_sha256, ip=(ip or who.ip or None),
                     at=utcnow())
    session.add(acc)
    session.flush()
    audit_log.record(session, who, "gov.agreement.accept", object_type="agreement", object_id=agreement.id,
                     details={"number": agreement.number, "kind": agreement.kind, "org_id": who.org_id,
                              "text_sha256": agreement.text_sha256, "acceptance_id": acc.id,
                              "hash_given": text_sha256 is not None})
    if not waiting_for(session, agreement):
        agreement.state = "active"
        session.add(agreement)
        audit_log.record(session, who, "gov.agreement.activate", object_type="agreement", object_id=agreement.id,
                         details={"number": agreement.number, "kind": agreement.kind, "before": "pending",
                                  "after": "active", "text_sha256": agreement.text_sha256})
    session.flush()
    return acc


def terminate(session: Session, agreement: Agreement, actor: audit_log.Actor | Principal, reason: str) -> Agreement:
    """A party ends a usage agreement (other kinds end through their own procedures)."""
    who = audit_log.as_actor(actor)
    if who.org_id not in (agreement.party_a_org_id, agreement.party_b_org_id):
        raise NotFound(f"no agreement {agreement.id}")
    if agreement.kind != "usage":
        raise Conflict(f"agreement {agreement.number} is a {agreement.kind} agreement; it ends through its "
                       "own procedure (exit, expiry)", code="illegal_transition")
    if not reason.strip():
        raise InvalidInput("give the reason for terminating", details={"field": "reason"})
    state = effective_state(agreement)
    if state in ENDED:
        raise Conflict(f"agreement {agreement.number} is already {state}", code="illegal_transition",
                       details={"state": state})
    before = agreement.state
    agreement.state, agreement.ended_at, agreement.end_reason = "terminated", utcnow(), reason.strip()[:500]
    session.add(agreement)
    audit_log.record(session, who, "gov.agreement.terminate", object_type="agreement", object_id=agreement.id,
                     details={"number": agreement.number, "kind": agreement.kind, "before": before,
                              "after": "terminated", "reason_sha256": sha256_text(reason)})
    session.flush()
    return agreement


# --- usage agreements ---------------------------------------------------------------------------

def _text(value: Any, field: str, what: str, limit: int = 4000) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} ({field}) is required", details={"field": field})
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters; at most {limit}", details={"field": field})
    return value.strip()


def _usage_open(session: Session, customer_org_id: int, product_id: int) -> Agreement | None:
    return session.exec(select(Agreement).where(Agreement.kind == "usage", Agreement.product_id == product_id,
                                                Agreement.party_b_org_id == customer_org_id,
                                                Agreement.state.in_(("applied", "pending", "active")))
                        .order_by(Agreement.id.desc())).first()


def apply_usage(session: Session, *, product: Product, customer_org_id: int, actor: audit_log.Actor | Principal,
                scenario: str, purpose: str = "", delivery_method: str | None = None, notes: str = "") -> Agreement:
    """A customer applies to buy a registered product: an agreement awaiting the operator's terms."""
    who = audit_log.as_actor(actor)
    if product.state != "registered":
        raise NotFound(f"no registered product {product.id}")
    if customer_org_id in (product.operator_org_id, product.partner_org_id):
        raise Conflict(f"{org_name(session, customer_org_id)} operates or developed product {product.code}; "
                       "it cannot buy it", code="own_product")
    scenario = _text(scenario, "scenario", "the scenario the product will serve")
    if delivery_method is not None and delivery_method not in DELIVERY_METHODS:
        raise InvalidInput(f"delivery_method must be one of {', '.join(DELIVERY_METHODS)}",
                           details={"field": "delivery_method"})
    if product.operator_org_id is None:
        raise Conflict(f"product {product.code} has no operator to sell it")
    open_ = _usage_open(session, customer_org_id, product.id)
    if open_ is not None and effective_state(open_) != "expired":
        raise Conflict(f"you already have usage agreement {open_.number} for {product.code} "
                       f"({effective_state(open_)})", code="duplicate", details={"agreement": open_.number})
    d = today()
    terms = {"application": {"scenario": scenario, "purpose": purpose.strip(), "notes": notes.strip(),
                             "delivery_method": delivery_method or ""},
             "product": _product_terms(product)}
    a = create(session, kind="usage", party_a_org_id=product.operator_org_id, party_b_org_id=customer_org_id,
               terms=terms, starts_on=d, ends_on=d, actor=who, product_id=product.id, text="", state="applied")
    audit_log.record(session, who, "gov.agreement.apply", object_type="agreement", object_id=a.id,
                     details={"number": a.number, "product": product.code, "before": None, "after": "applied"})
    return a


def _product_terms(product: Product) -> dict[str, Any]:
    return {"code": product.code, "name": product.name_zh, "registration_number": product.registration_number or "",
            "category": product.category}


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def draft_usage_terms(session: Session, agreement: Agreement, *, actor: audit_log.Actor | Principal,
                      delivery_method: str, pricing_method: str, price_fen: int, scenario: str, conditions: str,
                      starts_on: date, ends_on: date, security_duties: str, breach_liability: str) -> Agreement:
    """The operator (the seller) writes the usage terms; the agreement then awaits both acceptances."""
    who = audit_log.as_actor(actor)
    if agreement.kind != "usage" or who.org_id != agreement.party_a_org_id:
        raise NotFound(f"no usage agreement {agreement.id} sold by you")
    if agreement.state not in ("applied", "pending"):
        raise Conflict(f"agreement {agreement.number} is {agreement.state}; terms are drafted only before it is "
                       "accepted", code="illegal_transition", details={"state": agreement.state})
    if acceptances(session, agreement):
        raise Conflict(f"a party has already accepted agreement {agreement.number}; its terms are fixed",
                       code="illegal_transition")
    require_operator_authorization(session, agreement.party_a_org_id)
    product = session.get(Product, agreement.product_id) if agreement.product_id else None
    if product is None or product.state != "registered":
        raise Conflict(f"the product of agreement {agreement.number} is no longer registered")
    if delivery_method not in DELIVERY_METHODS:
        raise InvalidInput(f"delivery_method must be one of {', '.join(DELIVERY_METHODS)}",
                           details={"field": "delivery_method"})
    if pricing_method not in PRICING_METHODS:
        raise InvalidInput(f"pricing_method must be one of {', '.join(PRICING_METHODS)}",
                           details={"field": "pricing_method"})
    if not isinstance(price_fen, int) or isinstance(price_fen, bool) or price_fen < 0:
        raise InvalidInput("price_fen is a whole number of fen, 0 or more", details={"field": "price_fen"})
    unit, pzh, pen = PRICING_METHODS[pricing_method]
    if product.category != "industry" and (pricing_method != "free" or price_fen):
        raise InvalidInput(f"{product.code} is a {product.category} product: such products are free "
                           "(pricing_method free, price_fen 0)", details={"field": "pricing_method"})
    if pricing_method == "free" and price_fen:
        raise InvalidInput("a free agreement has price_fen 0", details={"field": "price_fen"})
    if unit is not None:
        if unit != product.price_unit:
            raise InvalidInput(f"{product.code} is registered at a price per {product.price_unit}; price the "
                               f"agreement per {product.price_unit} too", details={"field": "pricing_method"})
        if price_fen > product.price_fen:
            raise InvalidInput(f"price_fen {price_fen} is above the registered price of {product.code} "
                               f"({product.price_fen} fen = {yuan(product.price_fen)} yuan per {product.price_unit})",
                               details={"field": "price_fen"})
    if not isinstance(starts_on, date) or not isinstance(ends_on, date):
        raise InvalidInput("starts_on and ends_on are dates", details={"field": "starts_on"})
    if ends_on < starts_on:
        raise InvalidInput(f"the term ends ({ends_on}) before it starts ({starts_on})", details={"field": "ends_on"})
    if ends_on < today():
        raise InvalidInput(f"the term ends on {ends_on}, which has passed", details={"field": "ends_on"})
    terms = {
        "parties": {"party_a": org_name(session, agreement.party_a_org_id) + " 甲方/运营机构 operator",
                    "party_b": org_name(session, agreement.party_b_org_id) + " 乙方/使用单位 customer"},
        "product": _product_terms(product),
        "scenario": _text(scenario, "scenario", "the scenario"),
        "delivery_method": f"{delivery_method}: {DELIVERY_METHODS[delivery_method][0]} "
                           f"{DELIVERY_METHODS[delivery_method][1]}",
        "pricing": {"method": f"{pricing_method}: {pzh} {pen}", "price_fen": price_fen,
                    "price": f"{yuan(price_fen)} 元 yuan" + (f" / {unit}" if unit else "")},
        "conditions": _text(conditions, "conditions", "the conditions of use"),
        "term": f"{starts_on.isoformat()} 至 to {ends_on.isoformat()}",
        "security_duties": _text(security_duties, "security_duties", "the security duties"),
        "breach_liability": _text(breach_liability, "breach_liability", "the breach liability"),
    }
    before = agreement.state
    agreement.terms = {**terms, "application": agreement.terms.get("application", {}),
                       "delivery": delivery_method, "pricing_method": pricing_method}
    agreement.text = render_text("usage", terms)
    agreement.text_sha256 = sha256_text(agreement.text)
    agreement.starts_on, agreement.ends_on, agreement.state = starts_on, ends_on, "pending"
    session.add(agreement)
    audit_log.record(session, who, "gov.agreement.draft", object_type="agreement", object_id=agreement.id,
                     details={"number": agreement.number, "before": before, "after": "pending",
                              "text_sha256": agreement.text_sha256, "price_fen": price_fen,
                              "pricing_method": pricing_method})
    session.flush()
    return agreement


def require_active_usage(session: Session, customer_org_id: int, product_id: int,
                         at: datetime | None = None) -> Agreement:
    """The customer's usage agreement for the product in force on `at`, or NoActiveAgreement saying why."""
    a = get_active(session, "usage", party_b=customer_org_id, product_id=product_id, at=at)
    if a is not None:
        return a
    product = session.get(Product, product_id)
    what = product.code if product is not None else f"product {product_id}"
    latest = session.exec(select(Agreement).where(Agreement.kind == "usage", Agreement.product_id == product_id,
                                                  Agreement.party_b_org_id == customer_org_id)
                          .order_by(Agreement.id.desc())).first()
    if latest is None:
        why = f"{org_name(session, customer_org_id)} has no usage agreement for {what}; apply for one"
    else:
        state = effective_state(latest, at)
        n = latest.number
        if state == "applied":
            why = f"usage agreement {n} for {what} awaits the terms of {org_name(session, latest.party_a_org_id)}"
        elif state == "pending":
            names = ", ".join(org_name(session, o) for o in waiting_for(session, latest))
            why = f"usage agreement {n} for {what} is pending acceptance by {names}"
        elif state == "active" and latest.starts_on > today(at):
            why = f"usage agreement {n} for {what} starts on {latest.starts_on.isoformat()}"
        elif state == "expired":
            why = f"usage agreement {n} for {what} expired on {latest.ends_on.isoformat()}"
        elif state == "terminated":
            on = to_shanghai(latest.ended_at).date().isoformat() if latest.ended_at else "?"
            why = f"usage agreement {n} for {what} was terminated on {on}: {latest.end_reason}"
        else:
            why = f"usage agreement {n} for {what} is {state}"
    raise NoActiveAgreement(f"no active usage agreement: {why}",
                            details={"product_id": product_id, "agreement": latest.number if latest else None,
                                     "state": effective_state(latest, at) if latest else None})


def view(session: Session, a: Agreement, at: datetime | None = None) -> dict[str, Any]:
    return {"id": a.id, "number": a.number, "kind": a.kind, "state": effective_state(a, at),
            "party_a_org_id": a.party_a_org_id, "party_a": org_name(session, a.party_a_org_id),
            "party_b_org_id": a.party_b_org_id, "party_b": org_name(session, a.party_b_org_id),
            "product_id": a.product_id, "case_id": a.case_id, "terms": a.terms, "text": a.text,
            "text_sha256": a.text_sha256, "starts_on": a.starts_on, "ends_on": a.ends_on,
            "waiting_for": waiting_for(session, a) if a.state == "pending" else [],
            "acceptances": [{"org_id": x.org_id, "by": x.actor_name, "text_sha256": x.text_sha256, "at": x.at,
                             "at_local": show(x.at)} for x in acceptances(session, a)],
            "ended_at": a.ended_at, "end_reason": a.end_reason, "created_at": a.created_at}
