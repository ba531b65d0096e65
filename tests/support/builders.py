"""Small builders for tests: organisations, users, logins."""

from __future__ import annotations

from itertools import count

from fastapi.testclient import TestClient
from sqlmodel import Session

from authops.core.identity import OrgKind
from authops.platform.identity import service as identity_service
from authops.platform.identity.models import Organisation, User
from authops.policies import permissions

PASSWORD = "Test-password-42"
_seq = count(1)


def make_org(session: Session, kind: OrgKind, code: str | None = None) -> Organisation:
    n = next(_seq)
    return identity_service.create_org(session, kind=kind, code=code or f"{kind.value}-{n}",
                                       name_zh=f"测试{kind.value}{n}", name_en=f"Test {kind.value} {n}")


def make_user(session: Session, org: Organisation, *roles: str, username: str | None = None) -> User:
    roles = roles or (permissions.ADMIN_ROLE_BY_KIND[OrgKind(org.kind)],)
    return identity_service.create_user(session, org=org, username=username or f"user{next(_seq)}",
                                        display_name="测试用户", password=PASSWORD, roles=list(roles))


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
