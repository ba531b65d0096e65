"""Organisations, users, login sessions and API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, String
from sqlmodel import Field, SQLModel

from authops.core.clock import utcnow
from authops.core.identity import OrgKind


class Organisation(SQLModel, table=True):
    __tablename__ = "organisation"

    id: int | None = Field(default=None, primary_key=True)
    kind: OrgKind = Field(sa_column=Column(String(20), nullable=False, index=True))
    code: str = Field(max_length=64, unique=True, index=True)
    name_zh: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    # USCC (unified social credit code) where the organisation has one.
    uscc: str | None = Field(default=None, max_length=18)
    region: str = Field(default="苏州市", max_length=64)
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    username: str = Field(max_length=64, unique=True, index=True)
    display_name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=200)
    password_hash: str = Field(max_length=255)
    is_active: bool = True
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    last_login_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


class LoginSession(SQLModel, table=True):
    """A short-lived bearer token; only its SHA-256 is stored. Logout revokes it."""

    __tablename__ = "login_session"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    ip: str | None = Field(default=None, max_length=64)


class ApiKey(SQLModel, table=True):
    """A machine credential: shown once, stored hashed, scoped, expiring and revocable."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    org_id: int = Field(foreign_key="organisation.id", index=True)
    created_by: int | None = Field(default=None, foreign_key="app_user.id")
    name: str = Field(max_length=100)
    # Public lookup part of the key ("ak_<prefix>_<secret>"); the secret is only hashed.
    prefix: str = Field(max_length=16, unique=True, index=True)
    secret_hash: str = Field(max_length=64)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(), nullable=True))
