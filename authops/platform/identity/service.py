"""Organisations, users, passwords, login tokens and API keys. Services flush; the edge commits.

Credentials are read from the database on every request, never cached: a revoked or expired
key or token, a deactivated user or organisation, is refused on the next request in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, or_, select, update
from sqlmodel import Session

from authops.audit.anomaly import service as anomaly
from authops.core.clock import show, utcnow
from authops.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from authops.core.identity import OrgKind, Principal
from authops.core.settings import Settings
from authops.platform.identity.models import ApiKey, LoginSession, Organisation, User
from authops.policies import enforcer as authz
from authops.policies import permissions

_hasher = PasswordHasher()
# Verified against when the username is unknown, so timing does not reveal which users exist.
_DUMMY_HASH = _hasher.hash("authops-timing-equaliser")
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
ORG_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")
TOKEN_PREFIX = "ato_"
KEY_PREFIX = "ak_"
MIN_PASSWORD = 10
TOUCH_SECONDS = 60  # an API key's last use is recorded at most this often
_KEY = ApiKey.__table__
_ORG = Organisation.__table__


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- organisations --------------------------------------------------------------------
def create_org(session: Session, *, kind: OrgKind, code: str, name_zh: str, name_en: str,
               uscc: str | None = None, region: str = "苏州市") -> Organisation:
    if not ORG_CODE_RE.match(code):
        raise InvalidInput("organisation code must be 2-64 lowercase letters, digits, '-' or '_', "
                           "starting with a letter or digit", details={"field": "code"})
    if session.exec(select(Organisation).where(Organisation.code == code)).first():
        raise Conflict(f"an organisation with code '{code}' already exists; choose another code",
                       details={"field": "code"})
    org = Organisation(kind=kind, code=code, name_zh=name_zh, name_en=name_en, uscc=uscc, region=region)
    session.add(org)
    session.flush()
    return org


def visible_org(session: Session, principal: Principal, org_id: int,
                authorizer: authz.Authorizer | None = None) -> Organisation:
    """The organisation if the principal may see it; a foreign one looks missing."""
    org = session.get(Organisation, org_id)
    if org is None or not may_see_org(principal, org_id, authorizer):
        raise NotFound(f"organisation {org_id} not found")
    return org


def may_see_org(principal: Principal, org_id: int, authorizer: authz.Authorizer | None) -> bool:
    if org_id == principal.org_id:
        return True
    return authorizer is not None and authorizer.allowed(principal, "org.read_all")


def list_orgs(session: Session, principal: Principal, authorizer: authz.Authorizer,
              kind: OrgKind | None = None) -> list[Organisation]:
    stmt = select(Organisation).order_by(Organisation.id)
    if not authorizer.allowed(principal, "org.read_all"):
        stmt = stmt.where(Organisation.id == principal.org_id)
    if kind is not None:
        stmt = stmt.where(Organisation.kind == kind)
    return list(session.exec(stmt).scalars().all())


# --- users ----------------------------------------------------------------------------
def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD} characters",
                           details={"field": "password"})
    if password.isdigit() or password.isalpha():
        raise InvalidInput("password must mix letters with digits or symbols",
                           details={"field": "password"})


def create_user(session: Session, *, org: Organisation, username: str, display_name: str,
                password: str, roles: list[str], email: str | None = None) -> User:
    username = username.strip().lower()
    kind = OrgKind(org.kind)
    if not USERNAME_RE.match(username):
        raise InvalidInput("username must be 3-64 lowercase letters, digits, '.', '_' or '-'",
                           details={"field": "username"})
    check_password_strength(password)
    if not roles:
        raise InvalidInput("give the user at least one role; roles for a "
                           f"{kind.value} organisation: "
                           + ", ".join(r.name for r in permissions.roles_for_kind(kind)),
                           details={"field": "roles"})
    for role in roles:
        authz.check_role(role, kind)
    if session.exec(select(User).where(User.username == username)).first():
        raise Conflict(f"username '{username}' is taken; choose another", details={"field": "username"})
    user = User(org_id=org.id, username=username, display_name=display_name, email=email,
                password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    for role in roles:
        authz.assign_role(session, user_id=user.id, org_id=org.id, org_kind=kind, role=role)
    return user


def visible_user(session: Session, principal: Principal, user_id: int,
                 authorizer: authz.Authorizer) -> User:
    user = session.get(User, user_id)
    if user is None or not may_see_org(principal, user.org_id, authorizer):
        raise NotFound(f"user {user_id} not found")
    return user


def own_user(session: Session, principal: Principal, user_id: int) -> User:
    """A user of the principal's own organisation (for changes); others look missing."""
    user = session.get(User, user_id)
    if user is None or user.org_id != principal.org_id:
        raise NotFound(f"user {user_id} not found")
    return user


def set_password(session: Session, user: User, password: str) -> None:
    check_password_strength(password)
    user.password_hash = _hasher.hash(password)
    revoke_sessions(session, user_id=user.id)
    session.add(user)
    session.flush()


