"""Rate limits on product calls and logins, and request size limits, for the HTTP API.

Rate limits
-----------
Product calls are limited per credential (an API key, or a logged-in user) and per organisation;
logins per account name, per the account's organisation and per client address. Each limit is
"N requests per Settings.rate_limit_window_seconds" (the values are Settings.rate_limit_*; 0 turns
one off), counted in a sliding window: the current fixed window's count plus the previous window's
count weighted by the share of it the sliding window still covers. A request is admitted only when
every bucket it names is under its limit, and only admitted requests are counted, so a client that
waits the Retry-After gets in at once. A refusal is `RateLimited`: 429, code `rate_limited`, a
`Retry-After` header (whole seconds), and the limit in the message and details. The limiter runs
after authentication (it needs the key and organisation) and before any other work of the route.

Where the counters live: the choice
-----------------------------------
Several API processes (`authops serve --workers N`, or several hosts) must share one count, or N
processes would admit N times the limit. Settings.rate_limit_url decides:

- "" (the default): a Redis when there is one. AUTHOPS_BROKER_URL when it is redis:// or
  rediss://; else, with the embedded broker, the private valkey that every process of the data
  directory already shares (when it is running: `authops serve` starts it; looked for again every
  RESOLVE_SECONDS while it is not). With a RabbitMQ broker (amqp://) and no Redis configured, each
  process counts alone (logged once, naming AUTHOPS_RATE_LIMIT_URL).
- "memory": this process only (one API process; tests).
- "redis://host:port/db": that Redis (a standalone server or a primary; not Redis Cluster).

On Redis one check is one round trip: a Lua script reads every bucket the request names, decides,
and counts atomically, using the server's clock (so hosts with skewed clocks share windows); keys
expire after two windows. When Redis does not answer within REDIS_TIMEOUT_SECONDS the process falls
back to its own counters for FALLBACK_SECONDS and logs it: an outage of the limiter's store never
fails a call, and every process still enforces each limit on its own meanwhile. In-process
counters cost a few microseconds a check, Redis about one local round trip (bench/limits.py prints
both beside a call without a limiter).

Request size
------------
`BodyLimit`, a pure ASGI middleware (`install`), refuses a request whose body exceeds
Settings.max_body_bytes (Settings.max_upload_bytes for multipart/form-data) with 413
`payload_too_large`: from the Content-Length header before anything is read, or while a body
without one (chunked) is read: then as an HTTP 413 error, which the app's handler answers in the
same format. Routes keep their own smaller limits (e.g. a product batch's 10 MiB).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from authops.core.errors import AuthopsError
from authops.core.identity import Principal
from authops.core.settings import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "authops:rl:"
REDIS_TIMEOUT_SECONDS = 0.05
FALLBACK_SECONDS = 30.0
RESOLVE_SECONDS = 30.0
MEMORY_PRUNE_AT = 50_000  # buckets held in process before stale ones are dropped

# What each bucket counts, for the refusal's message.
SCOPES = {
    "call.key": "product calls per API key",
    "call.user": "product calls per user",
    "call.org": "product calls per organisation",
    "login.user": "login attempts per account name",
    "login.org": "login attempts per organisation",
    "login.ip": "login attempts per client address",
}


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket: at most `limit` admitted requests of `scope` by `subject` per `window` seconds."""

    scope: str
    subject: str
    limit: int
    window: int

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.scope}:{self.subject}:{self.window}"


class RateLimited(AuthopsError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, limit: Limit, retry_after: int) -> None:
        what = SCOPES.get(limit.scope, limit.scope)
        super().__init__(
            f"rate limit reached: at most {limit.limit} {what} in any {limit.window} s; "
            f"retry in {retry_after} s (see the Retry-After header)",
            details={"scope": limit.scope, "limit": limit.limit, "window_seconds": limit.window,
                     "retry_after_seconds": retry_after})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class PayloadTooLarge(AuthopsError):
    status_code = 413
    code = "payload_too_large"


# --- the sliding window ----------------------------------------------------------------------
def retry_after(limit: int, window: int, cur: float, prev: float, frac: float) -> int:
    """Seconds until one more request fits, if no other is admitted meanwhile (at least 1).

    `frac` is how far into the current fixed window we are (0..1); the estimate is
    prev * (1 - frac) + cur, and a request fits when estimate + 1 <= limit."""
    room = limit - 1
    if cur <= room:  # the previous window's weight must fade enough, within this window
        wait = window * ((1 - frac) - room_share(room - cur, prev))
    else:  # only the next window helps: there this window's count fades in turn
        wait = window * (1 - frac) + window * max(0.0, 1 - room / cur)
    return max(1, math.ceil(wait - 1e-9))


