"""The seven product definitions: specs load and plan, contracts are consistent with the specs."""

from __future__ import annotations

import csv

import pytest
from jsonschema import Draft202012Validator

from authops.platform.catalog.csvload import BUILTIN, load_definitions
from authops.products.catalog import PRODUCTS, SPECS, load_spec
from authops.sandbox.spec import build_plan


def test_the_seven_products_of_the_plan():
    with open(BUILTIN / "products.csv", encoding="utf-8") as fh:
        rows = {r["code"]: r for r in csv.DictReader(fh)}
    assert set(PRODUCTS) == set(rows) and len(PRODUCTS) == 7
    for code, p in PRODUCTS.items():
        assert p.name_zh == rows[code]["name_zh"]
        assert p.free == (rows[code]["free"] == "yes")
        assert (SPECS / f"{code}.yaml").is_file()
        assert load_spec(code).name == code
    with pytest.raises(KeyError):
        load_spec("nope")


@pytest.mark.parametrize("code", sorted(PRODUCTS))
def test_contract_matches_spec(code):
    p = PRODUCTS[code]
    plan = build_plan(p.spec, {d.code: (1, d.schema) for d in load_definitions(BUILTIN)})
    assert {o.policy for o in plan.outputs.values()} == {p.release_policy}
    assert p.free == (p.price_fen == 0) and p.price_unit in ("call", "record", "month", "batch")
    Draft202012Validator.check_schema(p.request_schema)
    Draft202012Validator(p.request_schema).validate(p.example_request)
    Draft202012Validator(p.response_schema()).validate(p.example_response)
    if p.claim is not None:
        output, _ = p.claim(p.example_request)
        o = plan.outputs[output]
        labels = dict(zip(o.roles["labels"], o.release.labels))
        for f in p.response:
            col = f.column or f.name
            if col in labels:
                assert tuple(f.values or ()) == tuple(labels[col].values), (code, f.name)
    assert set(p.resources) <= {d.code for d in load_definitions(BUILTIN)}
    assert p.personal_information == (p.subject_kind == "person")
