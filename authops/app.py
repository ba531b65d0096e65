"""The HTTP API: routers under /api/v1, one error format, health and readiness probes."""

from __future__ import annotations

import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc, text
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from authops import __version__
from authops.core.db import current_revision, get_engine
from authops.core.errors import AuthopsError, ConfigurationError, Unavailable
from authops.core.settings import Settings, get_settings
from authops.platform.audit.router import router as audit_router
from authops.platform.identity.router import router as identity_router
from authops.platform.jobs.router import router as jobs_router
from authops.platform.supervision.router import router as supervision_router
from authops.platform.catalog.router import router as catalog_router
from authops.platform.sandbox.router import router as sandbox_router
from authops.platform.governance.router import public_router as governance_public_router
from authops.platform.governance.router import router as governance_router
from authops.platform import limits
from authops.console import router as console_router
from authops.platform.products import batched
from authops.platform.products import pages as product_pages
from authops.platform.products.router import BatchedCalls
from authops.platform.products.router import router as products_router
from authops.policies.enforcer import Authorizer, sync_role_policies

# Routers of later areas, each module exporting `router` (prefix set in the module).
EXTRA_ROUTERS = (
    "authops.platform.products.joint_router",
    "authops.platform.products.sme_router",
    "authops.platform.products.report_router",
    "authops.platform.assessment.router",
    "authops.platform.auditwork.router",
    "authops.platform.billing.router",
)

log = logging.getLogger("authops.api")
API_PREFIX = "/api/v1"

# Routes anyone may call without credentials. Every other route must depend on a permission.
PUBLIC_ROUTES: set[tuple[str, str]] = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", f"{API_PREFIX}/auth/login"),
    ("GET", f"{API_PREFIX}/audit/public-keys"),  # anyone may verify the log's checkpoints
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


def _error(status: int, code: str, message: str, details=None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"code": code, "message": message, "details": details}})


def _validation_details(exc: RequestValidationError) -> list[dict]:
    # Never echo the submitted values back: only where the problem is and what it is.
    return [{"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthopsError)
    async def _authops_error(_request: Request, exc: AuthopsError):
        response = _error(exc.status_code, exc.code, exc.message, exc.details)
        wait = exc.details.get("retry_after_seconds") if isinstance(exc.details, dict) else None
        if exc.status_code in (429, 503) and isinstance(wait, int):
            response.headers["Retry-After"] = str(max(wait, 1))  # every refusal that names a wait says it in HTTP too
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        details = _validation_details(exc)
        summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
        return _error(422, "invalid_input", f"fix these fields: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 413: "payload_too_large"}
        message = {404: "no such route; see /docs for the API",
                   405: "method not allowed on this route; see /docs"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), message)

    async def _database_unavailable(_request: Request, exc: Exception):
        # A lost or refused database connection (restart, failover, network): a fast, retryable 503,
        # not a 500. The message carries no exception text (it could quote statement values).
        orig = getattr(exc, "orig", None)
        # the driver's error class; SQLite's own messages ("database is locked") quote no values
        log.warning("database unavailable: %s (%s)%s", type(exc).__name__, type(orig).__name__,
                    f": {orig}" if type(orig).__module__ == "sqlite3" else "")
        response = _error(503, "database_unavailable",
                          "the database is unreachable or restarting; retry in a few seconds (a product call "
                          "retried with the same Idempotency-Key is answered and charged once)")
        response.headers["Retry-After"] = "2"
        return response

    for db_error in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                     sa_exc.TimeoutError):
        app.add_exception_handler(db_error, _database_unavailable)

    @app.exception_handler(sa_exc.DataError)
    async def _data_error(_request: Request, exc: sa_exc.DataError):
        # The database refused a value no bound of the route caught (a NUL character in text, a number
        # beyond its column): the client's input. No value is echoed.
        log.warning("database refused a request value (%s)", type(exc.orig).__name__)
        return _error(422, "invalid_input", "a value cannot be stored: text may not contain NUL characters "
                      "and numbers must fit their field (ids: at most 2147483647)")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        # No exception text: it could carry data values.
        return _error(500, "internal_error", "internal error; the operator has been notified "
                      "(quote the time of the request)")


ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "title": "Error",
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "stable, e.g. not_found, forbidden, invalid_input, rate_limited"},
        "message": {"type": "string", "description": "what to fix, naming the field, row or rule"},
        "details": {"description": "structured details, e.g. the invalid fields"}}}}}
