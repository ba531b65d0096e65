"""The console's test world: every kind of organisation twice over ("home" and "away"), a user per role,
real synthetic data loaded into a department's resource, scenario applications of both partners, usage
agreements with metered calls, an open anomaly case and a running job.

Everything is made through the platform's own services (the same builders the API tests use), so the
console is looked at over real data. `secrets()` lists what no page may show to the home side: the away
side's private objects (scenario titles, agreement numbers, an API key's name, a consent's purpose, a
batch's file name, a product draft) and the raw values of the loaded data.

The users' passwords are hashed once per test run (argon2 with the platform's parameters; hashing
twenty users per world took most of its build time). The console's tests do not test password
hashing: tests/platform/identity does.
"""

from __future__ import annotations

import io
import re
import secrets as rnd
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache

import openpyxl
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from authops.audit.anomaly import rules as anomaly_rules
from authops.audit.anomaly import service as anomaly
from authops.billing import metering
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.platform.catalog.models import DataResource, Dataset
from authops.platform.governance import scenarios
from authops.platform.governance.models import Case, Consent, Product
from authops.platform.identity import service as identity_service
from authops.platform.identity.models import ApiKey, Organisation, User
from authops.platform.products import batch as product_batch
from authops.platform.products.models import ProductBatch
from tests.billing.world import BillingWorld, build
from tests.platform.governance.matrix_products import lab, registered_product, usage_agreement
from tests.platform.governance.matrix_scenarios import actor, partner_agreement, scenario_payload
from tests.support.builders import PASSWORD, make_org, make_user
from tests.support.catalog import IDS, NAMES, PHONES, make_resource

HOME_TITLE = "中小企业信用评估场景"
AWAY_TITLE = "乙方保密场景申请"
# The away side's objects that only their own organisation sees (no role of the home side, the bureau included).
AWAY_PRIVATE = {"key": "乙方保密集成密钥", "purpose": "乙方保密核验用途", "batch": "away-private-subjects.csv",
                "product": "乙方保密草稿产品"}


@dataclass
class ConsoleWorld:
    billing: BillingWorld
    orgs: dict[str, Organisation]
    users: dict[str, User] = field(default_factory=dict)  # role -> user of the home side
    away_users: dict[str, User] = field(default_factory=dict)
    scenario: Case | None = None
    away_scenario: Case | None = None
    anomaly_case_id: int = 0
    job_id: int = 0
    experts: list[User] = field(default_factory=list)
    pending_agreement_id: int = 0  # a usage agreement waiting for the customer's acceptance
    loaded_rows: int = 0  # rows of the home department's resource (its raw values are in secrets())
    batch_id: int = 0  # the home customer's batch delivery (queued, its job not run)
    consent_id: int = 0  # a consent the home customer holds
    away_ids: dict[str, int] = field(default_factory=dict)  # the away side's private objects by kind
    lab: dict = field(default_factory=dict)  # the home partner's workspace ("ws") over the resource ("code")

    def secrets(self, role: str, *, cross_org: bool) -> list[str]:
        """Strings no page may show this home-side role: every raw value of the loaded data; unless the
        role supervises across organisations (the bureau), the away partner's scenario and, unless its
        organisation is also their party (the operator), the away customer's agreements."""
        out = [*IDS, *NAMES, *PHONES, *AWAY_PRIVATE.values()]
        if cross_org:
            return out
        out += [AWAY_TITLE, self.away_scenario.number]
        if self.users[role].org_id != self.orgs["operator"].id:
            out += [a.number for (_, org_id), a in self.billing.usage.items() if org_id == self.orgs["customer2"].id]
        return out


HOME_ROLES = {
    "bureau": ("bureau_admin", "bureau_reviewer"), "drc": ("supervisor",),
    "provider": ("provider_admin", "provider_data_officer"), "experts": ("expert",),
    "operator": ("operator_admin", "operator_staff"), "partner": ("partner_admin", "partner_engineer"),
    "customer": ("customer_admin", "customer_integrator", "bank_credit_officer", "enterprise_finance"),
    "auditor": ("auditor",),
}


