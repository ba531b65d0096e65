"""The console's fixtures: the platform app with the console's routers, and the console test world."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from authops.console import router as console


def with_console(app):
    """The app as authops.app.create_app will build it once the console is included."""
    app.include_router(console.public_router)
    app.include_router(console.router)
    return app


@pytest.fixture
def console_app(db_settings):
    from authops.app import create_app

    return with_console(create_app(db_settings))


@pytest.fixture
def web(console_app) -> Iterator[TestClient]:
    with TestClient(console_app) as c:
        yield c


@pytest.fixture
def world(session, db_settings, web):
    from tests.console.world import build_world

    return build_world(session, db_settings)
