"""Workspaces: the data scope an approved scenario grants a partner, and what it may see there.

A workspace lists, per resource, the fields and share modes the approval grants. Jobs naming
anything else are refused before they run; schemas and mock datasets of granted resources are
shown in full; real rows never.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core.data.schema import ResourceSchema, ShareMode
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from authops.core.identity import OrgKind
from authops.platform.catalog import service as catalog
from authops.platform.identity.models import Organisation
from authops.sandbox.models import Workspace, WorkspaceGrant

STATES = ("active", "suspended", "closed")


class OutOfScope(Forbidden):
    """A job names data outside its workspace's grants; details list every problem."""

    code = "out_of_scope"


def create_workspace(session: Session, *, org_id: int, name: str, grants: Iterable[dict[str, Any]],
                     scenario: str = "", approval_ref: str = "", readers: Iterable[int] = (),
                     actor: audit_log.Actor) -> Workspace:
    readers = list(readers)
    """Open a workspace for a partner with its grants: [{resource, fields: [...] | ["*"], share_modes}]."""
    org = session.get(Organisation, org_id)
    if org is None or org.kind != OrgKind.PARTNER.value:
        raise InvalidInput(f"organisation {org_id} is not a partner; workspaces are opened for partners",
                           details={"field": "org_id"})
    if not name.strip():
        raise InvalidInput("name the workspace", details={"field": "name"})
    unknown = [r for r in readers if session.get(Organisation, int(r)) is None]
    if unknown:
        raise InvalidInput(f"readers: no organisation {unknown[0]}", details={"field": "readers"})
    ws = Workspace(org_id=org_id, name=name.strip()[:200], scenario=scenario[:500],
                   approval_ref=approval_ref[:100], readers=sorted({int(r) for r in readers} - {org_id}),
                   created_by=actor.name[:64])
    session.add(ws)
    session.flush()
    grants = list(grants)
    if not grants:
        raise InvalidInput("grant at least one resource", details={"field": "grants"})
    for i, g in enumerate(grants):
        _add_grant(session, ws, g, f"grants[{i}]")
    audit_log.record(session, actor, "workspace.open", object_type="workspace", object_id=ws.id,
                     details={"partner_org_id": org_id, "resources": sorted(g["resource"] for g in grants)})
    session.flush()
    return ws


def _add_grant(session: Session, ws: Workspace, g: dict[str, Any], where: str) -> WorkspaceGrant:
    code = str(g.get("resource", ""))
    try:
        res = catalog.get_resource(session, code)
    except NotFound:
        raise InvalidInput(f"{where}.resource: no data resource with code {code!r}",
                           details={"field": f"{where}.resource"}) from None
    schema = catalog.schema_of(session, res)
    fields = list(g.get("fields") or ["*"])
    if fields == ["*"]:
        fields = list(schema.names)
    unknown = [f for f in fields if f not in schema.names]
    if unknown:
        raise InvalidInput(f"{where}.fields: {code} has no field {unknown[0]!r}",
                           details={"field": f"{where}.fields"})
    modes = list(g.get("share_modes") or res.share_modes)
    try:
        parsed = [ShareMode(x).value for x in modes]
    except ValueError:
        raise InvalidInput(f"{where}.share_modes: use verify, query or batch",
                           details={"field": f"{where}.share_modes"}) from None
    beyond = [x for x in parsed if x not in res.share_modes]
    if beyond:
        raise InvalidInput(f"{where}.share_modes: {code} is registered for {', '.join(res.share_modes)} only, "
                           f"not {beyond[0]}", details={"field": f"{where}.share_modes"})
    if session.exec(select(WorkspaceGrant).where(WorkspaceGrant.workspace_id == ws.id,
                                                 WorkspaceGrant.resource_code == code)).first():
        raise Conflict(f"{where}: {code} is granted twice")
    grant = WorkspaceGrant(workspace_id=ws.id, resource_code=code, fields=fields, share_modes=parsed)
    session.add(grant)
    session.flush()
    return grant


