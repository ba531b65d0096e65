"""The release gate: nothing leaves the sandbox unless its output's release policy lets it.

Runs in the trusted worker, outside the jail, on the pre-release table of one output:

- verify: answers the requester's claims (subjects it names) with one of the enumerated values;
  the set of subjects in the data is never released, only answers to claims.
- aggregate: differential privacy (sandbox.dp): per-unit contribution bounds, clamping, noise
  once per cell, partition selection for unknown keys, and the minimum cell size.
- record: every column treated by the grade and kind of the input field it is (masking.fields);
  a column computed from a personal identifier, name, phone, bank account or an L4 field is
  refused; then k-anonymity over the quasi-identifiers; last, the re-identification risk of the
  release is measured with anonymeter (sandbox.reid: singling-out, linkability, inference on a
  sample with held-out rows) and the release refused (`reidentification_risk`) over a threshold.
- model: scores only (numbers within the declared bounds, rounded); keys are tokenized, or the
  scores answer the requester's claims.
- labels (verify and model): extra answer columns of text, each value (or, with a separator, each
  code in it) one of the values the spec declares, else the release is refused; aggregate `post`
  columns are computed after the noise from the released row alone and checked the same way.

Any column the policy does not account for is refused, naming the column and the input field
it came from. Refusals never quote a value. Last, every string that leaves is scanned for what
looks like a resident ID number, a USCC or a mobile number that the requester did not give.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from authops.core.data.identifiers import valid_mask
from authops.core.data.schema import Check, DType, FieldSpec, Grade, Kind
from authops.core.errors import InvalidInput
from authops.sandbox import reid
from authops.sandbox.masking import fields as masking
from authops.sandbox.masking import tokens
from authops.sandbox.masking.kanon import k_anonymity
from authops.sandbox.spec import models as m
from authops.sandbox.spec.plan import OutputColumn, PlannedOutput

MAX_CLAIMS = 100_000
SCORE_DECIMALS = 4
# Kinds whose values identify or reach a person whatever they are computed into.
SENSITIVE_KINDS = masking.ALWAYS | masking.IDENTIFIERS


class ReleaseRefused(InvalidInput):
    """An output failed its release policy; the message names the output, column and field."""

    code = "release_refused"


@dataclass
class Released:
    output: str
    policy: str
    table: pa.Table
    summary: dict[str, Any] = field(default_factory=dict)  # no values: counts, budget, treatments
    epsilon: float = 0.0
    delta: float = 0.0


def _refuse(output: PlannedOutput, message: str, **details: Any) -> ReleaseRefused:
    return ReleaseRefused(f"outputs[{output.name}] ({output.policy}): {message}",
                          details={"output": output.name, "policy": output.policy, **details})


def _field_label(ref: tuple[str, str], spec: FieldSpec | None) -> str:
    if spec is None:
        return f"{ref[0]}.{ref[1]}"
    return f"{ref[0]}.{ref[1]} ({spec.kind.value}, {spec.grade.value})"


def _sensitive_source(col: OutputColumn, fields: Mapping[tuple[str, str], FieldSpec]
                      ) -> tuple[tuple[str, str], FieldSpec] | None:
    """The most sensitive input field reaching a column, if any is personal or L4."""
    worst = None
    for ref in sorted(col.sources):
        spec = fields.get(ref)
        if spec is None:
            continue
        if spec.kind in SENSITIVE_KINDS or spec.grade == Grade.L4:
            if worst is None or spec.grade.level > worst[1].grade.level:
                worst = (ref, spec)
    return worst


def _column(table: pa.Table, output: PlannedOutput, name: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise _refuse(output, f"the job produced no column {name!r}, which the release policy names",
                      column=name)
    return table.column(name)


def _unaccounted(table: pa.Table, output: PlannedOutput, allowed: Sequence[str]) -> None:
    extra = [c for c in table.column_names if c not in allowed]
    if extra:
        col = next((c for c in output.columns if c.name == extra[0]), None)
        came = ""
        if col is not None and col.sources:
            came = f"; it comes from {', '.join(f'{r}.{f}' for r, f in sorted(col.sources))}"
        raise _refuse(output, f"column {extra[0]!r} is not accounted for by the release policy{came}; "
                      f"remove it or name it in the policy", column=extra[0])


# --- verify ------------------------------------------------------------------------------------

def _normal(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    s = values.cast(pa.string())
    return pc.utf8_upper(pc.utf8_trim_whitespace(s))


def _claims(output: PlannedOutput, claims: Sequence[Any] | None) -> pa.Array:
    if claims is None:
        raise _refuse(output, "a verify output answers claims: pass the subjects to check in "
                      f"claims.{output.name}")
    if not isinstance(claims, (list, tuple)) or not claims:
        raise _refuse(output, f"claims.{output.name} must be a non-empty list of subjects")
    if len(claims) > MAX_CLAIMS:
        raise _refuse(output, f"claims.{output.name} holds {len(claims)} subjects; at most {MAX_CLAIMS} per job")
    if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in claims):
        raise _refuse(output, f"claims.{output.name} must hold strings or whole numbers")
    return pa.array([str(c) for c in claims], pa.string())


def _answers(table: pa.Table, output: PlannedOutput, key: str, value: str, claims: pa.Array,
             allowed: Sequence[str] | None) -> tuple[pa.Array, np.ndarray]:
    """Per claim, the value in `value` of the one row whose `key` matches (normalised); found mask."""
    keys = _normal(_column(table, output, key))
    vals = _column(table, output, value).combine_chunks()
    uniq = pc.unique(keys)
    if len(uniq) != len(keys):
        raise _refuse(output, f"several rows have the same {key!r}, so a claim would have several answers; "
                      f"summarize by it first", column=key)
    idx = pc.index_in(_normal(claims), value_set=keys)
    found = pc.is_valid(idx).to_numpy(zero_copy_only=False)
    picked = vals.take(pc.fill_null(idx, 0)) if len(vals) else pa.nulls(len(claims), vals.type)
    if allowed is not None:
        ok = pc.is_in(vals.cast(pa.string()), value_set=pa.array(list(allowed), pa.string()))
        if not pc.all(pc.fill_null(ok, False)).as_py() and len(vals):
            raise _refuse(output, f"column {value!r} holds a value outside {list(allowed)}; "
                          f"the answer must be one of them", column=value)
    return picked, found


def _check_label(output: PlannedOutput, values: pa.ChunkedArray | pa.Array, label: m.Label, name: str) -> None:
    """Refuse a label column holding a value (or, with a separator, a code) outside its declared set."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise _refuse(output, f"label {name!r} holds {values.type}, not text", column=name)
    allowed = pa.array(list(label.values), pa.string())
    if label.separator:
        parts = pc.list_flatten(pc.split_pattern(values.cast(pa.string()), label.separator))
        parts = pc.filter(parts, pc.not_equal(parts, ""))
        ok = pc.is_in(parts, value_set=allowed)
    else:
        ok = pc.is_in(pc.drop_null(values.cast(pa.string())), value_set=allowed)
    if len(ok) and not pc.all(ok).as_py():
        raise _refuse(output, f"label {name!r} holds a value outside {list(label.values)}", column=name)


