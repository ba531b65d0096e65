"""PostgreSQL grants for the application's role: it may add to the audit log, never change it.

Run once per database as its owner (`authops db grant-app-role authops_app`), then point
AUTHOPS_DATABASE_URL at that role. The append-only triggers stop even the owner; the grants
make an edit by the application fail before any trigger is reached.
"""

from __future__ import annotations

import re

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from authops.core.errors import InvalidInput

APPEND_ONLY = ("audit_event", "audit_checkpoint", "audit_witness_receipt")
ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_app_role(engine: Engine, role: str) -> list[str]:
    if engine.dialect.name != "postgresql":
        raise InvalidInput("grants apply to PostgreSQL; SQLite relies on the append-only triggers")
    if not ROLE_RE.match(role):
        raise InvalidInput("role must be a lowercase PostgreSQL identifier", details={"field": "role"})
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    done = []
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        if not exists:
            raise InvalidInput(f"role {role} does not exist: CREATE ROLE {role} LOGIN PASSWORD '…' first")
        conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        for table in tables:
            conn.execute(text(f'REVOKE ALL ON "{table}" FROM "{role}"'))
            if table in APPEND_ONLY:
                conn.execute(text(f'GRANT SELECT, INSERT ON "{table}" TO "{role}"'))
                done.append(f"{table}: SELECT, INSERT")
            else:
                conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO "{role}"'))
                done.append(f"{table}: SELECT, INSERT, UPDATE, DELETE")
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    return done