# Routes that answer files say which in a `format` query parameter, or in the path's extension.
FILE_TYPES = {"json": "application/json", "csv": "text/csv", "pdf": "application/pdf", "html": "text/html",
              "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def document_responses(app: FastAPI) -> None:
    """Make app.openapi() say what the API answers: every error in the one format above (a `default`
    response; FastAPI's own 422 schema is not what install_error_handlers sends), and the media types
    of the routes that answer files."""
    build = app.openapi

    def openapi() -> dict:
        doc = build()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        if "Error" in schemas:
            return doc
        schemas["Error"] = ERROR_SCHEMA
        error = {"description": "Error: `error.code` says which, `error.message` what to fix",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, item in doc["paths"].items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                responses["default"] = error
                if "422" in responses:
                    responses["422"] = {**error, "description": "Invalid input: `error.details` lists the fields"}
                formats = [p for p in operation.get("parameters", []) if p["name"] == "format" and p["in"] == "query"]
                names = formats[0]["schema"].get("enum", []) if formats else [path.rsplit(".", 1)[-1]]
                types = [FILE_TYPES[n] for n in names if n in FILE_TYPES and n != "json"]
                ok = next((responses[c] for c in ("200", "201") if c in responses), None)
                if types and ok is not None:
                    content = ok.setdefault("content", {})
                    if not formats:  # the extension is the only answer
                        content.pop("application/json", None)
                    content.update({t: {"schema": {"type": "string", "format": "binary"}} for t in types})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def check_broker(settings: Settings) -> None:
    """Raise Unavailable unless the broker answers (readiness never starts one)."""
    from kombu import Connection

    from authops.core import broker

    if settings.embedded_broker:
        if broker.broker_info(settings) is None:
            raise Unavailable("embedded broker is not running; start it with `authops serve` "
                              "or `authops broker start`")
        return
    try:
        with Connection(settings.broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        raise Unavailable(f"broker unreachable ({type(exc).__name__})") from None


def readiness(settings: Settings) -> dict[str, dict]:
    """Check the database, the broker and the object store; each with ok and a reason."""
    from authops.core.storage import get_object_store

    checks: dict[str, dict] = {}
    try:
        with Session(get_engine(settings)) as s:
            s.exec(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - the reason is reported, not raised
        checks["database"] = {"ok": False, "reason": type(exc).__name__}
    try:
        check_broker(settings)
        checks["broker"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = {"ok": False, "reason": getattr(exc, "message", type(exc).__name__)}
    try:
        get_object_store(settings).ping()
        checks["storage"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001
        checks["storage"] = {"ok": False, "reason": getattr(exc, "message", type(exc).__name__)}
    return checks


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if current_revision(settings) is None:
            raise ConfigurationError("the database has no schema: run `authops db upgrade` first")
        with Session(get_engine(settings)) as s:
            sync_role_policies(s)
            s.commit()
        app.state.authorizer = Authorizer(get_engine(settings))
        yield
        await batched.close_writers()  # this loop's batched-call writers: finish, release their connections

    app = FastAPI(title="authops", version=__version__, lifespan=lifespan,
                  description="Authorized operation of public data: raw data never leaves the domain.")
    app.state.settings = settings
    app.state.authorizer = None  # built at startup, once the schema is known to exist
    install_error_handlers(app)
    limits.install(app, settings)  # 429 with Retry-After; 413 over max_body_bytes / max_upload_bytes
    app.add_middleware(BatchedCalls)  # product calls this process has seen admitted (products.batched)

    @app.get("/healthz", tags=["operations"])
    def healthz():
        """The process is alive."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["operations"])
    def readyz():
        """Database, broker and object store are reachable."""
        checks = readiness(settings)
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse(status_code=200 if ok else 503,
                            content={"status": "ready" if ok else "not ready", "checks": checks})

    # The product calls first: Starlette tries routes in order, and they are the hottest path.
    app.include_router(products_router, prefix=API_PREFIX)
    app.include_router(identity_router, prefix=API_PREFIX)
    app.include_router(jobs_router, prefix=API_PREFIX)
    app.include_router(supervision_router, prefix=API_PREFIX)
    app.include_router(audit_router, prefix=API_PREFIX)
    app.include_router(catalog_router, prefix=API_PREFIX)
    app.include_router(sandbox_router, prefix=API_PREFIX)
    app.include_router(governance_router, prefix=API_PREFIX)
    app.include_router(governance_public_router, prefix=API_PREFIX)
    for name in EXTRA_ROUTERS:
        app.include_router(importlib.import_module(name).router, prefix=API_PREFIX)
    app.include_router(product_pages.public_router, prefix=API_PREFIX)
    app.include_router(product_pages.page_router)  # /products/{code}: the HTML product page
    app.include_router(console_router.public_router)  # /console/login, static files, disclosure, language
    app.include_router(console_router.router)  # the web console (cookie session, the same permissions)
    product_pages.extend_openapi(app)
    document_responses(app)
    return app


def iter_routes(routes, prefix: str = ""):
    """Yield (method, path, route) for every route, descending into included routers."""
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:  # FastAPI's included-router wrapper
            yield from iter_routes(inner.routes, prefix + route.include_context.prefix)
        elif isinstance(route, (APIRoute, Route)):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, prefix + route.path, route


# Governance's public pages (the disclosure, objections during publicity) are public by design.
# (Walked with iter_routes: included routers appear as FastAPI's wrapper, which has no .methods.)
PUBLIC_ROUTES |= {(m, f"{API_PREFIX}{p}") for m, p, _ in iter_routes(governance_public_router.routes)}
# The product pages (contract, example, price, registration number) are public too.
PUBLIC_ROUTES |= {(m, f"{API_PREFIX}{p}") for m, p, _ in iter_routes(product_pages.public_router.routes)}
PUBLIC_ROUTES |= {(m, p) for m, p, _ in iter_routes(product_pages.page_router.routes)}
PUBLIC_ROUTES |= {(m, p) for m, p, _ in iter_routes(console_router.public_router.routes)}


def route_permission(route) -> str | None:
    """The action a route requires (its Require dependency), or None."""
    from authops.platform.deps import Require

    dependant = getattr(route, "dependant", None)
    stack = list(dependant.dependencies) if dependant else []
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Require):
            return dep.call.action
        stack.extend(dep.dependencies)
    return None