def _label_columns(output: PlannedOutput) -> list[tuple[str, m.Label]]:
    return list(zip(output.roles.get("labels", ()), output.release.labels))


def _claimed_labels(output: PlannedOutput, table: pa.Table, key: str, given: pa.Array,
                    found: np.ndarray) -> dict[str, pa.Array]:
    """Per claim, each label's value in the matching row (null where no row matches)."""
    out = {}
    for name, label in _label_columns(output):
        _check_label(output, _column(table, output, name), label, name)
        picked, _ = _answers(table, output, key, name, given, None)
        out[name] = pc.if_else(pa.array(found), picked.cast(pa.string()), pa.scalar(None, pa.string()))
    return out


def _verify(output: PlannedOutput, table: pa.Table, claims: Sequence[Any] | None) -> Released:
    r: m.VerifyRelease = output.release
    claim, answer = output.roles["claim"][0], output.roles["answer"][0]
    _unaccounted(table, output, [claim, answer, *output.roles.get("labels", ())])
    given = _claims(output, claims)
    picked, found = _answers(table, output, claim, answer, given, r.values)
    out = pc.if_else(pa.array(found), picked.cast(pa.string()), pa.scalar(r.absent, pa.string()))
    out = pc.fill_null(out, r.absent)
    labels = _claimed_labels(output, table, claim, given, found)
    released = pa.table({"claim": given, "answer": out, **labels})
    return Released(output.name, "verify", released,
                    {"claims": len(given), "answered": int(found.sum()), "values": list(r.values),
                     "labels": list(labels)})


