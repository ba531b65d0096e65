"""Audit routes: search and export the log, checkpoints, proofs and the public keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from authops.audit import checkpoints, search as audit_search
from authops.audit import log as audit_log
from authops.audit.signing import load_signing_keys
from authops.core.clock import as_utc
from authops.core.identity import Principal
from authops.core.types import UtcDateTime
from authops.platform.deps import AuthorizerDep, SessionDep, SettingsDep, actor_of, require

# Query bounds: ids are 32-bit, the log's sequence numbers 64-bit; larger numbers are refused (422).
MAX_ID = 2_147_483_647
MAX_SEQ = 2**63 - 1

router = APIRouter(prefix="/audit", tags=["audit"])


class EventOut(BaseModel):
    seq: int
    ts: UtcDateTime
    actor_kind: str
    actor_id: int | None
    actor_name: str
    org_id: int | None
    action: str
    object_type: str | None
    object_id: str | None
    outcome: str
    ip: str | None
    region: str | None
    rows: int | None
    bytes: int | None
    subjects: int | None
    details: dict
    hash: str


class CheckpointOut(BaseModel):
    tree_size: int
    root_hash: str
    key_id: str
    created_at: UtcDateTime
    statement: str
    signature: str


def _filter(org_id: int | None = Query(None, ge=1, le=MAX_ID), actor_kind: str | None = Query(None, max_length=16),
            actor_id: int | None = Query(None, ge=1, le=MAX_ID), action: str | None = Query(None, max_length=64),
            object_type: str | None = Query(None, max_length=64),
            object_id: str | None = Query(None, max_length=128),
            outcome: str | None = Query(None, max_length=16), since: datetime | None = None,
            until: datetime | None = None) -> audit_search.Filter:
    norm = lambda d: as_utc(d).replace(tzinfo=None) if d else None  # noqa: E731
    return audit_search.Filter(org_id=org_id, actor_kind=actor_kind, actor_id=actor_id, action=action,
                               object_type=object_type, object_id=object_id, outcome=outcome,
                               since=norm(since), until=norm(until))


FilterDep = Annotated[audit_search.Filter, Depends(_filter)]


def _scope(principal: Principal, authorizer) -> int | None:
    """All organisations for audit.read_all holders; otherwise one's own only."""
    return None if authorizer.allowed(principal, "audit.read_all") else principal.org_id


@router.get("/events", response_model=list[EventOut])
def search_events(session: SessionDep, authorizer: AuthorizerDep, f: FilterDep,
                  principal: Annotated[Principal, require("audit.read")],
                  limit: int = Query(100, ge=1, le=audit_search.MAX_PAGE),
                  before_seq: int | None = Query(None, ge=1, le=MAX_SEQ)):
    """Search the log, newest first; page with before_seq. Others' events need audit.read_all."""
    events = audit_search.search(session, f, only_org=_scope(principal, authorizer), limit=limit,
                                 before_seq=before_seq)
    return [EventOut(seq=e.seq, ts=e.ts, actor_kind=e.actor_kind, actor_id=e.actor_id, actor_name=e.actor_name,
                     org_id=e.org_id, action=e.action, object_type=e.object_type, object_id=e.object_id,
                     outcome=e.outcome, ip=e.ip, region=e.region, rows=e.rows, bytes=e.nbytes,
                     subjects=e.subjects, details=audit_search.details_of(e), hash=e.hash) for e in events]


EXPORTS = {
    "csv": (audit_search.export_csv, "text/csv; charset=utf-8"),
    "xlsx": (audit_search.export_xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}


def _export(fmt: str, session, authorizer, f: audit_search.Filter, principal: Principal) -> Response:
    """A search as a file; the export itself is logged with its size."""
    build, media_type = EXPORTS[fmt]
    data = build(session, f, only_org=_scope(principal, authorizer))
    audit_log.record(session, actor_of(principal), "audit.export", object_type="search", bytes=len(data),
                     details={"format": fmt})
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="audit-events.{fmt}"'})


@router.get("/events.csv")
def export_events_csv(session: SessionDep, authorizer: AuthorizerDep, f: FilterDep,
                      principal: Annotated[Principal, require("audit.read")]):
    """The search as CSV (UTF-8 with BOM, times in Asia/Shanghai)."""
    return _export("csv", session, authorizer, f, principal)


@router.get("/events.xlsx")
def export_events_xlsx(session: SessionDep, authorizer: AuthorizerDep, f: FilterDep,
                       principal: Annotated[Principal, require("audit.read")]):
    """The search as an Excel workbook."""
    return _export("xlsx", session, authorizer, f, principal)


def _cp_out(cp) -> CheckpointOut:
    import base64

    return CheckpointOut(tree_size=cp.tree_size, root_hash=cp.root_hash, key_id=cp.key_id,
                         created_at=cp.created_at, statement=base64.b64encode(cp.statement).decode(),
                         signature=base64.b64encode(cp.signature).decode())


@router.get("/checkpoints/latest", response_model=CheckpointOut)
def latest_checkpoint(session: SessionDep, principal: Annotated[Principal, require("audit.verify")]):
    cp = checkpoints.latest(session)
    if cp is None:
        from authops.core.errors import NotFound
        raise NotFound("no checkpoint yet; POST /api/v1/audit/checkpoints to create one")
    return _cp_out(cp)


@router.post("/checkpoints", response_model=CheckpointOut, status_code=201)
def create_checkpoint(session: SessionDep, settings: SettingsDep,
                      principal: Annotated[Principal, require("audit.verify")]):
    """Sign a checkpoint now (it is also pushed to the witness)."""
    cp = checkpoints.create_checkpoint(session, settings, force=True)
    session.commit()
    checkpoints.publish(session, settings, cp)
    return _cp_out(cp)


@router.get("/proofs/inclusion")
def inclusion_proof(session: SessionDep, principal: Annotated[Principal, require("audit.verify")],
                    seq: int = Query(ge=1, le=MAX_SEQ), tree_size: int | None = Query(None, ge=1, le=MAX_SEQ)):
    """RFC 6962 proof that event `seq` is in the signed tree of `tree_size` (latest by default)."""
    return checkpoints.inclusion(session, seq, tree_size).__dict__


@router.get("/proofs/consistency")
def consistency_proof(session: SessionDep, principal: Annotated[Principal, require("audit.verify")],
                      old_size: int = Query(ge=1, le=MAX_SEQ), new_size: int = Query(ge=1, le=MAX_SEQ)):
    """RFC 6962 proof that the checkpoint at new_size extends the one at old_size."""
    return {"old_size": old_size, "new_size": new_size,
            "proof": checkpoints.consistency(session, old_size, new_size)}


@router.get("/public-keys", response_class=PlainTextResponse)
def public_keys(settings: SettingsDep):
    """The Ed25519 public keys that verify checkpoints (public: anyone may verify)."""
    return "".join(k.public_pem for k in load_signing_keys(settings))
