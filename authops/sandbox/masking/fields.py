"""Masking a record output by each field's kind and grade (the release gate's "record" policy).

Person identifiers, phones, bank accounts and person names are masked at every grade; any other
field at L1 (public) is released as it is. Otherwise, by kind (grades L2 / L3 / L4):

- identifier_person, _enterprise, _vehicle: keyed token (full mask without a token key)
- code: as is / token / token
- name_person: surname kept (张**) / surname kept / full mask; L1 as L2
- name_org: as is / first 2 characters / full mask
- phone: 138****5678 / 138****5678 / full mask; L1 as L2
- bank_account: first 6 and last 4 / first 6 and last 4 / full mask; L1 as L2
- address: district + **** / district + **** / city + ****
- date, datetime: YYYY-MM / YYYY / YYYY
- money: as is / range (1万–5万) / range
- count: as is / range (10–99) / range
- ratio: as is / one decimal / suppressed
- category, flag: as is / as is / suppressed
- text: as is / suppressed / suppressed

Tokens are scoped to the key (one per customer and product, see `token_key`) and to the field's
kind, so the same person has the same token in every identifier_person column of one customer's
releases and a different one for every other customer. Masked columns change type where the
treatment makes labels (dates, money and counts become strings).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data.schema import FieldSpec, Kind, ResourceSchema
from authops.core.errors import InvalidInput
from authops.sandbox.masking import addresses, generalize, strings, tokens
from authops.sandbox.masking._arrow import Values, as_arrow, as_strings, labels_at, per_chunk, validity

ALWAYS = frozenset({Kind.IDENTIFIER_PERSON, Kind.PHONE, Kind.BANK_ACCOUNT, Kind.NAME_PERSON})
IDENTIFIERS = frozenset({Kind.IDENTIFIER_PERSON, Kind.IDENTIFIER_ENTERPRISE, Kind.IDENTIFIER_VEHICLE})
_COUNT_EDGES = np.array([0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000], dtype=np.int64)
_COUNT_LABELS = ["<0", "0", "1–9", "10–99", "100–999", "1000–9999", "1万–10万", "10万–100万", "≥100万"]

Treatment = Callable[[Values], Values]


def count_band(values) -> Values:
    """Counts as decade ranges: 0, 1–9, 10–99, …, ≥100万."""
    def one(c: pa.Array) -> pa.Array:
        v = c.cast(pa.int64()).fill_null(0).to_numpy()
        return labels_at(_COUNT_LABELS, np.searchsorted(_COUNT_EDGES, v, side="right"), validity(c))

    return per_chunk(one, as_arrow(values), pa.string())


def _identifier(kind: Kind, key: bytes | None) -> tuple[str, Treatment]:
    if key is None:
        return "full mask", strings.full_mask

    def token(values: Values) -> Values:
        normal = pc.utf8_upper(pc.utf8_trim_whitespace(as_strings(values)))  # 32…x and 32…X are one person
        return tokens.tokenize(normal, key, domain=kind.value)

    return "token", token


def plan(field: FieldSpec, token_key: bytes | None = None) -> tuple[str, Treatment]:
    """(treatment name, function) for one field of a record output."""
    k, level = field.kind, field.grade.level
    if level == 1 and k not in ALWAYS:
        return "as is", as_arrow
    if k in IDENTIFIERS or (k == Kind.CODE and level >= 3):
        return _identifier(k, token_key)
    if k == Kind.NAME_PERSON:
        return ("surname only", strings.mask_name) if level <= 3 else ("full mask", strings.full_mask)
    if k == Kind.PHONE:
        return ("mobile 3+4", strings.mask_mobile) if level <= 3 else ("full mask", strings.full_mask)
    if k == Kind.BANK_ACCOUNT:
        return ("card 6+4", strings.mask_bank_card) if level <= 3 else ("full mask", strings.full_mask)
    if k == Kind.NAME_ORG:
        if level == 2:
            return "as is", as_arrow
        return (("first 2", lambda v: strings.keep_ends(v, 2, 0)) if level == 3
                else ("full mask", strings.full_mask))
    if k == Kind.ADDRESS:
        return (("district", addresses.mask_address) if level <= 3
                else ("city", lambda v: addresses.mask_address(v, level="city")))
    if k in (Kind.DATE, Kind.DATETIME):
        return ("month", lambda v: generalize.date_to(v, "month")) if level == 2 else (
            "year", lambda v: generalize.date_to(v, "year"))
    if k == Kind.MONEY:
        return ("as is", as_arrow) if level == 2 else ("amount band", generalize.amount_band)
    if k == Kind.COUNT:
        return ("as is", as_arrow) if level == 2 else ("count band", count_band)
    if k == Kind.RATIO:
        if level == 2:
            return "as is", as_arrow
        return ("1 decimal", lambda v: pc.round(as_arrow(v), 1)) if level == 3 else ("suppressed", generalize.suppress)
    if k in (Kind.CATEGORY, Kind.FLAG, Kind.CODE):
        return ("as is", as_arrow) if level <= 3 else ("suppressed", generalize.suppress)
    if k == Kind.TEXT:
        return ("as is", as_arrow) if level == 2 else ("suppressed", generalize.suppress)
    return "suppressed", generalize.suppress  # a kind added later is withheld until it has a rule


def mask_by_field(values, field: FieldSpec, *, token_key: bytes | None) -> Values:
    """The released form of one column of a record output (see the module table)."""
    return plan(field, token_key)[1](values)


def mask_table(table: pa.Table, schema: ResourceSchema, token_key: bytes | None) -> pa.Table:
    """Every column masked by its field; a column the schema does not describe is refused."""
    names = set(schema.names)
    unknown = [c for c in table.column_names if c not in names]
    if unknown:
        raise InvalidInput(f"columns not in the resource schema cannot be released: {', '.join(unknown)}")
    cols = [mask_by_field(table.column(n), schema.field(n), token_key=token_key) for n in table.column_names]
    return pa.table(cols, names=table.column_names)
