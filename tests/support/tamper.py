"""Tamperings of an exported audit log, as an attacker with file access would try them."""

from __future__ import annotations

import base64
import json
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authops.audit import canonical
from authops.audit.signing import key_id_of

KINDS = ("edit", "edit_rehash", "delete", "insert", "swap", "truncate", "append", "resign")


def split(lines: list[bytes]) -> tuple[int, int]:
    """(index of the first event line, number of lines)."""
    first = next(i for i, raw in enumerate(lines) if b'"type":"event"' in raw)
    return first, len(lines)


def tamper(lines: list[bytes], kind: str, rng: random.Random,
           foreign: Ed25519PrivateKey | None = None) -> list[bytes]:
    out = list(lines)
    first, n = split(out)
    i = rng.randrange(first, n)
    if kind == "edit":  # change one event's content, leave its recorded hash
        ev = json.loads(out[i])
        body = json.loads(base64.b64decode(ev["canonical"]))
        body["outcome"] = "ok" if body["outcome"] != "ok" else "denied"
        ev["canonical"] = base64.b64encode(canonical.encode(body)).decode()
        out[i] = json.dumps(ev, separators=(",", ":")).encode() + b"\n"
    elif kind == "edit_rehash":  # change content and fix up its own hash too
        ev = json.loads(out[i])
        body = json.loads(base64.b64decode(ev["canonical"]))
        body["actor"]["name"] = body["actor"]["name"] + "x"
        data = canonical.encode(body)
        ev["canonical"], ev["hash"] = base64.b64encode(data).decode(), canonical.chain_hash(data)
        out[i] = json.dumps(ev, separators=(",", ":")).encode() + b"\n"
    elif kind == "delete":
        del out[i]
    elif kind == "insert":
        out.insert(i, out[rng.randrange(first, n)])
    elif kind == "swap":
        j = rng.randrange(first, n)
        while j == i:
            j = rng.randrange(first, n)
        out[i], out[j] = out[j], out[i]
    elif kind == "truncate":
        out = out[:max(first, i)]
    elif kind == "append":
        out.append(out[-1])
    elif kind == "resign":  # re-sign every checkpoint with a key the auditor does not trust
        foreign = foreign or Ed25519PrivateKey.generate()
        kid = key_id_of(foreign.public_key())
        for k in range(first):
            obj = json.loads(out[k])
            if obj.get("type") != "checkpoint":
                continue
            body = json.loads(base64.b64decode(obj["statement"]))
            body["key_id"] = kid
            stmt = canonical.encode(body)
            obj["statement"] = base64.b64encode(stmt).decode()
            obj["signature"] = base64.b64encode(foreign.sign(stmt)).decode()
            out[k] = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    else:
        raise ValueError(kind)
    return out
