"""Shared fixtures: a migrated database per test on SQLite and on PostgreSQL.

`db_settings` is parametrized over both databases, so every test that touches the
database runs twice. PostgreSQL gets one database per test session (migrated once) and
its tables are emptied after each test; SQLite copies a migrated template file.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from authops.core import db as core_db
from authops.core.settings import Settings, reset_settings
from tests.support.services import POSTGRES_ADMIN_URL, need_postgres

ENV_KEYS = ("AUTHOPS_DATA_DIR", "AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL", "AUTHOPS_STORAGE_URL")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sqlite-template")
    settings = Settings(data_dir=folder, database_url=f"sqlite:///{folder / 'template.sqlite3'}")
    core_db.upgrade(settings)
    core_db.dispose_engines()
    return folder / "template.sqlite3"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    need_postgres()
    name = f"authops_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    core_db.upgrade(Settings(database_url=url))
    yield url
    core_db.dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty_postgres(url: str) -> None:
    engine = core_db.get_engine(Settings(database_url=url))
    for attempt in range(5):
        try:
            _truncate(engine)
            return
        except OperationalError:  # a straggling connection (a worker finishing up) held a lock
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _truncate(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '5s'"))
        tables = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"))]
        if tables:
            # Test cleanup only: replica mode skips the audit log's append-only triggers.
            conn.execute(text("SET session_replication_role = replica"))
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
            conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": "0" * 64})
            conn.execute(text("SET session_replication_role = DEFAULT"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_settings(request, tmp_path, monkeypatch, sqlite_template) -> Iterator[Settings]:
    """Settings for a migrated, empty database; the environment says the same (for subprocesses)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if request.param == "sqlite":
        db_file = data_dir / "authops.sqlite3"
        shutil.copy(sqlite_template, db_file)
        url = f"sqlite:///{db_file}"
    else:
        url = request.getfixturevalue("postgres_url")
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AUTHOPS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUTHOPS_DATABASE_URL", url)
    reset_settings()
    settings = Settings()
    yield settings
    from authops.core.broker import stop_broker

    stop_broker(settings)  # a test that dispatched a job started this folder's embedded broker
    from authops.audit.anomaly import service as anomaly

    anomaly.settle()  # the evaluator thread must not be reading while the tables are emptied
    reset_settings()
    if request.param == "postgresql":
        _empty_postgres(url)
    else:
        core_db.dispose_engines()


@pytest.fixture
def session(db_settings) -> Iterator[Session]:
    with Session(core_db.get_engine(db_settings), expire_on_commit=False) as s:
        yield s


@pytest.fixture
def app(db_settings):
    from authops.app import create_app

    return create_app(db_settings)


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c
