"""The same migrations build the schema on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from authops.core import db
from authops.core.models_registry import import_all_models


def test_schema_matches_models(db_settings):
    import_all_models()
    with db.get_engine(db_settings).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, db.metadata)
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_upgrade_is_idempotent_and_at_head(db_settings):
    db.upgrade(db_settings)
    assert db.current_revision(db_settings) is not None
    tables = set(inspect(db.get_engine(db_settings)).get_table_names())
    assert {"organisation", "app_user", "api_key", "casbin_rule", "job"} <= tables
