"""Access-log integrity for a yearly audit: export the whole log, verify it offline, count a year range.

The export is signed and verified with nothing but the file and the public keys, exactly as an
auditor does with `authops audit verify`; then the audited years' events are counted and their
sequence range given (all inside the verified log). Integrity of a year needs the whole chain before it, so the
whole log is always verified; the year range only says which events the audit is about.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from authops.audit.export import export
from authops.audit.models import AuditEvent
from authops.audit.signing import load_signing_keys
from authops.audit.verify import load_keys, verify_file
from authops.billing.rating import year_bounds
from authops.core.errors import InvalidInput
from authops.core.settings import Settings


def check_years(from_year: int, to_year: int) -> None:
    if not 2000 <= from_year <= to_year <= 9999:
        raise InvalidInput("from_year and to_year are years with from_year <= to_year",
                           details={"field": "from_year" if from_year > to_year else "to_year"})


def verify_years(session: Session, settings: Settings, from_year: int, to_year: int) -> dict[str, Any]:
    """Verification result of the whole log and the audited years' share of it."""
    check_years(from_year, to_year)
    keys = load_keys([k.public_pem for k in load_signing_keys(settings)])
    with tempfile.TemporaryDirectory(prefix="authops-audit-") as folder:
        path = Path(folder) / "audit-log.jsonl.gz"
        export(settings, path)
        report = verify_file(path, keys)
    start, _ = year_bounds(from_year)
    _, end = year_bounds(to_year)
    lo, hi, n = session.execute(select(func.min(AuditEvent.seq), func.max(AuditEvent.seq), func.count())
                                .where(AuditEvent.ts >= start, AuditEvent.ts < end)).one()
    return {"from_year": from_year, "to_year": to_year, "ok": report.ok, "summary": report.summary(),
            "events_verified": report.events, "checkpoints": report.checkpoints, "proofs": report.proofs,
            "key_ids": report.key_ids, "problem": report.problem,
            "events_in_range": int(n), "first_seq": lo, "last_seq": hi}
