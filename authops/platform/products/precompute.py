"""Precomputed answers: a registered product's per-subject outputs, built in the trusted worker.

`products.precompute` (job handler):
    the product's spec is planned as a sandbox job is → each input's current dataset decrypted
    into a private tmpfs folder → the spec run by the engine (polars, streaming) → each output
    through the release gate (verify: every subject of the output answered as a claim; model: every
    subject scored, clamped and rounded), in chunks of the gate's claim limit → an answer table
    keyed by a per-product keyed digest of each subject (no raw ID), sealed in the object store
    → an AnswerSet row (version, rows, sources: the dataset ids and versions read).
    The object, the row and the audit event commit with the job; a re-run after a crash writes a
    new object under the same version key, so nothing is served twice or half-built.

`refresh_due(settings)` (maintenance): enqueues the first build of every registered product that
serves per-subject answers and a rebuild of every one whose sources have a newer dataset than its
current answer set was built from, at most one queued or running build per product.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import crypto
from authops.core.clock import to_shanghai, utcnow
from authops.core.errors import Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job, JobState
from authops.core.jobs.registry import JobContext, job_handler
from authops.core.settings import Settings, get_settings
from authops.core.storage.store import get_object_store
from authops.platform.governance.models import Product
from authops.platform.products.models import AnswerSet
from authops.platform.sandbox import jobs as sandbox_jobs
from authops.products.runtime import answers as rt
from authops.sandbox import gate

log = logging.getLogger(__name__)

KIND = "products.precompute"
CHUNK = gate.MAX_CLAIMS
CONTENT_TYPE = "application/vnd.apache.parquet"


def serving_key(settings: Settings, product_code: str) -> bytes:
    """The product's key for subject digests in its answer table (derived from the platform secret;
    distinct from the consent pseudonym key and from every other product's)."""
    master = hashlib.sha256(settings.secret_key.get_secret_value().encode()).digest()
    return crypto.derive_key(master, f"products/serving/{product_code}")


def object_key(product_code: str, version: int) -> str:
    """A fresh key per build: two racing builds of one version never overwrite each other's object."""
    return f"products/answers/{product_code}/v{version}-{secrets.token_hex(6)}.parquet"


# --- reading --------------------------------------------------------------------------------------

def current(session: Session, product_id: int) -> AnswerSet | None:
    """The answer set served now: the product's highest version."""
    return session.exec(select(AnswerSet).where(AnswerSet.product_id == product_id)
                        .order_by(AnswerSet.version.desc()).limit(1)).first()


def view(a: AnswerSet) -> dict[str, Any]:
    return {"version": a.version, "rows": a.rows, "built_at": a.built_at, "sources": a.sources}


# --- enqueueing -----------------------------------------------------------------------------------

def _pending(session: Session, product_id: int) -> Job | None:
    rows = session.exec(select(Job).where(Job.kind == KIND, Job.state.in_([JobState.QUEUED.value,
                                                                           JobState.RUNNING.value]))
                        .order_by(Job.id.desc()))
    return next((j for j in rows if int(j.params.get("product_id", 0)) == product_id), None)


def enqueue(session: Session, product: Product, *, actor: audit_log.Actor | Principal | None = None,
            params: dict[str, Any] | None = None, reason: str = "requested") -> Job:
    """Queue a build of the product's answer set (or return the one already queued or running).

    `params` are the spec's parameters for serving; missing ones come from the product's
    registered test parameters, then the spec's defaults, and a date parameter without either
    is today (Asia/Shanghai). Dispatch the job after the session commits."""
    if product.state != "registered":
        raise Conflict(f"product {product.code} is {product.state}; only registered products are served")
    policies = sorted({(o.get("release") or {}).get("policy") for o in (product.spec or {}).get("outputs", [])})
    if not policies or any(p not in rt.SERVED_POLICIES for p in policies):
        raise InvalidInput(f"product {product.code} releases {', '.join(map(str, policies)) or 'nothing'}; "
                           "precomputed per-subject answers serve verify and model products",
                           details={"field": "spec"})
    existing = _pending(session, product.id)
    if existing is not None:
        return existing
    who = actor if isinstance(actor, audit_log.Actor) else (audit_log.Actor.of(actor) if actor else
                                                             audit_log.Actor(kind="system", name="precompute"))
    job = job_service.create_job(session, kind=KIND, org_id=product.operator_org_id, max_attempts=3,
                                 params={"product_id": product.id, "params": dict(params or {}), "reason": reason})
    audit_log.record(session, who, "product.precompute.enqueue", object_type="product", object_id=product.id,
                     details={"code": product.code, "job_id": job.id, "reason": reason})
    return job


def sources_of(session: Session, planned: sandbox_jobs.Planned) -> dict[str, dict[str, int]]:
    out = {}
    for inp in planned.inputs.values():
        ds = sandbox_jobs._dataset(session, inp.resource, inp.version)
        out[inp.resource] = {"dataset_id": ds.id, "version": ds.version, "schema_version": ds.schema_version}
    return out


