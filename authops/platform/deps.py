"""Request dependencies: the session (committed at the edge), the principal, permissions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as FastAPIPath
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.audit.anomaly import service as anomaly_service
from authops.core.db import get_engine
from authops.core.errors import Forbidden, Unauthenticated
from authops.core.identity import Principal
from authops.core.regions import region_of
from authops.core.settings import Settings
from authops.policies import permissions
from authops.policies.enforcer import Authorizer
from authops.platform.identity import service as identity_service


# Coroutines, not plain functions: FastAPI runs a plain dependency in a worker thread, and a hop
# there and back costs more than these attribute reads.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_authorizer(request: Request) -> Authorizer:
    return request.app.state.authorizer


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: commit when the handler returns, roll back on error."""
    with Session(get_engine(request.app.state.settings), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AuthorizerDep = Annotated[Authorizer, Depends(get_authorizer)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def credential_from(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("malformed Authorization header: use 'Bearer <token or API key>'",
                                  code="malformed_credential")
        return value.strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    raise Unauthenticated("log in (POST /api/v1/auth/login) or send an API key as "
                          "'Authorization: Bearer <key>'", code="missing_credential")


class Require:
    """Route dependency: authenticate, then check one action from the permission matrix.

    Every route either depends on a Require or is on the public allow-list
    (authops.app.PUBLIC_ROUTES); a test walks all routes to keep it so. Nothing is cached between
    requests: the credential, the blocks and (for a user) the policy version are read each time,
    so a revocation, block or role change refuses the next request in every process. An API key
    costs one query (`identity_service.authenticate` reads the key, its organisation and whether
    a block names it together) plus, once a minute, its last-use update. The one exception is the
    batched path of product calls (authops.platform.products.batched), which remembers admitted
    keys but checks them again, with the blocks, in the transaction that commits each call.
    """

    def __init__(self, action: str) -> None:
        if action not in permissions.ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        self.action = action

    def admit(self, request: Request, session: Session, authorizer: Authorizer, principal: Principal, *,
              maybe_blocked: bool = True) -> None:
        """Refuse an authenticated principal that a block or throttle names (when the lookup says one
        may) or that lacks the action; each refusal is audited. The API and the console share it."""
        if maybe_blocked:  # an active block or throttle (anomaly supervision) refuses before any action
            try:
                anomaly_service.check_access(session, principal, action=self.action)
            except Forbidden as exc:
                refusal(request, actor_of(principal), "access.blocked", exc, outcome="blocked")
                raise
        if not authorizer.allowed_now(session, principal, self.action):
            spec = permissions.ACTIONS[self.action]
            held = ", ".join(sorted(principal.roles)) or ("scopes " + ", ".join(sorted(principal.scopes)))
            exc = Forbidden(f"permission '{self.action}' ({spec.en}) is needed; you have: {held or 'nothing'}",
                            details={"permission": self.action})
            refusal(request, actor_of(principal), "authz.denied", exc)
            raise exc

    def __call__(self, request: Request, session: SessionDep, authorizer: AuthorizerDep) -> Principal:
        return self.principal(request, session, authorizer)

    def principal(self, request: Request, session: Session, authorizer: Authorizer) -> Principal:
        """Authenticate the request's credential and admit it for this action (see the class)."""
        settings: Settings = request.app.state.settings
        ip = client_ip(request)
        try:
            found = identity_service.authenticate(session, credential_from(request), ip=ip)
        except Unauthenticated as exc:
            refusal(request, audit_log.Actor(kind="anonymous", ip=ip, region=region_of(settings, ip)),
                    "auth.rejected", exc)
            raise
        principal = replace(found.principal, region=region_of(settings, ip))
        self.admit(request, session, authorizer, principal, maybe_blocked=found.maybe_blocked)
        if principal.kind == "key":
            identity_service.touch_api_key(session, principal.id, found.last_used_at)
        request.state.principal = principal
        return principal


class RequireInHandler(Require):
    """The same check, made by the handler itself inside its one worker-thread hop.

    For the hot path (product calls): as a dependency it only names the action (so the route is
    still checked by `authops.app.route_permission` and the route tests); the handler calls
    `principal(request, session, authorizer)` first thing in the thread where it does the rest of
    its work, in its own transaction. FastAPI would otherwise run the session, the check, the
    handler and the response validation each in a separate hop to a worker thread and back."""

    async def __call__(self, request: Request) -> RequireInHandler:  # type: ignore[override]
        return self


def in_transaction(request: Request, work):
    """Run work(session) in one transaction: commit on return, roll back on error (as get_session)."""
    with Session(get_engine(request.app.state.settings), expire_on_commit=False) as session:
        try:
            out = work(session)
            session.commit()
            return out
        except BaseException:
            session.rollback()
            raise


def actor_of(principal: Principal) -> audit_log.Actor:
    return audit_log.Actor(kind=principal.kind, id=principal.id, name=principal.name,
                           org_id=principal.org_id, ip=principal.ip, region=principal.region)


def refusal(request: Request, actor: audit_log.Actor, action: str, exc: Exception, *,
            outcome: str = "denied") -> None:
    """Log a refused request in its own transaction (the request's own will roll back)."""
    route = request.scope.get("route")
    with Session(get_engine(request.app.state.settings)) as s:
        audit_log.record(s, actor, action, outcome=outcome, object_type="route",
                         object_id=f"{request.method} {getattr(route, 'path', request.url.path)}",
                         details={"code": getattr(exc, "code", "error")})
        s.commit()


def require(action: str):
    return Depends(Require(action))


# Database ids are 32-bit: a larger number in a path is a client error, not a database error.
ObjectId = Annotated[int, FastAPIPath(ge=1, le=2_147_483_647)]
