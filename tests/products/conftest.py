"""One synthetic city for all product tests, and helpers that run a product the way the sandbox does:
load_spec -> build_plan -> execute.lazy_outputs -> gate.release (claims for per-subject answers)."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from authops.platform.catalog.csvload import BUILTIN, load_definitions
from authops.platform.synth import World, generate
from authops.products.catalog import PRODUCTS
from authops.sandbox import gate
from authops.sandbox.spec import build_plan, lazy_outputs
from tests.support import leakscan

SCALE, SEED = 0.05, 7  # 5,000 firms, 50,000 persons, 10,000 trucks, 100 institutions, 500,000 settlements
TOKEN_KEY = b"k" * 32


class City:
    def __init__(self) -> None:
        self.definitions = load_definitions(BUILTIN)
        self.schemas = {d.code: (1, d.schema) for d in self.definitions}
        self.world = World(SCALE, SEED)
        needed = {r for p in PRODUCTS.values() for r in p.resources}
        self.tables: dict[str, pa.Table] = dict(generate(self.definitions, scale=SCALE, seed=SEED, only=needed))
        self._plans: dict[str, Any] = {}
        self._pre: dict[str, dict[str, pl.DataFrame]] = {}
        self._leak: dict[str, tuple[set[str], set[int]]] = {}

    def frame(self, code: str) -> pl.DataFrame:
        return pl.from_arrow(self.tables[code])  # type: ignore[return-value]

    def plan(self, product: str):
        if product not in self._plans:
            self._plans[product] = build_plan(PRODUCTS[product].spec, self.schemas)
        return self._plans[product]

    def fields(self):
        return {(d.code, f.name): f for d in self.definitions for f in d.schema.fields}

    def lazy(self, product: str) -> dict[str, pl.LazyFrame]:
        plan = self.plan(product)
        inputs = {i.alias: self.tables[i.resource] for i in plan.inputs.values()}
        return lazy_outputs(plan, inputs, PRODUCTS[product].params)

    def pre_release(self, product: str) -> dict[str, pl.DataFrame]:
        """The pre-release tables (inside the domain; what a precompute job would hold)."""
        if product not in self._pre:
            self._pre[product] = {k: v.collect() for k, v in self.lazy(product).items()}
        return self._pre[product]

    def answer(self, product: str, output: str, claims: list[str]) -> pa.Table:
        """What the gate releases for these claims."""
        plan = self.plan(product)
        table = self.pre_release(product)[output].to_arrow()
        return gate.release(plan.outputs[output], table, token_key=TOKEN_KEY, fields=self.fields(),
                            claims=claims).table

    def report(self, product: str, output: str) -> gate.Released:
        plan = self.plan(product)
        return gate.release(plan.outputs[output], self.lazy(product)[output], token_key=TOKEN_KEY,
                            fields=self.fields())

    def leaks(self, product: str, response, **kw) -> list[str]:
        sources = {r: self.tables[r] for r in PRODUCTS[product].resources}
        if product not in self._leak:
            self._leak[product] = leakscan.sensitive_values(sources, self.definitions, kw.get("public", ()))
        return leakscan.scan(response, sources, self.definitions, values=self._leak[product],
                             public=kw.get("public", ()), exempt_numeric=kw.get("exempt_numeric", ()))


@pytest.fixture(scope="session")
def city() -> City:
    return City()


def responses(product: str, released: pa.Table) -> list[dict[str, Any]]:
    """The response bodies the product contract gives (no echo of the caller's subject key)."""
    return [PRODUCTS[product].answer(row) for row in released.to_pylist()]