def stale(session: Session, product: Product, built: AnswerSet | None = None) -> list[str]:
    """The resources with a newer dataset than the product's current answer set was built from."""
    built = built or current(session, product.id)
    if built is None:
        return []
    planned = sandbox_jobs.Planned(session, "spec", product.spec, None)
    now = sources_of(session, planned)
    return sorted(r for r, s in now.items() if (built.sources.get(r) or {}).get("dataset_id") != s["dataset_id"])


def _served(product: Product) -> bool:
    policies = {(o.get("release") or {}).get("policy") for o in (product.spec or {}).get("outputs", [])}
    return bool(policies) and policies <= set(rt.SERVED_POLICIES)


def refresh_due(settings: Settings | None = None) -> list[int]:
    """Enqueue (and dispatch) a build of every registered served product that has no answer set yet
    (its first build, with its registered test parameters) and a rebuild of every one whose sources
    were updated; the job ids."""
    from authops.core.db import session_scope

    settings = settings or get_settings()
    queued: list[int] = []
    with session_scope(settings) as session:
        for p in session.exec(select(Product).where(Product.state == "registered").order_by(Product.id)):
            if not _served(p) or _pending(session, p.id) is not None:
                continue
            built = current(session, p.id)
            try:
                changed = stale(session, p, built) if built is not None else ["first build"]
            except Exception:  # noqa: BLE001 - a product whose spec no longer plans must not stop the others
                log.exception("cannot check the sources of product %s", p.code)
                continue
            if changed:
                reason = "first build" if built is None else "source updated: " + ", ".join(changed)
                job = enqueue(session, p, params=built.params if built is not None else None, reason=reason)
                queued.append(job.id)
    if queued:
        job_service.dispatch_pending(settings, job_ids=queued)
    return queued


# --- building -------------------------------------------------------------------------------------

def spec_params(product: Product, planned: sandbox_jobs.Planned, given: dict[str, Any]) -> dict[str, Any]:
    declared = planned.spec.params
    tested = dict((product.self_review or {}).get("test_params") or {})
    out: dict[str, Any] = {}
    for name, p in declared.items():
        if name in given:
            out[name] = given[name]
        elif name in tested:
            out[name] = tested[name]
        elif p.default is None and str(getattr(p.type, "value", p.type)) == "date":
            out[name] = to_shanghai(utcnow()).date().isoformat()
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidInput(f"unknown parameter {unknown[0]!r}", details={"field": "params"})
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in out.items()}


def _label_specs(o) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    labels = tuple(getattr(o.release, "labels", ()) or ())
    names = tuple(o.roles.get("labels", ()) or ())
    return names, tuple(getattr(lab, "separator", None) for lab in labels)[:len(names)]


def _output_meta(o) -> rt.OutputMeta:
    r = o.release
    labels, seps = _label_specs(o)
    if o.policy == "verify":
        return rt.OutputMeta(name=o.name, policy="verify", values=tuple(r.values), absent=r.absent,
                             labels=labels, separators=seps)
    return rt.OutputMeta(name=o.name, policy="model", labels=labels, separators=seps,
                         bounds=(float(r.bounds[0]), float(r.bounds[1])) if r.bounds else None)


def _answers(o, table: pa.Table, token_key: bytes, fields) -> tuple[list[str], dict[str, list[Any]]]:
    """Every subject of the output and its released answer (and labels), through the gate in chunks."""
    key_col = o.roles["claim"][0] if o.policy == "verify" else (o.roles.get("key") or [None])[0]
    if key_col is None:
        raise sandbox_jobs.JobFailed(f"outputs[{o.name}] has no key column: a per-subject answer needs one")
    labels, _ = _label_specs(o)
    subjects = [s for s in pc.unique(table.column(key_col).cast(pa.string())).to_pylist() if s is not None]
    keys: list[str] = []
    values: dict[str, list[Any]] = {o.name: [], **{f"{o.name}.{lab}": [] for lab in labels}}
    for start in range(0, len(subjects), CHUNK):
        claims = subjects[start:start + CHUNK]
        released = gate.release(o, table, token_key=token_key, fields=fields, claims=claims)
        got = released.table
        keys.extend(got.column("claim").to_pylist())
        values[o.name].extend(got.column("answer" if o.policy == "verify" else "score").to_pylist())
        for lab in labels:
            if lab not in got.column_names:
                raise sandbox_jobs.JobFailed(f"outputs[{o.name}]: the release gate released no label {lab!r}")
            values[f"{o.name}.{lab}"].extend(got.column(lab).cast(pa.string()).to_pylist())
    return keys, values


