"""casbin RBAC with domains: policies live in the database, deny by default.

Subjects are prefixed (`user:12`, `role:bureau_admin`) and domains are `org:<id>`, so a
user named like a role never inherits it. The `p` rules come from the permission matrix
with domain '*' (a role means the same thing in every organisation); `g` rules assign a
user a role inside one organisation. Decisions use casbin's FastEnforcer keyed on the
action, so only the handful of rules for that action are matched (no `eval` in the matcher).
Every policy change bumps `policy_version` in the same transaction; each process checks
it before deciding and reloads when it moved, so a change in one process is seen by all.
"""

from __future__ import annotations

import threading

import casbin
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy_adapter import Adapter
from sqlmodel import Session

from authops.core.identity import OrgKind, Principal
from authops.policies import permissions
from authops.policies.models import CasbinRule, PolicyVersion

MODEL_TEXT = """
[request_definition]
r = sub, dom, act

[policy_definition]
p = sub, dom, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.act == p.act && g(r.sub, p.sub, r.dom) && (p.dom == "*" || p.dom == r.dom)
"""


def user_subject(user_id: int) -> str:
    return f"user:{user_id}"


def org_domain(org_id: int) -> str:
    return f"org:{org_id}"


def role_subject(role: str) -> str:
    return f"role:{role}"


class Authorizer:
    """One per process; thread-safe. Reads rules through sqlalchemy-adapter."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        adapter = Adapter(engine, db_class=CasbinRule, create_table=False)
        self._enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=MODEL_TEXT), adapter)
        self._lock = threading.RLock()
        self._rules = self._index()
        self._version = self._read_version_engine()

    def _index(self) -> frozenset[tuple[str, str, str]]:
        return frozenset((r[0], r[1], r[2]) for r in self._enforcer.get_policy())

    def _read_version_engine(self) -> int:
        with Session(self._engine) as s:
            return read_version(s)

    def refresh(self, session: Session | None = None) -> bool:
        """Reload the rules if another transaction changed them; True when reloaded."""
        version = read_version(session) if session is not None else self._read_version_engine()
        if version == self._version:
            return False
        with self._lock:
            if version != self._version:
                self._enforcer.load_policy()
                self._rules = self._index()
                self._version = version
        return True

    def enforce(self, subject: str, domain: str, action: str) -> bool:
        with self._lock:  # a reload swaps the role manager and the index together
            # g(sub, sub) holds in casbin: a subject matches its own rules, then its roles'.
            roles = [subject, *self._enforcer.get_implicit_roles_for_user(subject, domain)]
            rules = self._rules
        return any((role, "*", action) in rules or (role, domain, action) in rules for role in roles)

    def enforce_exact(self, subject: str, domain: str, action: str) -> bool:
        """casbin's matcher, rule by rule: the reference the fast path must agree with."""
        with self._lock:
            return bool(self._enforcer.enforce(subject, domain, action))

    def allowed(self, principal: Principal, action: str) -> bool:
        """Deny by default; API keys are limited to their scopes within their org kind."""
        if action not in permissions.ACTIONS:
            return False
        if principal.kind == "key":
            return action in principal.scopes and action in permissions.actions_for_kind(principal.org_kind)
        return self.enforce(principal.subject, principal.domain, action)

    def allowed_now(self, session: Session, principal: Principal, action: str) -> bool:
        """`allowed`, deciding on the current rules: refreshed first when the decision reads them
        (a user's roles). An API key's decision reads only its scopes, so it costs no query."""
        if principal.kind != "key":
            self.refresh(session)
        return self.allowed(principal, action)

    def roles_in(self, user_id: int, org_id: int) -> list[str]:
        with self._lock:
            names = self._enforcer.get_roles_for_user_in_domain(user_subject(user_id), org_domain(org_id))
        return sorted(n.removeprefix("role:") for n in names)


# --- writes: through the caller's session, so they commit with the action -----------
def read_version(session: Session) -> int:
    row = session.get(PolicyVersion, 1)
    return row.version if row else 0


def bump_version(session: Session) -> None:
    result = session.execute(update(PolicyVersion).where(PolicyVersion.id == 1)
                             .values(version=PolicyVersion.version + 1))
    if result.rowcount == 0:
        session.add(PolicyVersion(id=1, version=1))
    session.flush()


def sync_role_policies(session: Session) -> int:
    """Make the `p` rules equal the permission matrix; returns how many rules changed."""
    wanted = set(permissions.policy_rules())
    rows = session.exec(select(CasbinRule).where(CasbinRule.ptype == "p")).scalars().all()
    have = {(r.v0, r.v1, r.v2): r for r in rows}
    changed = 0
    for key, row in have.items():
        if key not in wanted:
            session.delete(row)
            changed += 1
    for rule in sorted(wanted - set(have)):
        session.add(CasbinRule(ptype="p", v0=rule[0], v1=rule[1], v2=rule[2]))
        changed += 1
    if changed:
        session.flush()
        bump_version(session)
    return changed


def assign_role(session: Session, *, user_id: int, org_id: int, org_kind: OrgKind, role: str) -> bool:
    """Give a user a role in its organisation; the role must belong to that org kind."""
    check_role(role, org_kind)
    rule = (user_subject(user_id), role_subject(role), org_domain(org_id))
    exists = session.exec(select(CasbinRule).where(
        CasbinRule.ptype == "g", CasbinRule.v0 == rule[0], CasbinRule.v1 == rule[1],
        CasbinRule.v2 == rule[2])).first()
    if exists:
        return False
    session.add(CasbinRule(ptype="g", v0=rule[0], v1=rule[1], v2=rule[2]))
    session.flush()
    bump_version(session)
    return True


def revoke_role(session: Session, *, user_id: int, org_id: int, role: str) -> bool:
    result = session.execute(delete(CasbinRule).where(
        CasbinRule.ptype == "g", CasbinRule.v0 == user_subject(user_id),
        CasbinRule.v1 == role_subject(role), CasbinRule.v2 == org_domain(org_id)))
    if result.rowcount:
        bump_version(session)
    return bool(result.rowcount)


def revoke_all_roles(session: Session, *, user_id: int) -> None:
    result = session.execute(delete(CasbinRule).where(
        CasbinRule.ptype == "g", CasbinRule.v0 == user_subject(user_id)))
    if result.rowcount:
        bump_version(session)


def roles_of(session: Session, *, user_id: int, org_id: int) -> list[str]:
    """A user's roles read straight from the table (for display and token resolution)."""
    rows = session.exec(select(CasbinRule.v1).where(
        CasbinRule.ptype == "g", CasbinRule.v0 == user_subject(user_id),
        CasbinRule.v2 == org_domain(org_id))).scalars().all()
    return sorted(r.removeprefix("role:") for r in rows)


def check_role(role: str, org_kind: OrgKind) -> None:
    from authops.core.errors import InvalidInput

    org_kind = OrgKind(org_kind)
    spec = permissions.ROLES.get(role)
    if spec is None:
        raise InvalidInput(f"unknown role '{role}'; roles for a {org_kind.value} organisation: "
                           + ", ".join(r.name for r in permissions.roles_for_kind(org_kind)),
                           details={"field": "role"})
    if spec.org_kind != org_kind:
        raise InvalidInput(f"role '{role}' belongs to {spec.org_kind.value} organisations, not "
                           f"{org_kind.value}; choose one of: "
                           + ", ".join(r.name for r in permissions.roles_for_kind(org_kind)),
                           details={"field": "role"})
