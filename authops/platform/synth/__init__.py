"""Synthetic source data for the catalogue's resources: one coherent city, generated column-wise.

`generate(definitions, scale=, seed=)` yields `(code, pyarrow.Table)` per resource, each table
exactly of the resource's Arrow schema (`authops.core.data.schema.arrow_schema`); `write` stores
them as `<code>.parquet` (the departments' own source data for ingestion to pull); `mock` gives a
small table of fake data partners may see in full, drawn from identifier ranges the generated
data never uses.

Guarantees: required fields are never empty; category fields only take their enumerated values;
fields with a format check pass `authops.core.data.identifiers.valid_mask`; record keys are unique
within a table; the same seed gives identical output, and a resource's table does not depend on
which other resources were generated with it. Scale 1 is about 100,000 enterprises, 1,000,000
persons, 200,000 trucks and 10,000,000 settlements (about 29 million rows in all); `generate`
holds one resource's whole table, so above scale 0.5 stream with `write` or `parts` instead
(settlements alone take about 1 GB per million rows in memory). Resources the domain modules do
not know get rows about their privacy unit, filled by field kind. The planted signals are
described in `authops.platform.synth.pools`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from authops.core.data.schema import PrivacyUnit, arrow_schema
from authops.platform.synth import enterprise, judicial, medical, person, settlement, trading, vehicle  # noqa: F401
from authops.platform.synth.arrow import rng_for
from authops.platform.synth.columns import Rows, complete
from authops.platform.synth.pools import SIGNALS, World
from authops.platform.synth.registry import BUILDERS

__all__ = ["SIGNALS", "World", "generate", "mock", "parts", "write"]


def _generic_rows(w: World, defn, rng: np.random.Generator) -> Rows:
    """Rows for a resource no domain module knows: about its privacy unit, one row per subject."""
    unit = defn.schema.privacy_unit
    if unit == PrivacyUnit.PERSON:
        pool = w.persons.n
    elif unit == PrivacyUnit.ENTERPRISE:
        pool = w.enterprises.n
    elif unit == PrivacyUnit.VEHICLE:
        pool = w.vehicles.n
    else:
        return Rows(w.count(10_000, 10))
    idx = rng.permutation(pool)[: w.count(10_000, 10)]
    return Rows(len(idx), **{{PrivacyUnit.PERSON: "p", PrivacyUnit.ENTERPRISE: "e",
                              PrivacyUnit.VEHICLE: "v"}[unit]: idx})


def parts(w: World, defn) -> Iterator[pa.Table]:
    """The resource's table in one or more pieces (settlements come a million rows at a time)."""
    rng = w.rng(defn.code)
    built = BUILDERS.get(defn.code, _generic_rows)(w, defn, rng)
    if isinstance(built, Rows):
        yield complete(w, defn, built, rng)
        return
    for k, rows in enumerate(built):
        yield complete(w, defn, rows, w.rng(defn.code, "fill", k))


def generate(definitions: Iterable, *, scale: float = 1.0, seed: int = 0,
             only: set[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """(resource code, table) for each definition (or each one named in `only`), in order."""
    w = World(scale, seed)
    for defn in definitions:
        if only is not None and defn.code not in only:
            continue
        pieces = list(parts(w, defn))
        yield defn.code, pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)


def write(definitions: Iterable, out_dir: Path | str, *, scale: float = 1.0, seed: int = 0) -> dict[str, int]:
    """Write `<code>.parquet` per resource into out_dir, streaming large ones; return row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = World(scale, seed)
    counts: dict[str, int] = {}
    for defn in definitions:
        path = out / f"{defn.code}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        rows = 0
        with pq.ParquetWriter(tmp, arrow_schema(defn.schema), compression="zstd") as writer:
            for table in parts(w, defn):
                writer.write_table(table)
                rows += table.num_rows
        tmp.replace(path)
        counts[defn.code] = rows
    return counts


@functools.lru_cache(maxsize=4)
def _mock_world(scale: float, seed: int) -> World:
    return World(scale, seed, mock=True)


def mock(defn, *, rows: int = 200, seed: int = 0) -> pa.Table:
    """`rows` rows (fewer only for very rare resources) of openly showable fake data of defn's schema.

    The mock world shares no identifier with `generate`'s (see pools), so nothing a partner sees
    in a mock can be looked up in the real-looking data. Small worlds are reused across calls.
    """
    scale = 0.002
    table = pa.concat_tables(list(parts(_mock_world(scale, seed), defn)))
    while table.num_rows < rows and scale < 0.256:  # a rare resource: a bigger world
        need = scale * rows / max(table.num_rows, 1) * 1.5
        scale = min(0.256, 0.002 * 2 ** max(int(np.ceil(np.log2(need / 0.002))), int(np.log2(scale / 0.002)) + 1))
        table = pa.concat_tables(list(parts(_mock_world(scale, seed), defn)))
    if table.num_rows > rows:
        keep = np.sort(rng_for(seed, "mock-sample", defn.code).choice(table.num_rows, rows, replace=False))
        table = table.take(pa.array(keep))
    return table.combine_chunks()
