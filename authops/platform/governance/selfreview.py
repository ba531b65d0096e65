"""The security self-review report a partner files with a product (BRIEF 5).

The platform fills in what it knows, from the product's planned spec and the ledgers:
- for each output, which input fields reach each column (the plan's lineage) and which only
  decide which rows flow (influences), with their kinds, grades and personal flags;
- the release parameters: ε, δ and clamping bounds of aggregates, the minimum cell size, k and
  the quasi-identifiers of record outputs, which columns are tokenized or masked and how;
- the partner's privacy budget for every resource the aggregates read;
- the automated tests it ran and their results: the scope check against the workspace grants,
  the release gate's data-independent checks (`gate.preflight`), and a mock run — the spec run
  on the mock datasets with every output put through the real release gate, whose last step is
  the raw-identifier scan (resident ID numbers, USCCs, mobile numbers).
The partner answers the four risks the plan names (use beyond purpose or scope; direct exposure
of raw, sensitive or private data; indirect exposure through attacks on models or algorithms;
other risks). `problems()` lists what still blocks submission.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from sqlmodel import Session

from authops.core.clock import utcnow
from authops.core.errors import AuthopsError
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import service as catalog
from authops.policies import budget
from authops.sandbox import gate
from authops.sandbox.masking import fields as masking
from authops.sandbox.models import Workspace

VERSION = 1
SECTIONS: dict[str, tuple[str, str]] = {
    "beyond_purpose": ("超出授权目的或范围使用的风险", "Use beyond the approved purpose or scope"),
    "direct_exposure": ("原始数据、敏感数据、隐私数据直接暴露的风险", "Direct exposure of raw, sensitive or private data"),
    "indirect_exposure": ("针对模型或算法的攻击导致间接暴露的风险",
                          "Indirect exposure through attacks on models or algorithms"),
    "other_risks": ("其他风险", "Other risks"),
}
PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


def _field(ref: tuple[str, str], fields: dict) -> dict[str, Any]:
    spec = fields.get(ref)
    out: dict[str, Any] = {"field": f"{ref[0]}.{ref[1]}"}
    if spec is not None:
        out.update(kind=spec.kind.value, grade=spec.grade.value, personal=bool(spec.pii))
    return out


def _output_facts(o, fields: dict) -> dict[str, Any]:
    r = o.release
    cols = []
    for c in o.columns:
        col: dict[str, Any] = {"name": c.name, "sources": [_field(s, fields) for s in sorted(c.sources)],
                               "passed_through": f"{c.origin[0]}.{c.origin[1]}" if c.origin else None}
        if o.policy == "record" and c.name in o.roles.get("columns", ()):
            col["treatment"] = (masking.plan(c.field, b"\0" * 32)[0] if c.origin is not None and c.field is not None
                                else ("computed (categories)" if c.domain is not None else "computed"))
        cols.append(col)
    out: dict[str, Any] = {"name": o.name, "policy": o.policy, "columns": cols,
                           "influences": [_field(s, fields) for s in sorted(o.influences)],
                           "personal_fields": sorted(f"{s[0]}.{s[1]}" for s in o.reads
                                                     if fields.get(s) is not None and fields[s].pii)}
    if o.policy == "aggregate":
        out["dp"] = {"epsilon": r.epsilon, "delta": r.delta or 0.0, "min_cell": r.min_cell,
                     "max_rows_per_unit": r.max_rows_per_unit, "group_by": list(r.group_by),
                     "privacy_unit": o.privacy_unit.value,
                     "measures": [{"name": m.name, "fn": m.fn, "column": m.column,
                                   "bounds": list(m.bounds) if m.bounds else None,
                                   "edges": list(m.edges) if m.edges else None} for m in r.measures]}
    elif o.policy == "record":
        out["k"] = r.k
        out["quasi_identifiers"] = list(r.quasi_identifiers)
        out["tokenized"] = [c["name"] for c in cols if c.get("treatment") == "token"]
    elif o.policy == "verify":
        out["verify"] = {"claim": r.claim, "values": list(r.values), "absent": r.absent}
    elif o.policy == "model":
        out["model"] = {"key": r.key, "key_treatment": "tokenized" if r.key else None,
                        "bounds": list(r.bounds) if r.bounds else None}
    return out


def _budget(session: Session, org_id: int, planned) -> list[dict[str, Any]]:
    _, _, per = planned.charges()
    out = []
    for resource, (eps, delta) in sorted(per.items()):
        rows = budget.balances(session, org_id, resource)
        out.append({"resource": resource, "epsilon_per_release": eps, "delta_per_release": delta,
                    "balances": [{k: b[k] for k in ("period", "epsilon_cap", "epsilon_spent", "epsilon_reserved",
                                                    "epsilon_left", "delta_cap", "delta_left", "refreshes_on")}
                                 for b in rows],
                    "releases_left": (min(int(b["epsilon_left"] // eps) for b in rows) if rows and eps > 0
                                      else None)})
    return out


# --- automated tests ------------------------------------------------------------------------------

def _test(name: str, tried: str, result: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "tried": tried, "result": result, "detail": detail, **extra}


def _scope_test(session: Session, planned, ws: Workspace) -> dict[str, Any]:
    from authops.platform.sandbox import workspace as ws_service

    allowed, modes = ws_service.scope(session, ws)
    problems = planned.scope_problems(allowed, modes)
    return _test("scope_within_grants", f"every input field and share mode inside workspace {ws.id}'s approved "
                 "grants (the scope check jobs pass)", FAIL if problems else PASS, "; ".join(problems[:5]))


def _preflight_tests(planned) -> list[dict[str, Any]]:
    out = []
    for o in planned.outputs.values():
        claims = ["probe"] if o.policy == "verify" else None
        try:
            gate.preflight(o, planned.fields, claims=claims)
        except gate.ReleaseRefused as exc:
            out.append(_test(f"release_preflight:{o.name}", "the release gate's checks that hold whatever the data "
                             "(computed columns carrying personal or L4 fields, claims, score bounds)", FAIL,
                             exc.message))
            continue
        out.append(_test(f"release_preflight:{o.name}", "the release gate's checks that hold whatever the data "
                         "(computed columns carrying personal or L4 fields, claims, score bounds)", PASS))
    return out


_MOCK_TRIED = {
    "aggregate": "the output's rows from the mock datasets through the DP release (per-unit bounds, clamping, "
                 "noise, minimum cell size), then the raw-identifier scan of what would leave",
    "record": "the output's rows from the mock datasets through the record release (masking or tokenizing every "
              "column by its field's grade and kind, k-anonymity over the quasi-identifiers), then the "
              "raw-identifier scan of what would leave",
    "verify": "claims about subjects in the mock data and one absent subject answered by the verify release "
              "(only the enumerated answers leave), then the raw-identifier scan",
    "model": "the scores from the mock datasets through the model release (bounds, rounding, tokenized keys), "
             "then the raw-identifier scan of what would leave",
}


def _mock_tests(session: Session, settings: Settings, planned, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the spec on the mock datasets and put every output through the real release gate."""
    import polars as pl
    import pyarrow as pa

    from authops.platform.sandbox.jobs import private_folder
    from authops.sandbox.spec.errors import SpecError
    from authops.sandbox.spec.execute import lazy_outputs

    names = list(planned.outputs)
    missing = []
    for inp in planned.inputs.values():
        res = catalog.get_resource(session, inp.resource)
        if not res.mock_object_key or res.schema_version != inp.version:
            missing.append(inp.resource)
    if missing:
        return [_test(f"mock_release:{n}", _MOCK_TRIED[planned.outputs[n].policy], SKIPPED,
                      f"no mock dataset of {', '.join(sorted(set(missing)))} under the spec's schema version; "
                      "the providing department publishes it") for n in names]
    store = get_object_store(settings)
    out = []
    with private_folder("authops-selfreview-") as folder:
        paths = {}
        for alias, inp in planned.inputs.items():
            path = folder / f"{alias}.parquet"
            store.get_to_file(catalog.get_resource(session, inp.resource).mock_object_key, path)
            paths[alias] = str(path)
        try:
            lazies = lazy_outputs(planned.plan, paths, params)
        except SpecError as exc:
            return [_test(f"mock_release:{n}", _MOCK_TRIED[planned.outputs[n].policy], FAIL,
                          f"the spec cannot run on the mock data with test_params: {exc.message}") for n in names]
        key = os.urandom(32)  # a throwaway tokenization key: nothing of this run is kept
        for name, o in planned.outputs.items():
            tried = _MOCK_TRIED[o.policy]
            try:
                data: Any = lazies[name]
                claims = None
                if o.policy != "aggregate":
                    data = data.collect().to_arrow()
                if o.policy == "verify":
                    claim = o.roles["claim"][0]
                    present = [str(v) for v in data.column(claim).slice(0, 5).to_pylist() if v is not None]
                    claims = [*present, "0" * 18]
                released = gate.release(o, data, token_key=key, fields=planned.fields, claims=claims)
            except AuthopsError as exc:  # the gate's refusals (and spec errors) never quote a value
                out.append(_test(f"mock_release:{name}", tried, FAIL, exc.message))
                continue
            except (pl.exceptions.PolarsError, pa.ArrowException) as exc:
                out.append(_test(f"mock_release:{name}", tried, FAIL,
                                 f"the spec failed on the mock data ({type(exc).__name__})"))
                continue
            summary = {k: v for k, v in released.summary.items()
                       if k in ("rows", "cells", "claims", "answered", "suppressed_rows", "k", "treatments",
                                "epsilon", "key", "bounds", "suppressed_cells")}
            out.append(_test(f"mock_release:{name}", tried, PASS,
                             f"{released.table.num_rows} row(s) would leave; no raw identifiers found",
                             summary=json.loads(json.dumps(summary, default=str))))
    return out


