"""Pydantic models of a job spec, mirroring job-spec.schema.json, and the loader.

`load_spec` reads JSON or YAML, validates it against the published JSON Schema (so a
user sees the same errors a schema-aware editor would show), then builds these models,
which add the checks a JSON Schema cannot say (names unique, bounds ordered, …).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from authops.core.data.schema import DType
from authops.sandbox.spec.errors import SpecError

SCHEMA_PATH = Path(__file__).with_name("job-spec.schema.json")
JSON_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
_VALIDATOR = Draft202012Validator(JSON_SCHEMA)
MAX_SPEC_BYTES = 1 << 20

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
ColumnRef = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62})?$")]
Expression = Annotated[str, Field(min_length=1, max_length=4000)]
Bounds = tuple[float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: list[str], what: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise ValueError(f"{what} repeat: {', '.join(sorted(seen))}")


def _ordered(bounds: Bounds | None, what: str) -> None:
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"{what}: bounds must be [lower, upper] with lower < upper")


class ParamSpec(_Model):
    type: DType
    description: str = ""
    default: str | int | float | bool | None = None


class InputSpec(_Model):
    alias: Name | None = None
    resource: Name
    version: int = Field(ge=1)
    fields: tuple[Name, ...] = Field(min_length=1)

    @property
    def name(self) -> str:
        return self.alias or self.resource


class KeyPair(_Model):
    left: ColumnRef
    right: Name


class Join(_Model):
    input: Name
    how: Literal["inner", "left"] = "inner"
    keys: tuple[Name | KeyPair, ...] = Field(min_length=1, max_length=8)
    # pre-aggregate the joined input by its key fields first: one row per key, so a join keeps the
    # flow's rows (and a left join its rows unmatched, with counts 0 and any() false)
    aggregate: tuple[SummaryAggregate, ...] | None = Field(default=None, min_length=1, max_length=64)

    def pairs(self) -> list[tuple[str, str]]:
        return [(k, k) if isinstance(k, str) else (k.left, k.right) for k in self.keys]

    @model_validator(mode="after")
    def _names(self) -> Join:
        if self.aggregate:
            _unique([a.name for a in self.aggregate], "aggregate names")
        return self


class Derive(_Model):
    name: Name
    expr: Expression
    description: str = ""


class SummaryAggregate(_Model):
    name: Name
    fn: Literal["count", "count_distinct", "sum", "mean", "min", "max", "any", "all"]
    column: ColumnRef | None = None
    where: Expression | None = None  # aggregate only the rows for which this is true

    @model_validator(mode="after")
    def _column(self) -> SummaryAggregate:
        if self.fn != "count" and self.column is None:
            raise ValueError(f"aggregate {self.name!r} ({self.fn}) needs a column")
        return self


Join.model_rebuild()


class Summarize(_Model):
    by: tuple[ColumnRef, ...] = Field(min_length=1)
    aggregates: tuple[SummaryAggregate, ...] = Field(min_length=1)


class JoinStep(_Model):
    join: Join


class FilterStep(_Model):
    filter: Expression


class DeriveStep(_Model):
    derive: Derive


class SummarizeStep(_Model):
    summarize: Summarize


Step = JoinStep | FilterStep | DeriveStep | SummarizeStep


class Label(_Model):
    """An extra answer column released beside a verify answer or a score: text from a declared set.

    With `separator`, the text is a list of codes joined by it (e.g. reason codes 'TAX;COURT'),
    each one of `values`; the empty text means none."""

    column: ColumnRef
    values: tuple[str, ...] = Field(min_length=1, max_length=64)
    separator: str | None = Field(default=None, min_length=1, max_length=1)
    description: str = ""

    @model_validator(mode="after")
    def _values(self) -> Label:
        _unique(list(self.values), f"label {self.column!r} values")
        if self.separator and any(self.separator in v for v in self.values):
            raise ValueError(f"label {self.column!r}: a value contains the separator {self.separator!r}")
        return self


def _labels_ok(labels: tuple[Label, ...], taken: list[str | None]) -> None:
    cols = [lab.column for lab in labels]
    _unique(cols, "label columns")
    both = [c for c in cols if c in taken]
    if both:
        raise ValueError(f"label column {both[0]!r} is already released in another role")


class VerifyRelease(_Model):
    policy: Literal["verify"]
    claim: ColumnRef
    answer: ColumnRef
    values: tuple[str, ...] = Field(min_length=2)
    absent: str
    labels: tuple[Label, ...] = Field(default=(), max_length=16)

    @model_validator(mode="after")
    def _absent(self) -> VerifyRelease:
        _unique(list(self.values), "verify values")
        if self.absent not in self.values:
            raise ValueError(f"absent answer {self.absent!r} is not one of the values {list(self.values)}")
        _labels_ok(self.labels, [self.claim, self.answer])
        return self


class Measure(_Model):
    name: Name
    fn: Literal["count", "sum", "mean", "quantile", "histogram"]
    column: ColumnRef | None = None
    bounds: tuple[int, int] | None = None  # clamp, in the column's whole units
    q: float | None = Field(default=None, gt=0, lt=1)
    edges: tuple[int, ...] | None = Field(default=None, min_length=2)

    @model_validator(mode="after")
    def _complete(self) -> Measure:
        need = {"sum": ("column", "bounds"), "mean": ("column", "bounds"), "quantile": ("column", "bounds", "q"),
                "histogram": ("column", "edges"), "count": ()}[self.fn]
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"measure {self.name!r} ({self.fn}) needs {', '.join(missing)}")
        _ordered(self.bounds, f"measure {self.name!r}")
        if self.edges is not None and any(a >= b for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"measure {self.name!r}: edges must increase strictly")
        return self


class PostColumn(_Model):
    """A column computed after the noise from a released row's group columns and noisy measures
    (post-processing: it costs no privacy budget), e.g. a flag; text results take declared values."""

    name: Name
    expr: Expression
    values: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=64)
    description: str = ""


class AggregateRelease(_Model):
    policy: Literal["aggregate"]
    group_by: tuple[ColumnRef, ...] = ()
    measures: tuple[Measure, ...] = Field(min_length=1)
    epsilon: float = Field(gt=0, le=10)
    delta: float | None = Field(default=None, ge=0, lt=1e-3)
    min_cell: int = Field(ge=1)
    max_rows_per_unit: int = Field(default=1, ge=1)
    privacy_unit: ColumnRef | None = None
    post: tuple[PostColumn, ...] = Field(default=(), max_length=16)

    @model_validator(mode="after")
    def _names(self) -> AggregateRelease:
        _unique([m.name for m in self.measures] + [c.name for c in self.post], "measure and post column names")
        if sum(m.fn == "count" for m in self.measures) > 1:
            raise ValueError("list at most one count measure")
        return self


class RecordRelease(_Model):
    policy: Literal["record"]
    columns: tuple[ColumnRef, ...] = Field(min_length=1)
    quasi_identifiers: tuple[ColumnRef, ...] = ()
    k: int = Field(ge=2, le=1000)

    @model_validator(mode="after")
    def _qi(self) -> RecordRelease:
        extra = [c for c in self.quasi_identifiers if c not in self.columns]
        if extra:
            raise ValueError(f"quasi_identifiers {', '.join(extra)} are not among the columns released")
        return self


class ModelRelease(_Model):
    policy: Literal["model"]
    score: ColumnRef
    key: ColumnRef | None = None
    bounds: Bounds | None = None
    labels: tuple[Label, ...] = Field(default=(), max_length=16)

    @model_validator(mode="after")
    def _bounds(self) -> ModelRelease:
        _ordered(self.bounds, "model score")
        _labels_ok(self.labels, [self.score, self.key])
        return self


Release = Annotated[VerifyRelease | AggregateRelease | RecordRelease | ModelRelease, Field(discriminator="policy")]


class OutputSpec(_Model):
    name: Name
    description: str = ""
    release: Release


class JobSpec(_Model):
    """A whole job: what it reads, how rows flow, what it releases under which policy."""

    spec_version: Literal[1]
    name: Name
    title: str = ""
    description: str = ""
    params: dict[Name, ParamSpec] = Field(default_factory=dict)
    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    steps: tuple[Step, ...] = ()
    outputs: tuple[OutputSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> JobSpec:
        _unique([i.name for i in self.inputs], "input aliases (give each input read twice its own alias)")
        _unique([o.name for o in self.outputs], "output names")
        return self

    def input(self, alias: str) -> InputSpec:
        for i in self.inputs:
            if i.name == alias:
                return i
        raise KeyError(alias)


# --- loading ---------------------------------------------------------------------------------
class _SpecLoader(yaml.SafeLoader):
    """Safe YAML without YAML 1.1 surprises: yes/no/on/off stay text, dates stay text, keys stay unique.

    Aliases (*name) are refused: a few nested ones make a tiny file expand into billions of nodes.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed "
                            f"in a spec; write the value out")
        return super().compose_node(parent, index)


_SpecLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))


def _mapping(loader: _SpecLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            raise SpecError(f"line {k_node.start_mark.line + 1}: a key must be a name, not a list or mapping")
        if key in out:
            raise SpecError(f"line {k_node.start_mark.line + 1}: key {key!r} appears twice; keep one")
        out[key] = loader.construct_object(v_node, deep=True)
    return out


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SpecError(f"key {dup[0]!r} appears twice in one object; keep one")
    return dict(pairs)


def parse_text(text: str | bytes, *, fmt: Literal["json", "yaml"] | None = None) -> Any:
    """Read JSON or YAML text (JSON when `fmt` says so or the text starts with '{')."""
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(f"the spec is {len(text)} bytes; the limit is {MAX_SPEC_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"the spec is not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {len(text)} characters; the limit is {MAX_SPEC_BYTES}")
    if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            raise SpecError(f"the spec is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                            details={"line": exc.lineno, "column": exc.colno}) from None
        except RecursionError:
            raise SpecError("the spec nests too deeply") from None
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "it cannot be read"
        raise SpecError(f"the spec is not valid YAML: {problem}{where}") from None
    except RecursionError:
        raise SpecError("the spec nests too deeply") from None


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the spec)"


def schema_errors(document: Any) -> list[str]:
    """Every way `document` breaks the JSON Schema, as 'where: what' lines, most specific first."""
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    out = []
    for e in errors:
        msg = e.message
        if e.validator == "type" and isinstance(e.instance, bool):
            msg += " (YAML reads unquoted true/false as booleans; quote the text)"
        elif e.validator == "additionalProperties":
            allowed = sorted((e.schema.get("properties") or {}).keys())
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif e.validator in ("minProperties", "maxProperties") and "join" in (e.schema.get("properties") or {}):
            msg = "each step has exactly one of join, filter, derive, summarize"
        out.append(f"{_path(e.absolute_path)}: {msg}")
    return list(dict.fromkeys(out))


def load_spec(source: str | bytes | Path | dict[str, Any], *, fmt: Literal["json", "yaml"] | None = None) -> JobSpec:
    """Read and validate a spec from JSON/YAML text, a file path or a parsed mapping; raise SpecError."""
    if isinstance(source, Path):
        fmt = fmt or ("json" if source.suffix.lower() == ".json" else "yaml")
        source = source.read_bytes()
    document = source if isinstance(source, dict) else parse_text(source, fmt=fmt)
    problems = schema_errors(document)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SpecError(f"the spec does not follow the job spec schema: {shown}", details={"problems": problems})
    try:
        return JobSpec.model_validate(document)
    except ValidationError as exc:
        problems = [f"{_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise SpecError(f"the spec is inconsistent: {'; '.join(problems[:5])}",
                        details={"problems": problems}) from None


def write_json_schema(path: Path | str) -> Path:
    """Write the published JSON Schema to `path` (for editors and the API docs)."""
    path = Path(path)
    path.write_text(json.dumps(JSON_SCHEMA, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
