"""Partner code must not carry who a subject is into what it releases: a second run with renamed subjects.

A score, a label, an answer or the number of rows is a value the release policy admits; partner
code could put into it a subject's resident ID number, name or phone, a digit at a time, or the
identifier behind a token (`tests/attacks/test_code_channels.py`). The gate cannot read code, so
the worker runs it twice: on the inputs, and on the same inputs with every identity field renamed:
each value of an identifier (person, enterprise, vehicle), person name, phone or bank account
field replaced by another value of the same kind drawn from the inputs (a random cyclic
permutation of the distinct values, so none keeps its own; the same in every input, so joins on
keys still match and formats stay valid). What the second run returns, with the renaming undone,
must equal what the first returned: then its outputs cannot depend on who the subjects are, only
on what they did. Mock runs do the same, so a partner finds out there, with the reason shown.

Limits: features derived from an identifier (a birth date or region read out of an ID number) are
refused too: take them from a granted field, or compute them in a declarative spec. A column that
holds the same value under two identity kinds is left as it is.

Also here: a code model output's keys must be subjects of the inputs (`unknown_keys`), so the
tokenizer is no oracle that turns any string into its token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from authops.core.data.schema import FieldSpec, Kind
from authops.sandbox.masking import fields as masking

IDENTITY_KINDS = masking.ALWAYS | masking.IDENTIFIERS  # IDs, names, phones, bank accounts
FLOAT_DIGITS = 9  # floats are compared after rounding to this many decimals


@dataclass
class Renaming:
    """One permutation of the distinct values per identity kind (`forward`: kind -> (values, their
    images)), and its inverse over all kinds (images -> values). Arrow arrays: no Python loop per value."""

    forward: dict[Kind, tuple[pa.Array, pa.Array]] = field(default_factory=dict)
    inverse: tuple[pa.Array, pa.Array] = field(default_factory=lambda: (pa.array([], pa.string()),
                                                                        pa.array([], pa.string())))

    @property
    def renamed(self) -> int:
        return sum(int(pc.sum(pc.not_equal(a, b)).as_py() or 0) for a, b in self.forward.values())


def identity_fields(inputs: Mapping[str, Mapping[str, FieldSpec]]) -> dict[str, dict[str, Kind]]:
    """Per input alias, its identity fields and their kinds."""
    return {alias: {name: spec.kind for name, spec in specs.items() if spec.kind in IDENTITY_KINDS}
            for alias, specs in inputs.items()}


def _distinct(path: Path, column: str) -> pa.Array:
    col = pq.read_table(path, columns=[column]).column(column)
    return pc.unique(pc.drop_null(col.cast(pa.string())).combine_chunks())


def renaming(paths: Mapping[str, Path], identity: Mapping[str, Mapping[str, Kind]],
             seed: int | None = None) -> Renaming:
    """A random permutation of each kind's distinct values over all inputs (a value seen under two kinds stays)."""
    by_kind: dict[Kind, list[pa.Array]] = {}
    for alias, cols in identity.items():
        for name, kind in cols.items():
            by_kind.setdefault(kind, []).append(_distinct(paths[alias], name))
    values = {kind: pc.unique(pa.concat_arrays(parts)) for kind, parts in by_kind.items()}
    kinds = list(values)
    shared = pa.array([], pa.string())
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            both = pc.filter(values[a], pc.is_in(values[a], value_set=values[b]))
            shared = pa.concat_arrays([shared, both])
    rng = np.random.default_rng(seed)
    out = Renaming()
    inverse_keys, inverse_values = [], []
    for kind, distinct in values.items():
        own = pc.filter(distinct, pc.invert(pc.is_in(distinct, value_set=shared))) if len(shared) else distinct
        if len(own) < 2:
            continue
        order = rng.permutation(len(own))  # one cycle through all of them: no value keeps its name
        keys, images = own.take(pa.array(order)), own.take(pa.array(np.roll(order, -1)))
        out.forward[kind] = (keys, images)
        inverse_keys.append(images)
        inverse_values.append(keys)
    if inverse_keys:
        out.inverse = (pa.concat_arrays(inverse_keys), pa.concat_arrays(inverse_values))
    return out


def _map(values: pa.ChunkedArray | pa.Array, mapping: tuple[pa.Array, pa.Array] | None) -> pa.Array:
    """Each value found among mapping[0] replaced by its image in mapping[1]; others (and nulls) unchanged."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if mapping is None or not len(mapping[0]) or not (pa.types.is_string(values.type)
                                                      or pa.types.is_large_string(values.type)):
        return values
    keys, images = mapping
    s = values.cast(pa.string())
    idx = pc.index_in(s, value_set=keys)
    mapped = images.take(pc.fill_null(idx, 0))
    return pc.if_else(pc.is_valid(idx), mapped, s).cast(values.type)


def rename_inputs(paths: Mapping[str, Path], identity: Mapping[str, Mapping[str, Kind]], r: Renaming,
                  folder: Path) -> dict[str, Path]:
    """Copies of the inputs with every identity field renamed (0644, for the jail's uid)."""
    import os

    out = {}
    for alias, path in paths.items():
        table = pq.read_table(path)
        for name, kind in identity.get(alias, {}).items():
            i = table.column_names.index(name)
            table = table.set_column(i, table.field(i), _map(table.column(i), r.forward.get(kind)))
        target = folder / f"{alias}.renamed.parquet"
        pq.write_table(table, target, compression="lz4")
        os.chmod(target, 0o644)
        out[alias] = target
    return out


def _canonical(table: pa.Table) -> pa.Table:
    cols = []
    for name in table.column_names:
        c = table.column(name)
        if pa.types.is_floating(c.type):
            c = pc.round(c, FLOAT_DIGITS)
        elif not (pa.types.is_integer(c.type) or pa.types.is_string(c.type) or pa.types.is_boolean(c.type)
                  or pa.types.is_large_string(c.type)):
            c = c.cast(pa.string()) if pa.types.is_primitive(c.type) or pa.types.is_temporal(c.type) \
                else pa.chunked_array([pa.array([str(v) for v in c.to_pylist()], pa.string())])
        cols.append(c)
    t = pa.table(cols, names=table.column_names)
    return t.sort_by([(n, "ascending") for n in t.column_names]) if t.num_rows else t


def difference(first: pa.Table, second: pa.Table, r: Renaming) -> str | None:
    """None when `second` (from the renamed inputs), renaming undone, equals `first`; else what differs."""
    if first.column_names != second.column_names:
        return "the columns differ"
    if first.num_rows != second.num_rows:
        return "the number of rows differs"
    undone = pa.table([_map(second.column(n), r.inverse) for n in second.column_names], names=second.column_names)
    a, b = _canonical(first), _canonical(undone)
    for name in a.column_names:
        if not a.column(name).equals(b.column(name)):
            return f"column {name!r} differs"
    return None


def subjects(paths: Mapping[str, Path], columns: Mapping[str, Iterable[str]]) -> pa.Array:
    """Every distinct value (as text) of the named columns of the inputs, e.g. their identity fields."""
    parts = [_distinct(paths[alias], name) for alias, cols in columns.items() for name in cols]
    if not parts:
        return pa.array([], pa.string())
    return pc.unique(pa.concat_arrays(parts))


def unknown_keys(table: pa.Table, key: str, known: pa.Array) -> int:
    """How many non-null values of `key` are no subject of the inputs."""
    if key not in table.column_names:
        return 0
    values = pc.drop_null(table.column(key).cast(pa.string()).combine_chunks())
    if len(values) == 0:
        return 0
    return int(pc.sum(pc.invert(pc.is_in(values, value_set=known))).as_py() or 0)
