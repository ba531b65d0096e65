"""Who is looking at a console page, and whether they may: the API's checks, read from the cookie.

`page("action")` is the console's route dependency. It is a `Require` (so `authops.app.route_permission`
finds the action of every console route) that reads the login token from the session cookie instead of
the Authorization header, then does what the API does: resolve the token (revoked, expired or
deactivated = log in again), refuse a blocked user or address, and ask the same casbin Authorizer for
the action (a refusal is logged as `authz.denied` and answered 403). Without a valid session the page
redirects to the login form (`LoginNeeded`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fastapi import Depends, Request

from authops.core.errors import Unauthenticated
from authops.core.identity import Principal
from authops.core.regions import region_of
from authops.console import security
from authops.console.i18n import lang_of
from authops.platform.deps import AuthorizerDep, Require, SessionDep, client_ip
from authops.platform.identity import service as identity_service
from authops.policies import permissions
from authops.policies.enforcer import Authorizer


class LoginNeeded(Exception):
    """No valid console session: the page answers with a redirect to the login form."""


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    csrf: str
    lang: str
    authorizer: Authorizer

    def may(self, action: str) -> bool:
        return self.authorizer.allowed(self.principal, action)

    def cross(self, action: str) -> bool:
        """Holds a cross-organisation action: may see other organisations' objects of that area."""
        return permissions.ACTIONS[action].cross_org and self.may(action)


class Page(Require):
    """Authenticate from the session cookie, then check one action exactly as the API does."""

    def __call__(self, request: Request, session: SessionDep, authorizer: AuthorizerDep) -> Viewer:  # type: ignore[override]
        settings = request.app.state.settings
        token = request.cookies.get(security.SESSION_COOKIE, "")
        ip = client_ip(request)
        if not token:
            raise LoginNeeded
        try:
            found = identity_service.authenticate(session, token, ip=ip)
        except Unauthenticated:
            raise LoginNeeded from None
        principal = replace(found.principal, region=region_of(settings, ip))
        if principal.kind != "user":
            raise LoginNeeded
        self.admit(request, session, authorizer, principal)  # exactly the API's block and permission checks
        request.state.principal = principal
        return Viewer(principal, security.csrf_token(settings, token), lang_of(request), authorizer)


def page(action: str):
    return Depends(Page(action))
