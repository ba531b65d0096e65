"""Partner-code jobs: the manifest that says what the code reads and what each output releases.

    name: enterprise_risk
    inputs:                      # exactly as in a spec: resource, version, fields (+ alias)
      - {alias: tax, resource: enterprise_tax, version: 1, fields: [uscc, vat_amount]}
    outputs:                     # run() returns a DataFrame per output name
      - name: risk
        release: {policy: model, key: uscc, score: score, bounds: [0, 1]}
    time_limit: 60               # seconds; optional (default: the jail's wall-time limit, 120)

The engine cannot see through code, so every column the code returns is taken to carry every
input field: the gate treats it accordingly (see gate.preflight).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from authops.core.data.schema import DType, FieldSpec, ResourceSchema
from authops.sandbox.spec import models as m
from authops.sandbox.spec.errors import SpecError
from authops.sandbox.spec.plan import OutputColumn, PlannedInput, PlannedOutput

MAX_CODE_BYTES = 256 * 1024
MAX_TIME_LIMIT = 1800  # seconds


class CodeManifest(m._Model):
    name: m.Name
    title: str = ""
    description: str = ""
    # The partner's (or operator's) own tool this code deploys: the bureau must have approved a
    # tool deployment request for it, for every resource it reads, before it runs on real data.
    tool: str | None = Field(default=None, min_length=1, max_length=100)
    inputs: tuple[m.InputSpec, ...] = Field(min_length=1, max_length=16)
    outputs: tuple[m.OutputSpec, ...] = Field(min_length=1, max_length=16)
    # Seconds the code may run (the jail's wall-time limit; CPU time is capped by it too). Where the
    # worker runs real jobs in constant time, each real run takes exactly this long whatever the
    # data (see platform.sandbox.jobs): declare what the mock run needs, with room to spare.
    time_limit: int | None = Field(default=None, ge=1, le=MAX_TIME_LIMIT)

    @model_validator(mode="after")
    def _names(self) -> CodeManifest:
        m._unique([i.name for i in self.inputs], "input aliases")
        m._unique([o.name for o in self.outputs], "output names")
        return self


def load_manifest(source: str | bytes | dict[str, Any] | Path) -> CodeManifest:
    if isinstance(source, Path):
        source = source.read_bytes()
    document = source if isinstance(source, dict) else m.parse_text(source)
    try:
        return CodeManifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise SpecError(f"the manifest is not valid at {where or 'top level'}: {first['msg']}",
                        details={"problems": [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                                              for e in exc.errors()[:20]]}) from None


def check_code(code: str) -> str:
    if not isinstance(code, str) or not code.strip():
        raise SpecError("give the partner code: a Python module defining run(inputs, params)")
    if len(code.encode()) > MAX_CODE_BYTES:
        raise SpecError(f"the code is over {MAX_CODE_BYTES // 1024} KiB")
    if "def run" not in code:
        raise SpecError("the code must define run(inputs, params)")
    return code


def plan_inputs(manifest: CodeManifest, schemas: dict[str, dict[int, ResourceSchema]]) -> dict[str, PlannedInput]:
    out = {}
    for i, inp in enumerate(manifest.inputs):
        got = schemas.get(inp.resource, {})
        if inp.version not in got:
            raise SpecError(f"inputs[{i}]: unknown resource {inp.resource!r} or version {inp.version}; "
                            f"check its catalogue code and schema versions")
        schema = got[inp.version]
        missing = [f for f in inp.fields if f not in schema.names]
        if missing:
            raise SpecError(f"inputs[{i}].fields: {inp.resource} v{inp.version} has no field {missing[0]!r}")
        out[inp.name] = PlannedInput(inp.name, inp.resource, inp.version, schema, tuple(inp.fields))
    return out


def _col(name: str, sources: frozenset) -> OutputColumn:
    return OutputColumn(name=name, key=name, dtype=DType.STRING, sources=sources)


def plan_outputs(manifest: CodeManifest, inputs: dict[str, PlannedInput]) -> dict[str, PlannedOutput]:
    """Each output as the gate sees it: its columns by role, each carrying every input field."""
    sources = frozenset((p.resource, f) for p in inputs.values() for f in p.fields)
    out = {}
    for o in manifest.outputs:
        r = o.release
        if isinstance(r, m.VerifyRelease):
            roles = {"claim": (r.claim,), "answer": (r.answer,)}
        elif isinstance(r, m.RecordRelease):
            roles = {"columns": tuple(r.columns), "quasi_identifiers": tuple(r.quasi_identifiers)}
        elif isinstance(r, m.ModelRelease):
            roles = {"score": (r.score,), "key": (r.key,) if r.key else ()}
        else:
            roles = {"group_by": tuple(r.group_by)}
        names = [c for cols in roles.values() for c in cols]
        bad = [c for c in names if "." in c]
        if bad:
            raise SpecError(f"outputs[{o.name}]: name the columns run() returns, without an input prefix "
                            f"({bad[0]!r})")
        cols = tuple(_col(c, sources) for c in dict.fromkeys(names))
        out[o.name] = PlannedOutput(o.name, r, cols, sources, roles=roles)
    return out


def field_specs(inputs: dict[str, PlannedInput]) -> dict[tuple[str, str], FieldSpec]:
    return {(p.resource, f): p.schema.field(f) for p in inputs.values() for f in p.fields}
