"""Every route × every role × own and foreign objects, against the permission matrix.

A new route fails `test_every_route_has_a_case` until it is given a case here, so the
generated matrix always covers the whole API.
"""

from __future__ import annotations

import importlib

from dataclasses import dataclass, field
from itertools import count
from typing import Callable

import pytest
from sqlmodel import Session

from authops.app import PUBLIC_ROUTES, create_app, iter_routes, route_permission
from authops.audit.anomaly import rules as anomaly_rules
from authops.audit.anomaly import service as anomaly
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.platform.identity.models import ApiKey, Organisation, User
from authops.policies import enforcer as authz
from authops.policies import permissions
from tests.support.builders import login, make_org, make_user
from tests.support.matrix import Case, Params, World, build_world  # noqa: F401 - re-exported

_n = count(1)


def _org(w, org):
    return {"org_id": org.id}


def _victim(w, org):
    return {"user_id": w.victim[org.id].id}


def _give_admin_role(session, w, org):
    victim = w.victim[org.id]
    authz.assign_role(session, user_id=victim.id, org_id=org.id, org_kind=OrgKind(org.kind),
                      role=permissions.ADMIN_ROLE_BY_KIND[OrgKind(org.kind)])
    session.commit()


_latest_size: list[int] = []


def _checkpoint(session):
    from authops.audit import checkpoints
    from authops.core.settings import get_settings

    cp = checkpoints.create_checkpoint(session, get_settings(), force=True)
    session.commit()
    _latest_size[:] = [cp.tree_size]


def _sizes():
    return {"old_size": _latest_size[0], "new_size": _latest_size[0]}


def _fresh_job(session, w, org):
    w.job[org.id] = job_service.create_job(session, kind="system.echo", params={}, org_id=org.id).id
    session.commit()


_supervision: dict[tuple[str, int], int] = {}  # ("case" | "block" | "rule", org id) -> id


def _open_case(session, w, org):
    """An open (alert-only) case about the organisation's second user; reused while open."""
    rule = anomaly_rules.rule_by_name(session, "refusals_actor")
    case = anomaly.open_case(session, rule=rule, subject_type="user", subject_id=str(w.victim[org.id].id),
                             org_id=org.id, evidence={"refusals": 31})
    session.commit()
    _supervision[("case", org.id)] = case.id


def _new_block(session, w, org):
    block = anomaly.create_block(session, subject_type="user", subject_id=str(w.victim[org.id].id),
                                 org_id=org.id, reason="route matrix")
    session.commit()
    _supervision[("block", org.id)] = block.id


def _rule(session, w, org):
    _supervision[("rule", org.id)] = anomaly_rules.rule_by_name(session, "night_burst").id
    session.commit()


def _sup(name: str, param: str):
    return lambda w, org: {param: _supervision[(name, org.id)]}


_catalog: dict[int, dict] = {}  # provider org id -> {"code", "run_id", "source_id"}


def _provider_for(w, org):
    """The provider whose resource a caller of `org`'s kind reads: its own, else home/away's provider."""
    if OrgKind(org.kind) == OrgKind.PROVIDER:
        return org
    return w.away[OrgKind.PROVIDER] if org.id == w.away[OrgKind(org.kind)].id else w.home[OrgKind.PROVIDER]


def _resource(session, w, org):
    from authops.platform.catalog import ingest, tasks
    from authops.core.settings import get_settings
    from tests.support.catalog import ACTOR, make_resource

    for o in (w.home[OrgKind.PROVIDER], w.away[OrgKind.PROVIDER]):
        if o.id in _catalog:
            continue
        res = make_resource(session, o)
        run = ingest.new_run(session, res, path="csv", mode="replace", actor=ACTOR)
        src = tasks.add_source(session, get_settings(), res, kind="api", config={"url": "http://127.0.0.1:9/x"},
                               incremental=False, updated_column=None, actor=ACTOR, display="http://127.0.0.1:9/x")
        _catalog[o.id] = {"code": res.code, "res_id": res.id, "run_id": run.id, "source_id": src.id}
    session.commit()


def _res(w, org):
    return {"code": _catalog[_provider_for(w, org).id]["code"]}


