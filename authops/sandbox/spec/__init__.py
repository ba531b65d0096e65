"""Declarative sandbox job specs: the published JSON Schema, the expression language, plans and lineage.

    spec = load_spec(path_or_text)              # JSON or YAML, validated by JSON_SCHEMA
    plan = build_plan(spec, schemas)            # types, joins, outputs; plan.lineage()
    problems = check_scope(plan, allowed, modes)
    tables = execute(plan, inputs, params)      # pre-release tables, one per output
"""

from __future__ import annotations

from authops.sandbox.spec.errors import ExprError, SpecError
from authops.sandbox.spec.execute import execute, lazy_outputs
from authops.sandbox.spec.models import JSON_SCHEMA, SCHEMA_PATH, JobSpec, load_spec, write_json_schema
from authops.sandbox.spec.plan import Plan, PlannedOutput, build_plan, check_scope

EXAMPLES = SCHEMA_PATH.parent / "examples"

__all__ = ["EXAMPLES", "JSON_SCHEMA", "SCHEMA_PATH", "ExprError", "JobSpec", "Plan", "PlannedOutput", "SpecError",
           "build_plan", "check_scope", "execute", "lazy_outputs", "load_spec", "write_json_schema"]