def _charge(session: Session, w: BillingWorld, customer: Organisation, calls: int) -> None:
    a = w.usage[("paid", customer.id)]
    for _ in range(calls):
        metering.meter(session, customer_org_id=customer.id, product_id=w.products["paid"].id, agreement_id=a.id,
                       request_id="req_" + rnd.token_hex(8), pricing_method=a.terms["pricing_method"],
                       price_fen=int(a.terms["pricing"]["price_fen"]))


@cache
def _password_hash(password: str) -> str:
    return identity_service._hasher.hash(password)


class _OneHash:
    """Stands in for the platform's hasher while the world's users are made: the one hash of PASSWORD."""

    def hash(self, password: str) -> str:
        return _password_hash(password)


@contextmanager
def _hashed_once():
    real = identity_service._hasher
    _password_hash(PASSWORD)
    identity_service._hasher = _OneHash()
    try:
        yield
    finally:
        identity_service._hasher = real


def build_world(session: Session, settings) -> ConsoleWorld:
    with _hashed_once():
        return _build(session, settings)


def _consent(session: Session, product_id: int, customer_org_id: int, purpose: str) -> Consent:
    """A consent row as the customer holds it (its signing is tested in tests/platform/governance)."""
    now = utcnow()
    c = Consent(subject_key=rnd.token_hex(32), product_id=product_id, customer_org_id=customer_org_id,
                purpose=purpose, scope=["has_paid"], valid_from=now - timedelta(days=1),
                valid_until=now + timedelta(days=365), method="ed25519", signed_text="{}", signature="sig")
    session.add(c)
    session.flush()
    return c


def _batch(session: Session, product_id: int, customer_org_id: int, filename: str) -> ProductBatch:
    """A queued batch delivery with its job (the job is not run: tests move its progress)."""
    b = ProductBatch(product_id=product_id, customer_org_id=customer_org_id, filename=filename, subjects=3,
                     input_object_key=f"products/batches/test/{rnd.token_hex(4)}/input.csv", created_by="test")
    session.add(b)
    session.flush()
    b.job_id = job_service.create_job(session, kind=product_batch.KIND, params={"batch_id": b.id},
                                      org_id=customer_org_id).id
    session.add(b)
    session.flush()
    return b


def _away_objects(session: Session, w: ConsoleWorld) -> None:
    customer2, paid = w.orgs["customer2"], w.billing.products["paid"]
    key = ApiKey(org_id=customer2.id, created_by=w.away_users["customer2"].id, name=AWAY_PRIVATE["key"],
                 prefix=rnd.token_hex(6), secret_hash=rnd.token_hex(32), scopes=["product.call"],
                 expires_at=utcnow() + timedelta(days=90))
    session.add(key)
    session.flush()
    w.away_ids["key"] = key.id
    w.away_ids["consent"] = _consent(session, paid.id, customer2.id, AWAY_PRIVATE["purpose"]).id
    w.away_ids["batch"] = _batch(session, paid.id, customer2.id, AWAY_PRIVATE["batch"]).id
    p = Product(code=f"away_draft_{rnd.token_hex(3)}", partner_org_id=w.orgs["partner2"].id, name_zh=AWAY_PRIVATE["product"],
                operator_org_id=w.orgs["operator"].id, state="draft")
    session.add(p)
    session.flush()
    w.away_ids["product"] = p.id


