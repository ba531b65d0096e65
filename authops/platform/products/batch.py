"""Batch delivery: a customer's CSV of subjects answered by a job into a result file.

Upload (`submit`, one transaction): the product is registered and the customer holds an active
usage agreement (refusals audited) → the CSV is checked whole (a `subject` column; any other
column names a verify output and holds claimed values; every line checked, the first problems
named by line and column; nothing is kept from a refused upload) → stored sealed in the object
store → a `products.batch` job.

The job (`run_batch`): each line answered from the product's current answer set as a call would
be; for a personal-information product each subject's consent is checked (guard_call, which
audits each refusal) and a refused subject is a line with status `refused` and the refusal code,
never dropped; the result CSV (row, subject as the customer gave it, status, refusal, answer as
JSON) is sealed in the object store; one usage record per batch, for the answered lines
(idempotency key `batch-<id>`, so a re-run after a crash never charges twice).

The result is readable only by the customer that uploaded it (others: 404) until it expires
(RESULT_DAYS after delivery: then 410, and `sweep_expired` deletes the object).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.billing import metering
from authops.core.clock import show, utcnow
from authops.core.errors import AuthopsError, Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job, JobState
from authops.core.jobs.registry import JobContext, job_handler
from authops.core.settings import Settings, get_settings
from authops.core.storage.store import get_object_store
from authops.platform.governance.models import Product
from authops.platform.governance.products import guard_call, guard_use
from authops.platform.products import calls, serving, uploads
from authops.platform.products.models import ProductBatch
from authops.products.runtime import answers as rt
from authops.products.runtime import idempotency
from authops.products.runtime import shaping

KIND = "products.batch"
RESULT_DAYS = 7
MAX_ROWS = 100_000
MAX_BYTES = 10 * 1024 * 1024
CSV_TYPE = "text/csv; charset=utf-8"


class Gone(AuthopsError):
    status_code = 410
    code = "expired"



def parse(meta: rt.AnswerMeta, data: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    """(claim columns, rows {line, subject, claims}) or InvalidInput naming the first problems."""
    header, reader = uploads.csv_lines(data, MAX_BYTES)
    if "subject" not in header:
        raise InvalidInput("the CSV needs a header line with a 'subject' column (and, for a verify product, "
                           "optionally one column per output holding the claimed value)", details={"field": "file"})
    claim_cols = [h for h in header if h != "subject"]
    for h in claim_cols:
        if meta.kind != "verify" or meta.output(h) is None:
            known = ", ".join(o.name for o in meta.outputs) if meta.kind == "verify" else "none (a score product)"
            raise InvalidInput(f"column {h!r} is not a claimable output of {meta.product}; claimable: {known}",
                               details={"field": "file", "column": h})
    rows, problems = [], []
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"line {line}: {len(values)} values for {len(header)} columns")
            continue
        rec = dict(zip(header, (v.strip() for v in values)))
        try:
            subject = calls.check_subject(rec["subject"])
            claims = shaping.check_claims(meta, {c: rec[c] for c in claim_cols if rec[c]})
        except InvalidInput as exc:
            problems.append(f"line {line}: {exc.message}")
            continue
        rows.append({"line": line, "subject": subject, "claims": claims})
        if len(rows) > MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} subjects per batch", details={"field": "file"})
    if problems:
        raise InvalidInput(f"{len(problems)} line(s) to fix: " + "; ".join(problems[:5])
                           + ("; …" if len(problems) > 5 else ""), details={"field": "file", "problems": problems[:50]})
    if not rows:
        raise InvalidInput("the CSV lists no subjects", details={"field": "file"})
    return claim_cols, rows


def _admit(session: Session, p: Product, customer: int, who: audit_log.Actor, settings: Settings) -> None:
    """Registered and under an active agreement (the per-subject consent is checked by the job)."""
    if not p.needs_consent:
        guard_call(session, customer_org_id=customer, product_id=p.id, actor=who, settings=settings)
        return
    guard_use(session, p, customer, who, channel="batch")


def submit(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, code: str,
           data: bytes, filename: str = "", purpose: str | None = None,
           idempotency_key: str | None = None) -> tuple[ProductBatch, Job | None]:
    """Check and queue a batch; dispatch the job after the session commits.

    With an Idempotency-Key, a submission the customer made before under the same key with the same
    product, purpose and file is that batch again: (batch, None), nothing new queued, nothing charged
    twice; the same key with anything else is 409 idempotency_conflict."""
    who = audit_log.as_actor(principal)
    purpose = calls.check_purpose(purpose)
    ikey = idempotency.check_key(idempotency_key)
    p = calls.visible_product(session, code, who.org_id)
    digest = hashlib.sha256(json.dumps([p.code, purpose], ensure_ascii=False).encode() + b"\n" + data).hexdigest()
    if ikey is not None:
        before = _submitted(session, who.org_id, ikey)
        if before is not None:
            return _again(session, who, before, digest, ikey), None
    _admit(session, p, who.org_id, who, settings)
    loaded = serving.answers(session, settings, p.id, p.code)
    _, rows = parse(loaded.lookup.meta, data)
    key = f"products/batches/{p.code}/{secrets.token_hex(8)}/input.csv"
    get_object_store(settings).put(key, data, content_type=CSV_TYPE)
    b = ProductBatch(product_id=p.id, customer_org_id=who.org_id, purpose=purpose, filename=(filename or "")[:200],
                     subjects=len(rows), input_object_key=key, created_by=who.name[:200], idempotency_key=ikey,
                     request_sha256=digest)
    try:
        with session.begin_nested():  # a concurrent submission under the same key may commit first
            session.add(b)  # added inside: the savepoint's rollback takes it out again
            session.flush()
    except IntegrityError:
        before = _submitted(session, who.org_id, ikey) if ikey is not None else None
        if before is None:
            raise
        get_object_store(settings).delete(key, missing_ok=True)  # this copy of the file is nobody's
        return _again(session, who, before, digest, ikey), None
    job = job_service.create_job(session, kind=KIND, params={"batch_id": b.id}, org_id=who.org_id, max_attempts=3)
    b.job_id = job.id
    session.add(b)
    audit_log.record(session, who, "product.batch.submit", object_type="product_batch", object_id=b.id, rows=len(rows),
                     details={"code": p.code, "job_id": job.id, "subjects": len(rows)})
    session.flush()
    return b, job


def _submitted(session: Session, customer_org_id: int | None, key: str) -> ProductBatch | None:
    return session.exec(select(ProductBatch).where(ProductBatch.customer_org_id == customer_org_id,
                                                   ProductBatch.idempotency_key == key)).first()


def _again(session: Session, who: audit_log.Actor, b: ProductBatch, digest: str, key: str) -> ProductBatch:
    if b.request_sha256 != digest:
        raise calls.IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for batch {b.id} with another product, purpose or file; "
            "send a new key for a new batch", details={"field": idempotency.HEADER, "batch_id": b.id})
    audit_log.record(session, who, "product.batch.submit.replay", object_type="product_batch", object_id=b.id,
                     details={"job_id": b.job_id})
    return b


def get_batch(session: Session, batch_id: int, *, code: str | None = None, org_id: int | None = None) -> ProductBatch:
    b = session.get(ProductBatch, batch_id)
    if b is None or (org_id is not None and b.customer_org_id != org_id):
        raise NotFound(f"no batch {batch_id}")
    if code is not None:
        p = session.get(Product, b.product_id)
        if p is None or p.code != code:
            raise NotFound(f"no batch {batch_id} of product {code!r}")
    return b


def _state(session: Session, b: ProductBatch, at: datetime | None = None) -> str:
    if b.state == "queued" and b.job_id is not None:
        job = session.get(Job, b.job_id)
        if job is not None and job.state in (JobState.FAILED.value, JobState.CANCELLED.value):
            return "failed"
        if job is not None and job.state == JobState.RUNNING.value:
            return "running"
    if b.state == "done" and b.expires_at is not None and b.expires_at <= (at or utcnow()):
        return "expired"
    return b.state


def view(session: Session, b: ProductBatch) -> dict[str, Any]:
    p = session.get(Product, b.product_id)
    return {"id": b.id, "product": p.code if p else None, "state": _state(session, b), "job_id": b.job_id,
            "filename": b.filename, "subjects": b.subjects, "answered": b.answered, "refused": b.refused,
            "not_found": b.not_found, "amount_fen": b.amount_fen, "answer_set": b.answer_set_version,
            "created_at": b.created_at, "finished_at": b.finished_at, "expires_at": b.expires_at,
            "expires_at_local": show(b.expires_at) if b.expires_at else None}


def read_result(session: Session, settings: Settings, b: ProductBatch, *,
                principal: Principal | audit_log.Actor) -> bytes:
    """The result CSV for its customer (callers resolve `b` with org_id, so others got 404)."""
    state = _state(session, b)
    if state == "expired":
        raise Gone(f"the result of batch {b.id} expired on {show(b.expires_at)}; upload the list again",
                   details={"batch": b.id})
    if state != "done" or not b.result_object_key:
        raise Conflict(f"batch {b.id} is {state}; its result is not ready", code="not_ready",
                       details={"batch": b.id, "state": state})
    data = get_object_store(settings).get(b.result_object_key)
    audit_log.record(session, audit_log.as_actor(principal), "product.batch.download", object_type="product_batch",
                     object_id=b.id, rows=b.subjects, bytes=len(data))
    return data


@job_handler(KIND)
def run_batch(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    settings = get_settings()
    b = session.get(ProductBatch, int(job.params["batch_id"]))
    if b is None:
        raise NotFound(f"no batch {job.params['batch_id']}")
    p = session.get(Product, b.product_id)
    who = audit_log.Actor(kind="system", name=f"job {job.id}", org_id=b.customer_org_id)
    store = get_object_store(settings)
    loaded = serving.answers(session, settings, p.id, p.code)
    meta = loaded.lookup.meta
    _, rows = parse(meta, store.get(b.input_object_key))
    ctx.progress(0.1, f"answering {len(rows)} subjects")
    blanket: str | None = None  # a product without personal information: one check for the whole batch
    agreement_number: str | None = None
    if not p.needs_consent:
        try:
            agreement_number = guard_call(session, customer_org_id=b.customer_org_id, product_id=p.id, actor=who,
                                          settings=settings)["agreement"]
        except AuthopsError as exc:
            blanket = exc.code
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["row", "subject", "status", "refusal", "answer"])
    answered = refused = not_found = 0
    for i, r in enumerate(rows):
        refusal = blanket
        if refusal is None and p.needs_consent:
            try:
                agreement_number = guard_call(session, customer_org_id=b.customer_org_id, product_id=p.id,
                                              subject_id=r["subject"], purpose=b.purpose, actor=who,
                                              settings=settings)["agreement"]
            except AuthopsError as exc:
                refusal = exc.code
        if refusal is not None:
            refused += 1
            w.writerow([r["line"], r["subject"], "refused", refusal, ""])
            continue
        row = loaded.lookup.get(rt.subject_digest(loaded.key, r["subject"]))
        answer = shaping.shape_answer(meta, row, r["claims"])
        answered += 1
        not_found += int(not shaping.is_found(answer))
        w.writerow([r["line"], r["subject"], "answered", "", json.dumps(answer, ensure_ascii=False,
                                                                         separators=(",", ":"))])
        if i % 5000 == 4999:
            ctx.progress(0.1 + 0.8 * i / len(rows), f"{i + 1} of {len(rows)} answered or refused")
    data = out.getvalue().encode("utf-8")
    # one key per attempt: a stale attempt resuming after another committed never overwrites its result
    key = b.input_object_key.rsplit("/", 1)[0] + f"/result-{job.id}-{ctx.lease_token[:16]}.csv"
    store.put(key, data, content_type=CSV_TYPE)
    amount = 0
    idem = f"batch-{b.id}"
    if answered and agreement_number is not None and metering.find(session, b.customer_org_id, idem) is None:
        a = calls.agreement_of(session, agreement_number)
        method, price = calls.price_of(a)
        rec = metering.meter(session, customer_org_id=b.customer_org_id, product_id=p.id, agreement_id=a.id,
                             request_id=calls.new_request_id(), pricing_method=method, price_fen=price,
                             units=answered, channel="batch", idempotency_key=idem,
                             response={"batch_id": b.id, "answered": answered, "refused": refused})
        amount = rec.amount_fen
    now = utcnow()
    b.state, b.result_object_key, b.finished_at = "done", key, now
    b.expires_at = now + timedelta(days=RESULT_DAYS)
    b.answered, b.refused, b.not_found, b.amount_fen = answered, refused, not_found, amount
    b.answer_set_version = loaded.version
    session.add(b)
    audit_log.record(session, who, "product.batch.deliver", object_type="product_batch", object_id=b.id,
                     subjects=len(rows), details={"code": p.code, "answered": answered, "refused": refused,
                                                  "not_found": not_found, "amount_fen": amount,
                                                  "answer_set": loaded.version})
    session.flush()
    return {"batch_id": b.id, "answered": answered, "refused": refused, "not_found": not_found}


def sweep_expired(settings: Settings | None = None, at: datetime | None = None) -> int:
    """Delete the result files of expired batches (maintenance); how many were deleted."""
    from authops.core.db import session_scope

    settings = settings or get_settings()
    now = at or utcnow()
    n = 0
    with session_scope(settings) as session:
        for b in session.exec(select(ProductBatch).where(ProductBatch.state == "done",
                                                         ProductBatch.expires_at <= now)):
            if b.result_object_key:
                get_object_store(settings).delete(b.result_object_key, missing_ok=True)
            b.state = "expired"
            b.result_object_key = None
            session.add(b)
            audit_log.record(session, audit_log.SYSTEM, "product.batch.expire", object_type="product_batch",
                             object_id=b.id)
            n += 1
    return n

