"""Times are UTC in storage and Asia/Shanghai on screen."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    """Naive UTC (what SQLite and our columns store); every stored datetime is UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def to_shanghai(dt: datetime) -> datetime:
    return as_utc(dt).astimezone(SHANGHAI)


def show(dt: datetime | None) -> str:
    """Render a stored UTC time for people: Asia/Shanghai, minute precision."""
    return "" if dt is None else to_shanghai(dt).strftime("%Y-%m-%d %H:%M")
