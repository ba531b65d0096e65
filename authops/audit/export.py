"""`authops audit export`: the log and its signed checkpoints in one file an auditor takes away.

JSON Lines: a header; every checkpoint (signed statement); consistency proofs between
consecutive checkpoints; then every event's canonical bytes in order. A fresh checkpoint
is signed first, so every exported event is covered by a signature.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from authops.audit import canonical, merkle
from authops.audit.checkpoints import checkpoint_now, leaf_hashes
from authops.audit.models import AuditCheckpoint, AuditEvent
from authops.core.clock import utcnow
from authops.core.db import session_scope
from authops.core.settings import Settings

FORMAT = "authops-audit-log"
BATCH = 10_000


def _open(path: Path, mode: str):
    return gzip.open(path, mode + "t", encoding="utf-8") if path.suffix == ".gz" else \
        open(path, mode, encoding="utf-8")


def export(settings: Settings, path: Path) -> dict:
    """Write the whole log to `path` (gzip when it ends in .gz); returns counts."""
    cp = checkpoint_now(settings, force=True)
    size = cp.tree_size if cp else 0
    with session_scope(settings) as session:
        checkpoints = list(session.exec(select(AuditCheckpoint).where(AuditCheckpoint.tree_size <= size)
                                        .order_by(AuditCheckpoint.tree_size)).scalars().all())
        leaves = leaf_hashes(session, 0, size)
        with _open(path, "w") as out:
            _line(out, {"format": FORMAT, "version": 1, "exported_at": canonical.timestamp(utcnow()),
                        "events": size, "checkpoints": len(checkpoints)})
            for c in checkpoints:
                _line(out, {"type": "checkpoint", "statement": base64.b64encode(c.statement).decode(),
                            "signature": base64.b64encode(c.signature).decode()})
            for old, new in zip(checkpoints, checkpoints[1:]):
                proof = merkle.consistency_proof(leaves, old.tree_size, new.tree_size)
                _line(out, {"type": "consistency", "old_size": old.tree_size, "new_size": new.tree_size,
                            "proof": [p.hex() for p in proof]})
            _write_events(session, out, size)
    return {"events": size, "checkpoints": len(checkpoints), "path": str(path)}


def _write_events(session: Session, out, size: int) -> None:
    lo = 0
    while lo < size:
        hi = min(size, lo + BATCH)
        rows = session.execute(select(AuditEvent.seq, AuditEvent.hash, AuditEvent.canonical)
                               .where(AuditEvent.seq > lo, AuditEvent.seq <= hi).order_by(AuditEvent.seq)).all()
        for seq, digest, data in rows:
            _line(out, {"type": "event", "seq": seq, "hash": digest,
                        "canonical": base64.b64encode(bytes(data)).decode()})
        lo = hi


def _line(out, obj: dict) -> None:
    out.write(json.dumps(obj, separators=(",", ":")) + "\n")
