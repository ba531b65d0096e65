"""Signed Merkle checkpoints over the whole log, and inclusion and consistency proofs.

A checkpoint states "the first tree_size events have RFC 6962 Merkle root R", signed with
Ed25519. Its frontier (the tree's right edge) makes the next checkpoint cost O(new events).
Each checkpoint is stored in the database, as an object, and pushed to a witness the
operator cannot rewrite; an auditor keeps one and later proves the log extends it.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from authops.audit import canonical, merkle
from authops.audit import log as audit_log
from authops.audit.models import AuditCheckpoint, AuditEvent, AuditHead, WitnessReceipt
from authops.audit.signing import load_signing_keys
from authops.audit.witness import get_witness
from authops.core.clock import utcnow
from authops.core.errors import AuthopsError, InvalidInput, NotFound
from authops.core.settings import Settings

log = logging.getLogger(__name__)
LOG_ID = "authops"
BATCH = 10_000


def statement_bytes(*, tree_size: int, root: str, key_id: str, ts: str, prev_size: int,
                    prev_root: str) -> bytes:
    return canonical.encode({"log": LOG_ID, "v": 1, "tree_size": tree_size, "root": root, "key_id": key_id,
                             "ts": ts, "prev_size": prev_size, "prev_root": prev_root})


def latest(session: Session) -> AuditCheckpoint | None:
    return session.exec(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)).scalars().first()


def leaf_hashes(session: Session, start: int, stop: int) -> list[bytes]:
    """Merkle leaf hashes of events with start < seq <= stop, in order (read in batches)."""
    out: list[bytes] = []
    lo = start
    while lo < stop:
        hi = min(stop, lo + BATCH)
        rows = session.execute(select(AuditEvent.seq, AuditEvent.canonical)
                               .where(AuditEvent.seq > lo, AuditEvent.seq <= hi).order_by(AuditEvent.seq)).all()
        for expected, (seq, data) in enumerate(rows, start=lo + 1):
            if seq != expected:
                raise AuthopsError(f"audit event {expected} is missing from the database", code="log_gap",
                                   status_code=500)
            out.append(merkle.leaf_hash(bytes(data)))
        if len(rows) != hi - lo:
            raise AuthopsError(f"audit events {lo + 1}..{hi} are incomplete in the database", code="log_gap",
                               status_code=500)
        lo = hi
    return out


def create_checkpoint(session: Session, settings: Settings, *, force: bool = False) -> AuditCheckpoint | None:
    """Sign a checkpoint at the current head (None when nothing new and not forced)."""
    prev = latest(session)
    head = session.get(AuditHead, 1)
    size = head.seq if head else 0
    prev_size = prev.tree_size if prev else 0
    if size == prev_size and not (force and prev is None):
        return prev if force else None
    frontier = merkle.CompactRange.from_dict(prev.frontier) if prev else merkle.CompactRange()
    frontier.extend(leaf_hashes(session, prev_size, size))
    root = frontier.root().hex()
    key = load_signing_keys(settings)[0]
    stmt = statement_bytes(tree_size=size, root=root, key_id=key.key_id, ts=canonical.timestamp(utcnow()),
                           prev_size=prev_size, prev_root=prev.root_hash if prev else merkle.EMPTY_ROOT.hex())
    cp = AuditCheckpoint(tree_size=size, root_hash=root, frontier=frontier.to_dict(), key_id=key.key_id,
                         statement=stmt, signature=key.sign(stmt))
    session.add(cp)
    session.flush()
    audit_log.record(session, audit_log.SYSTEM, "audit.checkpoint", object_type="checkpoint", object_id=size)
    return cp


def checkpoint_document(cp: AuditCheckpoint) -> bytes:
    """The portable form of a checkpoint (what witnesses and auditors keep)."""
    return canonical.encode({"statement": base64.b64encode(cp.statement).decode(),
                             "signature": base64.b64encode(cp.signature).decode(), "key_id": cp.key_id,
                             "tree_size": cp.tree_size, "root": cp.root_hash})


def publish(session: Session, settings: Settings, cp: AuditCheckpoint) -> list[WitnessReceipt]:
    """Store the checkpoint as an object and push it to the witness; receipts record the outcome."""
    from authops.core.storage import get_object_store

    doc = checkpoint_document(cp)
    name = f"checkpoint-{cp.tree_size:012d}.json"
    receipts = []
    for where, put in (("object-store", lambda: get_object_store(settings).put(f"audit/checkpoints/{name}", doc)),
                       ("witness", lambda: get_witness(settings).put(name, doc))):
        try:
            put()
            receipts.append(WitnessReceipt(tree_size=cp.tree_size, witness=where, ok=True))
        except AuthopsError as exc:
            log.warning("checkpoint %s not stored at %s: %s", cp.tree_size, where, exc.message)
            receipts.append(WitnessReceipt(tree_size=cp.tree_size, witness=where, ok=False, detail=exc.message[:500]))
    for r in receipts:
        session.add(r)
    session.flush()
    return receipts


def checkpoint_now(settings: Settings, *, force: bool = False) -> AuditCheckpoint | None:
    """Create, commit and publish a checkpoint; safe when several processes race."""
    from authops.core.db import session_scope

    try:
        with session_scope(settings) as session:
            cp = create_checkpoint(session, settings, force=force)
    except IntegrityError:  # another process signed the same size first
        with session_scope(settings) as session:
            return latest(session)
    if cp is not None:
        with session_scope(settings) as session:
            if not session.exec(select(func.count()).select_from(WitnessReceipt)
                                .where(WitnessReceipt.tree_size == cp.tree_size, WitnessReceipt.ok)).scalar():
                publish(session, settings, cp)
    return cp


def get_checkpoint(session: Session, tree_size: int) -> AuditCheckpoint:
    cp = session.exec(select(AuditCheckpoint).where(AuditCheckpoint.tree_size == tree_size)).scalars().first()
    if cp is None:
        raise NotFound(f"no checkpoint at tree size {tree_size}")
    return cp


@dataclass
class InclusionProof:
    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: list[str]


def inclusion(session: Session, seq: int, tree_size: int | None = None) -> InclusionProof:
    """Proof that event `seq` is in the tree of a signed checkpoint (the latest by default)."""
    cp = get_checkpoint(session, tree_size) if tree_size else latest(session)
    if cp is None:
        raise NotFound("no checkpoint yet; create one first")
    if not 1 <= seq <= cp.tree_size:
        raise InvalidInput(f"event {seq} is not covered by the checkpoint at size {cp.tree_size}",
                           details={"field": "seq"})
    leaves = leaf_hashes(session, 0, cp.tree_size)
    proof = merkle.inclusion_proof(leaves, seq - 1)
    return InclusionProof(seq=seq, tree_size=cp.tree_size, leaf_hash=leaves[seq - 1].hex(), root=cp.root_hash,
                          proof=[p.hex() for p in proof])


def consistency(session: Session, old_size: int, new_size: int) -> list[str]:
    """Proof that the checkpoint at new_size extends the one at old_size."""
    get_checkpoint(session, old_size)
    get_checkpoint(session, new_size)
    if old_size > new_size:
        raise InvalidInput("old size must not exceed new size", details={"field": "old_size"})
    leaves = leaf_hashes(session, 0, new_size)
    return [p.hex() for p in merkle.consistency_proof(leaves, old_size, new_size)]
