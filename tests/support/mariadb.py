"""Where MariaDB is for the tests, and whether a test may skip when it is missing."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

from tests.support.services import need

MARIADB_URL = os.environ.get("AUTHOPS_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def need_mariadb() -> None:
    """Skip, or fail when AUTHOPS_REQUIRE_SERVICES=1, if MariaDB is not reachable."""
    url = make_url(MARIADB_URL)
    need("MariaDB", url.host or "127.0.0.1", url.port or 3306)
