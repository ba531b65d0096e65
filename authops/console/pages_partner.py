"""The partner's pages: drafting and submitting a scenario application, and registering a product
(draft from a workspace, the platform-filled security self-review, submit), each shown with its
review state and timeline. The same actions as the API (scenario.submit, product.submit) and the
same service functions; another organisation's draft or product does not exist here (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from sqlmodel import Session, select

from authops.console.auth import Viewer, page
from authops.console.forms import fen, see, validated, whole
from authops.console.rendering import render
from authops.console.routing import router
from authops.core.errors import InvalidInput, NotFound
from authops.platform.catalog import service as catalog
from authops.platform.deps import ObjectId, SessionDep, SettingsDep, actor_of
from authops.platform.governance import agreements, partners, products, scenarios, selfreview, workflow
from authops.platform.governance.models import Case, Product
from authops.platform.governance.routes_products import ProductIn
from authops.platform.governance.routes_scenarios import ScenarioIn
from authops.platform.sandbox import workspace as ws_service

SHARE_MODES = ("verify", "query", "batch")


# --- scenario applications ------------------------------------------------------------------------

def data_scope(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    """What the partner agreement allows, per resource: the fields (from the catalogue) and share modes."""
    agreement = partners.active_partner_agreement(session, viewer.principal.org_id)
    out = []
    for item in (agreement.terms.get("data_scope") or []) if agreement else []:
        try:
            res = catalog.get_resource(session, item["resource"])
        except Exception:  # noqa: BLE001 - a resource removed since: not offered
            continue
        names = catalog.schema_of(session, res).names
        allowed = names if "*" in item.get("fields", []) else [f for f in names if f in item.get("fields", [])]
        out.append({"resource": res.code, "name_zh": res.name_zh, "name_en": res.name_en, "fields": allowed,
                    "share_modes": [m for m in item.get("share_modes", []) if m in res.share_modes]})
    return out


@router.get("/scenarios/new")
def new_scenario(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("scenario.submit")]):
    """The application form: title, the six parts the review reads, and the data requested within the
    partner agreement's scope (fields, share modes, privacy budget ε per resource)."""
    return render(request, "scenario_new.html", {
        "scope": data_scope(session, viewer), "parts": scenarios.PARTS,
        "has_agreement": partners.active_partner_agreement(session, viewer.principal.org_id) is not None},
        viewer=viewer)


def _resources(resource: list[str], field: list[str], mode: list[str], eps_for: list[str],
               eps: list[str]) -> list[dict[str, Any]]:
    """The requested resources from the form's checkboxes ("code/field", "code/mode") and ε inputs."""
    epsilon = dict(zip(eps_for, eps))
    out = []
    for code in dict.fromkeys(resource):
        raw = (epsilon.get(code) or "").strip()
        try:
            value: Any = float(raw) if raw else None
        except ValueError:
            raise InvalidInput(f"epsilon of {code}: a number above 0", details={"field": f"epsilon.{code}"}) from None
        out.append({"resource": code, "fields": [f.split("/", 1)[1] for f in field if f.startswith(code + "/")],
                    "share_modes": [m.split("/", 1)[1] for m in mode if m.startswith(code + "/")], "epsilon": value})
    return out


@router.post("/scenarios/new")
def draft_scenario(session: SessionDep, viewer: Annotated[Viewer, page("scenario.submit")],
                   title: Annotated[str, Form()] = "", goal: Annotated[str, Form()] = "",
                   product_design: Annotated[str, Form()] = "", processing_method: Annotated[str, Form()] = "",
                   security_measures: Annotated[str, Form()] = "", technical_route: Annotated[str, Form()] = "",
                   expected_benefit: Annotated[str, Form()] = "",
                   resource: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
                   field: Annotated[list[str], Form()] = [],  # noqa: B006
                   mode: Annotated[list[str], Form()] = [],  # noqa: B006
                   eps_for: Annotated[list[str], Form()] = [],  # noqa: B006
                   eps: Annotated[list[str], Form()] = []):  # noqa: B006
    """Save the draft (checked in full when submitted); the application's page then offers Submit."""
    payload = {"goal": goal, "product_design": product_design, "processing_method": processing_method,
               "security_measures": security_measures, "technical_route": technical_route,
               "expected_benefit": expected_benefit, "resources": _resources(resource, field, mode, eps_for, eps)}
    body = validated(ScenarioIn, title=title, payload=payload)
    case = scenarios.draft(session, actor=actor_of(viewer.principal), title=body.title, payload=body.payload)
    return see(f"/scenarios/{case.id}")


@router.post("/scenarios/{case_id}/submit")
def submit_scenario(case_id: ObjectId, session: SessionDep, viewer: Annotated[Viewer, page("scenario.submit")]):
    """Submit a draft or a revised returned application: every part and resource is checked, then it
    goes to the provider departments (a returned one to the stage that returned it)."""
    case = scenarios.get_visible(session, case_id, viewer.principal.org_id)
    scenarios.submit(session, case, actor=actor_of(viewer.principal))
    return see(f"/scenarios/{case.id}?done=submitted")


# --- product registration -------------------------------------------------------------------------

