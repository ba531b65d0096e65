"""Route-matrix cases for products, usage agreements and consent, and the builders the product,
agreement and consent tests share (a partner's lab with mock data, an operator authorization, a
registered product, a usage agreement, a signed consent)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import date, datetime, timedelta
from itertools import count
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.platform.governance import agreements, consent, workflow
from authops.platform.governance.models import Agreement, Product
from authops.platform.identity.models import Organisation
from tests.support.matrix import Case, World

_n = count(1)
ID_A, ID_B = "11010519491231002X", "32050219880715001X"  # valid resident ID numbers (in person_rows)


def who(org: Organisation | int, name: str = "tester") -> audit_log.Actor:
    org_id = org if isinstance(org, int) else org.id
    return audit_log.Actor(kind="user", id=1, name=name, org_id=org_id)


# --- builders ---------------------------------------------------------------------------------------

def lab(session: Session, settings, partner: Organisation, provider: Organisation) -> dict[str, Any]:
    """A person-level resource with loaded data and a mock dataset; a workspace granting it to the partner."""
    from authops.core.data import datasets as ds_store
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog import flows, ingest
    from authops.platform.catalog.models import Dataset
    from authops.platform.sandbox import workspace as ws_service
    from tests.support.catalog import ACTOR, make_resource, person_rows

    store = get_object_store(settings)
    res = make_resource(session, provider)
    run = ingest.new_run(session, res, path="bulk", mode="replace", actor=ACTOR)
    run = ingest.load(session, store, res, person_rows(), run=run, actor=ACTOR)
    assert run.state == "succeeded", run.message
    session.commit()
    loaded = ds_store.read_dataset(store, session.get(Dataset, res.dataset_id).object_key)
    flows.store_mocks(settings, [(res.code, loaded)], actor=ACTOR)
    ws = ws_service.create_workspace(session, org_id=partner.id, name="product lab", scenario="个人缴费核验",
                                     grants=[{"resource": res.code}], actor=ACTOR)
    session.commit()
    session.expire_all()
    return {"code": res.code, "ws": ws.id}


def record_spec(code: str) -> dict[str, Any]:
    return {"spec_version": 1, "name": "payer_records", "params": {},
            "inputs": [{"resource": code, "version": 1, "fields": ["id_number", "sex"]}],
            "outputs": [{"name": "rows", "release": {"policy": "record", "columns": ["id_number", "sex"], "k": 2}}]}


def verify_spec(code: str) -> dict[str, Any]:
    return {"spec_version": 1, "name": "has_paid", "params": {},
            "inputs": [{"resource": code, "version": 1, "fields": ["id_number", "paid"]}],
            "steps": [{"summarize": {"by": ["id_number"], "aggregates": [{"name": "payments", "fn": "count"}]}},
                      {"derive": {"name": "answer", "expr": "case when payments > 0 then 'yes' else 'no' end"}}],
            "outputs": [{"name": "has_paid", "release": {"policy": "verify", "claim": "id_number", "answer": "answer",
                                                         "values": ["yes", "no"], "absent": "no"}}]}


def leaky_spec(code: str) -> dict[str, Any]:
    """A record output with a column computed from a person's name: the release gate refuses it."""
    return {"spec_version": 1, "name": "leaky", "params": {},
            "inputs": [{"resource": code, "version": 1, "fields": ["name", "sex"]}],
            "steps": [{"derive": {"name": "shout", "expr": "upper(name)"}}],
            "outputs": [{"name": "rows", "release": {"policy": "record", "columns": ["shout", "sex"], "k": 2}}]}


ANSWERS = {"beyond_purpose": "只在核验场景内使用，输入均在批准范围内。",
           "direct_exposure": "身份证号令牌化，其余字段按分级处理，不输出原始数据。",
           "indirect_exposure": "k=2 匿名，无模型输出；重复查询受协议与审计约束。",
           "other_risks": "客户须取得个人授权，逐次核验。"}


def draft_fields(l: dict[str, Any], operator_id: int, *, spec: dict | None = None, answers: dict | None = None,
                 **extra: Any) -> dict[str, Any]:
    return {"workspace_id": l["ws"], "name_zh": "缴费记录查询", "name_en": "Payment records",
            "spec": spec or record_spec(l["code"]), "pricing_basis": "成本加成：每次调用的计算与运维成本",
            "price_fen": 150, "price_unit": "call", "scope_of_use": "银行信贷审批中核对缴费记录",
            "manner_of_use": "接口调用，逐条查询", "scenario": "小微企业信贷", "operator_org_id": operator_id,
            "self_review": dict(ANSWERS if answers is None else answers), **extra}


