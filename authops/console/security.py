"""Console session cookies and CSRF tokens.

The session cookie holds the login token of `identity_service.login` (so logout, expiry, blocks and
role changes act on the console exactly as on the API). It is HttpOnly, SameSite=Lax, scoped to
/console, and Secure when the request came over TLS: the request's own scheme, or
`X-Forwarded-Proto: https` sent by a proxy whose address is listed in the trusted_proxies setting
(AUTHOPS_TRUSTED_PROXIES, comma-separated; a header from anyone else is ignored).

CSRF: every POST form carries `csrf`, the HMAC (under the platform's secret key) of the session token,
or before login of a random pre-login cookie. An attacker's page can neither read the cookie nor
compute the HMAC, so a forged form fails the check (403).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from authops.core.settings import Settings

SESSION_COOKIE = "authops_console"
PRELOGIN_COOKIE = "authops_console_pre"
COOKIE_PATH = "/console"


def trusted_proxies(settings: Settings) -> set[str]:
    return {p.strip() for p in settings.trusted_proxies.split(",") if p.strip()}


def is_secure(request: Request) -> bool:
    """The browser reached us over TLS (directly, or through a trusted proxy that says so)."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and peer in trusted_proxies(request.app.state.settings)


def set_cookie(response: Response, request: Request, name: str, value: str, *, max_age: int | None = None,
               path: str = COOKIE_PATH) -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="lax",
                        secure=is_secure(request))


def csrf_token(settings: Settings, secret_material: str, purpose: str = "session") -> str:
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"console-csrf:{purpose}:{secret_material}".encode(), hashlib.sha256).hexdigest()


def new_prelogin_nonce() -> str:
    return secrets.token_urlsafe(24)


def expected_tokens(settings: Settings, request: Request) -> list[str]:
    """The CSRF values this browser may send: its session's, and its pre-login cookie's."""
    out = []
    if token := request.cookies.get(SESSION_COOKIE):
        out.append(csrf_token(settings, token))
    if nonce := request.cookies.get(PRELOGIN_COOKIE):
        out.append(csrf_token(settings, nonce, purpose="login"))
    return out


def csrf_ok(settings: Settings, request: Request, given: str) -> bool:
    return bool(given) and any(hmac.compare_digest(given, t) for t in expected_tokens(settings, request))
