"""Canonical bytes of an event: what is hashed, stored and verified, byte for byte."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

GENESIS = "0" * 64
VERSION = 1


def encode(obj: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8; floats are refused (they do not round-trip)."""
    _refuse_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("audit events carry integers and strings only, not floats")
    if isinstance(value, dict):
        for v in value.values():
            _refuse_floats(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _refuse_floats(v)


def timestamp(dt: datetime) -> str:
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(canonical: bytes) -> str:
    """The event's hash; `prev` is inside the canonical bytes, which makes the chain."""
    return hashlib.sha256(canonical).hexdigest()


def decode(canonical: bytes) -> dict[str, Any]:
    """Parse and insist the bytes are exactly canonical (no re-serialisation slack)."""
    obj = json.loads(canonical.decode("utf-8"))
    if not isinstance(obj, dict) or encode(obj) != canonical:
        raise ValueError("not canonical")
    return obj
