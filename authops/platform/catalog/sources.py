"""Pull one batch from a provider department: its front-end database table or its service interface.

A pull only fetches; the caller validates the batch and stores it atomically, so a pull
that raises part-way must be discarded whole (the generators raise, they never end early
and quietly). Raw values are sensitive: no message here carries one; errors name the
table, page or column instead, and URLs are shown without password.

Database table (`TableSource`, `TablePull`, `pull_table`; names must be plain identifiers):
the table is reflected first, so a missing column is reported before any row is read.
Rows stream as Arrow tables whose columns are our field names: integers int64, floats
float64, booleans bool, dates date32, times timestamp[us, UTC]; anything else, DECIMAL
money included, its exact text (never a float). A time column without a zone (PostgreSQL
`timestamp`, MySQL `DATETIME`, SQLite text) is Asia/Shanghai local time; `timestamptz` and
MySQL `TIMESTAMP` are instants. MySQL zero dates become null; values that do not convert
(PostgreSQL 'infinity', text in an SQLite INTEGER column) are refused naming the column.
PostgreSQL (psycopg) streams `COPY (SELECT ...) TO STDOUT` CSV parsed by pyarrow; MySQL and
MariaDB (PyMySQL) an unbuffered cursor; others a plain cursor with fetchmany.
Incremental pulls read `updated_column > since` (`since` is UTC; a naive one is taken as
UTC, as our columns store it); `TablePull.watermark` is then the latest update time seen,
aware UTC (`since` when nothing is newer), to be stored with the batch: it is the
department's clock, not ours. Rows whose update time is null only come with full pulls,
and a row committed later with an update time at or before the watermark is missed, as
with any timestamp watermark.

Service interface (`HttpSource`, `pull_http`): see `authops.platform.catalog.sources_http`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy import types as sqltypes
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from authops.core.errors import AuthopsError, InvalidInput, Unavailable
from authops.platform.catalog.sources_http import HttpSource, _aware, _check_fields, _ident, pull_http

__all__ = ["HttpSource", "TablePull", "TableSource", "pull_http", "pull_table"]

LOCAL_TZ = "Asia/Shanghai"  # the zone of time columns stored without one
_UTC_TS = pa.timestamp("us", tz="UTC")
_ARROW = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "date": pa.date32(),
          "ts_local": pa.timestamp("us"), "ts_utc": _UTC_TS, "text": pa.string()}
_WORDS = {"int": "integers", "float": "numbers", "bool": "booleans", "date": "dates",
          "ts_local": "date-times", "ts_utc": "date-times", "text": "text"}
_DB_DOWN = (OSError, TimeoutError, sa.exc.OperationalError, sa.exc.InterfaceError)


# ---- database table -------------------------------------------------------------------------

@dataclass
class TableSource:
    url: str  # SQLAlchemy URL; postgresql:// means psycopg, mysql:// and mariadb:// PyMySQL
    table: str
    columns: dict[str, str] | None = None  # our field -> their column; unlisted fields: same name
    updated_column: str | None = None  # their update-time column, for incremental pulls
    schema_name: str | None = None
    connect_timeout: float = 10.0
    statement_timeout: float | None = None  # seconds; PostgreSQL and MariaDB/MySQL only
    read_timeout: float = 300.0  # seconds without data from the database before the pull fails

    @property
    def where(self) -> str:
        table = f"{self.schema_name}.{self.table}" if self.schema_name else self.table
        try:
            url = make_url(self.url).set(query={}).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL is not echoed: it may hold a password
            url = "an unparsable database URL"
        return f"table {table} at {url}"


def _kind(t: sqltypes.TypeEngine, dialect: str) -> str:
    if isinstance(t, sqltypes.Boolean):
        return "bool"
    if isinstance(t, sqltypes.Integer):
        return "int"
    if isinstance(t, sqltypes.DateTime):  # MySQL TIMESTAMP is an instant, read with time_zone +00:00
        mysql_ts = dialect in ("mysql", "mariadb") and type(t).__name__ == "TIMESTAMP"
        return "ts_utc" if t.timezone or mysql_ts else "ts_local"
    if isinstance(t, sqltypes.Date):
        return "date"
    if isinstance(t, sqltypes.Float):
        return "float"
    return "text"


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, bytes | bytearray | memoryview):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(v).hex()
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def _from_text(arr: pa.Array, kind: str, where: str) -> pa.Array:
    """Text (SQLite dates, stray values) to the column's type; values never in errors."""
    if kind == "text":
        return arr
    try:
        return _localise(pc.cast(arr, _ARROW[kind]), kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if kind in ("date", "ts_local", "ts_utc"):  # MySQL's zero dates mean "no date"
        arr = pc.if_else(pc.starts_with(arr, "0000-00-00"), pa.scalar(None, pa.string()), arr)
        try:
            return _localise(pc.cast(arr, _ARROW[kind]), kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    raise InvalidInput(f"{where} holds values that are not {_WORDS[kind]}")


def _from_values(values: list, kind: str, where: str) -> pa.Array:
    try:
        return _localise(pa.array(values, _ARROW[kind]), kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass  # Decimals, SQLite's loose types, zero dates: go through exact text
    return _from_text(pa.array([_text(v) for v in values], pa.string()), kind, where)


def _localise(arr: pa.Array, kind: str) -> pa.Array:
    if kind != "ts_local":
        return arr
    arr = pc.assume_timezone(arr, LOCAL_TZ, ambiguous="earliest", nonexistent="earliest")
    return arr.cast(_UTC_TS)


class TablePull:
    """One pull: reflects the table on creation; `.chunks()` streams; then `.watermark`, `.rows`."""

    def __init__(self, source: TableSource, fields: list[str], *, since: datetime | None = None,
                 chunk_rows: int = 200_000) -> None:
        self.source, self.fields, self.chunk_rows = source, _check_fields(fields), max(1, chunk_rows)
        self.since = _aware(since)
        self.watermark: datetime | None = self.since
        self.rows = 0
        _ident(source.table, "table")
        if source.schema_name is not None:
            _ident(source.schema_name, "schema")
        mapping = source.columns or {}
        wanted = [(f, _ident(mapping.get(f, f), "column")) for f in self.fields]
        upd = _ident(source.updated_column, "column") if source.updated_column else None
        if since is not None and upd is None:
            raise InvalidInput(f"an incremental pull of {source.where} needs updated_column")
        self.engine = self._engine()
        self.dialect = self.engine.dialect.name
        try:
            found = {c["name"]: c["type"] for c in sa.inspect(self.engine).get_columns(
                source.table, schema=source.schema_name)}
        except sa.exc.NoSuchTableError:
            self.engine.dispose()
            raise InvalidInput(f"{source.where} does not exist") from None
        except _DB_DOWN as exc:
            self.engine.dispose()
            raise self._down(exc, "reach") from None
        folded = {n.lower(): n for n in found}
        resolve = lambda c: c if c in found else folded.get(c.lower())  # noqa: E731
        missing = [c for c in [c for _, c in wanted] + ([upd] if upd else []) if resolve(c) is None]
        if missing:
            self.engine.dispose()
            raise InvalidInput(f"{source.where} has no column {', '.join(dict.fromkeys(missing))}",
                               details={"missing": list(dict.fromkeys(missing))})
        # (output name, their column, kind); the update column rides along when not asked for
        self.cols = [(f, resolve(c), _kind(found[resolve(c)], self.dialect)) for f, c in wanted]
        self.upd = resolve(upd) if upd else None
        if self.upd and self.upd not in [c for _, c, _ in self.cols]:
            self.cols.append(("#updated", self.upd, _kind(found[self.upd], self.dialect)))
        self.upd_name = next((n for n, c, _ in self.cols if c == self.upd), None)
        self._upd_kind = next((k for _, c, k in self.cols if c == self.upd), "")
        if self.upd and not self._upd_kind.startswith("ts"):
            self.engine.dispose()
            raise InvalidInput(f"{source.where}: updated_column {self.upd} is not a date-time column")

    def _engine(self) -> sa.Engine:
        try:
            url = make_url(self.source.url)
        except Exception:  # noqa: BLE001
            raise InvalidInput("the database URL is not a valid SQLAlchemy URL") from None
        if url.drivername in ("postgresql", "mysql", "mariadb"):
            url = url.set(drivername=url.drivername + ("+psycopg" if url.drivername == "postgresql" else "+pymysql"))
        backend, secs = url.get_backend_name(), max(2, int(self.source.connect_timeout))
        mysql = {"connect_timeout": secs, "read_timeout": max(1, int(self.source.read_timeout))}
        args: dict[str, Any] = {"postgresql": {"connect_timeout": secs}, "mysql": mysql,
                                "mariadb": mysql}.get(backend, {})
        if backend == "sqlite" and url.database not in (None, "", ":memory:") \
                and not url.database.startswith("file:") and not Path(url.database).is_file():
            raise Unavailable(f"{self.source.where}: the SQLite file does not exist")
        try:
            return sa.create_engine(url, poolclass=NullPool, connect_args=args)
        except Exception:  # noqa: BLE001 - unknown dialect or driver
            raise InvalidInput(f"{self.source.where}: no database driver for this URL") from None

    def _down(self, exc: BaseException, doing: str, *, detail: bool = True) -> AuthopsError:
        """A database failure: Unavailable when the link failed, else InvalidInput. The driver's
        own first line only before any row was read (afterwards it could quote a value)."""
        orig = getattr(exc, "orig", None) or exc
        args = getattr(orig, "args", None)
        code = getattr(orig, "sqlstate", None) or (args[0] if args and isinstance(args[0], int) else None)
        text = f"{type(orig).__name__}" + (f" {code}" if code else "")
        if detail:
            line = (str(orig).strip().splitlines() or [""])[0][:200]
            password = self.engine.url.password
            text += f": {line.replace(password, '***') if password else line}"
        dbapi = self.engine.dialect.loaded_dbapi
        down = isinstance(exc, _DB_DOWN) or isinstance(orig, dbapi.OperationalError | dbapi.InterfaceError)
        return (Unavailable if down else InvalidInput)(f"could not {doing} {self.source.where} ({text})")

    def chunks(self) -> Iterator[pa.Table]:
        """Yield Arrow tables (columns = fields, in order) until the table is read; raise on any failure."""
        try:
            stream = self._copy_pg() if self.engine.dialect.driver == "psycopg" else self._cursor()
            for arrays in stream:
                names = [n for n, _, _ in self.cols]
                batch = pa.Table.from_arrays(arrays, names=names)
                if self.upd_name:
                    top = pc.max(batch[self.upd_name]).as_py()
                    if top is not None and (self.watermark is None or top > self.watermark):
                        self.watermark = top
                batch = batch.select(self.fields)
                self.rows += batch.num_rows
                yield batch
        except _DB_DOWN as exc:
            raise self._down(exc, "read", detail=False) from None
        finally:
            self.engine.dispose()

    def _where_name(self, column: str) -> str:
        return f"{self.source.where} column {column}"

    def _since_for(self, kind: str) -> datetime | None:
        """`since` as the update column holds it: naive local time, naive UTC or aware."""
        if self.since is None:
            return None
        if kind == "ts_local":
            return self.since.astimezone(ZoneInfo(LOCAL_TZ)).replace(tzinfo=None)
        if self.dialect in ("mysql", "mariadb", "sqlite"):
            return self.since.replace(tzinfo=None)
        return self.since

    def _copy_pg(self) -> Iterator[list[pa.Array]]:
        """COPY (SELECT ...) TO STDOUT as CSV through libpq (psycopg's `pgconn`): rows are gathered
        into one buffer per chunk, parsed by pyarrow in a thread while the next chunk is read."""
        import psycopg
        from psycopg import pq, sql

        raw = self.engine.raw_connection()
        conn, done = raw.driver_connection, False
        try:
            exprs = []
            for _, col, kind in self.cols:
                ident = sql.Identifier(col)
                exprs.append(sql.SQL("{} AT TIME ZONE {}").format(ident, sql.Literal(LOCAL_TZ))
                             if kind == "ts_local" else sql.SQL("{}::text").format(ident)
                             if kind == "bool" else ident)
            table = sql.Identifier(*([self.source.schema_name] if self.source.schema_name else []),
                                   self.source.table)
            query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(exprs), table)
            if self.since is not None:
                query += sql.SQL(" WHERE {} > {}").format(sql.Identifier(self.upd),
                                                          sql.Literal(self._since_for(self._upd_kind)))
            with conn.cursor() as cur:
                for setting in ("TimeZone TO 'UTC'", "DateStyle TO 'ISO, YMD'",
                                "default_transaction_read_only TO on"):
                    cur.execute(f"SET {setting}")
                if self.source.statement_timeout:
                    cur.execute(sql.SQL("SET statement_timeout TO {}").format(
                        sql.Literal(int(self.source.statement_timeout * 1000))))
            conn.commit()
            pg = conn.pgconn
            pg.send_query(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query).as_bytes(conn))
            while pg.flush():
                self._wait(pg, write=True)
            self._pg_result(pg, pq.ExecStatus.COPY_OUT)
            with ThreadPoolExecutor(1, thread_name_prefix="pull-parse") as pool:
                jobs: deque = deque()
                buf, n, get = bytearray(), 0, pg.get_copy_data
                while True:
                    nbytes, data = get(1)  # one row, without blocking
                    if nbytes > 0:
                        buf += data
                        n += 1
                        if n >= self.chunk_rows:
                            jobs.append(pool.submit(self._parse_csv, buf, n))
                            buf, n = bytearray(), 0
                            if len(jobs) > 1:
                                yield jobs.popleft().result()
                    elif nbytes == 0:  # no whole row buffered: wait for the socket (GIL released)
                        self._wait(pg)
                    else:
                        break  # -1: done; -2: failed, the result says why
                self._pg_result(pg, pq.ExecStatus.COMMAND_OK)
                if n:
                    jobs.append(pool.submit(self._parse_csv, buf, n))
                while jobs:
                    yield jobs.popleft().result()
            done = True
        except psycopg.Error as exc:
            raise self._down(exc, "read", detail=False) from None
        finally:  # a COPY stopped half-way is dropped with its connection, not drained
            raw.close() if done else raw.invalidate()

    def _wait(self, pg: Any, *, write: bool = False) -> None:
        import select

        ready = select.select([] if write else [pg.socket], [pg.socket] if write else [], [],
                              self.source.read_timeout)
        if not any(ready):
            raise Unavailable(f"{self.source.where} sent nothing for {self.source.read_timeout:g} s; "
                              "the pull stopped")
        if not write:
            pg.consume_input()

    def _pg_result(self, pg: Any, expected: Any) -> None:
        from psycopg import errors, pq

        pg.consume_input()
        while pg.is_busy():
            self._wait(pg)
        res = pg.get_result()
        if expected == pq.ExecStatus.COMMAND_OK:
            while pg.get_result() is not None:
                pass
        if res is None or res.status != expected:
            code = res.error_field(pq.DiagnosticField.SQLSTATE) if res is not None else None
            code = code.decode() if code else "08000"  # no result: the connection broke
            try:
                cls = errors.lookup(code)
            except KeyError:
                cls = errors.DatabaseError
            raise cls(f"SQLSTATE {code}")

    def _parse_csv(self, data: bytearray, nrows: int) -> list[pa.Array]:
        """COPY's CSV rows to typed arrays (local times were made instants in the SELECT)."""
        kinds = ["ts_utc" if k == "ts_local" else k for _, _, k in self.cols]
        names = [f"c{i}" for i in range(len(kinds))]
        multiline = data.count(b"\n") != nrows  # a value holds a newline: slower, exact parsing

        def read(types: list) -> pa.Table:
            return pacsv.read_csv(
                pa.py_buffer(data), read_options=pacsv.ReadOptions(column_names=names),
                parse_options=pacsv.ParseOptions(newlines_in_values=multiline),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict(zip(names, types, strict=True)), null_values=[""], true_values=["true"],
                    false_values=["false"], strings_can_be_null=True, quoted_strings_can_be_null=False))
        try:
            return [c.combine_chunks() for c in read([_ARROW[k] for k in kinds]).columns]
        except pa.ArrowInvalid:
            pass  # a value that does not convert: find its column by converting one by one
        try:
            table = read([pa.string()] * len(kinds))
        except pa.ArrowInvalid:
            raise InvalidInput(f"{self.source.where}: the database sent CSV that could not be parsed") from None
        return [_from_text(table[n].combine_chunks(), kind, self._where_name(col))
                for n, kind, (_, col, _) in zip(names, kinds, self.cols, strict=True)]

    def _cursor(self) -> Iterator[list[pa.Array]]:
        tbl = sa.table(self.source.table, *[sa.column(c) for _, c, _ in self.cols], schema=self.source.schema_name)
        stmt = sa.select(*[tbl.c[c] for _, c, _ in self.cols])
        if self.since is not None:
            value = self._since_for(self._upd_kind)
            if self.dialect == "sqlite":  # text dates compare as text: SQLAlchemy's format, always with µs
                value = value.strftime("%Y-%m-%d %H:%M:%S.%f")
            stmt = stmt.where(tbl.c[self.upd] > sa.bindparam("since", value))
        compiled = stmt.compile(dialect=self.engine.dialect)
        params = compiled.construct_params()
        args = tuple(params[k] for k in compiled.positiontup) if compiled.positional else params
        mysql = self.dialect in ("mysql", "mariadb")
        raw = self.engine.raw_connection()
        dbapi = raw.driver_connection
        done, cur = False, None
        try:
            if mysql:  # net_write_timeout: the server waits on us while the caller stores a chunk
                with dbapi.cursor() as setup:
                    setup.execute("SET time_zone = '+00:00'")
                    setup.execute("SET SESSION TRANSACTION READ ONLY")
                    setup.execute("SET SESSION net_write_timeout = 600")
                    if self.source.statement_timeout:
                        mariadb = getattr(self.engine.dialect, "is_mariadb", False)
                        setup.execute(f"SET SESSION max_statement_time = {float(self.source.statement_timeout)}"
                                      if mariadb else
                                      f"SET SESSION max_execution_time = {int(self.source.statement_timeout * 1000)}")
            if self.engine.dialect.driver == "pymysql":
                import pymysql.cursors

                cur = dbapi.cursor(pymysql.cursors.SSCursor)  # unbuffered: rows stream as fetched
            else:
                cur = dbapi.cursor()
            cur.execute(str(compiled), args)
            while rows := cur.fetchmany(self.chunk_rows):
                columns = list(zip(*rows, strict=True))
                yield [_from_values(list(values), kind, self._where_name(col))
                       for values, (_, col, kind) in zip(columns, self.cols, strict=True)]
            cur.close()
            done = True
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise self._down(exc, "read", detail=False) from None
        finally:  # an unbuffered cursor left half-read is dropped with its connection, not drained
            if not done and getattr(cur, "_result", None) is not None:
                cur._result.unbuffered_active = False  # PyMySQL would try to drain it when collected
            raw.close() if done else raw.invalidate()


def pull_table(source: TableSource, fields: list[str], *, since: datetime | None = None,
               chunk_rows: int = 200_000) -> Iterator[pa.Table]:
    """Reflect now (a missing column raises here, before any row is read); stream chunks after."""
    return TablePull(source, fields, since=since, chunk_rows=chunk_rows).chunks()