def _cat(name):
    return lambda w, org: {**_res(w, org), name: _catalog[_provider_for(w, org).id][name]}


def _new_resource_body(w, org):
    from tests.support.catalog import PERSON_SCHEMA

    return {"code": f"reg_{next(_n)}", "name_zh": "新资源", "name_en": "New resource", "grade": "L4",
            "fields": [f.model_dump(mode="json") for f in PERSON_SCHEMA.fields], "key": ["id_number"],
            "privacy_unit": "person", "unit_field": "id_number", "share_modes": ["verify"],
            "provision_modes": ["excel"], "update_cycle": "monthly"}


def _schema_body(w, org):
    from tests.support.catalog import PERSON_SCHEMA

    return {"fields": [f.model_dump(mode="json") for f in PERSON_SCHEMA.fields], "key": ["id_number"],
            "privacy_unit": "person", "unit_field": "id_number", "note": "unchanged"}


CSV_UPLOAD = "id_number,name\n11010519491231002X,张三丰\n".encode()


# --- sandbox: per provider a loaded resource with a mock; per partner a workspace granting it, a
# budget and a queued job; per organisation (home and away, every kind) a released job it may read.
# ("code" | "ws" | "job", partner id) -> resource code, workspace id, a queued job's id;
# ("done", any org id) -> a succeeded job whose release names that organisation as a reader.
_sandbox: dict[tuple[str, int], object] = {}
OUTPUT = "rows"


def _partner_for(w, org):
    """The partner whose workspace a caller of `org`'s kind points at: its own, else home/away's partner."""
    if OrgKind(org.kind) == OrgKind.PARTNER:
        return org
    return w.away[OrgKind.PARTNER] if org.id == w.away[OrgKind(org.kind)].id else w.home[OrgKind.PARTNER]


def _record_spec(code: str) -> dict:
    return {"spec_version": 1, "name": "matrix_rows", "params": {},
            "inputs": [{"resource": code, "version": 1, "fields": ["id_number", "sex"]}],
            "outputs": [{"name": OUTPUT, "release": {"policy": "record", "columns": ["id_number", "sex"], "k": 2}}]}


def _submit(session, ws_id: int) -> int:
    from authops.platform.sandbox import jobs as sandbox_jobs
    from authops.sandbox.models import Workspace
    from tests.support.catalog import ACTOR

    ws = session.get(Workspace, ws_id)
    _, job = sandbox_jobs.submit_job(session, ws=ws, kind="spec", spec=_record_spec(_sandbox[("code", ws.org_id)]),
                                     actor=ACTOR)
    session.commit()
    return job.id


def _sandbox_world(session, w, org):
    """Built once per world: everything the sandbox routes read (idempotent)."""
    if _sandbox:
        return
    from authops.core.data import datasets as ds_store
    from authops.core.settings import get_settings
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog import flows, ingest
    from authops.platform.catalog.models import Dataset
    from authops.platform.sandbox import workspace as ws_service
    from authops.policies import budget
    from tests.support.catalog import ACTOR, make_resource, person_rows

    settings = get_settings()
    store = get_object_store(settings)
    for side in (w.home, w.away):
        provider, partner = side[OrgKind.PROVIDER], side[OrgKind.PARTNER]
        res = make_resource(session, provider)
        run = ingest.new_run(session, res, path="bulk", mode="replace", actor=ACTOR)
        run = ingest.load(session, store, res, person_rows(), run=run, actor=ACTOR)
        assert run.state == "succeeded", run.message
        session.commit()
        loaded = ds_store.read_dataset(store, session.get(Dataset, res.dataset_id).object_key)
        flows.store_mocks(settings, [(res.code, loaded)], actor=ACTOR)
        # The workspace's releases are readable by every organisation on its side (home or away).
        ws = ws_service.create_workspace(session, org_id=partner.id, name="matrix lab",
                                         grants=[{"resource": res.code}], actor=ACTOR,
                                         readers=[o.id for o in side.values()])
        budget.set_budget(session, org_id=partner.id, resource_code=res.code, epsilon=5.0, actor=ACTOR)
        session.commit()
        _sandbox[("code", partner.id)] = res.code
        _sandbox[("ws", partner.id)] = ws.id
        _sandbox[("job", partner.id)] = _submit(session, ws.id)
        done = _submit(session, ws.id)
        outcome = job_service.run_job(settings, done, worker="t")
        assert outcome == "succeeded", outcome
        for o in side.values():
            _sandbox[("done", o.id)] = done
    session.expire_all()