def unlock_user(session: Session, user: User) -> None:
    user.failed_logins = 0
    user.locked_until = None
    session.add(user)
    session.flush()


def deactivate_user(session: Session, user: User) -> None:
    user.is_active = False
    revoke_sessions(session, user_id=user.id)
    session.add(user)
    session.flush()


# --- login ------------------------------------------------------------------------------
@dataclass
class LoginResult:
    token: str
    expires_at: datetime
    user: User


class LoginFailed(Unauthenticated):
    """Raised after the failure was recorded: the caller must commit before re-raising."""


def login(session: Session, settings: Settings, *, username: str, password: str,
          ip: str | None = None) -> LoginResult:
    now = utcnow()
    user = session.exec(select(User).where(User.username == username.strip().lower())).scalars().first()
    if user is None:
        _verify(_DUMMY_HASH, password)
        raise LoginFailed("wrong username or password", code="bad_credentials")
    if user.locked_until and user.locked_until > now:
        raise LoginFailed(
            f"account locked after {settings.login_max_failures} failed logins until "
            f"{show(user.locked_until)} (Asia/Shanghai); ask your organisation administrator "
            "to unlock it", code="account_locked")
    if not _verify(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= settings.login_max_failures:
            user.locked_until = now + timedelta(seconds=settings.login_lockout_seconds)
            user.failed_logins = 0
        session.add(user)
        session.flush()
        raise LoginFailed("wrong username or password", code="bad_credentials")
    org = session.get(Organisation, user.org_id)
    if not user.is_active or org is None or not org.is_active:
        raise LoginFailed("this account is deactivated; ask your organisation administrator",
                          code="account_inactive")
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=settings.token_ttl_seconds)
    session.add(LoginSession(user_id=user.id, token_hash=_sha256(token), expires_at=expires, ip=ip))
    session.add(user)
    session.flush()
    return LoginResult(token=token, expires_at=expires, user=user)


def _verify(hash_: str, password: str) -> bool:
    try:
        return _hasher.verify(hash_, password)
    except (VerificationError, InvalidHashError):
        return False


def logout(session: Session, token: str) -> None:
    row = session.exec(select(LoginSession).where(LoginSession.token_hash == _sha256(token))).scalars().first()
    if row and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.flush()


def revoke_sessions(session: Session, *, user_id: int) -> None:
    now = utcnow()
    for row in session.exec(select(LoginSession).where(
            LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))).scalars().all():
        row.revoked_at = now
        session.add(row)
    session.flush()


# --- API keys ---------------------------------------------------------------------------
def create_api_key(session: Session, settings: Settings, authorizer: authz.Authorizer, *,
                   principal: Principal, name: str, scopes: list[str],
                   ttl_days: int | None = None) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored."""
    if not name.strip():
        raise InvalidInput("give the key a name that says what uses it", details={"field": "name"})
    if not scopes:
        raise InvalidInput("a key needs at least one scope (an action name, e.g. product.call)",
                           details={"field": "scopes"})
    ceiling = permissions.actions_for_kind(principal.org_kind)
    for scope in scopes:
        if scope not in permissions.ACTIONS:
            raise InvalidInput(f"unknown scope '{scope}'", details={"field": "scopes"})
        if scope not in ceiling or not authorizer.allowed(principal, scope):
            raise Forbidden(f"you cannot grant scope '{scope}': you do not hold it yourself",
                            details={"field": "scopes"})
    ttl = ttl_days if ttl_days is not None else settings.api_key_default_ttl_days
    if not 1 <= ttl <= 3 * 365:
        raise InvalidInput("ttl_days must be between 1 and 1095 (three years)", details={"field": "ttl_days"})
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(org_id=principal.org_id, created_by=principal.user_id, name=name.strip(), prefix=prefix,
                 secret_hash=_sha256(secret), scopes=sorted(set(scopes)),
                 expires_at=utcnow() + timedelta(days=ttl))
    session.add(key)
    session.flush()
    return key, f"{KEY_PREFIX}{prefix}_{secret}"


def own_api_key(session: Session, principal: Principal, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != principal.org_id:
        raise NotFound(f"API key {key_id} not found")
    return key


def revoke_api_key(session: Session, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()


def list_api_keys(session: Session, principal: Principal) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).where(ApiKey.org_id == principal.org_id)
                             .order_by(ApiKey.id)).scalars().all())


def touch_api_key(session: Session, key_id: int, last_used_at: datetime | None) -> None:
    """Record use at most once a minute (`last_used_at` as the lookup read it: no write while it is
    fresh); called only after the request was allowed, so a refused request writes nothing.

    Concurrent requests of one key never queue on its row: the row is taken with SKIP LOCKED, so
    while one transaction records this minute's use the others skip it (on PostgreSQL; SQLite
    writers queue on the database lock anyway), and the staleness condition, checked again on
    the row as committed, keeps a later one from writing the same minute twice."""
    now = utcnow()
    if last_used_at is not None and last_used_at > now - timedelta(seconds=TOUCH_SECONDS):
        return
    touch_api_keys(session.connection(), [key_id], now)


def touch_api_keys(conn, key_ids: list[int], now: datetime) -> None:
    """Record `now` as the last use of those of these keys whose last use is older than TOUCH_SECONDS,
    on a Core connection in the caller's transaction (rows another transaction holds are skipped)."""
    cutoff = now - timedelta(seconds=TOUCH_SECONDS)
    stale = (select(_KEY.c.id).where(_KEY.c.id.in_(key_ids), or_(_KEY.c.last_used_at.is_(None),
                                                                  _KEY.c.last_used_at <= cutoff))
             .with_for_update(skip_locked=True))
    conn.execute(update(_KEY).where(_KEY.c.id.in_(stale.scalar_subquery())).values(last_used_at=now))


