"""Audit-work routes (prefix /api/v1/auditwork)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/auditwork", tags=["audit work"])
