"""What every console page module shares: the prefix, form checking with the API's own request
models, money typed in yuan, and the post/redirect/get answer.

`validated(Model, **form)` runs the API's pydantic model over the form's values (the same limits as
the API); the first problem becomes an InvalidInput naming its field. `fen("12.50", "cap")` reads a
yuan amount as integer fen (at most two decimals; anything else names the field). `see(path)` is
the 303 redirect a form answers with.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from authops.core.errors import InvalidInput

PREFIX = "/console"


def validated(model, **values: Any):
    """The API's own request model checks the form (same limits); the first problem names its field."""
    try:
        return model(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(p) for p in e.get("loc", ()))
        raise InvalidInput(f"{field}: {e.get('msg', '')}", details={"field": field}) from None


def fen(text: str, field: str) -> int:
    """A yuan amount as typed ("12", "12.5", "1,200.00") in integer fen."""
    cleaned = (text or "").replace(",", "").replace("，", "").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidInput(f"{field}: an amount in yuan, e.g. 12.50", details={"field": field}) from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        raise InvalidInput(f"{field}: an amount in yuan of at most two decimals, 0 or more",
                           details={"field": field})
    return int(value * 100)


def whole(text: str, field: str, *, low: int = 0, high: int = 10**9) -> int:
    """A whole number typed into a form, between low and high."""
    try:
        value = int((text or "").strip())
    except ValueError:
        raise InvalidInput(f"{field}: a whole number", details={"field": field}) from None
    if not low <= value <= high:
        raise InvalidInput(f"{field}: between {low} and {high}", details={"field": field})
    return value


def see(path: str) -> RedirectResponse:
    """Post/redirect/get: a form's answer is the page that shows its result."""
    return RedirectResponse(PREFIX + path, status_code=303)