def room_share(room: float, prev: float) -> float:
    return 1.0 if prev <= 0 else min(1.0, room / prev)


class MemoryStore:
    """This process's counters (a lock and a dict: a few microseconds a check)."""

    name = "memory"

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[int]] = {}  # key -> [window index, current count, previous count]

    def hit(self, limits: tuple[Limit, ...]) -> tuple[Limit, int] | None:
        """Count the request in every bucket, or none: (refusing limit, retry-after) when one is full."""
        now = self._clock()
        with self._lock:
            states = []
            for lim in limits:
                idx, within = divmod(now, lim.window)
                state = self._state(lim.key, int(idx))
                frac = within / lim.window
                if state[2] * (1 - frac) + state[1] + 1 > lim.limit:
                    return lim, retry_after(lim.limit, lim.window, state[1], state[2], frac)
                states.append(state)
            for state in states:
                state[1] += 1
            if len(self._buckets) > MEMORY_PRUNE_AT:
                self._prune(now)
        return None

    def _state(self, key: str, idx: int) -> list[int]:
        state = self._buckets.get(key)
        if state is None:
            state = self._buckets[key] = [idx, 0, 0]
        elif state[0] != idx:
            state[2] = state[1] if state[0] == idx - 1 else 0
            state[1] = 0
            state[0] = idx
        return state

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._buckets.items() if s[0] < now // int(k.rsplit(":", 1)[1]) - 1]:
            del self._buckets[key]


# KEYS: one base key per bucket; ARGV: per bucket limit and window (seconds). Time is the server's.
# Returns {0} when admitted (every bucket counted), else {i, cur, prev, frac * 1e6} of the first
# full bucket i (nothing counted).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local cur_keys = {}
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local idx = math.floor(now / window)
  local frac = (now - idx * window) / window
  local cur_key = KEYS[i] .. ':' .. idx
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local prev = tonumber(redis.call('GET', KEYS[i] .. ':' .. (idx - 1)) or '0')
  if prev * (1 - frac) + cur + 1 > limit then
    return {i, cur, prev, math.floor(frac * 1000000)}
  end
  cur_keys[i] = cur_key
end
for i = 1, n do
  redis.call('INCR', cur_keys[i])
  redis.call('EXPIRE', cur_keys[i], 2 * tonumber(ARGV[2 * i]) + 1)
end
return {0}
"""


class RedisStore:
    """Counters in Redis, shared by every process that uses the same server."""

    name = "redis"

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._script = self._client.register_script(_SCRIPT)

    def hit(self, limits: tuple[Limit, ...]) -> tuple[Limit, int] | None:
        args: list[int] = []
        for lim in limits:
            args += (lim.limit, lim.window)
        out = self._script(keys=[lim.key for lim in limits], args=args)
        if not out[0]:
            return None
        lim = limits[int(out[0]) - 1]
        cur, prev, frac = int(out[1]), int(out[2]), int(out[3]) / 1_000_000
        return lim, retry_after(lim.limit, lim.window, cur, prev, frac)

    def close(self) -> None:
        self._client.close()


# --- the limiter of one configuration ----------------------------------------------------------
class Limiter:
    """Checks requests against the limits, on the store Settings.rate_limit_url chooses (see above)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.memory = MemoryStore()
        self._redis: RedisStore | None = None
        self._down_until = 0.0  # while monotonic() is below, Redis is skipped (it failed)
        self._resolve_at = 0.0  # when to look for the embedded broker again
        self._lock = threading.Lock()
        self._warned_local = False
        self._resolve()

    @property
    def store(self) -> str:
        """Where the counters live now: "redis" or "memory"."""
        return "redis" if self._redis is not None and time.monotonic() >= self._down_until else "memory"

    def _resolve(self) -> None:
        url = shared_store_url(self.settings)
        if url:
            self._redis = RedisStore(url)
            return
        if self.settings.embedded_broker and self.settings.rate_limit_url.strip() != "memory":
            self._resolve_at = time.monotonic() + RESOLVE_SECONDS  # the broker may start later
        elif self.settings.rate_limit_url.strip() != "memory" and not self._warned_local:
            self._warned_local = True
            log.warning("rate limits are counted per API process: the broker is not Redis; set "
                        "AUTHOPS_RATE_LIMIT_URL=redis://... to share them between processes")

    def admit(self, limits: tuple[Limit, ...]) -> None:
        """Count the request or raise RateLimited; limits of 0 are off."""
        limits = tuple(lim for lim in limits if lim.limit > 0)
        if not limits:
            return
        if self._redis is None and self._resolve_at and time.monotonic() >= self._resolve_at:
            with self._lock:
                if self._redis is None and time.monotonic() >= self._resolve_at:
                    self._resolve()
        refused = None
        if self._redis is not None and time.monotonic() >= self._down_until:
            try:
                refused = self._redis.hit(limits)
            except Exception as exc:  # noqa: BLE001 - any store failure: count locally instead
                self._down_until = time.monotonic() + FALLBACK_SECONDS
                log.warning("rate limit store %s failed (%s); counting in this process for %d s",
                            _safe_url(self._redis.url), type(exc).__name__, FALLBACK_SECONDS)
                refused = self.memory.hit(limits)
        else:
            refused = self.memory.hit(limits)
        if refused is not None:
            raise RateLimited(*refused)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def shared_store_url(settings: Settings) -> str | None:
    """The Redis URL the counters go to, or None for this process (see the module docstring)."""
    url = settings.rate_limit_url.strip()
    if url == "memory":
        return None
    if url:
        return url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    if settings.embedded_broker:
        from authops.core import broker

        record = broker.broker_info(settings)
        return record.url if record is not None else None
    return None


