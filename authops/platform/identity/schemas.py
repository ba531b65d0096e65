"""Request and response bodies for identity routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from authops.core.identity import OrgKind
from authops.core.types import UtcDateTime


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: UtcDateTime


class OrgIn(BaseModel):
    kind: OrgKind
    code: str = Field(min_length=2, max_length=64)
    name_zh: str = Field(min_length=1, max_length=200)
    name_en: str = Field(min_length=1, max_length=200)
    uscc: str | None = Field(default=None, min_length=18, max_length=18)
    region: str = Field(default="苏州市", max_length=64)


class OrgOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: OrgKind
    code: str
    name_zh: str
    name_en: str
    uscc: str | None
    region: str
    is_active: bool
    created_at: UtcDateTime


class UserIn(BaseModel):
    username: str = Field(min_length=3, max_length=64)
    display_name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=256)
    roles: list[str] = Field(min_length=1, max_length=20)
    email: str | None = Field(default=None, max_length=200)


class UserUpdate(BaseModel):
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, min_length=1, max_length=256)
    is_active: bool | None = None


class UserOut(BaseModel):
    id: int
    org_id: int
    username: str
    display_name: str
    email: str | None
    is_active: bool
    locked: bool
    roles: list[str]
    last_login_at: UtcDateTime | None
    created_at: UtcDateTime


class RoleIn(BaseModel):
    role: str = Field(min_length=1, max_length=64)


class MeOut(BaseModel):
    kind: str
    id: int
    name: str
    org: OrgOut
    roles: list[str]
    scopes: list[str]
    permissions: list[str]


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=50)
    ttl_days: int | None = Field(default=None, ge=1, le=1095)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: UtcDateTime
    expires_at: UtcDateTime
    revoked_at: UtcDateTime | None
    last_used_at: UtcDateTime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown once: store it now.")