# --- resolving credentials ------------------------------------------------------------------
@dataclass(frozen=True)
class Authenticated:
    """A resolved credential. `maybe_blocked` is False only when the lookup itself read that no
    active block or throttle names the key, its organisation or the address (then the request
    needs no separate block check); `last_used_at` is the key's, for `touch_api_key`."""

    principal: Principal
    maybe_blocked: bool = True
    last_used_at: datetime | None = None


def authenticate(session: Session, raw: str, *, ip: str | None = None) -> Authenticated:
    """A bearer token or API key to a principal; every failure is a 401 naming what to fix.

    Nothing is cached: revocation, expiry, an organisation's deactivation and a block take
    effect on the next request in every process. An API key costs one statement (the key, its
    organisation and whether a block names it, read together)."""
    if raw.startswith(TOKEN_PREFIX):
        return Authenticated(_resolve_token(session, raw, ip))
    if raw.startswith(KEY_PREFIX):
        return _resolve_key(session, raw, ip)
    raise Unauthenticated("malformed credential: send 'Authorization: Bearer <token or API key>'",
                          code="malformed_credential")


def resolve_credential(session: Session, raw: str, *, ip: str | None = None) -> Principal:
    return authenticate(session, raw, ip=ip).principal


def _resolve_token(session: Session, raw: str, ip: str | None) -> Principal:
    row = session.exec(select(LoginSession).where(LoginSession.token_hash == _sha256(raw))).scalars().first()
    if row is None:
        raise Unauthenticated("unknown token; log in again", code="invalid_token")
    if row.revoked_at is not None:
        raise Unauthenticated("token was revoked (logged out); log in again", code="token_revoked")
    if row.expires_at <= utcnow():
        raise Unauthenticated("token expired; log in again", code="token_expired")
    user = session.get(User, row.user_id)
    org = session.get(Organisation, user.org_id) if user else None
    if user is None or not user.is_active or org is None or not org.is_active:
        raise Unauthenticated("account deactivated", code="account_inactive")
    roles = authz.roles_of(session, user_id=user.id, org_id=org.id)
    return Principal(kind="user", id=user.id, org_id=org.id, org_kind=OrgKind(org.kind),
                     name=user.username, roles=frozenset(roles), ip=ip)


# The key, its organisation and whether a block names the key, the organisation or the address:
# one statement, built once (its compiled form is cached).
_KEY_LOOKUP = (
    select(_KEY.c.id, _KEY.c.name, _KEY.c.secret_hash, _KEY.c.scopes, _KEY.c.revoked_at, _KEY.c.expires_at,
           _KEY.c.last_used_at, _ORG.c.id.label("org_id"), _ORG.c.kind.label("org_kind"),
           _ORG.c.is_active.label("org_active"),
           anomaly.block_named(api_key_id=_KEY.c.id, org_id=_ORG.c.id, ip=bindparam("ip")).label("blocked"))
    .select_from(_KEY.outerjoin(_ORG, _ORG.c.id == _KEY.c.org_id)).where(_KEY.c.prefix == bindparam("prefix")))


def _resolve_key(session: Session, raw: str, ip: str | None) -> Authenticated:
    parts = raw[len(KEY_PREFIX):].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12:
        raise Unauthenticated("malformed API key: expected ak_<prefix>_<secret>", code="malformed_credential")
    key = session.connection().execute(_KEY_LOOKUP, {"prefix": parts[0], "ip": ip or ""}).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _sha256(parts[1])):
        raise Unauthenticated("unknown API key", code="invalid_key")
    now = utcnow()
    if key.revoked_at is not None:
        raise Unauthenticated("API key was revoked; create a new one", code="key_revoked")
    if key.expires_at <= now:
        raise Unauthenticated("API key expired; create a new one", code="key_expired")
    if key.org_id is None or not key.org_active:
        raise Unauthenticated("organisation deactivated", code="account_inactive")
    principal = Principal(kind="key", id=key.id, org_id=key.org_id, org_kind=OrgKind(key.org_kind),
                          name=key.name, scopes=frozenset(key.scopes), ip=ip)
    return Authenticated(principal, maybe_blocked=bool(key.blocked), last_used_at=key.last_used_at)
