"""schemathesis against the OpenAPI document with every role's credentials: no 5xx, no response that
contradicts the document (its status, media type or body, formats included).

Every operation gets ROLE_EXAMPLES generated requests of schema-valid data: the first is sent with
the credentials of every role the permission matrix allows it (anonymously when it is public), the
others with the first such role's; then NEGATIVE_EXAMPLES of schema-invalid data. (Refusals of the
other roles are the route matrix's: tests/platform/test_route_permissions.py.) Each operation's
data comes from a fixed seed, so a run is repeatable. Each role gets a fresh session token per
operation, and the world is restored between operations (users and organisations active, roles
held, no blocks), so one operation (a logout, a deactivation, a block) cannot hide the next one
behind 401s. Requests go in-process through Starlette's TestClient against the real app on
PostgreSQL (where NUL characters and numbers beyond 32 bits fail loudest).
"""

from __future__ import annotations

import collections
import hashlib
import json
import secrets
import zlib
from datetime import timedelta

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import update

from authops.app import PUBLIC_ROUTES, iter_routes, route_permission
from authops.audit.anomaly.models import AccessBlock
from authops.core.clock import utcnow
from authops.platform.identity.models import LoginSession, Organisation, User
from authops.policies import enforcer as authz
from authops.policies import permissions
from tests.support.matrix import build_world

ROLE_EXAMPLES = 2
NEGATIVE_EXAMPLES = 1
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}
# The readiness probe answers 503 by design while a dependency is down (no broker runs here).
EXPECTED_5XX = {("GET", "/readyz"): {503}}


def _fresh_token(session, user: User) -> dict[str, str]:
    token = "ato_" + secrets.token_urlsafe(32)  # as identity.service.login issues them
    session.add(LoginSession(user_id=user.id, token_hash=hashlib.sha256(token.encode()).hexdigest(),
                             expires_at=utcnow() + timedelta(hours=1)))
    return {"Authorization": f"Bearer {token}"}


def _restore(session, world, roles: list[str]) -> None:
    """Undo what an earlier operation did to the callers: deactivation, lockout, lost roles, blocks."""
    session.execute(update(Organisation).values(is_active=True))
    session.execute(update(User).values(is_active=True, locked_until=None, failed_logins=0))
    session.execute(update(AccessBlock).values(active=False))
    for role in roles:
        user = world.actor[role]
        if role not in authz.roles_of(session, user_id=user.id, org_id=user.org_id):
            authz.assign_role(session, user_id=user.id, org_id=user.org_id,
                              org_kind=permissions.ROLES[role].org_kind, role=role)
    session.commit()


def _send(client: TestClient, case, headers: dict[str, str]):
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    method, url = kwargs.pop("method"), kwargs.pop("url")
    allowed = {k: v for k, v in kwargs.items() if k in ("headers", "params", "json", "data", "files", "cookies")}
    if isinstance(allowed.get("data"), (bytes, str)):  # a raw body: httpx calls it content
        allowed["content"] = allowed.pop("data")
    if allowed.get("files"):  # requests' form of multipart: httpx encodes only text and bytes
        allowed["files"] = [(name, (part[0], part[1] if isinstance(part[1], (bytes, str)) else json.dumps(part[1]),
                                    *part[2:])) for name, part in allowed["files"]]
    response = client.request(method, url, **allowed)
    response.request.read()  # schemathesis reads the request back for its report
    return response


def _checker(client, session, world, roles, key, statuses, figures, findings):
    """Send each generated case with every role's fresh token (the first role's alone after the first
    case) and keep what the checks find."""
    tokens = {role: _fresh_token(session, world.actor[role]) if role else {} for role in roles}
    session.commit()
    seen = []

    def check(case):
        seen.append(case)
        for role in roles if len(seen) == 1 else roles[:1]:
            response = _send(client, case, tokens[role])
            statuses[response.status_code] += 1
            figures["requests"] += 1
            figures["operation_roles"] += len(seen) == 1 and case.meta.generation.mode is GenerationMode.POSITIVE
            if response.status_code in EXPECTED_5XX.get(key, ()):
                continue
            try:
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - a finding, reported at the end
                findings[(*key, type(exc).__name__)].append(f"[{role or 'anonymous'}] {exc}"[:1500])

    return check


@pytest.mark.parametrize("db_settings", ["postgresql"], indirect=True)
def test_schemathesis_finds_nothing_with_any_role(db_settings, session, app):
    world = build_world(session)
    session.commit()
    schema = schemathesis.openapi.from_dict(app.openapi())
    routes = {(m, p): r for m, p, r in iter_routes(app.routes)}
    operations = sorted((r.ok() for r in schema.get_all_operations()),
                        key=lambda op: (op.path.endswith("/logout"), METHOD_ORDER[op.method.upper()], op.path))
    findings: dict[tuple, list[str]] = collections.defaultdict(list)
    statuses: collections.Counter[int] = collections.Counter()
    figures = collections.Counter()

    with TestClient(app, raise_server_exceptions=False) as client:  # a 500 is a response to report
        for op in operations:
            key = (op.method.upper(), op.path)
            if key in PUBLIC_ROUTES:
                roles: list[str | None] = [None]
            else:
                action = route_permission(routes[key])
                roles = [r.name for r in permissions.ROLES.values() if action in r.actions]
            _restore(session, world, [r for r in roles if r])
            figures["operations"] += 1
            modes = [(GenerationMode.POSITIVE, roles, ROLE_EXAMPLES)]
            if not any(body.media_type.startswith("multipart/") for body in op.body):
                modes.append((GenerationMode.NEGATIVE, roles[:1], NEGATIVE_EXAMPLES))  # invalid parts cannot be sent
            for mode, callers, examples in modes:
                check = _checker(client, session, world, callers, key, statuses, figures, findings)
                run = hypothesis_settings(max_examples=examples, database=None, deadline=None,
                                          suppress_health_check=list(HealthCheck),
                                          phases=[Phase.explicit, Phase.generate])(given(op.as_strategy(mode))(check))
                run = seed(zlib.crc32(f"{key} {mode.value}".encode()))(run)  # the same data every run
                try:
                    run()
                except Exception as exc:  # noqa: BLE001
                    if mode is GenerationMode.NEGATIVE and type(exc).__name__ == "Unsatisfiable":
                        figures["negative_impossible"] += 1  # nothing to negate: no invalid request exists
                        continue
                    findings[(*key, "generation")].append(f"{type(exc).__name__}: {exc}"[:500])

    print(f"\nschemathesis: {dict(figures)}; statuses {dict(sorted(statuses.items()))}; findings {len(findings)}")
    report = [f"{m} {p} ({kind}, {len(msgs)}x):\n{msgs[0]}" for (m, p, kind), msgs in findings.items()]
    assert not findings, f"{len(findings)} findings:\n\n" + "\n\n".join(report)
    assert figures["operations"] >= 200 and statuses[200] + statuses[201] > 100
