"""Times are UTC in storage and Asia/Shanghai on screen."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


_offset = timedelta(0)


def utcnow() -> datetime:
    """Naive UTC (what SQLite and our columns store); every stored datetime is UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None) + _offset


def travel(delta: timedelta) -> None:
    """Move this process's clock forward (the demo's "seven working days later"; tests).

    Forward only, so the audit log's times stay in order. Production never calls it.
    """
    global _offset
    if delta < timedelta(0):
        raise ValueError("the clock only moves forward")
    _offset += delta


@contextlib.contextmanager
def travelled(delta: timedelta) -> Iterator[None]:
    """Tests: the clock moved forward by `delta` inside the block, back after it."""
    global _offset
    saved = _offset
    travel(delta)
    try:
        yield
    finally:
        _offset = saved


def as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def to_shanghai(dt: datetime) -> datetime:
    return as_utc(dt).astimezone(SHANGHAI)


def show(dt: datetime | None) -> str:
    """Render a stored UTC time for people: Asia/Shanghai, minute precision."""
    return "" if dt is None else to_shanghai(dt).strftime("%Y-%m-%d %H:%M")
