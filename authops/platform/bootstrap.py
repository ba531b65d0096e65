"""Administrative flows used by the CLI and the demo (the same services as the API)."""

from __future__ import annotations

from sqlalchemy import select

from authops.core import db
from authops.core.clock import utcnow
from authops.core.errors import NotFound
from authops.core.identity import OrgKind, Principal
from authops.core.settings import Settings
from authops.platform.identity import service as identity_service
from authops.platform.identity.models import Organisation, User
from authops.policies import enforcer as authz

BUREAU_CODE = "szdata"


def upgrade_and_seed(settings: Settings, revision: str = "head") -> None:
    """Migrate the schema and make the stored role policies match the permission matrix."""
    db.upgrade(settings, revision)
    with db.session_scope(settings) as session:
        authz.sync_role_policies(session)


def init(settings: Settings, *, admin_username: str, admin_password: str) -> tuple[Organisation, User]:
    upgrade_and_seed(settings)
    with db.session_scope(settings) as session:
        org = session.exec(select(Organisation).where(Organisation.code == BUREAU_CODE)).scalars().first()
        if org is None:
            org = identity_service.create_org(session, kind=OrgKind.BUREAU, code=BUREAU_CODE,
                                              name_zh="市数据资源管理局",
                                              name_en="Municipal Data Resource Administration Bureau")
        user = identity_service.create_user(session, org=org, username=admin_username,
                                            display_name="数据局管理员", password=admin_password,
                                            roles=["bureau_admin"])
        return org, user


def org_by_code(session, code: str) -> Organisation:
    org = session.exec(select(Organisation).where(Organisation.code == code)).scalars().first()
    if org is None:
        raise NotFound(f"no organisation with code '{code}'; list them with `authops users list`")
    return org


def create_user_by_org_code(settings: Settings, *, org_code: str, username: str, display_name: str,
                            password: str, roles: list[str]) -> User:
    with db.session_scope(settings) as session:
        org = org_by_code(session, org_code)
        return identity_service.create_user(session, org=org, username=username,
                                            display_name=display_name, password=password, roles=roles)


def user_rows(settings: Settings, *, org_code: str | None = None) -> list[dict]:
    with db.session_scope(settings) as session:
        stmt = select(User, Organisation).join(Organisation, Organisation.id == User.org_id).order_by(User.id)
        if org_code:
            stmt = stmt.where(Organisation.code == org_code)
        now = utcnow()
        return [{"username": u.username, "org": o.code,
                 "roles": ", ".join(authz.roles_of(session, user_id=u.id, org_id=o.id)),
                 "locked": " (locked)" if u.locked_until and u.locked_until > now else ""}
                for u, o in session.execute(stmt).all()]


def unlock(settings: Settings, username: str) -> None:
    with db.session_scope(settings) as session:
        user = session.exec(select(User).where(User.username == username)).scalars().first()
        if user is None:
            raise NotFound(f"no user named '{username}'")
        identity_service.unlock_user(session, user)


def create_org_api_key(settings: Settings, *, org_code: str, name: str, scopes: list[str],
                       ttl_days: int) -> str:
    """An operations path (CLI): the key is created as the organisation's own administrator would."""
    from authops.policies import permissions

    with db.session_scope(settings) as session:
        org = org_by_code(session, org_code)
        admin_role = permissions.ADMIN_ROLE_BY_KIND[OrgKind(org.kind)]
        principal = Principal(kind="system", id=0, org_id=org.id, org_kind=OrgKind(org.kind),
                              name="cli", roles=frozenset({admin_role}))
        _key, secret = identity_service.create_api_key(
            session, settings, _RoleAuthorizer(), principal=principal, name=name, scopes=scopes,
            ttl_days=ttl_days)
        return secret


class _RoleAuthorizer:
    """Decides from the principal's declared roles (for CLI operations, no stored user)."""

    def allowed(self, principal: Principal, action: str) -> bool:
        from authops.policies import permissions

        return any(action in permissions.ROLES[r].actions for r in principal.roles)
