"""Assessment routes (prefix /api/v1/assessment)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/assessment", tags=["assessment"])
