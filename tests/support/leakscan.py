"""Leak scan for product answers: nothing in a response may be a raw value of the source data.

`scan(response, sources, definitions)` collects, from the source tables a product read, every value of
a field that identifies, names, contacts or describes someone (resident ID, person number, VIN,
plate, an 18-character organisation code such as a USCC, person and organisation names, phones,
addresses, bank accounts, free text such as diagnosis names, codes such as diagnosis codes and case
numbers) and every money amount of 100 yuan or more, then reports each response cell that equals
one, contains a text value of 6+ characters, or (numbers) equals an amount. `public` names fields whose
values are public keys a report may show (region and designated-institution codes); `exempt_numeric`
names response columns that are DP statistics (noisy sums are not source amounts, though one may
equal some amount by chance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data.schema import Kind

TEXT_KINDS = {Kind.IDENTIFIER_PERSON, Kind.IDENTIFIER_VEHICLE, Kind.NAME_PERSON, Kind.NAME_ORG, Kind.PHONE,
              Kind.ADDRESS, Kind.BANK_ACCOUNT, Kind.TEXT, Kind.CODE}
MIN_AMOUNT = 10_000  # fen: 100 yuan; smaller figures collide with scores and counts
MIN_SUBSTRING = 6


def sensitive_values(sources: Mapping[str, pa.Table], definitions: Iterable[Any], public: Sequence[str] = ()
                     ) -> tuple[set[str], set[int]]:
    defs = {d.code: d for d in definitions}
    texts: set[str] = set()
    amounts: set[int] = set()
    for code, table in sources.items():
        for f in defs[code].schema.fields:
            if f.name not in table.column_names or f.name in public:
                continue
            col = table.column(f.name)
            if f.kind == Kind.MONEY:
                vals = pc.unique(pc.abs(col.cast(pa.int64()))).to_pylist()
                amounts.update(v for v in vals if v is not None and v >= MIN_AMOUNT)
            elif f.kind in TEXT_KINDS or (f.kind == Kind.IDENTIFIER_ENTERPRISE):
                vals = pc.unique(col.cast(pa.string())).to_pylist()
                for v in vals:
                    if not v:
                        continue
                    v = v.strip()
                    if f.kind == Kind.IDENTIFIER_ENTERPRISE and len(v) != 18:
                        continue  # institution and employer numbers are public codes; USCCs are 18 characters
                    if len(v) >= 3:
                        texts.add(v.upper())
    return texts, amounts


def _rows(response: pa.Table | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return response.to_pylist() if isinstance(response, pa.Table) else list(response)


def scan(response: pa.Table | Sequence[Mapping[str, Any]], sources: Mapping[str, pa.Table], definitions,
         *, public: Sequence[str] = (), exempt_numeric: Sequence[str] = (),
         values: tuple[set[str], set[int]] | None = None) -> list[str]:
    """Problems found ('column: what'), empty when the response holds no raw source value."""
    texts, amounts = values if values is not None else sensitive_values(sources, definitions, public)
    long_texts = {t for t in texts if len(t) >= MIN_SUBSTRING}
    problems: list[str] = []
    seen: set[tuple[str, Any]] = set()
    for row in _rows(response):
        for name, v in row.items():
            if name in public:  # a public key column (e.g. region codes), shown by design
                continue
            items = v if isinstance(v, list) else [v]
            for x in items:
                if x is None or isinstance(x, bool) or (name, x) in seen:
                    continue
                seen.add((name, x))
                if isinstance(x, (int, float)):
                    if name not in exempt_numeric and float(x).is_integer() and int(abs(x)) in amounts:
                        problems.append(f"{name}: a source amount")
                    continue
                s = str(x).strip().upper()
                if s in texts:
                    problems.append(f"{name}: a source value")
                    continue
                if len(s) >= MIN_SUBSTRING and any(s[i:j] in long_texts for i in range(len(s))
                                                   for j in range(i + MIN_SUBSTRING, len(s) + 1)):
                    problems.append(f"{name}: contains a source value")
                    continue
                digits = s.replace(",", "")
                if digits.isdigit() and int(digits) in amounts:
                    problems.append(f"{name}: a source amount as text")
    return problems