# --- aggregate ---------------------------------------------------------------------------------

def _aggregate(output: PlannedOutput, source, spec) -> Released:
    """DP release of a Parquet file of the output's rows, or of bounded partials of its partitions."""
    from authops.sandbox.dp import Partial, merge_and_release, release_aggregate

    if isinstance(source, (list, tuple)) and source and all(isinstance(p, Partial) for p in source):
        rel = merge_and_release(list(source), spec)  # noise is added once, to the merged sums
    elif isinstance(source, (str, Path)) or type(source).__name__ == "LazyFrame":
        rel = release_aggregate(source, spec)  # a lazy plan streams straight into the bounding
    else:
        raise TypeError("aggregate outputs are released from a Parquet file of their rows or from partials")
    summary = rel.summary()
    summary["histograms"] = sorted(rel.histograms)
    table = _post(output, rel.table)
    if output.post:
        summary["post"] = [name for name, _ in output.post]
    return Released(output.name, "aggregate", table, summary, rel.epsilon, rel.delta)


def _post(output: PlannedOutput, table: pa.Table) -> pa.Table:
    """Columns computed from each released (noisy) row alone: post-processing, no privacy cost."""
    if not output.post:
        return table
    import polars as pl

    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    for name, typed in output.post:
        df = df.with_columns(typed.build({}).alias(name))
    by_name = {pcol.name: pcol for pcol in output.release.post}
    for name, typed in output.post:
        allowed = by_name[name].values or typed.domain
        if typed.dtype == DType.STRING and allowed is not None:
            _check_label(output, df.get_column(name).to_arrow(), m.Label(column=name, values=tuple(allowed)), name)
    return df.to_arrow()


# --- record ------------------------------------------------------------------------------------

def _record_treatments(output: PlannedOutput, table: pa.Table, fields: Mapping[tuple[str, str], FieldSpec]
                       ) -> dict[str, tuple[str, Callable[[Any, bytes], Any]]]:
    """Per released column: (treatment name, function of (values, token key)); refuses what none fits."""
    names = list(output.roles["columns"])
    _unaccounted(table, output, names)
    out: dict[str, tuple[str, Callable[[Any, bytes], Any]]] = {}
    for name in names:
        col = output.column(name)
        _column(table, output, name)
        if col.origin is not None and col.field is not None:
            spec = col.field
            out[name] = (masking.plan(spec, bytes(32))[0],  # its name (a token, with any key)
                         lambda values, key, spec=spec: masking.plan(spec, key)[1](values))
            continue
        worst = _sensitive_source(col, fields)
        if worst is not None:
            ref, spec = worst
            raise _refuse(output, f"column {name!r} is computed from {_field_label(ref, spec)}; a computed "
                          f"column cannot be masked by its grade. Release the field itself (it is then "
                          f"tokenized or masked), or use an aggregate or verify output",
                          column=name, field=f"{ref[0]}.{ref[1]}")
        if col.domain is None and col.dtype not in (DType.BOOL,):
            top = max((fields[s].grade.level for s in col.sources if s in fields), default=1)
            if top >= 3:
                ref = next(s for s in sorted(col.sources) if s in fields and fields[s].grade.level == top)
                raise _refuse(output, f"column {name!r} is computed from {_field_label(ref, fields[ref])} and "
                              f"can take any value; bucket it or map it to categories (case when …) first",
                              column=name, field=f"{ref[0]}.{ref[1]}")
        out[name] = ("computed (categories)" if col.domain is not None else "computed", lambda values, key: values)
    return out