def _safe_url(url: str) -> str:
    """The URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}"


_limiters: OrderedDict[int, tuple[Settings, Limiter]] = OrderedDict()
_limiters_lock = threading.Lock()


def limiter_for(settings: Settings) -> Limiter:
    """The limiter of this Settings object (one per app; tests make many apps, each counts alone)."""
    entry = _limiters.get(id(settings))
    if entry is not None and entry[0] is settings:
        return entry[1]
    with _limiters_lock:
        entry = _limiters.get(id(settings))
        if entry is None or entry[0] is not settings:
            entry = (settings, Limiter(settings))
            _limiters[id(settings)] = entry
            while len(_limiters) > 16:  # settings objects of finished apps (tests)
                _limiters.popitem(last=False)[1][1].close()
        return entry[1]


# --- what the routes call ---------------------------------------------------------------------
def admit_call(settings: Settings, principal: Principal) -> None:
    """A product call (or batch submission): per API key or user, and per organisation."""
    window = settings.rate_limit_window_seconds
    limiter_for(settings).admit((
        Limit("call.key" if principal.kind == "key" else "call.user", str(principal.id),
              settings.rate_limit_call_per_key, window),
        Limit("call.org", str(principal.org_id), settings.rate_limit_call_per_org, window)))


def admit_login(session: Any, settings: Settings, *, username: str, ip: str | None) -> None:
    """A login attempt: per account name (known or not), its organisation, and client address.

    Checked before the password is (argon2 is deliberately slow: unlimited attempts are also a
    way to exhaust the CPU)."""
    from sqlalchemy import select

    from authops.platform.identity.models import User

    name = username.strip().lower()
    window = settings.rate_limit_window_seconds
    limits = [Limit("login.user", hashlib.sha256(name.encode()).hexdigest()[:24],
                    settings.rate_limit_login_per_user, window)]
    if settings.rate_limit_login_per_org:
        org_id = session.execute(select(User.org_id).where(User.username == name)).scalar()
        if org_id is not None:
            limits.append(Limit("login.org", str(org_id), settings.rate_limit_login_per_org, window))
    if ip:
        limits.append(Limit("login.ip", ip, settings.rate_limit_login_per_ip, window))
    limiter_for(settings).admit(tuple(limits))


# --- request size ------------------------------------------------------------------------------
class BodyLimit:
    """Pure ASGI middleware: 413 for a body over max_body_bytes (max_upload_bytes for multipart)."""

    def __init__(self, app, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type" and value[:19].lower() == b"multipart/form-data":
                limit = self.max_upload
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False  # the server refuses a malformed length itself
            if too_big:
                return await _refuse(scope, send, limit)
            return await self.app(scope, receive, send)  # the server never passes more than it said
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI passes an HTTPException raised while reading the body on to
                    raise HTTPException(413, detail=_too_large(limit).message)  # the app's handler: 413
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes, the most this route takes; "
                           "send less (large data sets: upload them in parts)",
                           details={"max_bytes": limit})


async def _refuse(scope, send, limit: int) -> None:
    # Connection: close, so the server does not read (and discard) the body it announced.
    response = JSONResponse(status_code=413, content=_too_large(limit).to_dict(), headers={"Connection": "close"})
    await response(scope, None, send)


def install(app, settings: Settings) -> None:
    """Add the body size limit, and answer RateLimited with its Retry-After header."""
    async def _limited(_request, exc: AuthopsError):
        return JSONResponse(status_code=exc.status_code, content=exc.to_dict(),
                            headers=getattr(exc, "headers", None))

    app.add_exception_handler(RateLimited, _limited)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
