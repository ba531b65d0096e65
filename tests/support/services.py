"""Where the real services are, and whether a test may skip when they are missing."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_ADMIN_URL = os.environ.get("AUTHOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AUTHOPS_TEST_REDIS", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("AUTHOPS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


def services_required() -> bool:
    return os.environ.get("AUTHOPS_REQUIRE_SERVICES") == "1"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def need(service: str, host: str, port: int) -> None:
    """Skip with a clear reason, or fail when AUTHOPS_REQUIRE_SERVICES=1 (as in CI)."""
    if port_open(host, port):
        return
    message = f"{service} is not reachable on {host}:{port}"
    if services_required():
        pytest.fail(message + " and AUTHOPS_REQUIRE_SERVICES=1 (start it: see README, 'Services')")
    pytest.skip(message + "; set AUTHOPS_REQUIRE_SERVICES=1 to make this a failure")


def need_postgres() -> None:
    need("PostgreSQL", "127.0.0.1", 5432)


def need_redis() -> None:
    need("Redis", "127.0.0.1", 6379)


def need_rabbitmq() -> None:
    need("RabbitMQ", "127.0.0.1", 5672)