def authorize_operator(session: Session, operator_id: int, bureau_id: int) -> Agreement:
    """An operator authorization in force (the operator lifecycle's own record, made directly)."""
    found = agreements.get_active(session, "operator_authorization", party_b=operator_id)
    if found is not None:
        return found
    d = agreements.today()
    a = agreements.create(session, kind="operator_authorization", party_a_org_id=bureau_id,
                          party_b_org_id=operator_id, terms={"scope": "全市公共数据授权运营"},
                          starts_on=d - timedelta(days=30), ends_on=d + timedelta(days=3 * 365), actor=who(bureau_id),
                          state="active")
    session.flush()
    return a


def registered_product(session: Session, *, partner_id: int, operator_id: int, personal: bool = False,
                       price_fen: int = 200, category: str = "industry", price_unit: str = "call") -> Product:
    """A registered product row (its registration workflow is exercised in test_products)."""
    n = next(_n)
    p = Product(code=f"prod_{n}_{utcnow().microsecond}", registration_number=f"SZDP-1999-{n:04d}-{id(session) % 997}",
                partner_org_id=partner_id, operator_org_id=operator_id, name_zh=f"产品{n}", name_en=f"Product {n}",
                category=category, price_fen=price_fen, price_unit=price_unit, personal_information=personal,
                release_policy="verify", share_mode="verify", pricing_basis="成本", scope_of_use="信贷",
                manner_of_use="接口", state="registered", registered_at=utcnow())
    session.add(p)
    session.flush()
    return p


TERMS = {"delivery_method": "api", "pricing_method": "per_call", "price_fen": 100, "scenario": "贷前核验",
         "conditions": "仅用于贷前审批，不得转售", "security_duties": "专人负责，日志留存三年",
         "breach_liability": "违约方赔偿损失并承担相应法律责任"}


def usage_agreement(session: Session, product: Product, customer_id: int, *, state: str = "active",
                    starts_on: date | None = None, ends_on: date | None = None, **terms: Any) -> Agreement:
    """A usage agreement through the real steps: applied → terms drafted (pending) → both accept (active)."""
    a = agreements.apply_usage(session, product=product, customer_org_id=customer_id, actor=who(customer_id),
                               scenario="贷前核验")
    if state == "applied":
        return a
    d = agreements.today()
    agreements.draft_usage_terms(session, a, actor=who(product.operator_org_id),
                                 **{**TERMS, "starts_on": starts_on or d, "ends_on": ends_on or d + timedelta(days=365),
                                    **terms})
    if state == "pending":
        return a
    agreements.accept(session, a, who(customer_id), text_sha256=a.text_sha256)
    agreements.accept(session, a, who(product.operator_org_id), text_sha256=a.text_sha256)
    assert a.state == "active"
    return a