def _record_policy(output: PlannedOutput, treatments: dict[str, tuple[str, Callable[[Any, bytes], Any]]]):
    """The record policy as a function of (rows, token key, apply k-anonymity) -> (released, rows suppressed)."""
    r: m.RecordRelease = output.release
    qis = list(output.roles.get("quasi_identifiers", ()))

    def apply(table: pa.Table, key: bytes, suppress: bool = True) -> tuple[pa.Table, int]:
        masked = pa.table([fn(table.column(name), key) for name, (_, fn) in treatments.items()],
                          names=list(treatments))
        if qis and suppress:
            return k_anonymity(masked, qis, r.k)
        return masked, 0

    return apply


class ReidentificationRisk(ReleaseRefused):
    """A record release whose measured re-identification risk is over the gate's threshold."""

    code = "reidentification_risk"


def _record(output: PlannedOutput, table: pa.Table, fields: Mapping[tuple[str, str], FieldSpec],
            token_key: bytes) -> Released:
    """Mask each column by its field, k-anonymity over the quasi-identifiers, then measure the
    re-identification risk (sandbox.reid, anonymeter) and refuse the release over a threshold."""
    r: m.RecordRelease = output.release
    treatments = _record_treatments(output, table, fields)
    policy = _record_policy(output, treatments)
    masked, suppressed = policy(table, token_key)
    qis = list(output.roles.get("quasi_identifiers", ()))
    attacker_key = os.urandom(32)  # the attacker's own view of a person: no token of the release matches
    risk = reid.assess(table.select(list(treatments)), masked, lambda t: policy(t, attacker_key, False)[0],
                       quasi_identifiers=qis, treatments={n: t for n, (t, _) in treatments.items()})
    if not risk.get("measured") and "anonymeter" in str(risk.get("reason")):
        raise _refuse(output, f"{risk['reason']}: a record release is measured before it leaves, so it is "
                      "refused until anonymeter is installed (requirements.lock)")
    bad = reid.over(risk)
    if bad:
        def said(n: str, v: float, low: float, t: float) -> str:
            return f"{n.replace('_', '-')} risk {v:.2f} (at least {low:.2f}) > {t:.2f}"
        name, value, low, limit = bad[0]
        others = "".join(f"; {said(*b)}" for b in bad[1:])
        raise ReidentificationRisk(
            f"outputs[{output.name}] (record): the re-identification risk measured by anonymeter is too high: "
            f"{said(name, value, low, limit)}{others} (measured on a sample: {risk['original_rows']} released rows "
            f"attacked, {risk['control_rows']} held out). Declare the columns someone may know of a person as "
            f"quasi_identifiers (k-anonymity then applies), generalize or drop columns, or use an aggregate or "
            f"verify output",
            details={"output": output.name, "policy": "record", "risk": name, "value": round(value, 4),
                     "ci_low": round(low, 4), "threshold": limit,
                     "risks": {n: risk[n]["value"] for n in reid.RISKS if n in risk}})
    summary_risk: dict[str, Any] = {"measured": bool(risk.get("measured"))}
    if risk.get("measured"):
        summary_risk.update({n: risk[n]["value"] for n in reid.RISKS if n in risk})
        summary_risk["ci_low"] = {n: risk[n]["ci_low"] for n in reid.RISKS if n in risk}
        summary_risk.update(sample_rows=risk["original_rows"], control_rows=risk["control_rows"],
                            thresholds=risk["thresholds"])
    else:
        summary_risk["reason"] = risk.get("reason")
    return Released(output.name, "record", masked,
                    {"rows": masked.num_rows, "treatments": {n: t for n, (t, _) in treatments.items()}, "k": r.k,
                     "quasi_identifiers": qis, "suppressed_rows": suppressed, "reidentification": summary_risk})


