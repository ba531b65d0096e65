"""Type-check an expression tree against the columns in scope and compile it to polars.

Checking yields a `Typed`: the value's storage type (`DType`), the columns and parameters
it reads (its lineage), the values a text result can take when they are known (a case
over literals, a bucket's labels, a category's enumeration), and a builder that makes the
polars expression once the parameters' values are known. Times are stored in UTC; date
parts of a timestamp are taken in Asia/Shanghai, where the data's days begin and end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import polars as pl

from authops.core.data.schema import DType
from authops.sandbox.spec.errors import ExprError
from authops.sandbox.spec.expr import (Between, Binary, Call, Case, Col, InList, IsNull, ListLit, Lit, Node, Param,
                                       Unary, parse)

LOCAL_TZ = "Asia/Shanghai"
POLARS: dict[DType, Any] = {DType.STRING: pl.String, DType.DATE: pl.Date, DType.TIMESTAMP: pl.Datetime("us", "UTC"),
                            DType.INT: pl.Int64, DType.FLOAT: pl.Float64, DType.BOOL: pl.Boolean}
NUMERIC = (DType.INT, DType.FLOAT)
TEMPORAL = (DType.DATE, DType.TIMESTAMP)
_LIT_TYPE = {"int": DType.INT, "float": DType.FLOAT, "string": DType.STRING, "date": DType.DATE,
             "timestamp": DType.TIMESTAMP, "bool": DType.BOOL, "null": None}
Params = Mapping[str, Any]
Builder = Callable[[Params], pl.Expr]


@dataclass(frozen=True)
class Typed:
    dtype: DType | None  # None: the null literal, which takes any type
    build: Builder
    columns: frozenset[str] = frozenset()  # keys of the columns read
    params: frozenset[str] = frozenset()
    domain: tuple[str, ...] | None = None  # every value a text result can take, when known
    node: Node | None = field(default=None, compare=False)


class Scope(Protocol):
    def column(self, ref: Col) -> tuple[str, DType, tuple[str, ...] | None]:
        """The column's key in the frame, its type and its known values; raise ValueError naming the fix."""

    def param(self, name: str) -> DType:
        """The parameter's type; raise KeyError if there is none."""


@dataclass
class SimpleScope:
    """Columns given by name and type: for checking an expression on its own."""

    columns: Mapping[str, DType]
    params: Mapping[str, DType] = field(default_factory=dict)
    domains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def column(self, ref: Col) -> tuple[str, DType, tuple[str, ...] | None]:
        if ref.text not in self.columns:
            raise ValueError(f"unknown column {ref.text!r}; the columns are {', '.join(sorted(self.columns))}")
        return ref.text, self.columns[ref.text], self.domains.get(ref.text)

    def param(self, name: str) -> DType:
        return self.params[name]