def _fresh_sandbox_job(session, w, org):
    _sandbox_world(session, w, org)
    partner = _partner_for(w, org)
    _sandbox[("job", partner.id)] = _submit(session, _sandbox[("ws", partner.id)])


def _ws(w, org):
    return {"workspace_id": _sandbox[("ws", _partner_for(w, org).id)]}


def _ws_code(w, org):
    return _sandbox[("code", _partner_for(w, org).id)]


def _sjob(w, org):
    return {"job_id": _sandbox[("job", _partner_for(w, org).id)]}


def _open_workspace_body(w, org):
    partner = w.home[OrgKind.PARTNER]
    return {"org_id": partner.id, "name": f"lab {next(_n)}", "grants": [{"resource": _ws_code(w, partner)}]}


CASES: dict[tuple[str, str], Case] = {
    ("GET", "/api/v1/catalog/resources"): Case(),
    ("GET", "/api/v1/catalog/resources/{code}"): Case(prepare=_resource, params=_res, cross_org="catalog.read"),
    ("GET", "/api/v1/catalog/resources/{code}/schema"): Case(prepare=_resource, params=_res,
                                                            cross_org="catalog.read"),
    ("GET", "/api/v1/catalog/resources/{code}/versions"): Case(prepare=_resource, params=_res,
                                                              cross_org="catalog.read"),
    ("GET", "/api/v1/catalog/resources/{code}/quality"): Case(prepare=_resource, params=_res,
                                                             cross_org="catalog.read"),
    ("GET", "/api/v1/catalog/resources/{code}/sample"): Case(prepare=_resource, params=_res,
                                                            cross_org="catalog.read"),
    ("GET", "/api/v1/catalog/resources/{code}/mock"): Case(prepare=_resource, params=_res,
                                                          cross_org="catalog.read"),
    ("POST", "/api/v1/catalog/resources"): Case(body=_new_resource_body),
    ("PUT", "/api/v1/catalog/resources/{code}/schema"): Case(prepare=_resource, params=_res, body=_schema_body),
    ("GET", "/api/v1/catalog/resources/{code}/template.xlsx"): Case(prepare=_resource, params=_res),
    ("POST", "/api/v1/catalog/resources/{code}/uploads"): Case(
        prepare=_resource, params=_res, files=lambda w, org: {"file": ("batch.csv", CSV_UPLOAD, "text/csv")}),
    ("GET", "/api/v1/catalog/runs"): Case(),
    ("GET", "/api/v1/catalog/runs/{run_id}"): Case(prepare=_resource, params=_cat("run_id")),
    ("POST", "/api/v1/catalog/resources/{code}/sources"): Case(prepare=_resource, params=_res, body=lambda w, org: {
        "kind": "api", "url": "http://127.0.0.1:9/persons"}),
    ("GET", "/api/v1/catalog/resources/{code}/sources"): Case(prepare=_resource, params=_res),
    ("POST", "/api/v1/catalog/resources/{code}/sources/{source_id}/run"): Case(prepare=_resource,
                                                                               params=_cat("source_id")),
    ("GET", "/api/v1/sandbox/spec-schema"): Case(),
    ("POST", "/api/v1/sandbox/workspaces"): Case(prepare=_sandbox_world, body=_open_workspace_body),
    ("PATCH", "/api/v1/sandbox/workspaces/{workspace_id}"): Case(
        prepare=_sandbox_world, params=_ws, cross_org="workspace.manage", body=lambda w, org: {"state": "active"}),
    ("GET", "/api/v1/sandbox/workspaces"): Case(),
    ("GET", "/api/v1/sandbox/workspaces/{workspace_id}"): Case(prepare=_sandbox_world, params=_ws),
    ("GET", "/api/v1/sandbox/workspaces/{workspace_id}/mock/{resource}"): Case(
        prepare=_sandbox_world, params=lambda w, org: {**_ws(w, org), "resource": _ws_code(w, org)}),
    ("POST", "/api/v1/sandbox/workspaces/{workspace_id}/jobs"): Case(
        prepare=_sandbox_world, params=_ws,
        body=lambda w, org: {"kind": "spec", "spec": _record_spec(_ws_code(w, org))}),
    ("GET", "/api/v1/sandbox/jobs/{job_id}"): Case(prepare=_sandbox_world, params=_sjob),
    ("POST", "/api/v1/sandbox/jobs/{job_id}/cancel"): Case(prepare=_fresh_sandbox_job, params=_sjob),
    ("GET", "/api/v1/sandbox/jobs/{job_id}/results/{output}"): Case(
        prepare=_sandbox_world, params=lambda w, org: {"job_id": _sandbox[("done", org.id)], "output": OUTPUT}),
    ("PUT", "/api/v1/sandbox/budgets"): Case(prepare=_sandbox_world, body=lambda w, org: {
        "org_id": w.home[OrgKind.PARTNER].id, "resource": _ws_code(w, w.home[OrgKind.PARTNER]), "epsilon": 6.0}),
    ("GET", "/api/v1/sandbox/budgets"): Case(),
    ("GET", "/api/v1/sandbox/orgs/{org_id}/budgets"): Case(
        params=lambda w, org: {"org_id": _partner_for(w, org).id}, cross_org="budget.manage"),
    ("POST", "/api/v1/auth/logout"): Case(last=True),
    ("GET", "/api/v1/me"): Case(),
    ("GET", "/api/v1/permissions"): Case(),
    ("GET", "/api/v1/orgs"): Case(),
    ("POST", "/api/v1/orgs"): Case(body=lambda w, org: {
        "kind": "customer", "code": f"new-{next(_n)}", "name_zh": "新单位", "name_en": "New"}),
    ("GET", "/api/v1/orgs/{org_id}"): Case(params=_org, cross_org="org.read_all"),
    ("GET", "/api/v1/orgs/{org_id}/users"): Case(params=_org),
    ("POST", "/api/v1/orgs/{org_id}/users"): Case(params=_org, cross_org="org.manage", body=lambda w, org: {
        "username": f"made-{next(_n)}", "display_name": "x", "password": "Good-pass-123",
        "roles": [permissions.ADMIN_ROLE_BY_KIND[OrgKind(org.kind)]]}),
    ("GET", "/api/v1/users/{user_id}"): Case(params=_victim),
    ("PATCH", "/api/v1/users/{user_id}"): Case(params=_victim, body=lambda w, org: {"display_name": "改名"}),
    ("POST", "/api/v1/users/{user_id}/unlock"): Case(params=_victim),
    ("POST", "/api/v1/users/{user_id}/roles"): Case(params=_victim, body=lambda w, org: {
        "role": permissions.ADMIN_ROLE_BY_KIND[OrgKind(org.kind)]}),
    ("DELETE", "/api/v1/users/{user_id}/roles/{role}"): Case(
        params=lambda w, org: {"user_id": w.victim[org.id].id,
                               "role": permissions.ADMIN_ROLE_BY_KIND[OrgKind(org.kind)]},
        prepare=_give_admin_role),
    ("GET", "/api/v1/api-keys"): Case(),
    ("POST", "/api/v1/api-keys"): Case(body=lambda w, org: {"name": "k", "scopes": ["self.read"]}),
    ("DELETE", "/api/v1/api-keys/{key_id}"): Case(params=lambda w, org: {"key_id": w.key[org.id]}),
    ("POST", "/api/v1/jobs"): Case(body=lambda w, org: {"kind": "system.echo", "params": {"x": 1}}),
    ("GET", "/api/v1/jobs"): Case(),
    ("GET", "/api/v1/jobs/{job_id}"): Case(params=lambda w, org: {"job_id": w.job[org.id]}),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): Case(params=lambda w, org: {"job_id": w.job[org.id]},
                                                   prepare=_fresh_job),
    ("GET", "/api/v1/supervision/rules"): Case(),
    ("PATCH", "/api/v1/supervision/rules/{rule_id}"): Case(
        params=_sup("rule", "rule_id"), prepare=_rule, cross_org="anomaly.configure",
        body=lambda w, org: {"enabled": True}),
    ("GET", "/api/v1/supervision/cases"): Case(),
    ("GET", "/api/v1/supervision/cases/{case_id}"): Case(
        params=_sup("case", "case_id"), prepare=_open_case, cross_org="incident.read"),
    ("POST", "/api/v1/supervision/cases/{case_id}/confirm"): Case(
        params=_sup("case", "case_id"), prepare=_open_case, cross_org="anomaly.review",
        body=lambda w, org: {"reason": "confirmed in the matrix", "severity": "minor"}),
    ("POST", "/api/v1/supervision/cases/{case_id}/release"): Case(
        params=_sup("case", "case_id"), prepare=_open_case, cross_org="anomaly.review",
        body=lambda w, org: {"reason": "false alarm in the matrix"}),
    ("GET", "/api/v1/supervision/blocks"): Case(),
    ("POST", "/api/v1/supervision/blocks/{block_id}/lift"): Case(
        params=_sup("block", "block_id"), prepare=_new_block, cross_org="anomaly.review",
        body=lambda w, org: {"reason": "lifted in the matrix"}),
    ("GET", "/api/v1/supervision/incidents"): Case(),
    ("POST", "/api/v1/supervision/incidents"): Case(body=lambda w, org: {
        "severity": "minor", "title": "matrix incident", "org_id": org.id}),
    ("GET", "/api/v1/audit/events"): Case(),
    ("GET", "/api/v1/audit/events.csv"): Case(),
    ("GET", "/api/v1/audit/events.xlsx"): Case(),
    ("POST", "/api/v1/audit/checkpoints"): Case(),
    ("GET", "/api/v1/audit/checkpoints/latest"): Case(prepare=lambda s, w, o: _checkpoint(s)),
    ("GET", "/api/v1/audit/proofs/inclusion"): Case(prepare=lambda s, w, o: _checkpoint(s),
                                                     query=lambda w, o: {"seq": 1}),
    ("GET", "/api/v1/audit/proofs/consistency"): Case(prepare=lambda s, w, o: _checkpoint(s),
                                                       query=lambda w, o: _sizes()),
}


