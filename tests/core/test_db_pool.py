"""Pooled PostgreSQL connections: one the server closed while it sat idle is replaced before use."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from authops.core import db


@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_a_connection_the_server_closed_while_idle_is_replaced_unseen(db_settings, monkeypatch):
    engine = db.get_engine(db_settings)
    with engine.connect() as c:
        first = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as c:  # checked out again at once: the same connection, not pinged
        assert c.execute(text("SELECT pg_backend_pid()")).scalar_one() == first
    other = db.make_engine(db_settings.effective_database_url)
    with other.connect() as admin:  # the server ends it (a restart, an idle timeout, a DBA)
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
    other.dispose()
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # it has now sat idle long enough to be pinged
    with engine.connect() as c:  # the ping finds it dead; the pool connects afresh; the caller sees nothing
        assert c.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