def get_workspace(session: Session, workspace_id: int, *, org_id: int | None = None) -> Workspace:
    """The workspace; NotFound also when it belongs to another organisation (org_id given)."""
    ws = session.get(Workspace, workspace_id)
    if ws is None or (org_id is not None and ws.org_id != org_id):
        raise NotFound(f"workspace {workspace_id} not found")
    return ws


def active_workspace(session: Session, workspace_id: int, *, org_id: int | None = None) -> Workspace:
    ws = get_workspace(session, workspace_id, org_id=org_id)
    if ws.state != "active":
        raise Conflict(f"workspace {workspace_id} is {ws.state}; jobs run only in an active workspace")
    return ws


def set_state(session: Session, ws: Workspace, state: str, *, actor: audit_log.Actor) -> Workspace:
    if state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}", details={"field": "state"})
    old, ws.state = ws.state, state
    session.add(ws)
    audit_log.record(session, actor, "workspace.state", object_type="workspace", object_id=ws.id,
                     details={"from": old, "to": state})
    session.flush()
    return ws


def list_workspaces(session: Session, *, org_id: int | None = None) -> list[Workspace]:
    stmt = select(Workspace).order_by(Workspace.id)
    if org_id is not None:
        stmt = stmt.where(Workspace.org_id == org_id)
    return list(session.exec(stmt))


def grants(session: Session, ws: Workspace) -> list[WorkspaceGrant]:
    return list(session.exec(select(WorkspaceGrant).where(WorkspaceGrant.workspace_id == ws.id)
                             .order_by(WorkspaceGrant.resource_code)))


def scope(session: Session, ws: Workspace) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(resource -> granted fields, resource -> granted share modes)."""
    gs = grants(session, ws)
    return {g.resource_code: list(g.fields) for g in gs}, {g.resource_code: list(g.share_modes) for g in gs}


def schemas(session: Session, resources: Iterable[tuple[str, int]]) -> dict[str, dict[int, ResourceSchema]]:
    """The schema versions a job names, for planning: {code: {version: schema}}."""
    out: dict[str, dict[int, ResourceSchema]] = {}
    for code, version in resources:
        try:
            res = catalog.get_resource(session, code)
            out.setdefault(code, {})[version] = catalog.schema_of(session, res, version)
        except NotFound:
            continue  # the planner names the unknown resource or version
    return out


def view(session: Session, ws: Workspace) -> dict[str, Any]:
    """What the partner sees: each granted resource's schema (granted fields only) and mock size."""
    resources = []
    for g in grants(session, ws):
        res = catalog.get_resource(session, g.resource_code)
        schema = catalog.schema_of(session, res)
        fields = [{"name": f.name, "name_zh": f.name_zh, "type": f.dtype.value, "kind": f.kind.value,
                   "grade": f.grade.value, "pii": f.pii, "enum": list(f.enum) if f.enum else None}
                  for f in schema.fields if f.name in g.fields]
        resources.append({"resource": g.resource_code, "name_zh": res.name_zh, "name_en": res.name_en,
                          "schema_version": res.schema_version, "share_modes": g.share_modes,
                          "privacy_unit": schema.privacy_unit.value, "unit_field": schema.unit_field,
                          "key": list(schema.key), "fields": fields, "mock_rows": res.mock_rows})
    return {"id": ws.id, "name": ws.name, "scenario": ws.scenario, "state": ws.state,
            "approval_ref": ws.approval_ref, "org_id": ws.org_id, "resources": resources}


def mock_rows(session: Session, settings, ws: Workspace, resource: str, *, limit: int = 1000) -> dict[str, Any]:
    """The granted fields of a resource's mock dataset, in full (synthetic, never real)."""
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store

    allowed, _ = scope(session, ws)
    if resource not in allowed:
        raise NotFound(f"{resource} is not granted to workspace {ws.id}")
    res = catalog.get_resource(session, resource)
    if not res.mock_object_key:
        raise NotFound(f"{resource} has no mock dataset yet; the providing department publishes it")
    table = read_dataset(get_object_store(settings), res.mock_object_key, columns=allowed[resource])
    table = table.slice(0, limit)
    rows = table.to_pylist()
    return {"resource": resource, "mock": True, "rows": len(rows), "total": res.mock_rows,
            "columns": table.column_names, "data": rows}