# Per-area case modules (tests/platform/<area>/matrix_*.py) each export CASES.
for _name in ("tests.platform.governance.matrix_operator", "tests.platform.governance.matrix_scenarios",
              "tests.platform.governance.matrix_products", "tests.platform.governance.matrix_common",
              "tests.platform.products.matrix_products_calls",
              "tests.platform.products.matrix_joint", "tests.platform.products.matrix_sme",
              "tests.platform.products.matrix_reports",
              "tests.platform.assessment.matrix_assessment", "tests.platform.auditwork.matrix_auditwork",
              "tests.platform.billing.matrix_billing"):
    try:
        CASES.update(importlib.import_module(_name).CASES)
    except ModuleNotFoundError as _e:  # an area not built yet
        if _e.name != _name:
            raise


def _protected_routes():
    app = create_app()
    return [(m, p, route_permission(r)) for m, p, r in iter_routes(app.routes)
            if (m, p) not in PUBLIC_ROUTES and not p.startswith("/console")]  # cookie pages: tests/console


def test_every_route_declares_a_permission_or_is_public():
    missing = [(m, p) for m, p, action in _protected_routes() if action is None]
    assert not missing, f"routes with no permission and not on PUBLIC_ROUTES: {missing}"


def test_every_route_has_a_case():
    uncovered = [(m, p) for m, p, _ in _protected_routes() if (m, p) not in CASES]
    assert not uncovered, f"add these routes to CASES: {uncovered}"


