"""Sme credit services routes (prefix /api/v1/sme)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/sme", tags=["SME credit services"])
