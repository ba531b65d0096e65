"""Pulling from a department: its database table (PostgreSQL, MariaDB, SQLite) and its service interface."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from authops.core.errors import InvalidInput, Unavailable
from authops.demo.department_api import serve_table
from authops.platform.catalog.sources import HttpSource, TablePull, TableSource, pull_http, pull_table
from tests.support.mariadb import MARIADB_URL, need_mariadb
from tests.support.services import POSTGRES_ADMIN_URL, need_postgres

SECRET_VALUES = ("110101199003074518", "张三", "has, comma", "123456789012.34", "Zhang San")
FIELDS = ["settle_id", "id_no", "person_name", "visit_date", "amount", "visits", "note", "updated_at"]
ROWS = [
    dict(settle_id=1, id_no="110101199003074518", person_name="张三", visit_date=date(2024, 3, 1),
         amount=Decimal("123456789012.34"), visits=3, note='has, comma "quote"\nand newline',
         updated_at=datetime(2024, 3, 1, 9, 0, 0)),
    dict(settle_id=2, id_no="320502198811112222", person_name="李四", visit_date=date(2024, 3, 2),
         amount=Decimal("0.10"), visits=0, note="NULL", updated_at=datetime(2024, 3, 2, 9, 0, 0)),
    dict(settle_id=3, id_no="320502197001013333", person_name="王五", visit_date=None,
         amount=None, visits=None, note="", updated_at=datetime(2024, 3, 3, 9, 0, 0, 250000)),
    dict(settle_id=4, id_no=None, person_name="赵六", visit_date=date(2024, 2, 29),
         amount=Decimal("-5.00"), visits=1, note=None, updated_at=None),
]


def no_values(message: str) -> None:
    for value in SECRET_VALUES:
        assert value not in message


def _settlement(name: str, metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        name, metadata,
        sa.Column("settle_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id_no", sa.String(18)), sa.Column("person_name", sa.String(40)),
        sa.Column("visit_date", sa.Date), sa.Column("amount", sa.Numeric(14, 2)),
        sa.Column("visits", sa.Integer), sa.Column("note", sa.Text),
        sa.Column("updated_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")))
    # updated_at has no time zone: it is Asia/Shanghai local time


def _admin_url(kind: str, tmp_path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'department.sqlite3'}"
    if kind == "postgresql":
        need_postgres()
        return POSTGRES_ADMIN_URL
    need_mariadb()
    return MARIADB_URL


class Db:
    def __init__(self, kind: str, url: str):
        self.kind, self.url = kind, url
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        self.tables: list[str] = []

    def name(self) -> str:
        self.tables.append(f"src_{uuid.uuid4().hex[:10]}")
        return self.tables[-1]

    def settlement(self, rows=ROWS) -> str:
        md = sa.MetaData()
        table = _settlement(self.name(), md)
        md.create_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(table.insert(), list(rows))
        return table.name

    def sql(self, *statements: str) -> None:
        with self.engine.begin() as conn:
            for s in statements:
                conn.execute(sa.text(s))

    def drop_all(self) -> None:
        for t in self.tables:
            self.sql(f"DROP TABLE IF EXISTS {t}")
        self.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request, tmp_path) -> Iterator[Db]:
    d = Db(request.param, _admin_url(request.param, tmp_path))
    yield d
    d.drop_all()


def _concat(chunks) -> pa.Table:
    chunks = list(chunks)
    return pa.concat_tables(chunks) if chunks else None


def test_full_pull_keeps_types_and_exact_money(db):
    table = db.settlement()
    chunks = list(pull_table(TableSource(db.url, table), FIELDS, chunk_rows=3))
    assert [c.num_rows for c in chunks] == [3, 1]
    got = pa.concat_tables(chunks).sort_by("settle_id")
    assert got.column_names == FIELDS
    assert got.schema.field("settle_id").type == pa.int64()
    assert got.schema.field("visit_date").type == pa.date32()
    assert got.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    rows = got.to_pylist()
    assert [r["id_no"] for r in rows] == [r["id_no"] for r in ROWS]
    assert [r["person_name"] for r in rows] == ["张三", "李四", "王五", "赵六"]
    assert [r["note"] for r in rows] == [r["note"] for r in ROWS]  # quotes, newline, "NULL", "" vs null
    assert [r["visits"] for r in rows] == [3, 0, None, 1]
    assert [r["visit_date"] for r in rows] == [r["visit_date"] for r in ROWS]
    assert rows[0]["updated_at"] == datetime(2024, 3, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    assert rows[3]["updated_at"] is None
    amounts = [r["amount"] for r in rows]
    assert [None if a is None else Decimal(a) for a in amounts] == [r["amount"] for r in ROWS]
    if db.kind != "sqlite":  # SQLite keeps NUMERIC as REAL; the others keep the digits
        assert amounts == ["123456789012.34", "0.10", None, "-5.00"]


def test_incremental_pull_and_watermark(db):
    table = db.settlement()
    source = TableSource(db.url, table, updated_column="updated_at")
    since = datetime(2024, 3, 1, 1, 0, tzinfo=UTC)  # = 2024-03-01 09:00 local: row 1 is not newer
    pull = TablePull(source, ["settle_id"], since=since)
    got = _concat(pull.chunks())
    assert sorted(got["settle_id"].to_pylist()) == [2, 3]
    assert pull.watermark == datetime(2024, 3, 3, 1, 0, 0, 250000, tzinfo=UTC)
    assert pull.rows == 2
    again = TablePull(source, ["settle_id"], since=pull.watermark)
    assert list(again.chunks()) == []
    assert again.watermark == pull.watermark  # nothing newer: keep the old mark
    naive = TablePull(source, ["settle_id"], since=datetime(2024, 3, 2, 1, 0))  # naive = UTC, as we store
    assert _concat(naive.chunks())["settle_id"].to_pylist() == [3]


def test_column_mapping_and_order(db):
    table = db.settlement()
    source = TableSource(db.url, table, columns={"id_number": "id_no", "name": "person_name"})
    got = _concat(pull_table(source, ["name", "id_number", "settle_id"])).sort_by("settle_id")
    assert got.column_names == ["name", "id_number", "settle_id"]
    assert got["name"].to_pylist()[0] == "张三"


def test_missing_columns_named_before_any_row(db):
    table = db.settlement()
    source = TableSource(db.url, table, columns={"id_number": "gone_column"})
    with pytest.raises(InvalidInput) as err:
        pull_table(source, ["settle_id", "id_number", "no_such_field"])  # raises on the call itself
    assert "gone_column" in err.value.message and "no_such_field" in err.value.message
    assert err.value.details == {"missing": ["gone_column", "no_such_field"]}
    no_values(err.value.message)
    with pytest.raises(InvalidInput, match="does not exist"):
        pull_table(TableSource(db.url, "no_such_table_here"), ["settle_id"])


@pytest.mark.parametrize("change", [
    {"table": "x; DROP TABLE y"}, {"table": 'x" --'}, {"columns": {"settle_id": 'settle_id" FROM t; --'}},
    {"updated_column": "updated_at > 0 OR 1=1"}, {"schema_name": "public; DROP"},
])
def test_identifier_injection_rejected(db, change):
    table = db.settlement()
    source = TableSource(**{"url": db.url, "table": table, **change})
    with pytest.raises(InvalidInput, match="not a plain identifier"):
        pull_table(source, ["settle_id"])
    with pytest.raises(InvalidInput, match="not a plain identifier"):
        pull_table(TableSource(db.url, table), ["settle_id", "a b"])
    assert _concat(pull_table(TableSource(db.url, table), ["settle_id"])).num_rows == 4  # still there


def test_wide_decimal_kept_exactly(db):
    if db.kind == "sqlite":
        pytest.skip("SQLite has no exact decimal storage")
    name = db.name()
    db.sql(f"CREATE TABLE {name} (id INT, amount DECIMAL(30,10))",
           f"INSERT INTO {name} VALUES (1, 12345678901234567890.0123456789), (2, 0.0000000001)")
    got = _concat(pull_table(TableSource(db.url, name), ["id", "amount"])).sort_by("id")
    assert got["amount"].to_pylist() == ["12345678901234567890.0123456789", "0.0000000001"]


def test_instant_columns_are_not_shifted(db):
    """PostgreSQL timestamptz and MariaDB TIMESTAMP hold instants; they are not read as Shanghai time."""
    if db.kind == "sqlite":
        pytest.skip("SQLite has no instant type")
    name = db.name()
    if db.kind == "postgresql":
        db.sql(f"CREATE TABLE {name} (id INT, changed TIMESTAMPTZ)",
               f"INSERT INTO {name} VALUES (1, '2024-03-01 09:00:00+08'), (2, '2024-03-02 09:00:00+08')")
    else:
        db.sql(f"CREATE TABLE {name} (id INT, changed TIMESTAMP(6) NULL)", "SET time_zone = '+08:00'",
               f"INSERT INTO {name} VALUES (1, '2024-03-01 09:00:00'), (2, '2024-03-02 09:00:00')")
    source = TableSource(db.url, name, updated_column="changed")
    got = _concat(pull_table(source, ["id", "changed"])).sort_by("id")
    assert got["changed"].to_pylist()[0] == datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
    pull = TablePull(source, ["id"], since=datetime(2024, 3, 1, 1, 0, tzinfo=UTC))
    assert _concat(pull.chunks())["id"].to_pylist() == [2]
    assert pull.watermark == datetime(2024, 3, 2, 1, 0, tzinfo=UTC)


def test_stopping_early_releases_the_table(db):
    table = db.settlement([dict(settle_id=i, note=f"n{i}") for i in range(1, 20_001)])
    chunks = pull_table(TableSource(db.url, table), ["settle_id", "note"], chunk_rows=1000)
    assert next(chunks).num_rows == 1000
    chunks.close()  # the consumer gave up: connection dropped, not drained
    if db.kind == "postgresql":
        db.sql("SET lock_timeout = '5s'")
    db.drop_all()  # would block on a lock still held


def test_slow_database_times_out(db):
    """A database that stops sending (here: a view that sleeps) fails the pull instead of hanging it."""
    if db.kind == "sqlite":
        pytest.skip("SQLite is a local file")
    name = db.name()
    sleep = "(SELECT 1 FROM pg_sleep(3))" if db.kind == "postgresql" else "SLEEP(3)"
    db.sql(f"CREATE VIEW {name} AS SELECT 1 AS id, {sleep} AS z")
    for limits in ({"read_timeout": 1}, {"statement_timeout": 0.5}):
        started = time.monotonic()
        with pytest.raises(Unavailable) as err:
            list(pull_table(TableSource(db.url, name, **limits), ["id"]))
        assert time.monotonic() - started < 2.5 and name in err.value.message
    db.tables.remove(name)
    db.sql(f"DROP VIEW {name}")


def test_postgres_value_that_does_not_convert(db):
    if db.kind != "postgresql":
        pytest.skip("PostgreSQL's 'infinity' date")
    name = db.name()
    db.sql(f"CREATE TABLE {name} (id INT, seen DATE)", f"INSERT INTO {name} VALUES (1, '2024-01-01'), (2, 'infinity')")
    with pytest.raises(InvalidInput, match="column seen holds values that are not dates") as err:
        list(pull_table(TableSource(db.url, name), ["id", "seen"]))
    assert "infinity" not in err.value.message


def test_value_in_a_bad_cell_is_not_echoed(tmp_path):
    url = f"sqlite:///{tmp_path / 'loose.sqlite3'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE people (id INTEGER, visits INTEGER, seen DATE)"))
        conn.execute(sa.text("INSERT INTO people VALUES (1, 'Zhang San 110101199003074518', '2024-01-01'),"
                             " (2, 3, 'Zhang San')"))
    for column in ("visits", "seen"):
        with pytest.raises(InvalidInput) as err:
            list(pull_table(TableSource(url, "people"), ["id", column]))
        assert f"column {column}" in err.value.message
        no_values(err.value.message)
        no_values("".join(traceback.format_exception(err.value)))  # nor in a logged traceback


def test_unreachable_database_hides_password(tmp_path):
    need_postgres()
    secret = "S3cretPw-9f2"
    with pytest.raises(Unavailable) as err:
        pull_table(TableSource(f"postgresql://postgres:{secret}@127.0.0.1:1/postgres", "settlements"), ["id"])
    assert secret not in err.value.message and "127.0.0.1" in err.value.message
    assert "settlements" in err.value.message
    need_mariadb()
    with pytest.raises(Unavailable) as err:
        pull_table(TableSource(MARIADB_URL.replace("root@", f"root:{secret}@"), "settlements"), ["id"])
    assert secret not in err.value.message and "settlements" in err.value.message
    with pytest.raises(Unavailable, match="does not exist"):
        pull_table(TableSource(f"sqlite:///{tmp_path / 'absent.sqlite3'}", "t"), ["id"])
    assert not (tmp_path / "absent.sqlite3").exists()
    with pytest.raises(InvalidInput) as err:
        pull_table(TableSource(f"nosuchdb://u:{secret}@h/x", "t"), ["id"])
    assert secret not in err.value.message


# ---- service interface ----------------------------------------------------------------------

def _records(n: int) -> pa.Table:
    return pa.table({
        "id": pa.array(range(1, n + 1), pa.int64()),
        "name": pa.array(["张三" if i == 1 else f"person {i}" for i in range(1, n + 1)]),
        "amount": pa.array([Decimal("12.50") if i == 1 else Decimal(i) / 100 for i in range(1, n + 1)],
                           pa.decimal128(14, 2)),
        "visit_date": pa.array([date(2024, 1, 1)] * n, pa.date32()),
        "updated_at": pa.array([datetime(2024, 1, 1, tzinfo=UTC).replace(minute=i % 60, hour=i // 60 % 24)
                                for i in range(1, n + 1)], pa.timestamp("us", tz="UTC")),
        "flag": pa.array([i % 2 == 0 for i in range(1, n + 1)]),
        "ignored": pa.array(["x"] * n),
    })


HTTP_FIELDS = ["id", "name", "amount", "visit_date", "updated_at", "flag", "not_sent"]


@pytest.mark.parametrize("shape", ["items", "data"])
def test_http_pages_in_order(shape):
    with serve_table(_records(2500), shape=shape) as api:
        pages = list(pull_http(HttpSource(api.url), HTTP_FIELDS))
    assert [p.num_rows for p in pages] == [1000, 1000, 500]
    got = pa.concat_tables(pages)
    assert got.column_names == HTTP_FIELDS and all(t == pa.string() for t in got.schema.types)
    first = got.slice(0, 1).to_pylist()[0]
    assert first == {"id": "1", "name": "张三", "amount": "12.50", "visit_date": "2024-01-01",
                     "updated_at": "2024-01-01T00:01:00+00:00", "flag": "false", "not_sent": None}
    assert got["id"].to_pylist() == [str(i) for i in range(1, 2501)]


def test_http_incremental_sends_since():
    since = datetime(2024, 1, 1, 8, 20, tzinfo=UTC)  # 16:20 in Shanghai
    with serve_table(_records(1000), updated_column="updated_at") as api:
        got = pa.concat_tables(pull_http(HttpSource(api.url, page_size=100), ["id", "updated_at"], since=since))
    assert got.num_rows == len([i for i in range(1, 1001) if (i // 60 % 24, i % 60) > (8, 20)])
    assert min(got["updated_at"].to_pylist()) > "2024-01-01T08:20"


def test_http_retries_then_succeeds():
    waits: list[float] = []
    with serve_table(_records(10), fail={"status": 503, "times": 2}) as api:
        got = list(pull_http(HttpSource(api.url, backoff=0.2), ["id"], sleep=waits.append))
    assert sum(p.num_rows for p in got) == 10
    assert api.requests == [(1, 503), (1, 503), (1, 200)]
    assert len(waits) == 2 and 0.1 <= waits[0] <= 0.2 and 0.2 <= waits[1] <= 0.4  # doubling, jittered


def test_http_429_honours_retry_after_up_to_a_cap():
    waits: list[float] = []
    with serve_table(_records(10), fail={"status": 429, "times": 1, "retry_after": 2}) as api:
        list(pull_http(HttpSource(api.url), ["id"], sleep=waits.append))
    with serve_table(_records(10), fail={"status": 429, "times": 1, "retry_after": 3600}) as api:
        list(pull_http(HttpSource(api.url, max_retry_after=5), ["id"], sleep=waits.append))
    assert waits == [2.0, 5.0]


def test_http_retries_exhausted_names_the_page():
    got = []
    with serve_table(_records(30), fail={"status": 503, "from_page": 2, "times": None}) as api:
        with pytest.raises(Unavailable) as err:
            for page in pull_http(HttpSource(api.url, page_size=10, retries=2, backoff=0), ["id", "name"]):
                got.append(page)
    assert len(got) == 1 and api.requests == [(1, 200), (2, 503), (2, 503), (2, 503)]
    assert "page 2" in err.value.message and "3 attempts" in err.value.message and "HTTP 503" in err.value.message
    assert "nothing from it may be stored" in err.value.message
    no_values(err.value.message)


def test_http_timeout_halfway_is_a_failure_not_a_short_success():
    with serve_table(_records(50), fail={"hang_from_page": 3}) as api:
        source = HttpSource(api.url, page_size=10, timeout=0.3, retries=1, backoff=0)
        with pytest.raises(Unavailable) as err:
            list(pull_http(source, ["id"]))  # the two pages read are never handed back as a result
        pages = pull_http(source, ["id"])
        assert next(pages).num_rows == 10 and next(pages).num_rows == 10
        with pytest.raises(Unavailable):
            next(pages)
    assert "page 3" in err.value.message and "2 attempts" in err.value.message
    assert "timed out" in err.value.message


def test_http_repeating_page_is_an_error():
    with serve_table(_records(30), fail={"repeat_page": 2}) as api:
        with pytest.raises(InvalidInput, match="next_page 2, which does not move forward"):
            list(pull_http(HttpSource(api.url, page_size=10), ["id"]))
    assert len(api.requests) == 2


def test_http_bad_json_names_the_page_not_the_values():
    with serve_table(_records(30), fail={"bad_json_page": 2}) as api:
        with pytest.raises(InvalidInput) as err:
            list(pull_http(HttpSource(api.url, page_size=10), ["id", "name"]))
    assert "page 2" in err.value.message and "not valid JSON" in err.value.message
    no_values(err.value.message)


def test_http_client_error_is_not_retried():
    with serve_table(_records(10), fail={"status": 404, "times": None}) as api:
        with pytest.raises(InvalidInput, match="HTTP 404") as err:
            list(pull_http(HttpSource(api.url), ["id"]))
    assert api.requests == [(1, 404)] and "page 1" in err.value.message


def test_http_oversized_page_refused():
    with serve_table(_records(100)) as api:
        with pytest.raises(InvalidInput, match="larger than 2000 bytes"):
            list(pull_http(HttpSource(api.url, max_page_bytes=2000), ["id"]))


def test_http_unreachable_hides_credentials_and_query():
    source = HttpSource("http://user:pw-S3cret@127.0.0.1:1/api?key=K3y-S3cret", retries=1, backoff=0)
    with pytest.raises(Unavailable) as err:
        list(pull_http(source, ["id"]))
    assert "S3cret" not in err.value.message and "127.0.0.1:1/api" in err.value.message
    assert "2 attempts" in err.value.message


def test_http_wrong_shape():
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=[1, 2])))
    with pytest.raises(InvalidInput, match="supported shape"):
        list(pull_http(HttpSource("http://department.example/api"), ["id"], client=client))


def test_http_bad_url_and_endless_pages():
    with pytest.raises(InvalidInput, match="http:// or https://"):
        pull_http(HttpSource("ftp://department.example/records"), ["id"])
    with serve_table(_records(30)) as api:
        with pytest.raises(InvalidInput, match="max_pages=2"):
            list(pull_http(HttpSource(api.url, page_size=10, max_pages=2), ["id"]))
