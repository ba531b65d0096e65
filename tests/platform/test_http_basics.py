"""Health, readiness, the error format and the OpenAPI document."""

from __future__ import annotations


def test_healthz_is_public(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_readyz_reports_each_dependency(client):
    r = client.get("/readyz")
    body = r.json()
    assert set(body["checks"]) == {"database", "broker", "storage"}
    assert body["checks"]["database"]["ok"] is True
    # No broker runs for this test's data folder: readiness says so, with what to do.
    assert r.status_code == 503 and body["checks"]["broker"]["ok"] is False
    assert "authops" in body["checks"]["broker"]["reason"]


def test_unknown_route_uses_the_error_format(client):
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"code", "message", "details"}


def test_openapi_lists_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/auth/login" in paths and "/api/v1/api-keys" in paths
