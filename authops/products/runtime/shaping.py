"""What a call answers, from the stored row of its subject (or none).

Verify products (every output a verify answer):
    without claims, each output's enumerated answer: {"<output>": "yes"};
    with claims {"<output>": "<claimed value>"}, each claimed output answers
    {"claimed": "<value>", "verified": true|false} and only what was claimed is compared.
    A subject with no row gets each output's `absent` answer, exactly as the release gate's
    verify policy answers an unknown claim: the answer never shows whether the subject is in
    the source data (a "no" and "not in the data" look the same).
Score products (model outputs):
    {"status": "found", "<output>": <score>, ...}, or {"status": "not_found"} for a subject with
    no row. Saying "not found" tells a caller that passed the agreement and consent checks only
    that no score exists, which is what the model release answers for an unknown claim (a null
    score); it reveals no value. A fabricated score would be worse: the customer would decide on it.
Labels (extra enumerated columns an output releases beside its answer, e.g. a grade or reason
codes) are added under their own names (prefixed "<output>." if two outputs share one); a label
that is a list of codes joined by a separator is answered as a list. A subject with no row has
null labels.
"""

from __future__ import annotations

from typing import Any

from authops.core.errors import InvalidInput
from authops.products.runtime.answers import AnswerMeta

MAX_CLAIM_LENGTH = 200


def check_claims(meta: AnswerMeta, claims: dict[str, Any] | None) -> dict[str, str]:
    """Claims as strings; refuses claims on a score product, unknown outputs and values outside
    the output's enumerated answers (naming the field)."""
    if not claims:
        return {}
    from authops.products.catalog import PRODUCTS

    if meta.product in PRODUCTS:
        raise InvalidInput(f"{meta.product} answers the recorded values (e.g. the amount band and the award's "
                           "recency) for you to compare with your claim; send no claims",
                           details={"field": "claims"})
    if not isinstance(claims, dict):
        raise InvalidInput("claims is an object: {output: claimed value}", details={"field": "claims"})
    if meta.kind != "verify":
        raise InvalidInput(f"{meta.product} is a score product: it answers scores and takes no claims",
                           details={"field": "claims"})
    out = {}
    for name, value in claims.items():
        o = meta.output(name)
        if o is None:
            known = ", ".join(x.name for x in meta.outputs)
            raise InvalidInput(f"claims.{name}: {meta.product} has no output of that name; it answers {known}",
                               details={"field": f"claims.{name}"})
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidInput(f"claims.{name} is a string (one of {list(o.values)})",
                               details={"field": f"claims.{name}"})
        text = str(value).strip()
        if len(text) > MAX_CLAIM_LENGTH or (o.values and text not in o.values):
            raise InvalidInput(f"claims.{name} must be one of {list(o.values)}", details={"field": f"claims.{name}"})
        out[name] = text
    return out


def _labels(meta: AnswerMeta, row: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen = [lab for o in meta.outputs for lab in o.labels]
    for o in meta.outputs:
        for i, lab in enumerate(o.labels):
            value = row.get(f"{o.name}.{lab}") if row is not None else None
            sep = o.separators[i] if i < len(o.separators) else None
            if sep and value is not None:
                value = [v for v in value.split(sep) if v]
            name = lab if seen.count(lab) == 1 and meta.output(lab) is None else f"{o.name}.{lab}"
            out[name] = value
    return out


def shape_answer(meta: AnswerMeta, row: dict[str, Any] | None, claims: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """The answer of one call: a catalogue product's in its documented contract
    (authops.products.catalog: ProductDef.shape), any other product's as the module docstring says."""
    from authops.products.catalog import PRODUCTS

    generic = _generic(meta, row, claims)
    defn = PRODUCTS.get(meta.product)
    return defn.shape(generic) if defn is not None else generic


def _generic(meta: AnswerMeta, row: dict[str, Any] | None, claims: dict[str, str] | None) -> dict[str, Any]:
    claims = claims or {}
    if meta.kind == "verify":
        answer: dict[str, Any] = {}
        for o in meta.outputs:
            value = row.get(o.name) if row is not None else None
            if value is None:
                value = o.absent
            if o.name in claims:
                answer[o.name] = {"claimed": claims[o.name], "verified": claims[o.name] == value}
            else:
                answer[o.name] = value
        return {**answer, **_labels(meta, row)}
    if row is None or all(row.get(o.name) is None for o in meta.outputs):
        return {"status": "not_found"}
    return {"status": "found", **{o.name: row.get(o.name) for o in meta.outputs}, **_labels(meta, row)}


def is_found(answer: dict[str, Any]) -> bool:
    return answer.get("status") != "not_found" and answer.get("found") is not False