# List routes (no object in the path) may show another organisation's rows only to a role holding the
# action named here; otherwise a listed row whose owner ("org_id") is an organisation of the other side
# of the world is a leak (broken object-level authorization on a collection). Rows may name other
# organisations as counterparties (an agreement's parties, a loan's bank): only the owner counts.
LISTS_ACROSS_ORGS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/catalog/resources"): "catalog.read",  # the city's catalogue: every department's resources
    ("GET", "/api/v1/audit/events"): "audit.read_all",  # audit.read alone: own organisation's events
    ("GET", "/api/v1/auditwork/findings"): "audit.read_all",
    ("GET", "/api/v1/supervision/cases"): "incident.read",  # supervision watches every organisation
    ("GET", "/api/v1/supervision/blocks"): "incident.read",
    ("GET", "/api/v1/supervision/incidents"): "incident.read",
}


def _foreign_owners(response, foreign: set[int]) -> set[int]:
    """Owners ("org_id") from the other side of the world of the rows a JSON list response shows."""
    if "json" not in response.headers.get("content-type", ""):
        return set()
    body = response.json()
    rows = body if isinstance(body, list) else (
        [row for value in body.values() if isinstance(value, list) for row in value] if isinstance(body, dict) else [])
    return {row["org_id"] for row in rows if isinstance(row, dict) and row.get("org_id") in foreign}


