"""The console's two routers, shared by every page module (one router each, so every route is a
plain ConsoleRoute in `router.routes`: CSRF and error pages apply structurally).

`public_router`: no login (login form, static files, disclosure, language). `router`: every other
page, each behind `page(action)`. The area modules (pages_*) register their routes on `router` when
imported; `authops.console.router` imports them first, so their fixed paths (/scenarios/new) match
before a path with a parameter (/scenarios/{case_id}).
"""

from __future__ import annotations

from fastapi import APIRouter

from authops.console.forms import PREFIX
from authops.console.rendering import ConsoleRoute

public_router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, tags=["console"], include_in_schema=False)
router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, tags=["console"], include_in_schema=False)