def _budget_test(budget_facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not budget_facts:
        return []
    short = []
    for b in budget_facts:
        if not b["balances"]:
            short.append(f"no privacy budget is set for {b['resource']}")
        elif any(x["epsilon_left"] < b["epsilon_per_release"] for x in b["balances"]):
            short.append(f"the budget left for {b['resource']} does not cover one release "
                         f"(ε {b['epsilon_per_release']} needed)")
    return [_test("budget_covers_release", "the partner's privacy budget on every resource the aggregates read "
                  "covers at least one release (repeated releases are capped by the ledger)",
                  FAIL if short else PASS, "; ".join(short))]


# --- the report -----------------------------------------------------------------------------------

def _statements(facts: dict[str, Any], product: dict[str, Any]) -> dict[str, list[str]]:
    outs = facts["outputs"]
    personal = sorted({f for o in outs for f in o["personal_fields"]})
    direct = []
    for o in outs:
        if o["policy"] == "record":
            treated = ", ".join(f"{c['name']}: {c.get('treatment')}" for c in o["columns"] if "treatment" in c)
            direct.append(f"{o['name']} releases records; columns treated as {treated}; k={o['k']} over "
                          f"{', '.join(o['quasi_identifiers']) or 'no quasi-identifiers'}")
        elif o["policy"] == "aggregate":
            direct.append(f"{o['name']} releases DP statistics only (ε={o['dp']['epsilon']}, "
                          f"min cell {o['dp']['min_cell']})")
        elif o["policy"] == "verify":
            direct.append(f"{o['name']} answers claims with one of {o['verify']['values']} only")
        else:
            direct.append(f"{o['name']} releases bounded scores; keys "
                          f"{o['model']['key_treatment'] or 'not released'}")
    indirect = []
    for o in outs:
        if o["policy"] == "aggregate":
            bounds = "; ".join(f"{m['name']} clamped to {m['bounds']}" for m in o["dp"]["measures"] if m["bounds"])
            indirect.append(f"{o['name']}: ε={o['dp']['epsilon']}, δ={o['dp']['delta']}, at most "
                            f"{o['dp']['max_rows_per_unit']} row(s) per {o['dp']['privacy_unit']}"
                            + (f"; {bounds}" if bounds else ""))
        if o["policy"] == "model":
            indirect.append(f"{o['name']}: score bounds {o['model']['bounds']}")
    for b in facts["budget"]:
        indirect.append(f"budget on {b['resource']}: {b['releases_left']} release(s) of ε "
                        f"{b['epsilon_per_release']} left")
    return {
        "beyond_purpose": [f"inputs checked against workspace {product['workspace_id']}'s approved grants",
                           f"scenario: {product.get('scenario') or '-'}",
                           f"scope of use: {product.get('scope_of_use') or '-'}"],
        "direct_exposure": direct + ([f"personal fields read: {', '.join(personal)}"] if personal else
                                     ["no personal fields are read"]),
        "indirect_exposure": indirect or ["no aggregate or model outputs"],
        "other_risks": ["personal information: each call needs the subject's signed consent"
                        if facts["personal_information"] else "no personal information"],
    }


def build(session: Session, settings: Settings, *, planned, ws: Workspace, partner_org_id: int,
          product: dict[str, Any], answers: dict[str, str] | None = None,
          test_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report: the platform's facts and tests, and the partner's answers per risk section."""
    fields = planned.fields
    inputs = [{"alias": a, "resource": i.resource, "version": i.version,
               "fields": [_field((i.resource, f), fields) for f in i.fields]} for a, i in planned.inputs.items()]
    outputs = [_output_facts(o, fields) for o in planned.outputs.values()]
    budget_facts = _budget(session, partner_org_id, planned)
    personal = any(f.get("personal") for i in inputs for f in i["fields"])
    aggregates = [o["dp"] for o in outputs if "dp" in o]
    records = [o for o in outputs if o["policy"] == "record"]
    facts = {
        "inputs": inputs, "outputs": outputs, "budget": budget_facts, "personal_information": personal,
        "min_cell": min((d["min_cell"] for d in aggregates), default=None),
        "k": min((o["k"] for o in records), default=None),
        "epsilon_per_release": sum(d["epsilon"] for d in aggregates),
        "tokenized": sorted({f"{o['name']}.{c}" for o in records for c in o["tokenized"]}
                            | {f"{o['name']}.{o['model']['key']}" for o in outputs
                               if o["policy"] == "model" and o["model"]["key"]}),
        "spec_sha256": hashlib.sha256(json.dumps(planned.spec.model_dump(mode="json"), sort_keys=True,
                                                 ensure_ascii=False).encode()).hexdigest(),
    }
    tests = [_scope_test(session, planned, ws), *_preflight_tests(planned),
             *_mock_tests(session, settings, planned, dict(test_params or {})), *_budget_test(budget_facts)]
    statements = _statements(facts, product)
    answers = dict(answers or {})
    sections = {key: {"title_zh": zh, "title_en": en, "facts": statements[key],
                      "answer": str(answers.get(key) or "").strip()} for key, (zh, en) in SECTIONS.items()}
    return {"version": VERSION, "generated_at": utcnow().isoformat(timespec="seconds") + "Z",
            "product": product, "facts": facts, "tests": tests, "sections": sections}


def with_answers(report: dict[str, Any], answers: dict[str, str]) -> dict[str, Any]:
    sections = {k: {**v, "answer": str(answers.get(k, v["answer"]) or "").strip()}
                for k, v in report["sections"].items()}
    return {**report, "sections": sections}


def check_answers(answers: dict[str, Any] | None) -> dict[str, str]:
    from authops.core.errors import InvalidInput

    answers = dict(answers or {})
    unknown = sorted(set(answers) - set(SECTIONS))
    if unknown:
        raise InvalidInput(f"self_review.{unknown[0]}: the report's sections are {', '.join(SECTIONS)}",
                           details={"field": f"self_review.{unknown[0]}"})
    for k, v in answers.items():
        if not isinstance(v, str) or len(v) > 20_000:
            raise InvalidInput(f"self_review.{k} is text of at most 20000 characters",
                               details={"field": f"self_review.{k}"})
    return answers


def problems(report: dict[str, Any]) -> list[str]:
    """What blocks submission: empty sections (every risk the plan names) and failed automated tests."""
    out = []
    sections = report.get("sections") or {}
    for key, (zh, en) in SECTIONS.items():
        if not str((sections.get(key) or {}).get("answer") or "").strip():
            out.append(f"section {key} ({zh} / {en}) has no answer")
    for t in report.get("tests") or []:
        if t["result"] == FAIL:
            out.append(f"automated test {t['name']} failed: {t['detail']}")
    return out
