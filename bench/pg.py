"""A scratch PostgreSQL database for a benchmark run: created, migrated, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

POSTGRES_ADMIN = os.environ.get("AUTHOPS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def scratch_database(folder: Path, prefix: str = "authops_bench") -> Iterator[str]:
    """Yield the URL of a new database migrated to head (data folder `folder`); drop it on exit."""
    from sqlalchemy import create_engine, text

    from authops.core import db as core_db
    from authops.core.settings import Settings

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(POSTGRES_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        core_db.upgrade(Settings(data_dir=folder, database_url=url))
        yield url
    finally:
        core_db.dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
