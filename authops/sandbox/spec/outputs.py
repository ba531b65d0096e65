"""The per-policy half of planning: which flow columns each output releases, and checks on them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from authops.core.data.schema import DType, Kind, PrivacyUnit
from authops.sandbox.spec import models as m
from authops.sandbox.spec.check import NUMERIC, SimpleScope, Typed, check
from authops.sandbox.spec.errors import ExprError
from authops.sandbox.spec.errors import SpecError
from authops.sandbox.spec.plan import UNIT_COLUMN, FlowColumn, OutputColumn, PlannedOutput

if TYPE_CHECKING:
    from authops.sandbox.spec.plan import _Planner

_UNIT_OF_KIND = {Kind.IDENTIFIER_PERSON: PrivacyUnit.PERSON, Kind.IDENTIFIER_ENTERPRISE: PrivacyUnit.ENTERPRISE,
                 Kind.IDENTIFIER_VEHICLE: PrivacyUnit.VEHICLE}


def _out(c: FlowColumn, name: str | None = None) -> OutputColumn:
    return OutputColumn(name or c.name, c.key, c.dtype, c.sources, c.origin, c.field, c.domain)


def _distinct_names(cols: list[OutputColumn], where: str) -> None:
    seen: dict[str, str] = {}
    for c in cols:
        if c.name in seen and seen[c.name] != c.key:
            raise SpecError(f"{where}: two released columns would be named {c.name!r} ({seen[c.name]}, {c.key}); "
                            f"release one, or derive a copy under another name")
        seen[c.name] = c.key


def _unit(p: _Planner, r: m.AggregateRelease, where: str) -> tuple[FlowColumn | None, PrivacyUnit]:
    if r.privacy_unit:
        col = p.ref(r.privacy_unit, f"{where}.privacy_unit")
        kind = col.field.kind if col.field else None
        if kind not in _UNIT_OF_KIND:
            raise SpecError(f"{where}.privacy_unit: {col.key} is not an identifier of a person, enterprise or "
                            f"vehicle; name the column that says whose data a row is")
        return col, _UNIT_OF_KIND[kind]
    for alias in p.joined:
        if alias in p.aggregated:  # its rows were summed up per key: its unit is not a row's
            continue
        inp = p.inputs[alias]
        unit = inp.schema.unit_field
        if inp.schema.privacy_unit == PrivacyUnit.NONE or not unit:
            continue
        if unit not in inp.fields:
            raise SpecError(f"{where}: an aggregate output needs the privacy unit of inputs[{alias}]: "
                            f"add {unit!r} to its fields")
        key = f"{alias}.{unit}"
        if key not in p.frame:
            raise SpecError(f"{where}: the privacy unit {key} is gone after the summarize at {p.summarized_at}; "
                            f"add it to the summarize's by, or name another unit column in privacy_unit")
        p.used.add(key)
        p.uses[(inp.resource, unit)].append(f"{where}.privacy_unit")
        return p.frame[key], inp.schema.privacy_unit
    return None, PrivacyUnit.NONE


def _verify(p: _Planner, r: m.VerifyRelease, where: str, warnings: list[str]) -> list[OutputColumn]:
    claim = p.ref(r.claim, f"{where}.claim")
    answer = p.ref(r.answer, f"{where}.answer")
    if claim.dtype == DType.FLOAT:
        raise SpecError(f"{where}.claim: {claim.key} is a float; a claim is about an identifier, code or date")
    if answer.dtype != DType.STRING:
        raise SpecError(f"{where}.answer: {answer.key} is {answer.dtype.value}; the answer is text taking one of "
                        f"the values, e.g. case when n > :n then 'yes' else 'no' end")
    if answer.domain is not None:
        extra = [v for v in answer.domain if v not in r.values]
        if extra:
            raise SpecError(f"{where}.answer: {answer.key} can be {extra[0]!r}, which is not among the values "
                            f"{list(r.values)}")
    else:
        warnings.append(f"{where}.answer: the spec does not show which values {answer.key} takes; the gate "
                        f"refuses any answer outside {list(r.values)}")
    if p.unique != {claim.key}:
        warnings.append(f"{where}.claim: several rows may have the same {claim.key}; summarize by it so that each "
                        f"claim has one answer")
    if claim.name == answer.name:
        raise SpecError(f"{where}: the claim and the answer must be different columns")
    return [_out(claim), _out(answer)]


def _aggregate(p: _Planner, r: m.AggregateRelease, where: str, warnings: list[str]
               ) -> tuple[list[OutputColumn], dict[str, str]]:
    cols: list[OutputColumn] = []
    for g in r.group_by:
        c = p.ref(g, f"{where}.group_by")
        if c.dtype == DType.FLOAT:
            raise SpecError(f"{where}.group_by: {c.key} is a float, one group per value; bucket() it first")
        if c.domain is None and c.dtype != DType.BOOL and not r.delta:
            raise SpecError(f"{where}.group_by: the values of {c.key} are not known from the spec, so its groups "
                            f"must be chosen privately: set delta (0 < delta < 0.001), or group by a category, "
                            f"bucket() or case over literals")
        cols.append(_out(c))
    measure_columns: dict[str, str] = {}
    for ms in r.measures:
        at = f"{where}.measures[{ms.name}]"
        if ms.fn == "count":
            if ms.column:
                raise SpecError(f"{at}: count counts rows (or units); remove column, or filter the rows first")
            continue
        c = p.ref(ms.column or "", at)
        if c.dtype != DType.INT:
            raise SpecError(f"{at}: {ms.fn} needs a whole-number column (money in fen, counts), but {c.key} is "
                            f"{c.dtype.value}; summarize or derive a whole-number column first")
        if ms.name in {x.name for x in cols[:len(r.group_by)]}:
            raise SpecError(f"{at}: a measure cannot have the name of a group column; rename it")
        if all(x.key != c.key for x in cols):
            cols.append(_out(c))
        measure_columns[ms.name] = next(x.name for x in cols if x.key == c.key)
    return cols, measure_columns


def _labels(p: _Planner, labels: tuple[m.Label, ...], where: str, warnings: list[str]) -> list[OutputColumn]:
    """Extra enumerated answer columns: text, and when the spec shows their values, among the declared ones."""
    cols = []
    for i, lab in enumerate(labels):
        at = f"{where}.labels[{i}]"
        c = p.ref(lab.column, at)
        if c.dtype != DType.STRING:
            raise SpecError(f"{at}: {c.key} is {c.dtype.value}; a label is text taking one of its values, e.g. "
                            f"case when n > 0 then 'yes' else 'no' end, or bucket(x, [..], [..])")
        if c.domain is not None and lab.separator is None:
            extra = [v for v in c.domain if v not in lab.values]
            if extra:
                raise SpecError(f"{at}: {c.key} can be {extra[0]!r}, which is not among the values {list(lab.values)}")
        elif c.domain is None:
            warnings.append(f"{at}: the spec does not show which values {c.key} takes; the gate refuses any value "
                            f"outside {list(lab.values)}")
        cols.append(_out(c))
    return cols


def _post(r: m.AggregateRelease, cols: list[OutputColumn], measures: dict[str, str], where: str
          ) -> tuple[tuple[str, Typed], ...]:
    """Post-processing columns: expressions over a released row (group columns, noisy measures)."""
    types: dict[str, DType] = {}
    domains: dict[str, tuple[str, ...]] = {}
    for g in cols[:len(r.group_by)]:
        types[g.name] = g.dtype
        if g.domain:
            domains[g.name] = g.domain
    if not any(ms.fn == "count" for ms in r.measures):
        types["count"] = DType.INT
    for ms in r.measures:
        if ms.fn != "histogram":
            types[ms.name] = DType.FLOAT if ms.fn == "mean" else DType.INT
    out = []
    for i, pc in enumerate(r.post):
        at = f"{where}.post[{pc.name}]"
        if pc.name in types:
            raise SpecError(f"{at}: {pc.name!r} is already a released column; choose another name")
        try:
            typed = check(pc.expr, SimpleScope(dict(types), {}, dict(domains)))
        except ExprError as exc:
            raise exc.located(at) from None
        if typed.dtype is None:
            raise SpecError(f"{at}: {pc.name!r} would always be null; give it a value")
        if typed.dtype == DType.STRING:
            if typed.domain is None and pc.values is None:
                raise SpecError(f"{at}: a text post column takes known values: write a case over literals, or "
                                f"list its values")
            allowed = pc.values if pc.values is not None else typed.domain
            extra = [v for v in (typed.domain or ()) if v not in (allowed or ())]
            if extra:
                raise SpecError(f"{at}: {pc.name} can be {extra[0]!r}, which is not among the values {list(allowed)}")
        elif pc.values is not None:
            raise SpecError(f"{at}: values are for text columns, but {pc.name} is {typed.dtype.value}")
        types[pc.name] = typed.dtype
        if typed.domain:
            domains[pc.name] = typed.domain
        out.append((pc.name, typed))
    return tuple(out)


def _record(p: _Planner, r: m.RecordRelease, where: str) -> list[OutputColumn]:
    return [_out(p.ref(c, f"{where}.columns")) for c in r.columns]


def _model(p: _Planner, r: m.ModelRelease, where: str) -> list[OutputColumn]:
    cols = []
    if r.key:
        cols.append(_out(p.ref(r.key, f"{where}.key")))
    score = p.ref(r.score, f"{where}.score")
    if score.dtype not in NUMERIC:
        raise SpecError(f"{where}.score: {score.key} is {score.dtype.value}; a score is a number")
    return [*cols, _out(score)]


def plan_output(p: _Planner, o: m.OutputSpec) -> tuple[PlannedOutput, list[str]]:
    """Resolve what `o` releases from the flow's final columns; return it and any warnings."""
    where = f"outputs[{o.name}].release"
    r = o.release
    warnings: list[str] = []
    unit_col, unit, measures, post = None, PrivacyUnit.NONE, {}, ()
    if isinstance(r, m.VerifyRelease):
        cols = _verify(p, r, where, warnings)
        labels = _labels(p, r.labels, where, warnings)
        roles = {"claim": (cols[0].name,), "answer": (cols[1].name,), "labels": tuple(c.name for c in labels)}
        cols += labels
    elif isinstance(r, m.AggregateRelease):
        cols, measures = _aggregate(p, r, where, warnings)
        roles = {"group_by": tuple(c.name for c in cols[:len(r.group_by)])}
        found, unit = _unit(p, r, where)
        if found is not None and any(c.key == found.key for c in cols[:len(r.group_by)]):
            raise SpecError(f"{where}.group_by: {found.key} is the privacy unit; a group per unit would release "
                            f"each unit's own figures")
        if found is not None:
            cols.append(_out(found, UNIT_COLUMN))
            unit_col = UNIT_COLUMN
        post = _post(r, cols, measures, where)
    elif isinstance(r, m.RecordRelease):
        cols = _record(p, r, where)
        by_ref = dict(zip(r.columns, (c.name for c in cols)))
        roles = {"columns": tuple(c.name for c in cols),
                 "quasi_identifiers": tuple(by_ref[q] for q in r.quasi_identifiers)}
    else:
        cols = _model(p, r, where)
        labels = _labels(p, r.labels, where, warnings)
        roles = {"score": (cols[-1].name,), "key": (cols[0].name,) if r.key else (),
                 "labels": tuple(c.name for c in labels)}
        cols += labels
    _distinct_names(cols, where)
    return PlannedOutput(o.name, r, tuple(cols), frozenset(p.influences), unit_col, unit, measures, roles,
                         post), warnings


