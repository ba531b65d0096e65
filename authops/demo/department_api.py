"""A department's service interface, played locally for the demo and the tests.

`serve_table(table)` serves an Arrow table over HTTP in a background thread with the
protocol `authops.platform.catalog.sources.pull_http` reads:
`GET /records?page=N&page_size=M[&updated_since=ISO 8601]` answers
`{"items": [...], "next_page": N+1 | null}` (or, with `shape="data"`,
`{"data": [...], "total": T}`). Dates and date-times are ISO 8601 (date-times with their
zone; a naive one is taken as UTC), DECIMAL values JSON strings of their exact digits.

Failures to inject (`fail=`), for trying the client's retries:
  {"status": 503, "times": 2}             the first 2 requests answer 503 ("times": None = always)
  {"status": 503, "from_page": 2}         ... only requests for page 2 and later fail
  {"status": 429, "times": 1, "retry_after": 1}   with a Retry-After header
  {"hang_from_page": 3, "hang_seconds": 30}   pages >= 3 answer only after 30 s (a timeout halfway)
  {"bad_json_page": 2}                    page 2 is cut-off JSON
  {"repeat_page": 2}                      page 2 says next_page 2, forever
`.requests` lists (page, status) of every request answered, in order.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bytes):
        return v.hex()
    return v


def _instant(v: Any) -> datetime | None:
    """An update time as an aware datetime (naive ones and dates taken as UTC)."""
    if v is None:
        return None
    if not isinstance(v, datetime):
        v = datetime.combine(v, datetime.min.time())
    return v if v.tzinfo else v.replace(tzinfo=UTC)


class DepartmentApi:
    """A running interface; use as a context manager or call `.stop()`."""

    def __init__(self, table: pa.Table, *, updated_column: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, fail: dict | None = None, shape: str = "items", max_page_size: int = 10_000):
        if shape not in ("items", "data"):
            raise ValueError("shape is 'items' or 'data'")
        if updated_column is not None and updated_column not in table.column_names:
            raise ValueError(f"the table has no column {updated_column}")
        rows = table.to_pylist()
        self._updated = [_instant(r[updated_column]) for r in rows] if updated_column else None
        self._rows = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
        self.fail = dict(fail or {})
        self.shape, self.max_page_size = shape, max_page_size
        self.requests: list[tuple[int, int]] = []
        self._failed = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="department-api", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/records"

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()  # wakes handlers that are hanging on purpose
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> DepartmentApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request."""
        try:
            page = int(query.get("page", ["1"])[0])
            size = int(query.get("page_size", ["1000"])[0])
            since_text = query.get("updated_since", [None])[0]
            since = datetime.fromisoformat(since_text) if since_text else None
        except ValueError:
            return 400, {}, b'{"error": "page, page_size and updated_since must be valid"}'
        if page < 1 or not 1 <= size <= self.max_page_size:
            return 400, {}, b'{"error": "page starts at 1; page_size is 1 to max_page_size"}'
        f = self.fail
        if f.get("hang_from_page") and page >= f["hang_from_page"]:
            self._stopping.wait(f.get("hang_seconds", 60))
            if self._stopping.is_set():
                return 503, {}, b'{"error": "stopping"}'
        if f.get("status") and page >= f.get("from_page", 1):
            with self._lock:
                due = f.get("times") is None or self._failed < f["times"]
                self._failed += due
            if due:
                headers = {"Retry-After": str(f["retry_after"])} if "retry_after" in f else {}
                return int(f["status"]), headers, b'{"error": "injected failure"}'
        if f.get("bad_json_page") == page:
            return 200, {}, json.dumps({"items": self._rows[:1]}, ensure_ascii=False).encode()[:-7]
        rows = self._rows
        if since is not None and self._updated is not None:
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            rows = [r for r, u in zip(self._rows, self._updated, strict=True) if u is not None and u > since]
        chunk = rows[(page - 1) * size: page * size]
        if self.shape == "data":
            body: dict = {"data": chunk, "total": len(rows)}
        else:
            nxt = page if f.get("repeat_page") == page else (page + 1 if page * size < len(rows) else None)
            body = {"items": chunk, "next_page": nxt}
        return 200, {}, json.dumps(body, ensure_ascii=False).encode()


def _handler(api: DepartmentApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            query = parse_qs(urlsplit(self.path).query)
            status, headers, body = api.answer(query)
            try:
                page = int(query.get("page", ["1"])[0])
            except ValueError:
                page = 0
            with api._lock:
                api.requests.append((page, status))
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out)
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet, as a service should be
            return

    return Handler


def serve_table(table: pa.Table, *, updated_column: str | None = None, host: str = "127.0.0.1",
                port: int = 0, fail: dict | None = None, shape: str = "items") -> DepartmentApi:
    """Start serving `table` in a background thread; `.url` is the endpoint, `.stop()` ends it."""
    return DepartmentApi(table, updated_column=updated_column, host=host, port=port, fail=fail, shape=shape)
