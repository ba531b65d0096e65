"""Governance routes (prefix /api/v1/governance): each lifecycle module brings its own router."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

ROUTER_MODULES = [
    "authops.platform.governance.routes_common",
    "authops.platform.governance.routes_operator",
    "authops.platform.governance.routes_scenarios",
    "authops.platform.governance.routes_products",
]

router = APIRouter(prefix="/governance", tags=["governance"])
public_router = APIRouter(tags=["public"])

for _name in ROUTER_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as e:  # a lifecycle whose routes are not built yet
        if e.name != _name:
            raise
        continue
    router.include_router(_mod.router)
    if getattr(_mod, "public_router", None) is not None:
        public_router.include_router(_mod.public_router)
