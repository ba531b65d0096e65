"""Rendering console pages: the templates, the navigation a viewer may use, and `ConsoleRoute`.

`ConsoleRoute` is the route class of every console route. It guarantees two things structurally:
every POST checks the form's CSRF token before anything else runs (403 otherwise), and a refusal
becomes a page, not JSON: no session → 303 to the login form (HX-Redirect for htmx requests),
Forbidden → 403, NotFound → 404, bad input or a refused step → its status with the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from authops.console import charts, security
from authops.console.auth import LoginNeeded, Viewer
from authops.console.i18n import LANG_COOKIE, lang_of, words
from authops.core.clock import show
from authops.core.errors import AuthopsError, Forbidden
from authops.policies import permissions

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
TEMPLATES.env.globals["bar_chart"] = charts.bar_chart
TEMPLATES.env.globals["show"] = show  # a stored UTC time as Asia/Shanghai, minute precision
TEMPLATES.env.filters["yuan"] = lambda fen: f"{(fen or 0) / 100:,.2f}"
TEMPLATES.env.globals["role_label"] = lambda name, lang: (
    getattr(permissions.ROLES[name], lang) if name in permissions.ROLES else name)

# (label key, path, action needed to see the link)
NAV = (
    ("nav_home", "/console/", "todo.read"),
    ("nav_scenarios", "/console/scenarios", "todo.read"),
    ("nav_billing", "/console/billing", "billing.read"),
    ("nav_jobs", "/console/jobs", "job.read"),
    ("nav_anomalies", "/console/anomalies", "incident.read"),
    ("nav_audit", "/console/audit", "audit.read"),
    ("nav_operators", "/console/operators", "authorization.manage"),
    ("nav_price_caps", "/console/price-caps", "price.cap.set"),
    ("nav_budgets", "/console/budgets", "budget.manage"),
    ("nav_assessments", "/console/assessments", "assessment.manage"),
    ("nav_review_stats", "/console/review-stats", "review.final"),
    ("nav_products", "/console/products", "product.submit"),
    ("nav_marketplace", "/console/marketplace", "product.call"),
    ("nav_batches", "/console/batches", "product.call"),
    ("nav_consents", "/console/consents", "consent.submit"),
    ("nav_settlement", "/console/settlement", "settlement.manage"),
    ("nav_audit_reports", "/console/audit-reports", "audit.verify"),
    ("nav_api_keys", "/console/api-keys", "apikey.manage"),
    ("nav_disclosure", "/console/disclosure", None),
)


class CsrfFailed(Forbidden):
    code = "csrf_failed"


def nav_for(viewer: Viewer | None) -> list[tuple[str, str]]:
    return [(key, path) for key, path, action in NAV
            if action is None or (viewer is not None and viewer.may(action))]


def render(request: Request, template: str, context: dict[str, Any], *, viewer: Viewer | None = None,
           status_code: int = 200) -> HTMLResponse:
    lang = viewer.lang if viewer else lang_of(request)
    response = TEMPLATES.TemplateResponse(request, template, {
        "t": words(lang), "lang": lang, "viewer": viewer, "nav": nav_for(viewer), "path": request.url.path,
        "csrf": viewer.csrf if viewer else context.get("csrf", ""), **context}, status_code=status_code)
    response.headers["X-Frame-Options"] = "DENY"  # no framing (clickjacking)
    response.headers["Referrer-Policy"] = "same-origin"
    if viewer is not None:
        response.headers["Cache-Control"] = "no-store"  # a signed-in page stays out of shared caches
    if request.query_params.get("lang") == lang:  # the switch sticks
        security.set_cookie(response, request, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


def error_page(request: Request, status: int, message_key: str, detail: str = "") -> HTMLResponse:
    return render(request, "error.html", {"status": status, "message_key": message_key, "detail": detail},
                  status_code=status)


async def check_csrf(request: Request) -> None:
    form = await request.form()
    given = form.get("csrf")
    if not isinstance(given, str) or not security.csrf_ok(request.app.state.settings, request, given):
        raise CsrfFailed("the form's CSRF token is missing or wrong; reload the page")


def _login_redirect(request: Request) -> Response:
    target = "/console/login?next=" + quote(request.url.path)
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


class ConsoleRoute(APIRoute):
    def __init__(self, path: str, endpoint, **kwargs) -> None:
        if "POST" in (kwargs.get("methods") or ()):
            kwargs["dependencies"] = [Depends(check_csrf), *(kwargs.get("dependencies") or [])]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self):
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except LoginNeeded:
                return _login_redirect(request)
            except CsrfFailed:
                return error_page(request, 403, "csrf")
            except AuthopsError as exc:
                key = {403: "forbidden", 404: "not_found", 422: "invalid"}.get(exc.status_code, "refused")
                detail = "" if exc.status_code in (403, 404) else exc.message
                return error_page(request, exc.status_code, key, detail)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
                return error_page(request, 422, "invalid", fields)

        return handler