def build(session: Session, settings: Settings, product: Product, params: dict[str, Any],
          ctx: JobContext | None = None) -> tuple[pa.Table, dict[str, Any], dict[str, Any]]:
    """(answer table without its version, the sources read, a summary): the slow part, no writes."""
    def progress(f: float, m: str) -> None:
        if ctx is not None:
            ctx.progress(f, m)

    planned = sandbox_jobs.Planned(session, "spec", product.spec, None)
    values = spec_params(product, planned, params)
    planned.plan.bind(values)
    for o in planned.outputs.values():
        if o.policy not in rt.SERVED_POLICIES:
            raise sandbox_jobs.JobFailed(f"outputs[{o.name}] is a {o.policy} output; precomputed answers serve "
                                         "verify and model outputs")
    sources = sources_of(session, planned)
    key = serving_key(settings, product.code)
    token_key = sandbox_jobs.token_key(settings, product.partner_org_id, product.workspace_id or 0)
    per_output: dict[str, dict[bytes, int]] = {}  # output -> digest -> row of its answers
    answers: dict[str, list[Any]] = {}
    with sandbox_jobs.private_folder("authops-job-") as folder:
        progress(0.05, "decrypting inputs")
        inputs = sandbox_jobs._decrypt_inputs(session, settings, planned, folder, project=False)
        dummy = _NullContext() if ctx is None else ctx
        produced = sandbox_jobs._run_spec(planned, inputs, values, folder, dummy)
        progress(0.7, "release gate")
        for name, o in planned.outputs.items():
            table = pq.read_table(produced[name])
            subjects, got = _answers(o, table, token_key, planned.fields)
            digests = [rt.subject_digest(key, s) for s in subjects]
            index = {d: i for i, d in enumerate(digests)}
            if len(index) != len(digests):
                raise sandbox_jobs.JobFailed(f"outputs[{name}]: two subjects are the same once spaces and case "
                                             "are ignored; summarize by the normalised key first")
            per_output[name] = index
            answers.update(got)
    all_keys = sorted(set().union(*per_output.values())) if per_output else []
    metas = tuple(_output_meta(planned.outputs[n]) for n in planned.outputs)
    columns: dict[str, list[Any]] = {}
    for m_ in metas:
        index = per_output[m_.name]
        for col in m_.columns():
            src = answers[col]
            columns[col] = [src[index[k]] if k in index else None for k in all_keys]
    meta = rt.AnswerMeta(product=product.code, version=0, outputs=metas)
    table = rt.build_table(meta, all_keys, columns)
    summary = {"outputs": {m_.name: {"policy": m_.policy, "rows": len(per_output[m_.name])} for m_ in metas},
               "spec_name": planned.name}
    return table, sources, {"params": values, **summary}


class _NullContext:
    def progress(self, fraction: float, message: str = "") -> None:  # noqa: D401 - a stand-in
        return None


def store(session: Session, settings: Settings, product: Product, table: pa.Table, sources: dict[str, Any],
          summary: dict[str, Any], *, job_id: int | None = None, actor: audit_log.Actor | None = None) -> AnswerSet:
    """Seal the table as the product's next version and record it (flushes; the caller commits)."""
    last = current(session, product.id)
    version = (last.version if last else 0) + 1
    meta = rt.meta_of(table)
    meta = rt.AnswerMeta(product=meta.product, version=version, outputs=meta.outputs,
                         extra={"built_at": utcnow().isoformat()})
    table = table.replace_schema_metadata({rt.META_KEY: meta.to_json()})
    key = object_key(product.code, version)
    get_object_store(settings).put(key, rt.table_bytes(table), content_type=CONTENT_TYPE)
    a = AnswerSet(product_id=product.id, version=version, rows=table.num_rows, object_key=key, sources=sources,
                  params=summary.get("params", {}), summary={k: v for k, v in summary.items() if k != "params"},
                  job_id=job_id)
    session.add(a)
    session.flush()
    from authops.platform.products import serving

    serving.CACHE.recheck(product.id)  # (commit follows; another process sees it within check_seconds)
    audit_log.record(session, actor or audit_log.Actor(kind="system", name="precompute"), "product.precompute",
                     object_type="product", object_id=product.id, rows=a.rows,
                     details={"code": product.code, "version": version, "job_id": job_id,
                              "sources": {r: s["dataset_id"] for r, s in sources.items()}})
    return a


def precompute_now(session: Session, settings: Settings, product: Product, params: dict[str, Any] | None = None,
                   *, job_id: int | None = None, ctx: JobContext | None = None) -> AnswerSet:
    """Build and store an answer set in this process (the job handler's body; also for the demo)."""
    if product.state != "registered":
        raise Conflict(f"product {product.code} is {product.state}; only registered products are served")
    table, sources, summary = build(session, settings, product, dict(params or {}), ctx)
    return store(session, settings, product, table, sources, summary, job_id=job_id,
                 actor=audit_log.Actor(kind="system", name=f"job {job_id}" if job_id else "precompute",
                                       org_id=product.operator_org_id))


@job_handler(KIND)
def run_precompute(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    settings = get_settings()
    product = session.get(Product, int(job.params["product_id"]))
    if product is None:
        raise NotFound(f"no product {job.params['product_id']}")
    a = precompute_now(session, settings, product, job.params.get("params") or {}, job_id=job.id, ctx=ctx)
    return {"product": product.code, "version": a.version, "rows": a.rows}
