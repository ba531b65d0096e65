"""Shared column helpers."""

from __future__ import annotations

from datetime import datetime

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
