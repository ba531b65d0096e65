"""Validate a job spec against resource schemas into a plan, and trace its lineage.

Planning walks the data flow once: it resolves every column reference, type-checks every
expression, and follows which input fields (`(resource, field)`) reach each output column.
Fields that only decide *which rows* flow on (join keys, filters) are kept apart as the
flow's `influences`: they reach every output without being any column's value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Union

from authops.core.data.schema import DType, FieldSpec, PrivacyUnit, ResourceSchema
from authops.sandbox.spec import models as m
from authops.sandbox.spec.check import NUMERIC, Typed, check
from authops.sandbox.spec.errors import ExprError, SpecError
from authops.sandbox.spec.expr import Col, parse_column
from authops.sandbox.spec.scope import POLICY_SHARE_MODES, check_scope

FieldRef = tuple[str, str]  # (resource code, field name)
SchemaMap = Mapping[str, Union[tuple[int, ResourceSchema], Mapping[int, ResourceSchema]]]
UNIT_COLUMN = "_unit"  # the privacy-unit column of an aggregate output; no spec name can start with '_'


@dataclass(frozen=True)
class FlowColumn:
    """A column of the rows flowing through the job at some step."""

    key: str  # its name in the frame: input.field for input fields, the name for derived ones
    name: str  # how a spec may call it when unambiguous
    dtype: DType
    sources: frozenset[FieldRef]
    alias: str | None = None  # the input it comes from unchanged, if it does
    field: FieldSpec | None = None  # and that field's spec (kind, grade: what masking needs)
    domain: tuple[str, ...] | None = None  # all values a text column can take, when known
    origin: FieldRef | None = None


@dataclass(frozen=True)
class OutputColumn:
    name: str
    key: str
    dtype: DType
    sources: frozenset[FieldRef]
    origin: FieldRef | None = None  # an input field passed through unchanged
    field: FieldSpec | None = None
    domain: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PlannedInput:
    alias: str
    resource: str
    version: int
    schema: ResourceSchema
    fields: tuple[str, ...]


@dataclass(frozen=True)
class AggregatePlan:
    name: str
    fn: str
    column: str | None  # the key of the column aggregated
    where: Typed | None = None  # only the rows where this holds


@dataclass(frozen=True)
class JoinPlan:
    alias: str
    how: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    aggregate: tuple[AggregatePlan, ...] = ()  # pre-aggregated by the right keys before the join


@dataclass(frozen=True)
class DerivePlan:
    name: str
    expr: Typed


@dataclass(frozen=True)
class FilterPlan:
    expr: Typed


@dataclass(frozen=True)
class SummarizePlan:
    by: tuple[str, ...]
    aggregates: tuple[tuple[str, str, str | None], ...]  # (name, fn, column key)
    where: Mapping[str, Typed] = field(default_factory=dict)  # aggregate name -> its row condition


StepPlan = Union[JoinPlan, DerivePlan, FilterPlan, SummarizePlan]


@dataclass(frozen=True)
class PlannedOutput:
    name: str
    release: Any  # the spec's VerifyRelease | AggregateRelease | RecordRelease | ModelRelease
    columns: tuple[OutputColumn, ...]
    influences: frozenset[FieldRef]
    unit_column: str | None = None  # aggregate outputs: the column holding the privacy unit
    privacy_unit: PrivacyUnit = PrivacyUnit.NONE
    measure_columns: Mapping[str, str] = field(default_factory=dict)  # measure name -> output column
    # which output columns play which part of the policy: verify claim/answer, aggregate group_by,
    # record columns/quasi_identifiers, model key/score, verify/model labels
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    post: tuple[tuple[str, Typed], ...] = ()  # aggregate: columns computed from the released (noisy) row

    @property
    def policy(self) -> str:
        return self.release.policy

    def column(self, name: str) -> OutputColumn:
        return next(c for c in self.columns if c.name == name)

    def lineage(self) -> dict[str, frozenset[FieldRef]]:
        """For each output column, the input fields whose values reach it."""
        return {c.name: c.sources for c in self.columns}

    @property
    def reads(self) -> frozenset[FieldRef]:
        """Every input field this output depends on: its columns' sources and the flow's influences."""
        return frozenset().union(self.influences, *(c.sources for c in self.columns))


@dataclass(frozen=True)
class Plan:
    spec: m.JobSpec
    inputs: Mapping[str, PlannedInput]
    steps: tuple[StepPlan, ...]
    outputs: Mapping[str, PlannedOutput]
    params: Mapping[str, DType]
    uses: Mapping[FieldRef, tuple[str, ...]]  # where each input field is named in the spec
    warnings: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return next(iter(self.inputs))

    def lineage(self) -> dict[str, dict[str, frozenset[FieldRef]]]:
        return {name: o.lineage() for name, o in self.outputs.items()}

    def bind(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The parameters' values for a run: given ones checked and converted, defaults filled in."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise SpecError(f"unknown parameter {unknown[0]!r}; the job takes {', '.join(self.params) or 'none'}")
        out = {}
        for name, dtype in self.params.items():
            raw = values.get(name, self.spec.params[name].default)
            if raw is None:
                raise SpecError(f"parameter {name!r} ({dtype.value}) needs a value")
            out[name] = coerce(raw, dtype, f"parameter {name!r}")
        return out


def coerce(value: Any, dtype: DType, what: str) -> Any:
    """A parameter value as `dtype`; dates and timestamps may be given as ISO text."""
    try:
        if dtype == DType.BOOL and isinstance(value, bool):
            return value
        if dtype == DType.INT and isinstance(value, int) and not isinstance(value, bool):
            return value
        if dtype == DType.FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if dtype == DType.STRING and isinstance(value, str):
            return value
        if dtype == DType.DATE:
            return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(value)
        if dtype == DType.TIMESTAMP:
            return value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except (TypeError, ValueError):
        pass
    raise SpecError(f"{what} must be a {dtype.value}, not {value!r}")


def _schemas(schemas: SchemaMap, resource: str, version: int, where: str) -> ResourceSchema:
    if resource not in schemas:
        raise SpecError(f"{where}: unknown resource {resource!r}; check its catalogue code")
    got = schemas[resource]
    versions = dict(got) if isinstance(got, Mapping) else {got[0]: got[1]}
    if version not in versions:
        have = ", ".join(str(v) for v in sorted(versions))
        raise SpecError(f"{where}: resource {resource!r} has no schema version {version} (available: {have})")
    return versions[version]


class _InputScope:
    """The fields of one input, for the aggregates of a pre-aggregating join (bare or input.field)."""

    def __init__(self, planner: _Planner, alias: str) -> None:
        self.p, self.alias, self.inp = planner, alias, planner.inputs[alias]

    def column(self, ref: Col) -> tuple[str, DType, tuple[str, ...] | None]:
        c = self.resolve(ref)
        self.p.used.add(c.key)
        self.p.uses[(self.inp.resource, c.name)].append(self.p.where)
        return c.key, c.dtype, c.domain

    def param(self, name: str) -> DType:
        return self.p.params[name]

    def resolve(self, ref: Col) -> FlowColumn:
        if ref.alias not in (None, self.alias):
            raise ValueError(f"the aggregates of a join of {self.alias!r} see only its own fields, not {ref.text!r}")
        if ref.name not in self.inp.fields:
            raise ValueError(f"field {ref.name!r} is not read: add it to the fields of inputs[{self.alias}]")
        f = self.inp.schema.field(ref.name)
        return FlowColumn(f"{self.alias}.{ref.name}", ref.name, f.dtype, frozenset({(self.inp.resource, ref.name)}),
                          self.alias, f, f.enum if f.enum else None, (self.inp.resource, ref.name))

    def ref(self, text: str, where: str) -> FlowColumn:
        self.p.where = where
        try:
            c = self.resolve(parse_column(text))
        except ExprError as exc:
            raise exc.located(where) from None
        except ValueError as exc:
            raise SpecError(f"{where}: {exc}") from None
        self.p.used.add(c.key)
        self.p.uses[(self.inp.resource, c.name)].append(where)
        return c


class _Planner:
    def __init__(self, spec: m.JobSpec, schemas: SchemaMap) -> None:
        self.spec = spec
        self.inputs: dict[str, PlannedInput] = {}
        for i in spec.inputs:
            where = f"inputs[{i.name}]"
            schema = _schemas(schemas, i.resource, i.version, where)
            missing = [f for f in i.fields if f not in schema.names]
            if missing:
                raise SpecError(f"{where}: resource {i.resource!r} v{i.version} has no field {missing[0]!r}; "
                                f"its fields are {', '.join(schema.names)}")
            self.inputs[i.name] = PlannedInput(i.name, i.resource, i.version, schema, i.fields)
        self.params = {name: p.type for name, p in spec.params.items()}
        for name, p in spec.params.items():
            if p.default is not None:
                coerce(p.default, p.type, f"params.{name}.default")
        self.frame: dict[str, FlowColumn] = {}
        self.joined: list[str] = []
        self.influences: set[FieldRef] = set()
        self.uses: dict[FieldRef, list[str]] = defaultdict(list)
        self.used: set[str] = set()
        self.summarized_at: str | None = None
        self.aggregated: set[str] = set()  # inputs pre-aggregated in their join: their fields never enter
        self.where = ""
        base = self.inputs[spec.inputs[0].name]
        # columns known to identify a row, if any: a verify claim should be one of them
        self.unique: frozenset[str] | None = (frozenset(f"{base.alias}.{k}" for k in base.schema.key)
                                              if base.schema.key and set(base.schema.key) <= set(base.fields) else None)
        self._enter(base.alias)

    # scope (the Checker asks these)
    def column(self, ref: Col) -> tuple[str, DType, tuple[str, ...] | None]:
        c = self.resolve(ref)
        self.used.add(c.key)
        if c.origin:
            self.uses[c.origin].append(self.where)
        return c.key, c.dtype, c.domain

    def param(self, name: str) -> DType:
        return self.params[name]

    def resolve(self, ref: Col) -> FlowColumn:
        if ref.alias:
            if ref.alias not in self.inputs:
                raise ValueError(f"unknown input {ref.alias!r}; the inputs are {', '.join(self.inputs)}")
            key = f"{ref.alias}.{ref.name}"
            if key in self.frame:
                return self.frame[key]
            inp = self.inputs[ref.alias]
            if ref.alias not in self.joined:
                raise ValueError(f"input {ref.alias!r} is not in the flow yet; join it in an earlier step")
            if ref.name not in inp.schema.names:
                raise ValueError(f"resource {inp.resource!r} v{inp.version} has no field {ref.name!r}")
            if ref.name not in inp.fields:
                raise ValueError(f"field {ref.name!r} is not read: add it to the fields of inputs[{ref.alias}]")
            if ref.alias in self.aggregated:
                raise ValueError(f"input {ref.alias!r} was aggregated in its join; use the join's aggregate columns")
            raise ValueError(f"{key} is gone after the summarize at {self.summarized_at}; group by it or aggregate it")
        found = [c for c in self.frame.values() if c.name == ref.name]
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(f"{ref.name!r} is in more than one input ({', '.join(str(c.alias) for c in found)}); "
                             f"write it as input.{ref.name}")
        readable = [a for a, i in self.inputs.items() if ref.name in i.fields and a not in self.joined]
        if readable:
            raise ValueError(f"{ref.name!r} comes from input {readable[0]!r}, which is not joined yet")
        hint = f" after the summarize at {self.summarized_at}" if self.summarized_at else ""
        names = sorted({c.name for c in self.frame.values()})
        raise ValueError(f"unknown column {ref.name!r}{hint}; the columns here are {', '.join(names)}")

    def ref(self, text: str, where: str) -> FlowColumn:
        self.where = where
        try:
            key, _, _ = self.column(parse_column(text))
        except ExprError as exc:
            raise exc.located(where) from None
        except ValueError as exc:
            raise SpecError(f"{where}: {exc}") from None
        return self.frame[key]

    def expr(self, text: str, where: str, want: DType | None = None, what: str = "the expression") -> Typed:
        self.where = where
        try:
            return check(text, self, want=want, what=what)
        except ExprError as exc:
            raise exc.located(where) from None

    # steps
    def _enter(self, alias: str) -> None:
        inp = self.inputs[alias]
        for name in inp.fields:
            f = inp.schema.field(name)
            clash = [c for c in self.frame.values() if c.name == name and c.alias is None]
            if clash:
                raise SpecError(f"{self.where}: input {alias!r} brings field {name!r}, which a derived column "
                                f"already names; rename the derived column")
            self.frame[f"{alias}.{name}"] = FlowColumn(
                f"{alias}.{name}", name, f.dtype, frozenset({(inp.resource, name)}), alias, f,
                f.enum if f.enum else None, (inp.resource, name))
        self.joined.append(alias)

    def join(self, j: m.Join, where: str) -> JoinPlan:
        self.where = where
        if j.input not in self.inputs:
            raise SpecError(f"{where}: unknown input {j.input!r}; the inputs are {', '.join(self.inputs)}")
        if j.input in self.joined:
            raise SpecError(f"{where}: input {j.input!r} is already in the flow; read it again under another alias")
        right_in = self.inputs[j.input]
        left, right = [], []
        for lref, rname in j.pairs():
            lcol = self.ref(lref, f"{where}.keys")
            if rname not in right_in.fields:
                raise SpecError(f"{where}.keys: {j.input!r} does not read field {rname!r}; add it to its fields")
            rfield = right_in.schema.field(rname)
            if lcol.dtype != rfield.dtype:
                raise SpecError(f"{where}.keys: {lcol.key} is {lcol.dtype.value} but {j.input}.{rname} is "
                                f"{rfield.dtype.value}; join keys must have the same type")
            if lcol.dtype == DType.FLOAT:
                raise SpecError(f"{where}.keys: {lcol.key} is a float; join on identifiers, codes or dates")
            left.append(lcol)
            right.append(rname)
        if j.aggregate:
            return self._join_aggregated(j, where, left, right)
        if set(right_in.schema.key) != set(right) or not right_in.schema.key:
            self.unique = None  # a right row may match many: rows can repeat
        self._enter(j.input)
        for lcol, rname in zip(left, right):
            rcol = self.frame[f"{j.input}.{rname}"]
            self.used.add(rcol.key)
            self.uses[(right_in.resource, rname)].append(f"{where}.keys")
            self.influences |= lcol.sources | rcol.sources
        return JoinPlan(j.input, j.how, tuple(c.key for c in left), tuple(f"{j.input}.{r}" for r in right))

    def _join_aggregated(self, j: m.Join, where: str, left: list[FlowColumn], right: list[str]) -> JoinPlan:
        """A join of an input pre-aggregated by its key fields: one row per key, so the flow's rows
        neither repeat nor (with how: left) drop; only the aggregate columns enter the flow."""
        sub = _InputScope(self, j.input)
        inp = self.inputs[j.input]
        key_sources = frozenset((inp.resource, r) for r in right)
        aggs, new = [], {}
        for a in j.aggregate or ():
            at = f"{where}.aggregate[{a.name}]"
            if any(c.name == a.name for c in self.frame.values()) or a.name in new:
                raise SpecError(f"{at}: {a.name!r} is already a column; choose another name")
            col = sub.ref(a.column, at) if a.column else None
            cond = self._where(a.where, at, sub) if a.where else None
            dtype = self._agg_type(a.fn, col, at)
            sources = (col.sources if col else frozenset()) | (self.sources_in(cond, sub) if cond else frozenset())
            new[a.name] = FlowColumn(a.name, a.name, dtype, sources,
                                     domain=col.domain if col and a.fn in ("min", "max") else None)
            aggs.append(AggregatePlan(a.name, a.fn, col.key if col else None, cond))
        for lcol, rname in zip(left, right):
            self.used.add(f"{j.input}.{rname}")
            self.uses[(inp.resource, rname)].append(f"{where}.keys")
            self.influences |= lcol.sources
        self.influences |= key_sources
        self.frame.update(new)
        self.joined.append(j.input)
        self.aggregated.add(j.input)
        return JoinPlan(j.input, j.how, tuple(c.key for c in left), tuple(f"{j.input}.{r}" for r in right),
                        tuple(aggs))

    def _where(self, text: str, at: str, scope: Any = None) -> Typed:
        self.where = f"{at}.where"
        try:
            return check(text, scope or self, want=DType.BOOL, what="an aggregate's where")
        except ExprError as exc:
            raise exc.located(f"{at}.where") from None

    @staticmethod
    def sources_in(typed: Typed, scope: _InputScope) -> frozenset[FieldRef]:
        return frozenset((scope.inp.resource, k.split(".", 1)[1]) for k in typed.columns)

    def derive(self, d: m.Derive, where: str) -> DerivePlan:
        if any(c.name == d.name for c in self.frame.values()):
            raise SpecError(f"{where}: {d.name!r} is already a column; give the derived column another name")
        typed = self.expr(d.expr, where)
        if typed.dtype is None:
            raise SpecError(f"{where}: {d.name!r} would always be null; give it a value")
        self.frame[d.name] = FlowColumn(d.name, d.name, typed.dtype, self.sources(typed), domain=typed.domain)
        return DerivePlan(d.name, typed)

    def filter(self, text: str, where: str) -> FilterPlan:
        typed = self.expr(text, where, want=DType.BOOL, what="a filter")
        self.influences |= self.sources(typed)
        return FilterPlan(typed)

    def summarize(self, s: m.Summarize, where: str) -> SummarizePlan:
        by = [self.ref(r, f"{where}.by") for r in s.by]
        group_sources = frozenset().union(*(c.sources for c in by))
        new: dict[str, FlowColumn] = {c.key: c for c in by}
        aggs, conds = [], {}
        for a in s.aggregates:
            at = f"{where}.aggregates[{a.name}]"
            if any(c.name == a.name for c in new.values()):
                raise SpecError(f"{at}: {a.name!r} is already a column; choose another name")
            col = self.ref(a.column, at) if a.column else None
            dtype = self._agg_type(a.fn, col, at)
            sources = group_sources | (col.sources if col else frozenset())
            if a.where:
                conds[a.name] = self._where(a.where, at)
                sources |= self.sources(conds[a.name])
            new[a.name] = FlowColumn(a.name, a.name, dtype, sources,
                                     domain=col.domain if col and a.fn in ("min", "max") else None)
            aggs.append((a.name, a.fn, col.key if col else None))
        self.frame = new
        self.unique = frozenset(c.key for c in by)
        self.summarized_at = where
        return SummarizePlan(tuple(c.key for c in by), tuple(aggs), conds)

    @staticmethod
    def _agg_type(fn: str, col: FlowColumn | None, at: str) -> DType:
        if fn in ("count", "count_distinct"):
            return DType.INT
        assert col is not None
        if fn in ("sum", "mean") and col.dtype not in NUMERIC:
            raise SpecError(f"{at}: {fn} needs a numeric column, but {col.key} is {col.dtype.value}")
        if fn in ("any", "all") and col.dtype != DType.BOOL:
            raise SpecError(f"{at}: {fn} needs a true/false column, but {col.key} is {col.dtype.value}")
        if fn in ("min", "max") and col.dtype == DType.BOOL:
            raise SpecError(f"{at}: {fn} of true/false values; use any or all")
        return DType.FLOAT if fn == "mean" else col.dtype

    def sources(self, typed: Typed) -> frozenset[FieldRef]:
        return frozenset().union(*(self.frame[k].sources for k in typed.columns))


def build_plan(spec: m.JobSpec, schemas: SchemaMap) -> Plan:
    """Check `spec` against the resources' schemas; raise SpecError naming what to fix."""
    from authops.sandbox.spec.outputs import plan_output  # the per-policy half of planning

    p = _Planner(spec, schemas)
    steps: list[StepPlan] = []
    for i, step in enumerate(spec.steps):
        where = f"steps[{i}]"
        if isinstance(step, m.JoinStep):
            steps.append(p.join(step.join, f"{where}.join"))
        elif isinstance(step, m.FilterStep):
            steps.append(p.filter(step.filter, f"{where}.filter"))
        elif isinstance(step, m.DeriveStep):
            steps.append(p.derive(step.derive, f"{where}.derive[{step.derive.name}]"))
        else:
            steps.append(p.summarize(step.summarize, f"{where}.summarize"))
    unjoined = [a for a in p.inputs if a not in p.joined]
    if unjoined:
        raise SpecError(f"inputs[{unjoined[0]}] is never joined into the flow; add a join step or remove it")
    outputs, warnings = {}, []
    for o in spec.outputs:
        outputs[o.name], said = plan_output(p, o)
        warnings += said
    warnings += [f"inputs[{a}].fields lists {f!r}, which nothing uses; remove it to read less"
                 for a, inp in p.inputs.items() for f in inp.fields if f"{a}.{f}" not in p.used]
    return Plan(spec, p.inputs, tuple(steps), outputs, p.params,
                {k: tuple(dict.fromkeys(v)) for k, v in p.uses.items()}, tuple(warnings))


__all__ = ["POLICY_SHARE_MODES", "UNIT_COLUMN", "AggregatePlan", "FlowColumn", "OutputColumn", "Plan", "PlannedInput",
           "PlannedOutput", "build_plan", "check_scope", "coerce"]