def own_products(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    rows = session.exec(select(Product).where(Product.partner_org_id == viewer.principal.org_id)
                        .order_by(Product.id.desc()))  # type: ignore[union-attr]
    out = []
    for p in rows:
        case = session.get(Case, p.case_id) if p.case_id else None
        out.append({"id": p.id, "code": p.code, "name_zh": p.name_zh, "name_en": p.name_en or p.name_zh,
                    "state": p.state, "case_state": case.state if case else None,
                    "case_number": case.number if case else None, "due_at": case.due_at if case else None,
                    "overdue": bool(case and workflow.overdue(case)), "registration_number": p.registration_number})
    return out


@router.get("/products")
def products_page(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("product.submit")]):
    """The partner's products with their registration state (operator check, bureau filing, returned, registered)."""
    return render(request, "products.html", {"products": own_products(session, viewer)}, viewer=viewer)


@router.get("/products/new")
def new_product(request: Request, session: SessionDep, viewer: Annotated[Viewer, page("product.submit")]):
    """The registration form: code, the workspace it was built in, the spec, pricing, scenario, scope and
    manner of use, and the four risk sections of the security self-review."""
    org = viewer.principal.org_id
    return render(request, "product_new.html", {
        "workspaces": [w for w in ws_service.list_workspaces(session, org_id=org) if w.state == "active"],
        "approved": [c for c in scenarios.list_cases(session, org) if c.applicant_org_id == org and c.state == "approved"],
        "sections": selfreview.SECTIONS, "categories": products.CATEGORIES, "units": products.PRICE_UNITS,
        "share_modes": SHARE_MODES}, viewer=viewer)


@router.post("/products/new")
def draft_product(session: SessionDep, settings: SettingsDep, viewer: Annotated[Viewer, page("product.submit")],
                  code: Annotated[str, Form()] = "", workspace_id: Annotated[str, Form()] = "",
                  name_zh: Annotated[str, Form()] = "", name_en: Annotated[str, Form()] = "",
                  spec: Annotated[str, Form()] = "", share_mode: Annotated[str, Form()] = "",
                  category: Annotated[str, Form()] = "industry", price: Annotated[str, Form()] = "0",
                  price_unit: Annotated[str, Form()] = "call", pricing_basis: Annotated[str, Form()] = "",
                  scenario_case_id: Annotated[str, Form()] = "", scenario: Annotated[str, Form()] = "",
                  scope_of_use: Annotated[str, Form()] = "", manner_of_use: Annotated[str, Form()] = "",
                  beyond_purpose: Annotated[str, Form()] = "", direct_exposure: Annotated[str, Form()] = "",
                  indirect_exposure: Annotated[str, Form()] = "", other_risks: Annotated[str, Form()] = ""):
    """A product draft; the platform fills the self-review's facts and test results (see its page)."""
    body = validated(ProductIn, code=code.strip(), workspace_id=whole(workspace_id, "workspace_id", low=1, high=2**31),
                     name_zh=name_zh, name_en=name_en or None, spec=spec, share_mode=share_mode or None,
                     category=category, price_fen=fen(price, "price"), price_unit=price_unit,
                     pricing_basis=pricing_basis,
                     scenario_case_id=whole(scenario_case_id, "scenario_case_id", low=1, high=2**31)
                     if scenario_case_id else None, scenario=scenario or None,
                     scope_of_use=scope_of_use, manner_of_use=manner_of_use,
                     self_review={"beyond_purpose": beyond_purpose, "direct_exposure": direct_exposure,
                                  "indirect_exposure": indirect_exposure, "other_risks": other_risks})
    fields = body.model_dump(exclude_unset=True, exclude={"code", "operator_org_id"})
    fields["self_review"] = body.self_review.model_dump(exclude_none=True) if body.self_review else {}
    p = products.create_draft(session, partner_org_id=viewer.principal.org_id, code=body.code,
                              actor=actor_of(viewer.principal), settings=settings,
                              **{k: v for k, v in fields.items() if v is not None})
    return see(f"/products/{p.id}")


def _own(session: Session, viewer: Viewer, product_id: int) -> Product:
    p = products.get_product(session, product_id, org_id=viewer.principal.org_id)
    if p.partner_org_id != viewer.principal.org_id:  # a registered product of another partner is public, not yours
        raise NotFound(f"no product {product_id} of yours")
    return p


@router.get("/products/{product_id}")
def product_page(product_id: ObjectId, request: Request, session: SessionDep,
                 viewer: Annotated[Viewer, page("product.submit")]):
    """One product: its terms, what still blocks submission, the reviews and the review timeline."""
    p = _own(session, viewer, product_id)
    v = products.view(session, p, viewer.principal.org_id)
    return render(request, "product.html", {
        "p": v, "may_submit": p.state in ("draft", "returned"), "done": request.query_params.get("done"),
        "operator": agreements.org_name(session, p.operator_org_id) if p.operator_org_id else "—"}, viewer=viewer)


@router.post("/products/{product_id}/submit")
def submit_product(product_id: ObjectId, session: SessionDep, settings: SettingsDep,
                   viewer: Annotated[Viewer, page("product.submit")]):
    """Submit (or resubmit after a return): refused while a risk section is unanswered or a test failed."""
    p = _own(session, viewer, product_id)
    products.submit(session, p, actor=actor_of(viewer.principal), settings=settings)
    return see(f"/products/{p.id}?done=submitted")
