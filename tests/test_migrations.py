"""The same migrations build the schema on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import BigInteger, Integer, inspect

from authops.core import db
from authops.core.models_registry import import_all_models


def _same_type(ctx, _inspected_column, _metadata_column, inspected_type, metadata_type):
    """The default comparison, except that SQLite's INTEGER is a BIGINT (64 bits: amounts in fen)."""
    if (ctx.dialect.name == "sqlite" and isinstance(metadata_type, BigInteger)
            and isinstance(inspected_type, Integer)):
        return False
    return None


def test_schema_matches_models(db_settings):
    import_all_models()
    with db.get_engine(db_settings).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": _same_type})
        diff = compare_metadata(ctx, db.metadata)
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_upgrade_is_idempotent_and_at_head(db_settings):
    db.upgrade(db_settings)
    assert db.current_revision(db_settings) is not None
    tables = set(inspect(db.get_engine(db_settings)).get_table_names())
    assert {"organisation", "app_user", "api_key", "casbin_rule", "job"} <= tables
