"""Alembic environment: runs on the connection authops hands it (SQLite or PostgreSQL)."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from authops.core.models_registry import import_all_models
from authops.core.db import metadata

import_all_models()
config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section) or {},
                                prefix="sqlalchemy.", poolclass=pool.NullPool,
                                url=config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
