"""Every console page × every role: the API's permission matrix decides (403 without the action),
another organisation's object is 404, no session means the login form, and no page shows another
organisation's private objects or any raw value of the loaded data."""

from __future__ import annotations

import pytest

from authops.policies import permissions
from tests.console.world import HOME_TITLE, console_login
from tests.support.catalog import IDS

# (page, action it needs) for pages that name no object.
PAGES = {
    "/console/": "todo.read",
    "/console/scenarios": "todo.read",
    "/console/billing": "billing.read",
    "/console/jobs": "job.read",
    "/console/anomalies": "incident.read",
    "/console/audit": "audit.read",
    "/console/operators": "authorization.manage",
    "/console/price-caps": "price.cap.set",
    "/console/budgets": "budget.manage",
    "/console/assessments": "assessment.manage",
    "/console/review-stats": "review.final",
    "/console/scenarios/new": "scenario.submit",
    "/console/products": "product.submit",
    "/console/products/new": "product.submit",
    "/console/marketplace": "product.call",
    "/console/batches": "product.call",
    "/console/consents": "consent.submit",
    "/console/api-keys": "apikey.manage",
    "/console/settlement": "settlement.manage",
    "/console/audit-reports": "audit.verify",
}
# The home scenario is seen by its applicant, the department whose data it requests, and the bureau.
SEES_HOME_SCENARIO = {"partner_admin", "partner_engineer", "provider_admin", "provider_data_officer",
                      "bureau_admin", "bureau_reviewer"}
CROSS_ORG_READERS = {"bureau_admin", "bureau_reviewer"}  # review.final: every submitted scenario


def _holds(role: str, action: str) -> bool:
    return action in permissions.ROLES[role].actions


def _object_pages(world) -> dict[str, str]:
    return {f"/console/scenarios/{world.scenario.id}": "todo.read",
            f"/console/scenarios/{world.away_scenario.id}": "todo.read",
            f"/console/jobs/{world.job_id}/progress": "job.read",
            f"/console/batches/{world.batch_id}/progress": "product.call",
            f"/console/batches/{world.away_ids['batch']}/progress": "product.call",
            f"/console/products/{world.away_ids['product']}": "product.submit"}


def _expected(world, role: str, path: str, action: str) -> int:
    if not _holds(role, action):
        return 403
    if path.endswith(f"/scenarios/{world.scenario.id}"):
        return 200 if role in SEES_HOME_SCENARIO else 404
    if path.endswith(f"/scenarios/{world.away_scenario.id}"):
        return 200 if role in CROSS_ORG_READERS else 404
    if "/jobs/" in path:
        return 200 if world.users[role].org_id == world.orgs["partner"].id else 404
    if path.endswith(f"/batches/{world.batch_id}/progress"):
        return 200 if world.users[role].org_id == world.orgs["customer"].id else 404
    if path.endswith((f"/batches/{world.away_ids['batch']}/progress", f"/products/{world.away_ids['product']}")):
        return 404  # the away side's batch and product draft
    return 200


def test_every_page_as_every_role_follows_the_permission_matrix(web, world):
    pages = {**PAGES, **_object_pages(world)}
    wrong = []
    for role, user in world.users.items():
        console_login(web, user.username)
        for path, action in pages.items():
            got = web.get(path, follow_redirects=False).status_code
            want = _expected(world, role, path, action)
            if got != want:
                wrong.append(f"{role} {path}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)
    # Every role had at least its home and one page refused or allowed: the matrix was really exercised.
    assert {_expected(world, r, p, a) for r in world.users for p, a in pages.items()} == {200, 403, 404}


def test_no_page_shows_another_organisations_objects_or_raw_data(web, world):
    """Visit every page the role may open (both languages) as every role; scan the HTML for the away
    side's private objects and for every resident ID number, name and phone of the loaded data. (The
    pages a role may not open are refused, as the matrix test above checks: they show nothing.)"""
    pages = {**PAGES, **_object_pages(world), "/console/disclosure": None}
    leaks = []
    visited = 0
    for role, user in world.users.items():
        console_login(web, user.username)
        forbidden = world.secrets(role, cross_org=role in CROSS_ORG_READERS)
        shown = [p for p, a in pages.items() if a is None or _expected(world, role, p, a) == 200]
        for lang in ("zh", "en"):
            for path in shown:
                r = web.get(path, params={"lang": lang}, follow_redirects=False)
                assert r.status_code == 200, f"{role} {path} ({lang}): {r.status_code}"
                visited += 1
                leaks += [f"{role} {path} ({lang}): {s}" for s in forbidden if s in r.text]
    assert not leaks, "\n".join(leaks)
    assert visited > 100
    # The raw values really are in the database (the department's resource was loaded with them).
    assert world.loaded_rows == len(IDS)
    # The scan is not vacuous: the home side does see its own scenario by title.
    console_login(web, world.users["partner_admin"].username)
    assert HOME_TITLE in web.get("/console/").text


@pytest.mark.parametrize("path", ["/console/", "/console/billing", "/console/anomalies", "/console/scenarios/1"])
def test_without_a_session_a_page_sends_you_to_the_login_form(web, path):
    r = web.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/console/login?next={path.replace('/', '%2F')}" or \
        r.headers["location"] == f"/console/login?next={path}"
    hx = web.get(path, headers={"HX-Request": "true"}, follow_redirects=False)
    assert hx.headers["HX-Redirect"].startswith("/console/login")


def test_a_forged_or_expired_cookie_is_no_session(web, world):
    web.cookies.set("authops_console", "tok_forged", path="/console")
    assert web.get("/console/", follow_redirects=False).status_code == 303


def test_logout_ends_the_session_everywhere(web, world):
    csrf = console_login(web, world.users["customer_admin"].username)
    token = web.cookies.get("authops_console")
    r = web.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert web.cookies.get("authops_console") is None
    web.cookies.set("authops_console", token, path="/console")  # replaying the old cookie
    assert web.get("/console/", follow_redirects=False).status_code == 303
    api = web.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401  # the same login session: revoked for the API too


def test_a_wrong_password_shows_the_form_again_and_sets_no_session(web, world):
    form = web.get("/console/login")
    from tests.console.world import csrf_of

    r = web.post("/console/login", data={"username": world.users["expert"].username, "password": "wrong-one",
                                         "csrf": csrf_of(form.text)}, follow_redirects=True)
    assert r.status_code == 200 and "用户名或密码错误" in r.text
    assert web.cookies.get("authops_console") is None


def test_the_next_parameter_cannot_leave_the_console(web, world):
    from tests.console.world import csrf_of

    form = web.get("/console/login", params={"next": "https://evil.example/x"})
    assert 'value="/console/"' in form.text
    r = web.post("/console/login", data={"username": world.users["expert"].username,
                                         "password": "Test-password-42", "csrf": csrf_of(form.text),
                                         "next": "//evil.example/x"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/"