def aggregate_spec(output: PlannedOutput):  # -> authops.sandbox.dp.AggregateSpec
    """The DP engine's spec for an aggregate output, over the columns `execute` gives it."""
    from authops.sandbox.dp import AggregateSpec, Measure

    r = output.release
    if not isinstance(r, m.AggregateRelease):
        raise SpecError(f"outputs[{output.name}] is a {r.policy} output, not an aggregate")
    if output.unit_column is None:
        raise SpecError(f"outputs[{output.name}]: no input has a privacy unit, so there is nothing for DP to protect")
    by = list(output.roles["group_by"])
    keys = {}
    for name in by:
        col = output.column(name)
        keys[name] = [True, False] if col.dtype == DType.BOOL else (list(col.domain) if col.domain else None)
    public = keys if by and all(v is not None for v in keys.values()) else None
    measures = [Measure(ms.name, ms.fn, output.measure_columns.get(ms.name),
                        ms.bounds[0] if ms.bounds else None, ms.bounds[1] if ms.bounds else None,
                        ms.q, list(ms.edges) if ms.edges else None) for ms in r.measures]
    return AggregateSpec(by=by, measures=measures, unit_column=output.unit_column, epsilon=r.epsilon,
                         public_keys=public, max_contributions=r.max_rows_per_unit, delta=r.delta or 0.0,
                         min_cell=r.min_cell)