# --- model -------------------------------------------------------------------------------------

def _scores(output: PlannedOutput, values: pa.ChunkedArray | pa.Array) -> pa.Array:
    r: m.ModelRelease = output.release
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise _refuse(output, f"the score column holds {values.type}, not numbers", column=output.roles["score"][0])
    s = values.cast(pa.float64())
    arr = s.to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(arr) & ~np.isnan(arr)
    if bad.any():
        raise _refuse(output, "scores must be finite numbers")
    if r.bounds is not None:
        lo, hi = float(r.bounds[0]), float(r.bounds[1])
        arr = np.clip(arr, lo, hi)
    arr = np.round(arr, SCORE_DECIMALS)
    return pa.array(arr, pa.float64(), mask=np.isnan(arr))


def _model(output: PlannedOutput, table: pa.Table, token_key: bytes, claims: Sequence[Any] | None,
           code: bool) -> Released:
    r: m.ModelRelease = output.release
    score = output.roles["score"][0]
    key = output.roles["key"][0] if output.roles.get("key") else None
    labels = list(output.roles.get("labels", ()))
    _unaccounted(table, output, [c for c in (key, score) if c] + labels)
    if code and r.bounds is None:
        raise _refuse(output, "a model output of partner code needs bounds for its score, so a score "
                      "cannot carry other data")
    if claims is not None:
        if key is None:
            raise _refuse(output, "claims need a key column to match them against")
        given = _claims(output, claims)
        picked, found = _answers(table, output, key, score, given, None)
        scores = _scores(output, picked)
        scores = pc.if_else(pa.array(found), scores, pa.scalar(None, pa.float64()))
        extra = _claimed_labels(output, table, key, given, found)
        return Released(output.name, "model", pa.table({"claim": given, "score": scores, **extra}),
                        {"claims": len(given), "scored": int(found.sum()), "labels": list(extra)})
    cols, names = [], []
    if key is not None:
        col = output.column(key)
        kind = col.field.kind if (col.field is not None and col.origin is not None and not code) else None
        if code or kind is None or kind in masking.IDENTIFIERS or kind in SENSITIVE_KINDS or kind == Kind.CODE:
            domain = kind.value if kind is not None else "model-key"
            cols.append(tokens.tokenize(_normal(_column(table, output, key)), token_key, domain=domain))
        else:
            cols.append(_column(table, output, key))
        names.append(key)
    cols.append(_scores(output, _column(table, output, score)))
    names.append(score)
    for name, label in _label_columns(output):
        values = _column(table, output, name)
        _check_label(output, values, label, name)
        cols.append(values)
        names.append(name)
    released = pa.table(cols, names=names)
    return Released(output.name, "model", released,
                    {"rows": released.num_rows, "key": "tokenized" if key else None,
                     "bounds": list(r.bounds) if r.bounds else None, "decimals": SCORE_DECIMALS})


# --- the last check: nothing that looks like a raw identifier ------------------------------------

_PHONE = r"(?:^|\D)1[3-9]\d{9}(?:\D|$)"


