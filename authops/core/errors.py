"""One error base class carrying an HTTP status and a stable code; messages say what to fix."""

from __future__ import annotations

from typing import Any


class AuthopsError(Exception):
    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(AuthopsError):
    status_code = 422
    code = "invalid_input"


class Unauthenticated(AuthopsError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(AuthopsError):
    status_code = 403
    code = "forbidden"


class NotFound(AuthopsError):
    """Also the answer for another organisation's object: no hint that it exists."""

    status_code = 404
    code = "not_found"


class Conflict(AuthopsError):
    status_code = 409
    code = "conflict"


class Unavailable(AuthopsError):
    status_code = 503
    code = "unavailable"


class IntegrityViolation(AuthopsError):
    """Stored bytes failed authentication: tampered, truncated or wrong key."""

    status_code = 500
    code = "integrity_violation"


class ConfigurationError(AuthopsError):
    status_code = 500
    code = "configuration_error"
