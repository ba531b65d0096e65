"""Joint modelling routes (prefix /api/v1/products/joint-models)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/products/joint-models", tags=["joint modelling"])