def raw_identifier_columns(table: pa.Table, skip: Sequence[str] = (),
                           public_uscc: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(column, what) for string columns holding a valid resident ID number, USCC or mobile number.

    `public_uscc` names columns that are an L1 (public) enterprise code released as it is."""
    found = []
    for name in table.column_names:
        if name in skip:
            continue
        col = table.column(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            continue
        if col.null_count == len(col):
            continue
        words = pc.utf8_upper(pc.utf8_trim_whitespace(col))
        eighteen = pc.filter(words, pc.equal(pc.utf8_length(words), 18))
        if len(eighteen):
            if valid_mask(Check.RESIDENT_ID, eighteen).any():
                found.append((name, "resident ID numbers"))
                continue
            if name not in public_uscc and valid_mask(Check.USCC, eighteen).any():
                found.append((name, "unified social credit codes"))
                continue
        if pc.any(pc.match_substring_regex(col, _PHONE)).as_py():
            found.append((name, "mobile numbers"))
    return found


def preflight(output: PlannedOutput, fields: Mapping[tuple[str, str], FieldSpec], *, code: bool = False,
              claims: Sequence[Any] | None = None) -> None:
    """What the gate would refuse whatever the data: checked when a job is submitted."""
    if code and output.policy == "aggregate":
        raise _refuse(output, "partner code cannot feed an aggregate release: through arbitrary code the "
                      "engine cannot bound what each person contributes. Compute statistics with a "
                      "declarative spec, whose aggregates the engine bounds itself")
    if output.policy == "verify":
        _claims(output, claims)
    if output.policy == "model" and code and output.release.bounds is None:
        raise _refuse(output, "a model output of partner code needs bounds for its score, so a score "
                      "cannot carry other data")
    if output.policy == "record":
        for name in output.roles["columns"]:
            col = output.column(name)
            if col.origin is not None and col.field is not None:
                continue
            worst = _sensitive_source(col, fields)
            if worst is not None:
                ref, spec = worst
                what = ("partner code's columns may carry any input field, and " if code else "")
                raise _refuse(output, f"column {name!r} may carry {_field_label(ref, spec)}: {what}a computed "
                              f"column cannot be masked by its grade. Release the field itself from a spec "
                              f"(it is then tokenized or masked), or use an aggregate, verify or model output",
                              column=name, field=f"{ref[0]}.{ref[1]}")


def release(output: PlannedOutput, data: str | Path | pa.Table, *, token_key: bytes,
            fields: Mapping[tuple[str, str], FieldSpec], claims: Sequence[Any] | None = None,
            aggregate_spec=None, code: bool = False) -> Released:
    """Turn one output's pre-release data into what may leave, or raise ReleaseRefused.

    `data` is the output's rows as an Arrow table, or a Parquet file (required for aggregates,
    which stream), or for aggregates the bounded partials of disjoint unit partitions. `fields` maps (resource, field) to its spec for every input field, so the
    gate can name and grade what reaches a column. `code` marks partner code, whose columns are
    assumed to carry every input field.
    """
    preflight(output, fields, code=code, claims=claims)
    policy = output.policy
    if policy == "aggregate":
        if aggregate_spec is None:
            from authops.sandbox.spec.outputs import aggregate_spec as make_spec
            aggregate_spec = make_spec(output)
        released = _aggregate(output, data, aggregate_spec)
        skip: Sequence[str] = ()
    else:
        table = data if isinstance(data, pa.Table) else pq.read_table(data)
        if policy == "verify":
            released = _verify(output, table, claims)
            skip = ("claim",)
        elif policy == "record":
            released = _record(output, table, fields, token_key)
            skip = ()
        elif policy == "model":
            released = _model(output, table, token_key, claims, code)
            skip = ("claim",)
        else:  # the spec schema allows no other policy
            raise _refuse(output, f"unknown release policy {policy!r}")
    public = [c.name for c in output.columns if policy == "record" and c.origin is not None and c.field is not None
              and c.field.kind == Kind.IDENTIFIER_ENTERPRISE and c.field.grade == Grade.L1]
    leaks = raw_identifier_columns(released.table, skip, public)
    if leaks:
        name, what = leaks[0]
        raise _refuse(output, f"column {name!r} would release what look like {what}; the release is refused",
                      column=name)
    if not all(math.isfinite(x) for x in (released.epsilon, released.delta)):
        raise _refuse(output, "the privacy loss of the release is not finite")
    return released
