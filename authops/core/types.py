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
