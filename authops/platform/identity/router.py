"""HTTP routes for login, organisations, users, roles and API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlmodel import Session

from authops.core.clock import utcnow
from authops.core.errors import Forbidden, NotFound
from authops.core.identity import OrgKind, Principal
from authops.audit import log as audit_log
from authops.audit.anomaly import service as anomaly_service
from authops.core.regions import region_of
from authops.platform.deps import (AuthorizerDep, ObjectId, SessionDep, SettingsDep, actor_of, client_ip,
                                   credential_from, require)
from authops.platform import limits
from authops.platform.identity import schemas
from authops.platform.identity import service as identity_service
from authops.platform.identity.models import Organisation, User
from authops.policies import enforcer as authz
from authops.policies import permissions

router = APIRouter()


def _user_out(session: Session, user: User) -> schemas.UserOut:
    return schemas.UserOut(
        id=user.id, org_id=user.org_id, username=user.username, display_name=user.display_name,
        email=user.email, is_active=user.is_active,
        locked=bool(user.locked_until and user.locked_until > utcnow()),
        roles=authz.roles_of(session, user_id=user.id, org_id=user.org_id),
        last_login_at=user.last_login_at, created_at=user.created_at)


# --- authentication -----------------------------------------------------------------------
@router.post("/auth/login", response_model=schemas.TokenOut, tags=["auth"])
def login(body: schemas.LoginIn, request: Request, session: SessionDep, settings: SettingsDep):
    """Exchange a username and password for a short-lived bearer token."""
    ip = client_ip(request)
    region = region_of(settings, ip)
    limits.admit_login(session, settings, username=body.username, ip=ip)  # 429 before any password check
    try:
        result = identity_service.login(session, settings, username=body.username,
                                        password=body.password, ip=ip)
    except identity_service.LoginFailed as exc:
        # Record the attempt (and any lockout). The typed name is logged only when it is a
        # real account: people type passwords into the username field.
        known = session.exec(select(User).where(User.username == body.username.strip().lower())).scalars().first()
        actor = audit_log.Actor(kind="anonymous", name=known.username if known else "(unknown)",
                                id=known.id if known else None, org_id=known.org_id if known else None,
                                ip=ip, region=region)
        audit_log.record(session, actor, "auth.login", outcome="denied", details={"code": exc.code})
        session.commit()
        raise
    user = result.user
    actor = audit_log.Actor(kind="user", id=user.id, name=user.username, org_id=user.org_id, ip=ip, region=region)
    try:  # a user or address under an anomaly block gets no new session
        anomaly_service.check_subjects(session, user_id=user.id, org_id=user.org_id, ip=ip, action="self.read")
    except Forbidden as exc:
        session.rollback()
        audit_log.record(session, actor, "auth.login", outcome="blocked", details={"code": exc.code})
        session.commit()
        raise
    audit_log.record(session, actor, "auth.login")
    return schemas.TokenOut(access_token=result.token, expires_at=result.expires_at)


@router.post("/auth/logout", status_code=204, tags=["auth"])
def logout(request: Request, session: SessionDep,
           principal: Annotated[Principal, require("self.read")]):
    """Revoke the token used for this request."""
    if principal.kind == "user":
        identity_service.logout(session, credential_from(request))
    audit_log.record(session, actor_of(principal), "auth.logout")
    return Response(status_code=204)


@router.get("/me", response_model=schemas.MeOut, tags=["auth"])
def me(session: SessionDep, authorizer: AuthorizerDep,
       principal: Annotated[Principal, require("self.read")]):
    """Who you are, your organisation, roles and effective permissions."""
    org = identity_service.visible_org(session, principal, principal.org_id)
    allowed = [a for a in permissions.ACTIONS if authorizer.allowed(principal, a)]
    return schemas.MeOut(kind=principal.kind, id=principal.id, name=principal.name,
                         org=schemas.OrgOut.model_validate(org), roles=sorted(principal.roles),
                         scopes=sorted(principal.scopes), permissions=allowed)


# --- organisations --------------------------------------------------------------------------
@router.get("/orgs", response_model=list[schemas.OrgOut], tags=["organisations"])
def list_orgs(session: SessionDep, authorizer: AuthorizerDep,
              principal: Annotated[Principal, require("org.read")], kind: OrgKind | None = None):
    """Organisations you may see: your own, or all of them for the bureau, supervisors and auditors."""
    return identity_service.list_orgs(session, principal, authorizer, kind)


@router.post("/orgs", response_model=schemas.OrgOut, status_code=201, tags=["organisations"])
def create_org(body: schemas.OrgIn, session: SessionDep,
               principal: Annotated[Principal, require("org.manage")]):
    """Register an organisation (bureau only)."""
    org = identity_service.create_org(session, **body.model_dump())
    audit_log.record(session, actor_of(principal), "org.create", object_type="organisation", object_id=org.id,
                     details={"kind": org.kind.value if hasattr(org.kind, "value") else org.kind})
    return org


@router.get("/orgs/{org_id}", response_model=schemas.OrgOut, tags=["organisations"])
def get_org(org_id: ObjectId, session: SessionDep, authorizer: AuthorizerDep,
            principal: Annotated[Principal, require("org.read")]):
    return identity_service.visible_org(session, principal, org_id, authorizer)


# --- users -------------------------------------------------------------------------------------
@router.get("/orgs/{org_id}/users", response_model=list[schemas.UserOut], tags=["users"])
def list_users(org_id: ObjectId, session: SessionDep,
               principal: Annotated[Principal, require("user.read")]):
    """Users of your own organisation."""
    if org_id != principal.org_id:
        raise NotFound(f"organisation {org_id} not found")
    users = session.exec(select(User).where(User.org_id == org_id).order_by(User.id)).scalars().all()
    return [_user_out(session, u) for u in users]


@router.post("/orgs/{org_id}/users", response_model=schemas.UserOut, status_code=201, tags=["users"])
def create_user(org_id: ObjectId, body: schemas.UserIn, session: SessionDep, authorizer: AuthorizerDep,
                principal: Annotated[Principal, require("user.manage")]):
    """Create a user in your own organisation with roles of your organisation's kind.

    The bureau administrator may also create the first user of any organisation.
    """
    org = _managed_org(session, principal, org_id, authorizer)
    user = identity_service.create_user(session, org=org, **body.model_dump())
    audit_log.record(session, actor_of(principal), "user.create", object_type="user", object_id=user.id,
                     details={"org": org.id, "roles": sorted(body.roles)})
    return _user_out(session, user)


def _managed_org(session: Session, principal: Principal, org_id: int, authorizer: authz.Authorizer):
    org = session.get(Organisation, org_id)
    # The bureau registers organisations and bootstraps their first administrators.
    if org is None or (org.id != principal.org_id and not authorizer.allowed(principal, "org.manage")):
        raise NotFound(f"organisation {org_id} not found")
    return org


@router.get("/users/{user_id}", response_model=schemas.UserOut, tags=["users"])
def get_user(user_id: ObjectId, session: SessionDep,
             principal: Annotated[Principal, require("user.read")]):
    return _user_out(session, identity_service.own_user(session, principal, user_id))


@router.patch("/users/{user_id}", response_model=schemas.UserOut, tags=["users"])
def update_user(user_id: ObjectId, body: schemas.UserUpdate, session: SessionDep,
                principal: Annotated[Principal, require("user.manage")]):
    user = identity_service.own_user(session, principal, user_id)
    if body.display_name is not None:
        user.display_name = body.display_name
    if body.email is not None:
        user.email = body.email
    if body.password is not None:
        identity_service.set_password(session, user, body.password)
    if body.is_active is False:
        identity_service.deactivate_user(session, user)
    elif body.is_active is True:
        user.is_active = True
    changed = sorted(k for k, v in body.model_dump().items() if v is not None)
    audit_log.record(session, actor_of(principal), "user.update", object_type="user", object_id=user.id,
                     details={"changed": changed})
    session.add(user)
    session.flush()
    return _user_out(session, user)


@router.post("/users/{user_id}/unlock", response_model=schemas.UserOut, tags=["users"])
def unlock_user(user_id: ObjectId, session: SessionDep,
                principal: Annotated[Principal, require("user.manage")]):
    """Clear a lockout after repeated failed logins."""
    user = identity_service.own_user(session, principal, user_id)
    identity_service.unlock_user(session, user)
    audit_log.record(session, actor_of(principal), "user.unlock", object_type="user", object_id=user.id)
    return _user_out(session, user)


@router.post("/users/{user_id}/roles", response_model=schemas.UserOut, tags=["users"])
def add_role(user_id: ObjectId, body: schemas.RoleIn, session: SessionDep,
             principal: Annotated[Principal, require("user.manage")]):
    user = identity_service.own_user(session, principal, user_id)
    authz.assign_role(session, user_id=user.id, org_id=user.org_id, org_kind=principal.org_kind,
                      role=body.role)
    audit_log.record(session, actor_of(principal), "permission.grant", object_type="user", object_id=user.id,
                     details={"role": body.role})
    return _user_out(session, user)


@router.delete("/users/{user_id}/roles/{role}", response_model=schemas.UserOut, tags=["users"])
def remove_role(user_id: ObjectId, role: str, session: SessionDep,
                principal: Annotated[Principal, require("user.manage")]):
    user = identity_service.own_user(session, principal, user_id)
    if not authz.revoke_role(session, user_id=user.id, org_id=user.org_id, role=role):
        raise NotFound(f"user {user_id} does not have role '{role}'")
    audit_log.record(session, actor_of(principal), "permission.revoke", object_type="user", object_id=user.id,
                     details={"role": role})
    return _user_out(session, user)


# --- API keys -------------------------------------------------------------------------------
@router.get("/api-keys", response_model=list[schemas.ApiKeyOut], tags=["api keys"])
def list_keys(session: SessionDep, principal: Annotated[Principal, require("apikey.manage")]):
    return identity_service.list_api_keys(session, principal)


@router.post("/api-keys", response_model=schemas.ApiKeyCreated, status_code=201, tags=["api keys"])
def create_key(body: schemas.ApiKeyIn, session: SessionDep, settings: SettingsDep,
               authorizer: AuthorizerDep, principal: Annotated[Principal, require("apikey.manage")]):
    """Create an API key. The secret is in this response only; it is stored hashed."""
    key, secret = identity_service.create_api_key(session, settings, authorizer, principal=principal,
                                                  name=body.name, scopes=body.scopes,
                                                  ttl_days=body.ttl_days)
    audit_log.record(session, actor_of(principal), "apikey.create", object_type="api_key", object_id=key.id,
                     details={"scopes": key.scopes})
    return schemas.ApiKeyCreated(**schemas.ApiKeyOut.model_validate(key).model_dump(), key=secret)


@router.delete("/api-keys/{key_id}", response_model=schemas.ApiKeyOut, tags=["api keys"])
def revoke_key(key_id: ObjectId, session: SessionDep,
               principal: Annotated[Principal, require("apikey.manage")]):
    """Revoke a key; it is refused from the next request on."""
    key = identity_service.own_api_key(session, principal, key_id)
    identity_service.revoke_api_key(session, key)
    audit_log.record(session, actor_of(principal), "apikey.revoke", object_type="api_key", object_id=key.id)
    return key


# --- the permission matrix --------------------------------------------------------------------
@router.get("/permissions", tags=["auth"])
def permission_matrix(principal: Annotated[Principal, require("self.read")]):
    """Every role and the actions it may take."""
    return {
        "actions": [{"name": a.name, "area": a.area, "zh": a.zh, "en": a.en, "cross_org": a.cross_org}
                    for a in permissions.ACTIONS.values()],
        "roles": [{"name": r.name, "org_kind": r.org_kind.value, "zh": r.zh, "en": r.en,
                   "actions": list(r.actions)} for r in permissions.ROLES.values()],
    }