def utc_literal(value: datetime) -> datetime:
    """A timestamp literal in UTC; one written without an offset is read as Asia/Shanghai time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(LOCAL_TZ))
    return value.astimezone(ZoneInfo("UTC"))


def lit(value: Any, dtype: DType | None) -> pl.Expr:
    if dtype is None:
        return pl.lit(None)
    if dtype == DType.TIMESTAMP and isinstance(value, datetime):
        value = utc_literal(value)
    return pl.lit(value, dtype=POLARS[dtype])


def _local(e: pl.Expr, dtype: DType) -> pl.Expr:
    return e.dt.convert_time_zone(LOCAL_TZ) if dtype == DType.TIMESTAMP else e


def _as_date(e: pl.Expr, dtype: DType) -> pl.Expr:
    return _local(e, dtype).dt.date() if dtype == DType.TIMESTAMP else e


def _num_label(x: float | int) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def bucket_labels(edges: list[float | int]) -> list[str]:
    """Default labels of bucket(x, edges): half-open intervals, e.g. '[0, 100)'."""
    labels = [f"(-inf, {_num_label(edges[0])})"]
    labels += [f"[{_num_label(a)}, {_num_label(b)})" for a, b in zip(edges, edges[1:])]
    return [*labels, f"[{_num_label(edges[-1])}, +inf)"]


def _fixed(e: pl.Expr, decimals: int) -> pl.Expr:
    """A number as text with exactly `decimals` decimals, rounded half away from zero ('1.05', '-0.50')."""
    scaled = (e.cast(pl.Float64) * 10**decimals).round(0, mode="half_away_from_zero").cast(pl.Int64)
    whole = (scaled.abs() // 10**decimals).cast(pl.String)
    sign = pl.when(scaled < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    if decimals == 0:
        return pl.concat_str([sign, whole])
    frac = (scaled.abs() % 10**decimals).cast(pl.String).str.zfill(decimals)
    return pl.concat_str([sign, whole, pl.lit("."), frac])


class Checker:
    def __init__(self, text: str, scope: Scope) -> None:
        self.text = text
        self.scope = scope

    def fail(self, node: Node, msg: str) -> ExprError:
        return ExprError(msg, expression=self.text, position=node.pos)

    def check(self, node: Node) -> Typed:
        t = getattr(self, "_" + type(node).__name__.lower())(node)
        return Typed(t.dtype, t.build, t.columns, t.params, t.domain, node)

    # leaves
    def _lit(self, n: Lit) -> Typed:
        dtype = _LIT_TYPE[n.kind]
        return Typed(dtype, lambda p: lit(n.value, dtype), domain=(n.value,) if n.kind == "string" else None)

    def _col(self, n: Col) -> Typed:
        try:
            key, dtype, domain = self.scope.column(n)
        except ValueError as exc:
            raise self.fail(n, str(exc)) from None
        return Typed(dtype, lambda p: pl.col(key), columns=frozenset({key}), domain=domain)

    def _param(self, n: Param) -> Typed:
        try:
            dtype = self.scope.param(n.name)
        except KeyError:
            raise self.fail(n, f"unknown parameter :{n.name}; declare it under 'params'") from None
        return Typed(dtype, lambda p: lit(p[n.name], dtype), params=frozenset({n.name}))

    def _listlit(self, n: ListLit) -> Typed:
        raise self.fail(n, "a [list] is only an argument of bucket()")

    # operators
    def _unary(self, n: Unary) -> Typed:
        a = self.check(n.operand)
        if n.op == "not":
            self.want(a, n.operand, (DType.BOOL,), "'not'")
            return self.derive([a], DType.BOOL, lambda p: ~a.build(p))
        self.want(a, n.operand, NUMERIC, "'-'")
        return self.derive([a], a.dtype, lambda p: -a.build(p))

    def _binary(self, n: Binary) -> Typed:
        a, b = self.check(n.left), self.check(n.right)
        op = n.op
        if op in ("and", "or"):
            self.want(a, n.left, (DType.BOOL,), f"'{op}'")
            self.want(b, n.right, (DType.BOOL,), f"'{op}'")
            fn = (lambda x, y: x & y) if op == "and" else (lambda x, y: x | y)
            return self.derive([a, b], DType.BOOL, lambda p: fn(a.build(p), b.build(p)))
        if op in ("+", "-", "*", "/", "%"):
            self.want(a, n.left, NUMERIC, f"'{op}'")
            self.want(b, n.right, NUMERIC, f"'{op}'")
            out = DType.FLOAT if op == "/" or DType.FLOAT in (a.dtype, b.dtype) else DType.INT
            ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
                   "/": lambda x, y: x / y, "%": lambda x, y: x % y}
            return self.derive([a, b], out, lambda p: ops[op](a.build(p), b.build(p)))
        self.comparable(n, a, b, ordered=op not in ("=", "!="))
        cmp = {"=": lambda x, y: x == y, "!=": lambda x, y: x != y, "<": lambda x, y: x < y,
               "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}[op]
        return self.derive([a, b], DType.BOOL, lambda p: cmp(a.build(p), b.build(p)))

    def _isnull(self, n: IsNull) -> Typed:
        a = self.check(n.operand)
        return self.derive([a], DType.BOOL, lambda p: a.build(p).is_not_null() if n.negated else a.build(p).is_null())

    def _inlist(self, n: InList) -> Typed:
        a = self.check(n.operand)
        items = [self.check(i) for i in n.items]
        for node, it in zip(n.items, items):
            self.comparable(node, a, it, ordered=False)
        target = DType.FLOAT if a.dtype == DType.INT and any(i.dtype == DType.FLOAT for i in items) else a.dtype

        def build(p: Params) -> pl.Expr:
            nodes = [i.node for i in items]
            values = [p[x.name] if isinstance(x, Param) else x.value for x in nodes]  # type: ignore[union-attr]
            if target == DType.TIMESTAMP:
                values = [utc_literal(v) for v in values]
            e = a.build(p).cast(POLARS[target]).is_in(pl.Series(values, dtype=POLARS[target]).implode())
            return ~e if n.negated else e
        return self.derive([a, *items], DType.BOOL, build)

    def _between(self, n: Between) -> Typed:
        a, lo, hi = self.check(n.operand), self.check(n.low), self.check(n.high)
        self.comparable(n.low, a, lo, ordered=True)
        self.comparable(n.high, a, hi, ordered=True)

        def build(p: Params) -> pl.Expr:
            x = a.build(p)
            e = (x >= lo.build(p)) & (x <= hi.build(p))
            return ~e if n.negated else e
        return self.derive([a, lo, hi], DType.BOOL, build)

    def _case(self, n: Case) -> Typed:
        conds = [self.check(c) for c, _ in n.whens]
        for (c_node, _), c in zip(n.whens, conds):
            self.want(c, c_node, (DType.BOOL,), "'when'")
        values = [self.check(v) for _, v in n.whens]
        if n.otherwise is not None:
            values.append(self.check(n.otherwise))
        out, domain = self.unify(n, values, "the branches of 'case'")
        whens = list(zip(conds, values))

        def build(p: Params) -> pl.Expr:
            c0, v0 = whens[0]
            chain = pl.when(c0.build(p)).then(self.cast(v0, out, p))
            for c, v in whens[1:]:
                chain = chain.when(c.build(p)).then(self.cast(v, out, p))
            tail = self.cast(values[-1], out, p) if n.otherwise is not None else pl.lit(None, dtype=POLARS[out])
            return chain.otherwise(tail)
        return self.derive([*conds, *values], out, build, domain)

    def _call(self, n: Call) -> Typed:
        if n.name == "bucket":
            return self.bucket(n)
        args = [self.check(a) for a in n.args]
        a = args[0]
        if n.name in ("year", "month", "day", "quarter", "weekday"):
            self.want(a, n.args[0], TEMPORAL, f"{n.name}()")
            part = {"year": "year", "month": "month", "day": "day", "quarter": "quarter", "weekday": "weekday"}[n.name]
            return self.derive(args, DType.INT,
                               lambda p: getattr(_local(a.build(p), a.dtype).dt, part)().cast(pl.Int64))
        if n.name == "date":
            self.want(a, n.args[0], TEMPORAL, "date()")
            return self.derive(args, DType.DATE, lambda p: _as_date(a.build(p), a.dtype))
        if n.name == "date_diff_days":
            b = args[1]
            self.want(a, n.args[0], TEMPORAL, "date_diff_days()")
            self.want(b, n.args[1], TEMPORAL, "date_diff_days()")
            return self.derive(args, DType.INT, lambda p: (_as_date(a.build(p), a.dtype) - _as_date(
                b.build(p), b.dtype)).dt.total_days().cast(pl.Int64))
        if n.name == "coalesce":
            out, domain = self.unify(n, args, "the arguments of coalesce()")
            return self.derive(args, out, lambda p: pl.coalesce([self.cast(x, out, p) for x in args]), domain)
        if n.name == "abs":
            self.want(a, n.args[0], NUMERIC, "abs()")
            return self.derive(args, a.dtype, lambda p: a.build(p).abs())
        if n.name == "round":
            self.want(a, n.args[0], NUMERIC, "round()")
            digits = 0
            if len(n.args) == 2:
                d = n.args[1]
                if not (isinstance(d, Lit) and d.kind == "int" and 0 <= d.value <= 12):
                    raise self.fail(d, "round()'s second argument is a whole number of digits from 0 to 12")
                digits = d.value
            if a.dtype == DType.INT:
                return self.derive(args[:1], DType.INT, a.build)
            return self.derive(args[:1], DType.FLOAT,
                               lambda p: a.build(p).round(digits, mode="half_away_from_zero"))
        if n.name in ("length", "upper", "lower"):
            self.want(a, n.args[0], (DType.STRING,), f"{n.name}()")
            if n.name == "length":
                return self.derive(args, DType.INT, lambda p: a.build(p).str.len_chars().cast(pl.Int64))
            up = n.name == "upper"
            domain = tuple(v.upper() if up else v.lower() for v in a.domain) if a.domain else None
            return self.derive(args, DType.STRING, lambda p: (a.build(p).str.to_uppercase() if up
                                                              else a.build(p).str.to_lowercase()), domain)
        if n.name == "substr":
            self.want(a, n.args[0], (DType.STRING,), "substr()")
            for node, x in zip(n.args[1:], args[1:]):
                self.want(x, node, (DType.INT,), "substr()")
            start = n.args[1]
            if isinstance(start, Lit) and start.value < 1:
                raise self.fail(start, "substr() counts characters from 1")
            rest = args[1:]

            def build(p: Params) -> pl.Expr:
                length = rest[1].build(p) if len(rest) == 2 else None
                return a.build(p).str.slice(rest[0].build(p) - 1, length)
            return self.derive(args, DType.STRING, build)
        if n.name == "contains":
            self.want(a, n.args[0], (DType.STRING,), "contains()")
            self.want(args[1], n.args[1], (DType.STRING,), "contains()")
            return self.derive(args, DType.BOOL,
                               lambda p: a.build(p).str.contains(args[1].build(p), literal=True))
        if n.name == "concat":
            for node, x in zip(n.args, args):
                self.want(x, node, (DType.STRING,), "concat()")
            return self.derive(args, DType.STRING, lambda p: pl.concat_str([x.build(p) for x in args]))
        if n.name in ("least", "greatest"):
            for node, x in zip(n.args, args):
                self.want(x, node, NUMERIC, f"{n.name}()")
            out, _ = self.unify(n, args, f"the arguments of {n.name}()")
            fn = pl.min_horizontal if n.name == "least" else pl.max_horizontal
            return self.derive(args, out, lambda p: fn([self.cast(x, out, p) for x in args]))
        if n.name == "reasons":
            return self.reasons(n, args)
        if n.name == "fixed":
            self.want(a, n.args[0], NUMERIC, "fixed()")
            d = n.args[1]
            if not (isinstance(d, Lit) and d.kind == "int" and 0 <= d.value <= 6):
                raise self.fail(d, "fixed()'s second argument is a whole number of decimals from 0 to 6")
            return self.derive(args[:1], DType.STRING, lambda p: _fixed(a.build(p), d.value))
        raise self.fail(n, f"function {n.name}() is not implemented")  # pragma: no cover

    def reasons(self, n: Call, args: list[Typed]) -> Typed:
        """reasons(cond, 'CODE', cond, 'CODE', ...): the codes whose condition holds, in order, joined by ';'
        ('' when none): reason codes for a label with separator ';'. A null condition counts as false."""
        if len(args) % 2:
            raise self.fail(n, "reasons() takes pairs: a true/false condition, then its code in quotes")
        codes = []
        for i in range(0, len(args), 2):
            self.want(args[i], n.args[i], (DType.BOOL,), "reasons()")
            code = n.args[i + 1]
            if not (isinstance(code, Lit) and code.kind == "string") or not code.value or ";" in code.value:
                raise self.fail(code, "each condition in reasons() is followed by its code: text in quotes, "
                                      "not empty, without ';'")
            codes.append(code.value)
        if len(set(codes)) != len(codes):
            raise self.fail(n, "reasons() codes must differ from each other")
        conds = args[0::2]

        def build(p: Params) -> pl.Expr:
            parts = [pl.when(c.build(p).fill_null(False)).then(pl.lit(code)).otherwise(pl.lit(None, dtype=pl.String))
                     for c, code in zip(conds, codes)]
            return pl.concat_str(parts, separator=";", ignore_nulls=True).fill_null("")
        return self.derive(conds, DType.STRING, build)

    def bucket(self, n: Call) -> Typed:
        a = self.check(n.args[0])
        self.want(a, n.args[0], NUMERIC, "bucket()")
        edges_node = n.args[1]
        if not isinstance(edges_node, ListLit) or any(
                not (isinstance(i, Lit) and i.kind in ("int", "float")) for i in edges_node.items):
            raise self.fail(edges_node, "bucket()'s second argument is a list of numbers, e.g. [0, 100, 1000]")
        edges = [i.value for i in edges_node.items]  # type: ignore[attr-defined]
        if any(x >= y for x, y in zip(edges, edges[1:])):
            raise self.fail(edges_node, "bucket() edges must increase strictly")
        labels = bucket_labels(edges)
        if len(n.args) == 3:
            lab = n.args[2]
            if not isinstance(lab, ListLit) or any(not (isinstance(i, Lit) and i.kind == "string") for i in lab.items):
                raise self.fail(lab, "bucket()'s third argument is a list of text labels")
            if len(lab.items) != len(edges) + 1:
                raise self.fail(lab, f"{len(edges)} edges make {len(edges) + 1} buckets; give that many labels, "
                                     f"not {len(lab.items)}")
            labels = [i.value for i in lab.items]  # type: ignore[attr-defined]
            if len(set(labels)) != len(labels):
                raise self.fail(lab, "bucket() labels must differ from each other")

        def build(p: Params) -> pl.Expr:
            x = a.build(p)
            chain = pl.when(x.is_null()).then(pl.lit(None, dtype=pl.String))
            for edge, label in zip(edges, labels):
                chain = chain.when(x < edge).then(pl.lit(label))
            return chain.otherwise(pl.lit(labels[-1]))
        return self.derive([a], DType.STRING, build, tuple(labels))

    # helpers
    def want(self, t: Typed, node: Node, allowed: tuple[DType, ...], what: str) -> None:
        if t.dtype is None or t.dtype in allowed:
            return
        names = " or ".join("number" if d in NUMERIC else d.value for d in dict.fromkeys(
            DType.INT if d in NUMERIC else d for d in allowed))
        hint = ""
        if t.dtype == DType.STRING and DType.DATE in allowed:
            hint = "; a date literal is written date'2025-01-31'"
        elif t.dtype in NUMERIC and allowed == (DType.BOOL,):
            hint = "; compare it, e.g. x > 0"
        raise self.fail(node, f"{what} needs a {names} here, but this is {self.describe(t)}{hint}")

    def comparable(self, node: Node, a: Typed, b: Typed, *, ordered: bool) -> None:
        if a.dtype is None or b.dtype is None:
            raise self.fail(node, "comparing with null is never true; write 'x is null' or 'x is not null'")
        same = a.dtype == b.dtype or (a.dtype in NUMERIC and b.dtype in NUMERIC)
        if not same:
            hint = ""
            if {a.dtype, b.dtype} == {DType.DATE, DType.TIMESTAMP}:
                hint = "; take the timestamp's day with date(x)"
            elif DType.STRING in (a.dtype, b.dtype) and {a.dtype, b.dtype} & set(TEMPORAL):
                hint = "; write a date as date'2025-01-31' or a time as timestamp'2025-01-31 08:00:00'"
            raise self.fail(node, f"cannot compare {self.describe(a)} with {self.describe(b)}{hint}")
        if ordered and a.dtype == DType.BOOL:
            raise self.fail(node, "true/false values have no order; compare them with = or !=")
        for x, y in ((a, b), (b, a)):
            if x.domain and isinstance(y.node, Lit) and y.node.kind == "string" and y.node.value not in x.domain:
                shown = ", ".join(x.domain[:12]) + (" …" if len(x.domain) > 12 else "")
                raise self.fail(y.node, f"{y.node.value!r} is never a value here; the values are {shown}")

    def unify(self, node: Node, values: list[Typed], what: str) -> tuple[DType, tuple[str, ...] | None]:
        kinds = {v.dtype for v in values if v.dtype is not None}
        if not kinds:
            raise self.fail(node, f"{what} are all null; give at least one a value")
        if len(kinds) > 1 and not kinds <= set(NUMERIC):
            shown = ", ".join(sorted(k.value for k in kinds))
            raise self.fail(node, f"{what} must have one type, but they are {shown}")
        out = DType.FLOAT if len(kinds) > 1 else kinds.pop()
        domain = None
        if out == DType.STRING and all(v.domain is not None or v.dtype is None for v in values):
            domain = tuple(dict.fromkeys(d for v in values for d in (v.domain or ())))
        return out, domain

    @staticmethod
    def cast(t: Typed, out: DType, p: Params) -> pl.Expr:
        e = t.build(p)
        return e.cast(POLARS[out]) if t.dtype != out else e

    @staticmethod
    def derive(parts: list[Typed], dtype: DType | None, build: Builder, domain: tuple[str, ...] | None = None) -> Typed:
        return Typed(dtype, build, frozenset().union(*(t.columns for t in parts)),
                     frozenset().union(*(t.params for t in parts)), domain)

    def describe(self, t: Typed) -> str:
        what = "null" if t.dtype is None else ("a number" if t.dtype in NUMERIC else f"a {t.dtype.value}")
        if isinstance(t.node, Col):
            return f"column {t.node.text!r} ({what.removeprefix('a ')})"
        return what


def check(text: str, scope: Scope, *, want: DType | None = None, what: str = "the expression") -> Typed:
    """Parse and type-check `text`; `want` requires a result type (BOOL for filters)."""
    node = parse(text)
    typed = Checker(text, scope).check(node)
    if want is not None and typed.dtype not in (want, None) and not (want == DType.FLOAT and typed.dtype == DType.INT):
        hint = "; compare it to something, e.g. x > 0" if want == DType.BOOL else ""
        raise ExprError(f"{what} must be {want.value}, but it is {typed.dtype.value if typed.dtype else 'null'}"
                        f"{hint}", expression=text, position=1)
    return typed


def compile_expr(text: str, columns: Mapping[str, DType], params: Mapping[str, DType] | None = None) -> Typed:
    """Check an expression over plainly named columns; `.build(param_values)` gives the polars expression."""
    return check(text, SimpleScope(columns, params or {}))
