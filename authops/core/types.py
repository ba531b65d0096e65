"""Shared column helpers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema
from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field

from authops.core.clock import utcnow


def created_at_field() -> datetime:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(), nullable=False))


def json_field(default_factory=dict, nullable: bool = False):
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=nullable))


def timestamp_field(nullable: bool = False):
    """A UTC timestamp column: now by default, or (nullable) empty until set."""
    if nullable:
        return Field(default=None, sa_column=Column(DateTime(), nullable=True))
    return created_at_field()


def utc_iso(value: datetime) -> str:
    """RFC 3339 in UTC with a Z: stored times are naive UTC; an aware one is converted."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


# A response field holding a stored (naive UTC) time: its JSON says UTC ("...Z"), as format
# date-time (RFC 3339) requires; without the Z a client reads local (Beijing) time.
UtcDateTime = Annotated[datetime, PlainSerializer(utc_iso, return_type=str, when_used="json"),
                        WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization")]
