"""The answer table: one row per subject, keyed by a keyed digest of the subject, never its ID.

Format (an Arrow table, stored as Parquet, sealed by the object store):

- column `k`: fixed_size_binary(16), the first 16 bytes of HMAC-SHA256(serving key, normal(subject));
  the serving key is per product and derived from the platform secret, so the table holds no raw
  ID and cannot be joined with another product's table or the consent pseudonyms;
- one column per released output, named by the output: the verify answer (string, one of the
  output's values) or the model score (float64, rounded and clamped by the release gate);
- one column per label the output releases beside its answer (string from a declared set),
  named "<output>.<label>";
- schema metadata `authops.answers`: JSON of AnswerMeta (product, version, outputs and their
  policies, values and absent answers).

`Lookup` loads such a table into a dict for O(1) reads; it is immutable once built, so one
instance may be shared by threads.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

KEY_COLUMN = "k"
KEY_BYTES = 16
META_KEY = b"authops.answers"
SERVED_POLICIES = ("verify", "model")
RESERVED_NAMES = ("k", "status")


def normal_subject(subject: Any) -> str:
    """A subject as it is keyed: whitespace removed, upper case (IDs, USCCs, VINs, plates)."""
    return "".join(str(subject).split()).upper()


def subject_digest(key: bytes, subject: Any) -> bytes:
    """The subject's key in the answer table: truncated HMAC-SHA256 of its normal form."""
    return hmac.new(key, normal_subject(subject).encode("utf-8"), hashlib.sha256).digest()[:KEY_BYTES]


@dataclass(frozen=True)
class OutputMeta:
    name: str
    policy: str  # verify | model
    values: tuple[str, ...] = ()  # verify: the enumerated answers
    absent: str | None = None  # verify: the answer for a subject not in the data
    bounds: tuple[float, float] | None = None  # model: the score's bounds, if declared
    labels: tuple[str, ...] = ()  # extra enumerated answer columns released beside the answer
    separators: tuple[str | None, ...] = ()  # per label: the separator of a list of codes, or None

    def columns(self) -> tuple[str, ...]:
        return (self.name, *(f"{self.name}.{lab}" for lab in self.labels))


@dataclass(frozen=True)
class AnswerMeta:
    product: str
    version: int
    outputs: tuple[OutputMeta, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """'verify' when every output is a verify answer, else 'score'."""
        return "verify" if all(o.policy == "verify" for o in self.outputs) else "score"

    def output(self, name: str) -> OutputMeta | None:
        return next((o for o in self.outputs if o.name == name), None)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AnswerMeta:
        d = json.loads(data)
        outs = tuple(OutputMeta(name=o["name"], policy=o["policy"], values=tuple(o.get("values") or ()),
                                absent=o.get("absent"), bounds=tuple(o["bounds"]) if o.get("bounds") else None,
                                labels=tuple(o.get("labels") or ()), separators=tuple(o.get("separators") or ()))
                     for o in d["outputs"])
        return cls(product=d["product"], version=int(d["version"]), outputs=outs, extra=d.get("extra") or {})


def check_outputs(outputs: Sequence[OutputMeta]) -> None:
    if not outputs:
        raise ValueError("an answer table needs at least one output")
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise ValueError("output names must be unique")
    for o in outputs:
        if o.policy not in SERVED_POLICIES:
            raise ValueError(f"output {o.name!r} is a {o.policy} output; per-subject answers are verify or model")
        if o.name in RESERVED_NAMES:
            raise ValueError(f"output name {o.name!r} is reserved in answers; rename the output")
        if o.separators and len(o.separators) != len(o.labels):
            raise ValueError(f"output {o.name!r}: one separator (or None) per label")


def build_table(meta: AnswerMeta, keys: Sequence[bytes], columns: dict[str, Sequence[Any]]) -> pa.Table:
    """The answer table of `keys` (subject digests) and each output's answers (and labels, under
    "<output>.<label>"), row-aligned."""
    check_outputs(meta.outputs)
    if set(columns) != {c for o in meta.outputs for c in o.columns()}:
        raise ValueError("columns must be exactly the outputs' columns (answers and labels)")
    n = len(keys)
    if any(len(keys[i]) != KEY_BYTES for i in range(min(n, 1))):
        raise ValueError(f"keys are {KEY_BYTES}-byte digests")
    if len(set(keys)) != n:
        raise ValueError("two subjects share a key: their normal forms are equal")
    arrays = [pa.array(keys, pa.binary(KEY_BYTES))]
    names = [KEY_COLUMN]
    for o in meta.outputs:
        for i, col in enumerate(o.columns()):
            values = columns[col]
            if len(values) != n:
                raise ValueError(f"column {col!r} has {len(values)} answers for {n} keys")
            numeric = i == 0 and o.policy == "model"
            arrays.append(pa.array(values, pa.float64() if numeric else pa.string()))
            names.append(col)
    table = pa.table(arrays, names=names)
    return table.replace_schema_metadata({META_KEY: meta.to_json()})


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_table(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def meta_of(table: pa.Table) -> AnswerMeta:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError("not an answer table: no authops.answers metadata")
    return AnswerMeta.from_json(raw)


class Lookup:
    """An answer table in memory: digest -> {output: answer}; O(1), immutable, thread-safe to read."""

    __slots__ = ("meta", "rows", "_names")

    def __init__(self, table: pa.Table) -> None:
        self.meta = meta_of(table)
        self._names = tuple(c for o in self.meta.outputs for c in o.columns())
        keys = table.column(KEY_COLUMN).to_pylist()
        cols = [table.column(n).to_pylist() for n in self._names]
        self.rows: dict[bytes, tuple] = dict(zip(keys, zip(*cols))) if cols else {}

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, digest: bytes) -> dict[str, Any] | None:
        row = self.rows.get(digest)
        return None if row is None else dict(zip(self._names, row))

    def digests(self) -> Iterable[bytes]:
        return self.rows.keys()
