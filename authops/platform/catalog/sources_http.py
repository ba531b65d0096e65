"""Pull one batch from a provider department's service interface (its paged JSON HTTP API).

Protocol: `GET url?page=N&page_size=M[&updated_since=ISO 8601]`, pages from 1, answering
either `{"items": [{...}], "next_page": int | null}` or `{"data": [{...}], "total": int}`
(pages = ceil(total / page_size); a short page before the last is refused, as the server
then caps page_size). One Arrow table of strings per non-empty page, columns = our fields:
missing keys are null, unknown keys ignored, numbers keep their JSON digits ("12.50"),
booleans are "true"/"false", nested values JSON text.

Each page is tried `1 + retries` times on connection errors, timeouts, 429 (Retry-After
honoured up to `max_retry_after`) and 5xx, with exponential backoff and jitter; another 4xx
is not retried. Invalid JSON, another shape, a next_page that does not move forward and a
page over `max_page_bytes` are refused. Every failure raises from the generator, so a pull
that broke off is never mistaken for a complete batch; messages name the page, never a value,
and the URL without credentials or query string. `authops.demo.department_api` plays such
an interface locally. Imported through `authops.platform.catalog.sources`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pyarrow as pa

from authops.core.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

_IDENT = re.compile(r"[^\W\d]\w{0,62}")  # a plain identifier: letters, digits, underscore


def _ident(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise InvalidInput(f"{what} {name!r} is not a plain identifier (letters, digits, underscore)")
    return name


def _aware(since: datetime | None) -> datetime | None:
    """`since` in UTC; a naive one is UTC already (as `authops.core.clock.utcnow` and our columns)."""
    if since is None:
        return None
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)


def _check_fields(fields: list[str]) -> list[str]:
    fields = [_ident(f, "field") for f in fields]
    if not fields or len(set(fields)) != len(fields):
        raise InvalidInput("fields must be a non-empty list of distinct names")
    return fields


@dataclass
class HttpSource:
    url: str
    page_size: int = 1000
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0  # seconds per request (connect, each read)
    retries: int = 4  # further attempts per page after the first
    backoff: float = 0.5  # first delay; doubles each attempt, with jitter, at most 30 s
    since_param: str = "updated_since"
    max_retry_after: float = 60.0  # a longer Retry-After is cut to this
    max_page_bytes: int = 64 * 2**20
    max_pages: int = 1_000_000  # an interface that never says "last page" is stopped here

    @property
    def where(self) -> str:  # no credentials, no query string (it may carry a key)
        u = httpx.URL(self.url)
        return f"{u.scheme}://{u.host}{f':{u.port}' if u.port else ''}{u.path}"


def pull_http(source: HttpSource, fields: list[str], *, since: datetime | None = None,
              client: httpx.Client | None = None,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[pa.Table]:
    """Yield one Arrow table (all strings, columns = fields) per non-empty page; raise on any failure."""
    fields = _check_fields(fields)
    if source.page_size < 1:
        raise InvalidInput("page_size must be at least 1")
    try:
        ok = httpx.URL(source.url).scheme in ("http", "https")
    except (httpx.InvalidURL, TypeError):
        ok = False
    if not ok:
        raise InvalidInput("the interface URL must be an http:// or https:// URL")
    params = {source.since_param: _aware(since).isoformat()} if since else {}
    return _pages(source, fields, params, client, sleep)


def _pages(src: HttpSource, fields: list[str], extra: dict, client: httpx.Client | None,
           sleep: Callable[[float], None]) -> Iterator[pa.Table]:
    own = client is None
    client = client or httpx.Client(follow_redirects=True)
    try:
        page: int | None = 1
        while page is not None:
            body = _fetch(client, src, {"page": page, "page_size": src.page_size, **extra}, page, sleep)
            items, next_page = _parse(body, page, src)
            if next_page is not None and next_page <= page:
                raise InvalidInput(f"page {page} of {src.where} says next_page {next_page}, which does not "
                                   "move forward; stopped so the pull does not loop")
            if next_page is not None and next_page > src.max_pages:
                raise InvalidInput(f"{src.where} has more than max_pages={src.max_pages} pages; stopped")
            if items:
                yield _page_table(items, fields, page, src)
            page = next_page
    finally:
        if own:
            client.close()


def _fetch(client: httpx.Client, src: HttpSource, params: dict, page: int,
           sleep: Callable[[float], None]) -> bytes:
    attempts = src.retries + 1
    last = ""
    for attempt in range(1, attempts + 1):
        delay = None
        try:
            with client.stream("GET", src.url, params=params, headers=src.headers, timeout=src.timeout) as resp:
                if resp.is_success:
                    return _read_capped(resp, page, src)
                last = f"HTTP {resp.status_code}"
                if resp.status_code == 429:
                    delay = _retry_after(resp.headers.get("Retry-After"), src.max_retry_after)
                elif resp.status_code < 500:
                    raise InvalidInput(f"{src.where} answered page {page} with HTTP {resp.status_code}; not "
                                       "retried: check the URL, headers and credentials",
                                       details={"page": page, "status": resp.status_code})
        except httpx.TimeoutException as exc:
            last = f"timed out ({type(exc).__name__})"
        except httpx.RequestError as exc:
            last = type(exc).__name__
        if attempt < attempts:
            wait = delay if delay is not None else _backoff(src.backoff, attempt)
            log.warning("page %s of %s failed (%s), attempt %s of %s; retrying in %.2f s",
                        page, src.where, last, attempt, attempts, wait)
            sleep(wait)
    raise Unavailable(f"page {page} of {src.where} failed after {attempts} attempts (last: {last}); "
                      "the pull stopped and nothing from it may be stored",
                      details={"page": page, "attempts": attempts, "last": last})


def _backoff(base: float, attempt: int) -> float:
    d = min(30.0, base * 2 ** (attempt - 1))
    return d / 2 + random.uniform(0, d / 2)  # noqa: S311 - jitter, not security


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        try:
            secs = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(0.0, secs), cap)


def _read_capped(resp: httpx.Response, page: int, src: HttpSource) -> bytes:
    too_big = InvalidInput(f"page {page} of {src.where} is larger than {src.max_page_bytes} bytes; "
                           "ask for a smaller page_size")
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > src.max_page_bytes:
        raise too_big
    buf = bytearray()
    for chunk in resp.iter_bytes():
        buf += chunk
        if len(buf) > src.max_page_bytes:
            raise too_big
    return bytes(buf)


def _no_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _parse(body: bytes, page: int, src: HttpSource) -> tuple[list, int | None]:
    try:
        doc = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidInput(f"page {page} of {src.where} is not valid JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        nxt = doc.get("next_page")
        if nxt is not None and type(nxt) is not int:
            raise InvalidInput(f"page {page} of {src.where}: next_page must be an integer or null")
        return doc["items"], nxt
    if isinstance(doc, dict) and isinstance(doc.get("data"), list) and type(doc.get("total")) is int:
        pages, data = math.ceil(doc["total"] / src.page_size), doc["data"]
        if page < pages and len(data) < src.page_size:
            raise InvalidInput(f"page {page} of {src.where} has {len(data)} items, fewer than page_size "
                               f"{src.page_size}, but total says more pages follow; use the interface's "
                               "maximum page size")
        return data, (page + 1 if page < pages else None)
    raise InvalidInput(f"page {page} of {src.where} is not in a supported shape: expected "
                       '{"items": [...], "next_page": int|null} or {"data": [...], "total": int}')


def _json_text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Decimal):
        return str(v)
    return json.dumps(v, ensure_ascii=False, default=str)


def _page_table(items: list, fields: list[str], page: int, src: HttpSource) -> pa.Table:
    cols: dict[str, list] = {f: [] for f in fields}
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InvalidInput(f"page {page} of {src.where}: item {i} is not a JSON object")
        for f in fields:
            cols[f].append(_json_text(item.get(f)))
    return pa.table({f: pa.array(v, pa.string()) for f, v in cols.items()})
