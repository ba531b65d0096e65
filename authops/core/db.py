"""Database engine and sessions. Services flush; the edge (request or task) commits."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import MetaData, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from authops.core.settings import Settings, get_settings

# Explicit constraint names so migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata

CONNECT_TIMEOUT_SECONDS = 10
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # SQLite connections are cheap and writers queue on the file lock (busy_timeout), so a
        # wide pool: the API's threads and an embedded worker's threads never wait on the pool.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **({} if ":memory:" in url else {"pool_size": 20, "max_overflow": 40}))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    _cache_long_statements()
    # connect_timeout: an unreachable server (a host down, a dropped route) fails a request in seconds,
    # as a refused connection does, instead of after the operating system's TCP retries (minutes).
    engine = create_engine(url, pool_size=10, max_overflow=20,
                           connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    event.listen(engine.pool, "checkin", _checked_in)
    event.listen(engine.pool, "checkout", _ping_if_idle)
    return engine


def _cache_long_statements() -> None:
    """psycopg converts a statement's text to PostgreSQL's form with a regular-expression parser and
    caches the result only for statements under 4,096 characters and 50 parameters. The hot path's
    statements are longer (the audit append with its gate, the call admission, the batched call
    check), and parsing them on every execution cost about a tenth of a product call's CPU. The limits
    are raised (the cache is an LRU of 128 texts, so memory stays bounded)."""
    from psycopg import _queries

    _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, 64 * 1024)
    _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, 512)


# A pooled connection is pinged before use only when it sat idle for PING_IDLE_SECONDS or more: one
# that came back a moment ago is almost surely alive, and under load (when connections are reused
# within milliseconds) a ping per checkout would be a round trip per request. A server restart kills
# busy connections too: the first statement on one then fails, which invalidates the whole pool (so
# the next checkout connects afresh) and answers that one request 503 database_unavailable.
PING_IDLE_SECONDS = 2.0


def _checked_in(_dbapi_conn, record) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
    since = record.info.get("checked_in")
    if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
        return  # new (just connected) or recently used
    try:
        dbapi_conn.execute("SELECT 1")
        dbapi_conn.rollback()
    except Exception as exc:  # the pool discards this connection and checks out another (up to 3 tries)
        raise sa_exc.DisconnectionError("pooled connection is dead") from exc


def get_engine(settings: Settings | None = None) -> Engine:
    url = (settings or get_settings()).effective_database_url
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextlib.contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error. For tasks and the CLI."""
    with Session(get_engine(settings), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrations_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: Settings | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", (settings or get_settings()).effective_database_url)
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the schema to `revision` (the same migrations on SQLite and PostgreSQL)."""
    from alembic import command

    settings = settings or get_settings()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(settings)
    with get_engine(settings).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(settings: Settings | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(settings).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_PG_DIALECT = None


def psycopg_sql(stmt) -> tuple[str, dict]:
    """A Core statement as psycopg's SQL text (%(name)s placeholders) and the values of the
    parameters the statement carries itself (literals, LIMITs), compiled once for code that runs
    it on a raw psycopg connection (the batched call writer). Expanding IN lists are not supported:
    use `= ANY(array)`."""
    global _PG_DIALECT
    if _PG_DIALECT is None:
        from sqlalchemy.dialects.postgresql import psycopg

        _PG_DIALECT = psycopg.dialect()
    compiled = stmt.compile(dialect=_PG_DIALECT)
    return str(compiled), dict(compiled.params)