def keypair() -> tuple[Ed25519PrivateKey, str]:
    sk = Ed25519PrivateKey.generate()
    return sk, base64.b64encode(sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(sk: Ed25519PrivateKey, message: str | bytes) -> str:
    return base64.b64encode(sk.sign(message.encode() if isinstance(message, str) else message)).decode()


def consent_terms(product: Product | int, subject_id: str = ID_A, **kw: Any) -> dict[str, Any]:
    now = utcnow().replace(microsecond=0)
    return {"product_id": product if isinstance(product, int) else product.id, "subject_id": subject_id,
            "subject_kind": "person",
            "purpose": kw.pop("purpose", "贷前核验"), "scope": kw.pop("scope", ["has_paid"]),
            "valid_from": kw.pop("valid_from", now - timedelta(minutes=1)),
            "valid_until": kw.pop("valid_until", now + timedelta(days=180)), **kw}


def certificate(settings, sk: Ed25519PrivateKey, subject_id: str = ID_A, subject_kind: str = "person",
                issuer: Ed25519PrivateKey | None = None, valid_until: datetime | None = None) -> dict[str, str]:
    """The identity provider (by default the embedded demo issuer) certifies that sk's key is the subject's."""
    return consent.issue_subject_certificate(issuer or consent.demo_issuer_key(settings), subject_id=subject_id,
                                             subject_kind=subject_kind, public_key=sk.public_key(),
                                             valid_until=valid_until or utcnow() + timedelta(days=365))


def signed_consent_body(session: Session, settings, product: Product, customer_id: int,
                        subject_id: str = ID_A, **kw: Any) -> tuple[dict[str, Any], Ed25519PrivateKey]:
    """What a customer sends: the terms, the subject's certificate (from the identity provider) and the
    subject's signature over the consent text."""
    terms = consent_terms(product, subject_id, **kw)
    sk, pk = keypair()
    cert = certificate(settings, sk, subject_id, terms["subject_kind"])
    t = consent.prepare_text(session, settings, product=product, customer_org_id=customer_id, subject_certificate=cert,
                             **{k: v for k, v in terms.items() if k != "product_id"})
    return {**terms, "subject_certificate": cert, "public_key": pk, "signature": sign(sk, t["text"])}, sk


def give_consent(session: Session, settings, product: Product, customer_id: int, subject_id: str = ID_A,
                 **kw: Any):
    body, sk = signed_consent_body(session, settings, product, customer_id, subject_id, **kw)
    c = consent.grant(session, settings, product=product, customer_org_id=customer_id, actor=who(customer_id),
                      **{k: v for k, v in body.items() if k != "product_id"})
    return c, sk


# --- the matrix ---------------------------------------------------------------------------------------

def _st(w: World) -> dict:
    return w.__dict__.setdefault("_gov_products", {})


def _side(w: World, org: Organisation) -> dict[OrgKind, Organisation]:
    return w.away if org.id == w.away[OrgKind(org.kind)].id else w.home


def _other(w: World, org: Organisation, kind: OrgKind) -> Organisation:
    """`kind`'s organisation on org's side, unless that is org itself (then the other side's)."""
    side = _side(w, org)
    if side[kind].id != org.id:
        return side[kind]
    return w.away[kind] if side is w.home else w.home[kind]


def _settings():
    from authops.core.settings import get_settings

    return get_settings()


def _is(org: Organisation, *kinds: OrgKind) -> bool:
    return OrgKind(org.kind) in kinds


def _auth_all(session, w) -> None:
    for side in (w.home, w.away):
        authorize_operator(session, side[OrgKind.OPERATOR].id, side[OrgKind.BUREAU].id)


def _lab(session, w, org) -> dict:
    st = _st(w)
    partner = _side(w, org)[OrgKind.PARTNER]
    if ("lab", partner.id) not in st:
        st[("lab", partner.id)] = lab(session, _settings(), partner, _side(w, org)[OrgKind.PROVIDER])
    return st[("lab", partner.id)]


def _product_body(w, org):
    side = _side(w, org)
    lab_ = _st(w).get(("lab", side[OrgKind.PARTNER].id), {"ws": 1, "code": "x"})
    return {"code": f"matrix_{next(_n)}", **draft_fields(lab_, side[OrgKind.OPERATOR].id)}


def _prep_create(session, w, org):
    if _is(org, OrgKind.PARTNER):
        _lab(session, w, org)


def _prep_draft(fresh: bool):
    def prepare(session, w, org):
        if not _is(org, OrgKind.PARTNER):
            return
        st = _st(w)
        if fresh or ("draft", org.id) not in st:
            from authops.platform.governance import products

            l = _lab(session, w, org)
            p = products.create_draft(session, partner_org_id=org.id, code=f"draft_{next(_n)}", actor=who(org),
                                      settings=_settings(), **draft_fields(l, _side(w, org)[OrgKind.OPERATOR].id))
            session.commit()
            st[("draft", org.id)] = p.id
    return prepare


def _submitted(session, w, side, state: str) -> Product:
    """A product under review, made directly (its own flow is tested in test_products)."""
    partner, operator = side[OrgKind.PARTNER], side[OrgKind.OPERATOR]
    p = Product(code=f"review_{next(_n)}", partner_org_id=partner.id, operator_org_id=operator.id, name_zh="审核中产品",
                state="submitted", pricing_basis="成本", scope_of_use="x", manner_of_use="x")
    session.add(p)
    session.flush()
    case = workflow.open_case(session, kind="product_registration", applicant_org_id=partner.id, title=p.name_zh,
                              payload={"product_id": p.id}, actor=who(partner), awaiting_orgs=[operator.id])
    p.case_id = case.id
    if state == "bureau_filing":
        workflow.transition(session, case, "operator_approve", actor=who(operator))
    session.add(p)
    session.commit()
    return p


def _prep_review(state: str, kind: OrgKind):
    def prepare(session, w, org):
        if not _is(org, kind):
            return
        _auth_all(session, w)
        _st(w)[(state, org.id)] = _submitted(session, w, _side(w, org), state).id
    return prepare


def _registered(session, w, org) -> Product:
    st = _st(w)
    side = _side(w, org)
    key = ("registered", side[OrgKind.PARTNER].id)
    if key not in st:
        _auth_all(session, w)
        st[key] = registered_product(session, partner_id=side[OrgKind.PARTNER].id,
                                     operator_id=side[OrgKind.OPERATOR].id).id
        session.commit()
    return session.get(Product, st[key])


def _pid(name: str):
    return lambda w, org: {"product_id": _st(w).get((name, org.id), 1)}


def _reg_pid(w, org):
    return {"product_id": _st(w).get(("registered", _side(w, org)[OrgKind.PARTNER].id), 1)}


def _prep_call(session, w, org):
    p = _registered(session, w, org)
    if _is(org, OrgKind.CUSTOMER) and ("usage", org.id) not in _st(w):
        _st(w)[("usage", org.id)] = usage_agreement(session, p, org.id).id
        session.commit()


def _prep_apply(session, w, org):
    _auth_all(session, w)
    p = registered_product(session, partner_id=_other(w, org, OrgKind.PARTNER).id,
                           operator_id=_other(w, org, OrgKind.OPERATOR).id)
    session.commit()
    _st(w)[("to_buy", org.id)] = p.id


def _party_agreement(session, w, org, *, state: str = "pending") -> Agreement:
    """A usage agreement in which org is a party: the seller when it is an operator, else the buyer."""
    _auth_all(session, w)
    if _is(org, OrgKind.OPERATOR):
        seller, buyer = org, _side(w, org)[OrgKind.CUSTOMER]
    else:
        seller, buyer = _other(w, org, OrgKind.OPERATOR), org
    p = registered_product(session, partner_id=_other(w, org, OrgKind.PARTNER).id, operator_id=seller.id)
    a = usage_agreement(session, p, buyer.id, state=state)
    session.commit()
    return a


_SIGNERS = (OrgKind.BUREAU, OrgKind.OPERATOR, OrgKind.PARTNER, OrgKind.CUSTOMER)


def _prep_agreement(fresh: bool, state: str = "pending"):
    def prepare(session, w, org):
        if not _is(org, *_SIGNERS):
            return
        st = _st(w)
        if fresh or ("agreement", org.id) not in st:
            a = _party_agreement(session, w, org, state=state)
            st[("agreement", org.id)] = a.id
            st[("sha", org.id)] = a.text_sha256
    return prepare


def _aid(w, org):
    return {"agreement_id": _st(w).get(("agreement", org.id), 1)}


def _prep_applied(session, w, org):
    if not _is(org, OrgKind.OPERATOR):
        return
    _auth_all(session, w)
    p = registered_product(session, partner_id=_side(w, org)[OrgKind.PARTNER].id, operator_id=org.id)
    a = usage_agreement(session, p, _side(w, org)[OrgKind.CUSTOMER].id, state="applied")
    session.commit()
    _st(w)[("agreement", org.id)] = a.id


def _terms_body(w, org):
    d = agreements.today()
    return {**TERMS, "starts_on": d.isoformat(), "ends_on": (d + timedelta(days=90)).isoformat()}


def _json(body: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in body.items()}


def _prep_consent_body(session, w, org):
    p = _registered(session, w, org)
    if _is(org, OrgKind.CUSTOMER):
        body, _ = signed_consent_body(session, _settings(), p, org.id)
        _st(w)[("consent_body", org.id)] = _json(body)


def _prep_consent_document(session, w, org):
    p = _registered(session, w, org)
    if _is(org, OrgKind.CUSTOMER):
        sk, pk = keypair()
        doc = f"个人授权书 {next(_n)}：本人授权查询缴费记录。".encode()
        terms = consent_terms(p)
        cert = certificate(_settings(), sk)
        text = consent.prepare_text(session, _settings(), product=p, customer_org_id=org.id, subject_certificate=cert,
                                    document_sha256=hashlib.sha256(doc).hexdigest(),
                                    **{k: v for k, v in terms.items() if k != "product_id"})["text"]
        _st(w)[("consent_doc", org.id)] = {"document": ("授权书.txt", doc, "text/plain"),
                                           "terms": (None, json.dumps(_json(terms), ensure_ascii=False)),
                                           "subject_certificate": (None, json.dumps(cert)),
                                           "public_key": (None, pk), "signature": (None, sign(sk, text))}


def _prep_consent(fresh: bool):
    def prepare(session, w, org):
        p = _registered(session, w, org)
        if not _is(org, OrgKind.CUSTOMER):
            return
        st = _st(w)
        if fresh or ("consent", org.id) not in st:
            c, _ = give_consent(session, _settings(), p, org.id)
            session.commit()
            st[("consent", org.id)] = c.id
    return prepare


def _cid(w, org):
    return {"consent_id": _st(w).get(("consent", org.id), 1)}


G = "/api/v1/governance"
CASES: dict[tuple[str, str], Case] = {
    ("POST", f"{G}/products"): Case(prepare=_prep_create, body=_product_body),
    ("PUT", f"{G}/products/{{product_id}}"): Case(prepare=_prep_draft(fresh=False), params=_pid("draft"),
                                                  body=lambda w, org: {"name_en": "Payment records (rev)"}),
    ("POST", f"{G}/products/{{product_id}}/submit"): Case(prepare=_prep_draft(fresh=True), params=_pid("draft")),
    ("GET", f"{G}/products"): Case(),
    ("GET", f"{G}/products/{{product_id}}"): Case(prepare=lambda s, w, o: _registered(s, w, o), params=_reg_pid,
                                                  cross_org="catalog.read"),
    ("POST", f"{G}/products/{{product_id}}/check"): Case(
        prepare=_prep_review("operator_check", OrgKind.OPERATOR), params=_pid("operator_check"),
        body=lambda w, org: {"decision": "approve"}),
    ("POST", f"{G}/products/{{product_id}}/file"): Case(
        prepare=_prep_review("bureau_filing", OrgKind.BUREAU), params=_pid("bureau_filing"),
        body=lambda w, org: {"decision": "approve"}, cross_org="review.final"),
    ("POST", f"{G}/products/{{product_id}}/call-check"): Case(prepare=_prep_call, params=_reg_pid,
                                                              body=lambda w, org: {"purpose": "贷前核验"},
                                                              cross_org="product.call"),
    ("POST", f"{G}/agreements/usage"): Case(prepare=_prep_apply, body=lambda w, org: {
        "product_id": _st(w).get(("to_buy", org.id), 1), "scenario": "贷前核验"}),
    ("GET", f"{G}/agreements"): Case(),
    ("GET", f"{G}/agreements/{{agreement_id}}"): Case(prepare=_prep_agreement(fresh=False), params=_aid),
    ("PUT", f"{G}/agreements/{{agreement_id}}/terms"): Case(prepare=_prep_applied, params=_aid, body=_terms_body),
    ("POST", f"{G}/agreements/{{agreement_id}}/accept"): Case(
        prepare=_prep_agreement(fresh=True), params=_aid,
        body=lambda w, org: {"text_sha256": _st(w).get(("sha", org.id)) or "0" * 64}),
    ("POST", f"{G}/agreements/{{agreement_id}}/terminate"): Case(
        prepare=_prep_agreement(fresh=True, state="active"), params=_aid, body=lambda w, org: {"reason": "不再需要"}),
    ("POST", f"{G}/consents/text"): Case(prepare=lambda s, w, o: _registered(s, w, o),
                                         body=lambda w, org: {**_json(consent_terms(_reg_pid(w, org)["product_id"])),
                                                              "subject_certificate": certificate(_settings(),
                                                                                                 keypair()[0])}),
    ("POST", f"{G}/consents"): Case(prepare=_prep_consent_body,
                                    body=lambda w, org: _st(w).get(("consent_body", org.id), {})),
    ("POST", f"{G}/consents/document"): Case(prepare=_prep_consent_document,
                                             files=lambda w, org: _st(w).get(("consent_doc", org.id)) or {
                                                 "document": ("x.txt", b"x", "text/plain")}),
    ("GET", f"{G}/consents"): Case(),
    ("GET", f"{G}/consents/{{consent_id}}"): Case(prepare=_prep_consent(fresh=False), params=_cid),
    ("POST", f"{G}/consents/{{consent_id}}/revoke"): Case(prepare=_prep_consent(fresh=True), params=_cid,
                                                          body=lambda w, org: {"reason": "客户终止业务"}),
}
