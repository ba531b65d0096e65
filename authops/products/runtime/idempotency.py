"""Idempotency keys: the same key with the same request is the same call (one answer, one charge).

`request_sha256` is the fingerprint stored with the call: the product and the request body in a
canonical form (sorted keys, no insignificant whitespace), so key order or spacing in the client's
JSON does not make "the same request" different.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from authops.core.errors import InvalidInput

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


def check_key(key: str | None) -> str | None:
    """The key as given, or None; refuses keys that are not 1-128 visible ASCII characters."""
    if key is None:
        return None
    if not _KEY.match(key):
        raise InvalidInput(f"the {HEADER} header is 1 to 128 visible ASCII characters (e.g. a UUID)",
                           details={"field": HEADER})
    return key


def request_sha256(product_code: str, body: dict[str, Any]) -> str:
    canonical = json.dumps({"product": product_code, "body": body}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