def _call(client, method, path, params, body, headers, query=None, files=None):
    if files:
        return client.request(method, path.format(**params), files=files, headers=headers, params=query)
    return client.request(method, path.format(**params), json=body, headers=headers, params=query)


def test_route_by_role_matrix(client, session, db_settings):
    _catalog.clear()
    _sandbox.clear()
    world = build_world(session)
    tokens = {role: login(client, user.username) for role, user in world.actor.items()}
    # Lists after the routes with objects in their path: by then both sides own objects of every kind.
    routes = sorted(_protected_routes(), key=lambda r: (CASES[(r[0], r[1])].last, r[0] == "GET" and "{" not in r[1]))
    failures: list[str] = []
    checked = {"allowed": 0, "refused": 0, "foreign": 0, "lists": 0}
    away = {o.id for o in world.away.values()}
    for method, path, action in routes:
        case = CASES[(method, path)]
        allowed_roles = [r for r in permissions.ROLES.values() if action in r.actions]
        assert allowed_roles, f"{method} {path}: no role holds {action}"
        for role in permissions.ROLES.values():
            org = world.home[role.org_kind]
            if case.prepare:
                case.prepare(session, world, org)
            r = _call(client, method, path, case.params(world, org), case.body(world, org), tokens[role.name],
                      case.query(world, org), case.files(world, org) if case.files else None)
            if action in role.actions:
                checked["allowed"] += 1
                if r.status_code >= 400:
                    failures.append(f"{role.name} {method} {path}: expected success, got {r.status_code} {r.text[:200]}")
                elif method == "GET" and "{" not in path:
                    checked["lists"] += 1
                    leaked = _foreign_owners(r, away)
                    if leaked and LISTS_ACROSS_ORGS.get((method, path)) not in role.actions:
                        failures.append(f"{role.name} {method} {path}: lists objects of other organisations "
                                        f"(org ids {sorted(leaked)})")
                continue
            checked["refused"] += 1
            if r.status_code != 403:
                failures.append(f"{role.name} {method} {path}: expected 403, got {r.status_code}")
        # Foreign objects: an allowed role pointing at another organisation's object.
        if "{" in path:
            for role in allowed_roles:
                org = world.away[role.org_kind]
                if case.prepare:
                    case.prepare(session, world, org)
                r = _call(client, method, path, case.params(world, org), case.body(world, org), tokens[role.name],
                          None, case.files(world, org) if case.files else None)
                checked["foreign"] += 1
                if case.cross_org and case.cross_org in role.actions:
                    if r.status_code >= 400:
                        failures.append(f"{role.name} {method} {path} across organisations: "
                                        f"expected success, got {r.status_code}")
                elif r.status_code != 404:
                    failures.append(f"{role.name} {method} {path} on a foreign object: expected 404, "
                                    f"got {r.status_code}")
    print(f"\nroute matrix [{db_settings.effective_database_url.split(':')[0]}]: {checked}")
    assert not failures, "\n".join(failures)
    assert checked["allowed"] and checked["refused"] and checked["foreign"]
