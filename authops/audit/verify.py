"""Offline verification of an exported log with nothing but the file and public keys.

Checks, streaming: the file's structure; every event's canonical bytes, sequence number and
hash; the hash chain; every checkpoint's signature (only the given keys are trusted); each
checkpoint's Merkle root recomputed from the events; the consistency proofs between
checkpoints; that every event is covered by a signed checkpoint; and, optionally, that the
log extends a checkpoint the auditor kept from before. It fails closed: anything malformed
is reported as tampering with its line, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authops.audit import canonical, merkle

FORMAT = "authops-audit-log"


class Tampered(Exception):
    def __init__(self, line: int, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.line, self.message, self.seq = line, message, seq


@dataclass
class Report:
    ok: bool
    events: int = 0
    checkpoints: int = 0
    proofs: int = 0
    key_ids: list[str] = field(default_factory=list)
    problem: str | None = None
    line: int | None = None
    seq: int | None = None
    trusted: str | None = None

    def summary(self) -> str:
        if self.ok:
            text = (f"OK: {self.events} events, {self.checkpoints} signed checkpoints "
                    f"(keys {', '.join(self.key_ids) or '-'}), {self.proofs} consistency proofs verified")
            return text + (f"; extends trusted checkpoint {self.trusted}" if self.trusted else "")
        where = f"line {self.line}" + (f", event {self.seq}" if self.seq else "")
        return f"TAMPERED ({where}): {self.problem}"


def _b64(value, line: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise Tampered(line, f"{what} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Tampered(line, f"{what} is not valid base64") from None


def _statement(stmt: bytes, sig: bytes, keys: dict[str, Ed25519PublicKey], line: int) -> dict:
    try:
        body = canonical.decode(stmt)
    except (ValueError, UnicodeDecodeError):
        raise Tampered(line, "checkpoint statement is not canonical JSON") from None
    for name, kind in (("tree_size", int), ("root", str), ("key_id", str), ("prev_size", int)):
        if not isinstance(body.get(name), kind) or isinstance(body.get(name), bool):
            raise Tampered(line, f"checkpoint statement has no valid {name}")
    key = keys.get(body["key_id"])
    if key is None:
        raise Tampered(line, f"checkpoint at size {body['tree_size']} is signed by key {body['key_id']}, "
                             "which is not among the trusted public keys (re-signed?)")
    try:
        key.verify(sig, stmt)
    except InvalidSignature:
        raise Tampered(line, f"checkpoint at size {body['tree_size']}: signature does not verify") from None
    return body


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                obj = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise Tampered(number, "line is not valid JSON") from None
            if not isinstance(obj, dict):
                raise Tampered(number, "line is not a JSON object")
            yield number, obj


def verify_file(path: Path, public_keys: dict[str, Ed25519PublicKey],
                trusted_checkpoint: dict | None = None) -> Report:
    """Verify an export; `public_keys` maps key id to key. Never raises on bad input."""
    report = Report(ok=False, key_ids=sorted(public_keys))
    try:
        _verify(path, public_keys, trusted_checkpoint, report)
        report.ok = True
    except Tampered as t:
        report.problem, report.line, report.seq = t.message, t.line, t.seq
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        report.problem = f"cannot read the file ({type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 - fail closed: anything unexpected is tampering
        report.problem = f"malformed input ({type(exc).__name__})"
    return report


def _verify(path: Path, keys: dict, trusted: dict | None, report: Report) -> None:
    lines = _lines(path)
    try:
        number, header = next(lines)
    except StopIteration:
        raise Tampered(0, "the file is empty") from None
    if header.get("format") != FORMAT or header.get("version") != 1:
        raise Tampered(number, "not an authops audit export (bad header)")
    declared = header.get("events")
    checkpoints: dict[int, dict] = {}
    proofs: list[tuple[int, dict]] = []
    frontier = merkle.CompactRange()
    prev_hash, seq = canonical.GENESIS, 0
    trusted_body = None
    if trusted is not None:
        trusted_body = _statement(_b64(trusted.get("statement"), 0, "trusted statement"),
                                  _b64(trusted.get("signature"), 0, "trusted signature"), keys, 0)
        report.trusted = f"{trusted_body['tree_size']}:{trusted_body['root'][:16]}"
    phase = "checkpoint"
    for number, obj in lines:
        kind = obj.get("type")
        order = {"checkpoint": 0, "consistency": 1, "event": 2}
        if kind not in order or order[kind] < order[phase]:
            raise Tampered(number, f"unexpected {kind!r} line here")
        phase = kind
        if kind == "checkpoint":
            body = _statement(_b64(obj.get("statement"), number, "statement"),
                              _b64(obj.get("signature"), number, "signature"), keys, number)
            if checkpoints and body["tree_size"] <= max(checkpoints):
                raise Tampered(number, "checkpoints out of order or duplicated")
            before = checkpoints[max(checkpoints)] if checkpoints else None
            if before and (body["prev_size"], body.get("prev_root")) != (before["tree_size"], before["root"]):
                raise Tampered(number, f"checkpoint at {body['tree_size']} does not follow the one at "
                                       f"{before['tree_size']} (a checkpoint was removed)")
            checkpoints[body["tree_size"]] = body
            report.checkpoints += 1
        elif kind == "consistency":
            proofs.append((number, obj))
        else:
            seq += 1
            if obj.get("seq") != seq:
                raise Tampered(number, f"expected event {seq} here, found {obj.get('seq')!r} "
                                       "(an event was deleted, inserted or moved)", seq)
            data = _b64(obj.get("canonical"), number, "event bytes")
            try:
                body = canonical.decode(data)
            except (ValueError, UnicodeDecodeError):
                raise Tampered(number, "event bytes are not canonical JSON (edited)", seq) from None
            digest = canonical.chain_hash(data)
            if obj.get("hash") != digest:
                raise Tampered(number, "event hash does not match its bytes (edited)", seq)
            if body.get("seq") != seq:
                raise Tampered(number, f"event claims sequence {body.get('seq')!r}", seq)
            if body.get("prev") != prev_hash:
                raise Tampered(number, "event does not chain to the previous one "
                                       "(an earlier event was edited, deleted or reordered)", seq)
            prev_hash = digest
            frontier.append(merkle.leaf_hash(data))
            if seq in checkpoints and frontier.root().hex() != checkpoints[seq]["root"]:
                raise Tampered(number, f"events 1..{seq} do not match the signed checkpoint's Merkle root", seq)
            if trusted_body and seq == trusted_body["tree_size"] and frontier.root().hex() != trusted_body["root"]:
                raise Tampered(number, "the log does not extend the trusted checkpoint (history rewritten)", seq)
    report.events = seq
    if declared != seq:
        raise Tampered(number, f"header says {declared} events, the file holds {seq} (truncated or padded)")
    if not checkpoints:
        raise Tampered(number, "no signed checkpoint")
    last = max(checkpoints)
    if last > seq:
        raise Tampered(number, f"checkpoint covers {last} events but only {seq} are present (truncated)")
    if last < seq:
        raise Tampered(number, f"events {last + 1}..{seq} are not covered by a signed checkpoint (appended)")
    if trusted_body and trusted_body["tree_size"] > seq:
        raise Tampered(number, "the log is shorter than the trusted checkpoint (truncated)")
    sizes = sorted(checkpoints)
    needed = set(zip(sizes, sizes[1:]))
    for number, p in proofs:
        pair = (p.get("old_size"), p.get("new_size"))
        if pair not in needed or not isinstance(p.get("proof"), list):
            raise Tampered(number, "consistency proof for checkpoints that do not follow each other")
        try:
            proof = [bytes.fromhex(h) for h in p["proof"]]
        except (TypeError, ValueError):
            raise Tampered(number, "consistency proof is not hex") from None
        old, new = checkpoints[pair[0]], checkpoints[pair[1]]
        if not merkle.verify_consistency(pair[0], pair[1], bytes.fromhex(old["root"]),
                                         bytes.fromhex(new["root"]), proof):
            raise Tampered(number, f"checkpoint at {pair[1]} is not consistent with the one at {pair[0]}")
        needed.discard(pair)
        report.proofs += 1
    if needed:
        raise Tampered(number, f"consistency proofs missing for {sorted(needed)[:3]}")


def load_keys(pems: list[str | bytes]) -> dict[str, Ed25519PublicKey]:
    from authops.audit.signing import load_public_key

    return dict(load_public_key(p) for p in pems)
