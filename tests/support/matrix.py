"""The route matrix's world (two organisations of every kind, a user per role) and its Case type,
shared by tests/platform/test_route_permissions.py and the per-area case modules it loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from typing import Callable

from sqlmodel import Session

from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.platform.identity.models import ApiKey, Organisation, User
from authops.policies import permissions
from tests.support.builders import make_org, make_user

_n = count(1)


@dataclass
class World:
    home: dict[OrgKind, Organisation] = field(default_factory=dict)
    away: dict[OrgKind, Organisation] = field(default_factory=dict)
    actor: dict[str, User] = field(default_factory=dict)  # role -> user in home org of its kind
    victim: dict[int, User] = field(default_factory=dict)  # org id -> a second user
    key: dict[int, int] = field(default_factory=dict)  # org id -> api key id
    job: dict[int, int] = field(default_factory=dict)  # org id -> job id


def build_world(session: Session) -> World:
    w = World()
    for kind in OrgKind:
        w.home[kind], w.away[kind] = make_org(session, kind), make_org(session, kind)
        for role in permissions.roles_for_kind(kind):
            w.actor[role.name] = make_user(session, w.home[kind], role.name)
        for org in (w.home[kind], w.away[kind]):
            w.victim[org.id] = make_user(session, org)
            key = ApiKey(org_id=org.id, name="k", prefix=f"{next(_n):012d}", secret_hash="0" * 64,
                         scopes=["self.read"], expires_at=utcnow())
            session.add(key)
            session.flush()
            w.key[org.id] = key.id
            w.job[org.id] = job_service.create_job(session, kind="system.echo", params={}, org_id=org.id).id
    session.commit()
    return w


Params = Callable[[World, Organisation], dict]


@dataclass
class Case:
    params: Params = lambda w, org: {}
    body: Callable[[World, Organisation], dict | None] = lambda w, org: None
    # Restore state a previous allowed call consumed.
    prepare: Callable[[Session, World, Organisation], None] | None = None
    last: bool = False
    # A role holding this cross-organisation action may legitimately reach foreign objects.
    cross_org: str | None = None
    query: Callable[[World, Organisation], dict] = lambda w, org: {}
    files: Callable[[World, Organisation], dict] | None = None