def _build(session: Session, settings) -> ConsoleWorld:
    b = build(session, operating_days=400, price_fen=100)
    orgs = {"bureau": b.bureau, "drc": b.drc, "operator": b.operator, "partner": b.partner, "customer": b.customer,
            "customer2": b.customer2, "provider": b.providers[0], "provider2": b.providers[1],
            "experts": make_org(session, OrgKind.EXPERT), "auditor": make_org(session, OrgKind.AUDITOR),
            "partner2": make_org(session, OrgKind.PARTNER)}
    w = ConsoleWorld(b, orgs)
    for side, roles in HOME_ROLES.items():
        for role in roles:
            w.users[role] = make_user(session, orgs[side], role, username=f"c-{role.replace('_', '-')}")
    w.experts = [w.users["expert"]] + [make_user(session, orgs["experts"], "expert", username=f"c-expert-{i}")
                                       for i in (2, 3)]
    for side in ("customer2", "partner2", "provider2"):
        w.away_users[side] = make_user(session, orgs[side], username=f"c-away-{side}")

    # The home department's resource holds real (synthetic) rows: names, ID numbers, phones.
    w.lab = lab(session, settings, b.partner, orgs["provider"])
    code = w.lab["code"]
    resource = session.exec(select(DataResource).where(DataResource.code == code)).one()
    w.loaded_rows = session.get(Dataset, resource.dataset_id).rows
    away_code = make_resource(session, orgs["provider2"]).code
    partner_agreement(session, b.operator, b.partner,
                      [{"resource": code, "fields": ["*"], "share_modes": ["verify", "query"]}])
    partner_agreement(session, b.operator, orgs["partner2"],
                      [{"resource": away_code, "fields": ["*"], "share_modes": ["verify"]}])
    request = [{"resource": code, "fields": ["id_number", "paid"], "share_modes": ["verify"], "epsilon": 1.0}]
    w.scenario = scenarios.draft(session, actor=actor(w.users["partner_admin"]), title=HOME_TITLE,
                                 payload=scenario_payload(request))
    scenarios.submit(session, w.scenario, actor=actor(w.users["partner_admin"]))
    away_user = w.away_users["partner2"]
    w.away_scenario = scenarios.draft(session, actor=actor(away_user), title=AWAY_TITLE, payload=scenario_payload(
        [{"resource": away_code, "fields": ["id_number"], "share_modes": ["verify"], "epsilon": 0.5}]))
    scenarios.submit(session, w.away_scenario, actor=actor(away_user))

    offered = registered_product(session, partner_id=b.partner.id, operator_id=b.operator.id)
    w.pending_agreement_id = usage_agreement(session, offered, b.customer.id, state="pending").id
    _charge(session, b, b.customer, 3)
    _charge(session, b, b.customer2, 2)
    rule = anomaly_rules.rule_by_name(session, "refusals_actor")
    w.anomaly_case_id = anomaly.open_case(session, rule=rule, subject_type="user",
                                          subject_id=str(w.users["customer_integrator"].id),
                                          org_id=b.customer.id, evidence={"refusals": 31}).id
    w.job_id = job_service.create_job(session, kind="system.echo", params={}, org_id=b.partner.id).id
    w.consent_id = _consent(session, b.products["paid"].id, b.customer.id, "贷前核验").id
    w.batch_id = _batch(session, b.products["paid"].id, b.customer.id, "subjects.csv").id
    _away_objects(session, w)
    session.commit()
    return w


CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def console_login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token (read from the home page)."""
    client.cookies.clear()
    form = client.get("/console/login")
    r = client.post("/console/login", data={"username": username, "password": password,
                                            "csrf": csrf_of(form.text), "next": "/console/"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/", r.text
    return csrf_of(client.get("/console/").text)


def filled_template(template: bytes, rows: list[dict]) -> bytes:
    """The resource's Excel template (as downloaded) with these rows filled in under its field-name row."""
    wb = openpyxl.load_workbook(io.BytesIO(template))
    ws = wb.worksheets[0]
    names = [c.value for c in ws[2]]
    for i, row in enumerate(rows, start=3):
        for j, name in enumerate(names, start=1):
            if name in row:
                ws.cell(row=i, column=j, value=row[name])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
