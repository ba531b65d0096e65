"""Joint modelling: a customer's own labels, a model trained inside the domain, a score only it can call.

Upload (`submit`, one transaction): the base product (default bank_credit_assessment, whose public
data the features come from) is registered and the customer holds an active usage agreement for it
(refusals audited) → the CSV `uscc,label` is checked whole (every line: a valid USCC check digit,
label 0 or 1, no USCC twice; the problems named by line and field; at least MIN_LABELS labels and
MIN_CLASS of each class) → the labels sealed in the object store keyed by the model's keyed subject
digests (the raw USCCs are not kept) → a `products.joint_train` job. A refused upload stores nothing.

Training (`products.joint_train`, in the trusted worker): the base product's spec runs on the
sandbox engine with its output replaced by every per-subject column of its flow (the counts and
flags behind the product's score, decrypted into a private tmpfs folder as precompute does) → the
subjects' digests joined with the labels → a deterministic stratified 70/30 split → logistic
regression on the training side → AUC, KS and accuracy on the holdout for the model and, on the
same holdout, for the base product's own score (the label-free baseline) → the coefficients and
every subject's score (0-100, higher = safer, and grade A-E) sealed in the object store. What the
row keeps: counts, metrics, the feature names. Fewer than MIN_LABELS matched labels or MIN_CLASS
of a class: the job fails saying so, and nothing is stored.

Scoring (`score`): only the owning customer (others: 404), a ready model, and what a call to the
base product requires (registered, an active usage agreement: `guard_call`) plus the enterprise's
consent to the base product for the call's purpose (for every joint model: a score about one
enterprise for one bank); refusals audited. The answer is a score and a grade, never a label,
a coefficient or a source value.

No function here returns labels, coefficients or the score table to a caller outside this module.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from sqlmodel import Session, select

from authops.audit import log as audit_log
from authops.core import crypto
from authops.core.clock import utcnow
from authops.core.data import identifiers
from authops.core.errors import AuthopsError, Conflict, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job, JobState
from authops.core.jobs.registry import JobContext, job_handler
from authops.core.settings import Settings, get_settings
from authops.core.storage.store import get_object_store
from authops.platform.governance import consent
from authops.platform.governance.models import Product
from authops.platform.governance.products import guard_call, guard_use
from authops.platform.products import calls, precompute, uploads
from authops.platform.products import joint_learn as learn
from authops.platform.products.joint_models import JointModel
from authops.platform.sandbox import jobs as sandbox_jobs
from authops.products.runtime import answers as rt

KIND = "products.joint_train"
DEFAULT_PRODUCT = "bank_credit_assessment"
MIN_LABELS = 200
MIN_CLASS = 30
MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 500_000
MAX_NAME = 200
GRADES = ((85, "A"), (70, "B"), (55, "C"), (40, "D"))
FEATURES_OUTPUT = "features"


class TooFewLabels(InvalidInput):
    code = "too_few_labels"


def model_key(settings: Settings, model_id: int) -> bytes:
    """The model's key for subject digests and its holdout split (from the platform secret)."""
    master = hashlib.sha256(settings.secret_key.get_secret_value().encode()).digest()
    return crypto.derive_key(master, f"products/joint-models/{model_id}")


def grade_of(score: int) -> str:
    return next((g for floor, g in GRADES if score >= floor), "E")


# --- upload ---------------------------------------------------------------------------------------

def parse_labels(data: bytes) -> list[tuple[str, int]]:
    """[(USCC, label)] or InvalidInput naming the lines and fields to fix (nothing is kept)."""
    header, reader = uploads.csv_lines(data, MAX_BYTES, lower=True)
    if header != ["uscc", "label"]:
        raise InvalidInput("the CSV needs the header line 'uscc,label'", details={"field": "file"})
    rows: list[tuple[str, int]] = []
    problems: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != 2:
            problems.append({"line": line, "field": "file", "problem": f"{len(values)} values for 2 columns"})
            continue
        uscc, label = rt.normal_subject(values[0]), values[1].strip()
        found = len(problems)
        if not identifiers.is_uscc(uscc):
            problems.append({"line": line, "field": "uscc", "problem": "not a valid USCC (18 characters, check digit)"})
        elif uscc in seen:
            problems.append({"line": line, "field": "uscc", "problem": f"the same USCC as line {seen[uscc]}"})
        else:
            seen[uscc] = line
        if label not in ("0", "1"):
            problems.append({"line": line, "field": "label", "problem": "the label is 0 or 1"})
        if len(problems) == found:
            rows.append((uscc, int(label)))
        if len(rows) > MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} labels", details={"field": "file"})
    if problems:
        shown = "; ".join(f"line {p['line']} {p['field']}: {p['problem']}" for p in problems[:5])
        raise InvalidInput(f"{len(problems)} problem(s) to fix, nothing was stored: {shown}"
                           + ("; …" if len(problems) > 5 else ""),
                           details={"field": problems[0]["field"], "line": problems[0]["line"],
                                    "problems": problems[:50]})
    check_counts(len(rows), sum(y for _, y in rows), "the file")
    return rows


def check_counts(n: int, positives: int, what: str) -> None:
    """Small-cell protection: enough labels, and enough of each class, to train and evaluate."""
    if n < MIN_LABELS:
        raise TooFewLabels(f"{what} has {n} labels; a model needs at least {MIN_LABELS}",
                           details={"field": "file", "rule": "min_labels", "minimum": MIN_LABELS})
    if min(positives, n - positives) < MIN_CLASS:
        raise TooFewLabels(f"{what} has {positives} labels 1 and {n - positives} labels 0; each class needs at "
                           f"least {MIN_CLASS}", details={"field": "file", "rule": "min_class", "minimum": MIN_CLASS})


def _labels_table(settings: Settings, model_id: int, rows: list[tuple[str, int]]) -> bytes:
    key = model_key(settings, model_id)
    table = pa.table({"digest": pa.array([rt.subject_digest(key, u) for u, _ in rows], pa.binary()),
                      "label": pa.array([y for _, y in rows], pa.int8())})
    return rt.table_bytes(table)


def submit(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, name: str,
           data: bytes, product_code: str | None = None) -> tuple[JointModel, Job]:
    """Check and store a customer's labels and queue the training; dispatch the job after the commit."""
    who = audit_log.as_actor(principal)
    if who.org_id is None:
        raise InvalidInput("joint models belong to an organisation")
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name is 1 to {MAX_NAME} characters", details={"field": "name"})
    p = calls.visible_product(session, product_code or DEFAULT_PRODUCT, who.org_id)
    guard_use(session, p, who.org_id, who, channel="joint_model")
    _features_spec(p)  # a base product whose spec yields no per-subject score is refused before anything is stored
    rows = parse_labels(data)
    m = JointModel(customer_org_id=who.org_id, product_id=p.id, name=name, labels=len(rows),
                   positives=sum(y for _, y in rows), labels_object_key="", created_by=who.name[:200])
    session.add(m)
    session.flush()
    m.labels_object_key = f"products/joint/{m.id}/labels-{secrets.token_hex(6)}.parquet"
    get_object_store(settings).put(m.labels_object_key, _labels_table(settings, m.id, rows),
                                   content_type="application/vnd.apache.parquet")
    job = job_service.create_job(session, kind=KIND, params={"model_id": m.id}, org_id=who.org_id, max_attempts=2)
    m.job_id = job.id
    session.add(m)
    audit_log.record(session, who, "product.joint.upload", object_type="joint_model", object_id=m.id,
                     rows=len(rows), details={"product": p.code, "job_id": job.id, "labels": len(rows)})
    session.flush()
    return m, job


# --- reading --------------------------------------------------------------------------------------

def get_model(session: Session, model_id: int, *, org_id: int | None = None) -> JointModel:
    """The model; with org_id, only that customer's (another's answers 404, like a missing one)."""
    m = session.get(JointModel, model_id)
    if m is None or (org_id is not None and m.customer_org_id != org_id):
        raise NotFound(f"no joint model {model_id}")
    return m


def list_models(session: Session, org_id: int) -> list[JointModel]:
    return list(session.exec(select(JointModel).where(JointModel.customer_org_id == org_id)
                             .order_by(JointModel.id.desc())))


def state_of(session: Session, m: JointModel) -> tuple[str, str | None]:
    """(queued | running | ready | failed, the failure's message)."""
    if m.state == "queued" and m.job_id is not None:
        job = session.get(Job, m.job_id)
        if job is not None and job.state in (JobState.FAILED.value, JobState.CANCELLED.value):
            return "failed", job.error_message
        if job is not None and job.state == JobState.RUNNING.value:
            return "running", None
    return m.state, None


def view(session: Session, m: JointModel) -> dict[str, Any]:
    """What anyone allowed to see the model sees: counts, state and metrics; no label, no coefficient."""
    p = session.get(Product, m.product_id)
    state, error = state_of(session, m)
    return {"id": m.id, "name": m.name, "customer_org_id": m.customer_org_id, "product": p.code if p else None,
            "state": state, "error": error, "job_id": m.job_id, "labels": m.labels, "matched": m.matched,
            "scored": m.scored, "features": m.features, "metrics": m.metrics or None,
            "baseline_metrics": m.baseline or None, "created_at": m.created_at, "trained_at": m.trained_at}


# --- training -------------------------------------------------------------------------------------

def _model_release(spec: dict[str, Any]) -> dict[str, Any] | None:
    return next((o["release"] for o in spec.get("outputs", []) if (o.get("release") or {}).get("policy") == "model"),
                None)


def _flow_columns(spec: dict[str, Any]) -> list[str]:
    """The flow's per-subject columns named by its steps (after the last summarize)."""
    cols: list[str] = []
    for step in spec.get("steps", []):
        if "summarize" in step:
            s = step["summarize"]
            cols = list(s.get("by", [])) + [a["name"] for a in s.get("aggregates", [])]
        elif "join" in step:
            cols += [a["name"] for a in step["join"].get("aggregate", [])]
        elif "derive" in step:
            cols.append(step["derive"]["name"])
    return cols


def _features_spec(p: Product) -> tuple[dict[str, Any], str, str]:
    """(the base spec releasing every flow column per subject, the key column, the score column)."""
    release = _model_release(p.spec or {})
    if release is None or not release.get("key") or not release.get("score"):
        raise InvalidInput(f"product {p.code} releases no per-subject score; joint models build on a score "
                           "product such as bank_credit_assessment", details={"field": "product"})
    key, score = release["key"], release["score"]
    cols = [key] + [c for c in dict.fromkeys(_flow_columns(p.spec)) if c != key]
    if score not in cols:
        cols.append(score)
    spec = {k: v for k, v in p.spec.items() if k != "outputs"}
    spec["outputs"] = [{"name": FEATURES_OUTPUT, "release": {"policy": "record", "columns": cols, "k": 2}}]
    return spec, key, score


def _features(session: Session, settings: Settings, p: Product, ctx: JobContext
              ) -> tuple[pl.DataFrame, str, str, dict[str, Any]]:
    """The per-subject flow of the base product, computed inside the trusted worker."""
    spec, key, score = _features_spec(p)
    planned = sandbox_jobs.Planned(session, "spec", spec, None)
    values = planned.plan.bind(precompute.spec_params(p, planned, {}))
    sources = precompute.sources_of(session, planned)
    with sandbox_jobs.private_folder("authops-job-") as folder:
        ctx.progress(0.05, "decrypting inputs")
        inputs = sandbox_jobs._decrypt_inputs(session, settings, planned, folder, project=False)
        produced = sandbox_jobs._run_spec(planned, inputs, values, folder, ctx)
        frame = pl.from_arrow(pq.read_table(produced[FEATURES_OUTPUT]))
    return frame, key, score, sources


def _matrix(frame: pl.DataFrame, key: str, score: str) -> tuple[np.ndarray, tuple[str, ...]]:
    names = tuple(c for c, t in frame.schema.items()
                  if c not in (key, score) and (t.is_numeric() or t == pl.Boolean))
    return frame.select(names).cast(pl.Float64).fill_null(0.0).to_numpy(), names


def _seal(settings: Settings, key: str, data: bytes, content_type: str) -> str:
    get_object_store(settings).put(key, data, content_type=content_type)
    return key


def train(session: Session, settings: Settings, m: JointModel, ctx: JobContext, job_id: int | None = None
          ) -> dict[str, Any]:
    """Fit, evaluate against the baseline, seal the model and the scores; flushes (the job commits)."""
    p = session.get(Product, m.product_id)
    frame, key_col, score_col, sources = _features(session, settings, p, ctx)
    ctx.progress(0.75, "joining the labels")
    mkey = model_key(settings, m.id)
    labels = rt.read_table(get_object_store(settings).get(m.labels_object_key))
    label_of = dict(zip(labels.column("digest").to_pylist(), labels.column("label").to_pylist()))
    digests = [rt.subject_digest(mkey, s) for s in frame[key_col].cast(pl.String).to_list()]
    X, names = _matrix(frame, key_col, score_col)
    rows = np.array([i for i, d in enumerate(digests) if d in label_of], dtype=int)
    y = np.array([label_of[digests[i]] for i in rows], dtype=int)
    check_counts(len(rows), int(y.sum()), "the public data matched")
    hold = learn.split([digests[i] for i in rows], y, mkey)
    ctx.progress(0.8, "fitting")
    model = learn.fit(X[rows][~hold], y[~hold], names)
    risk_all = learn.predict(model, X)
    risk = risk_all[rows]
    base = -frame[score_col].cast(pl.Float64).fill_null(0.0).to_numpy()[rows]
    metrics = learn.evaluate(risk[~hold], y[~hold], risk[hold], y[hold])
    baseline = learn.evaluate(base[~hold], y[~hold], base[hold], y[hold])
    scores = np.clip(np.rint(100 * (1 - risk_all)), 0, 100).astype(int)
    table = pa.table({"digest": pa.array(digests, pa.binary()), "score": pa.array(scores, pa.int16()),
                      "grade": pa.array([grade_of(int(s)) for s in scores], pa.string())})
    token = secrets.token_hex(6)
    m.model_object_key = _seal(settings, f"products/joint/{m.id}/model-{token}.json",
                               json.dumps(model.to_json()).encode(), "application/json")
    m.scores_object_key = _seal(settings, f"products/joint/{m.id}/scores-{token}.parquet", rt.table_bytes(table),
                                "application/vnd.apache.parquet")
    m.state, m.trained_at = "ready", utcnow()
    m.matched, m.scored, m.features = len(rows), len(digests), list(names)
    m.metrics, m.baseline, m.sources = metrics, baseline, sources
    session.add(m)
    audit_log.record(session, audit_log.Actor(kind="system", name=f"job {job_id}", org_id=m.customer_org_id),
                     "product.joint.train", object_type="joint_model", object_id=m.id, rows=len(rows),
                     details={"product": p.code, "job_id": job_id, "matched": len(rows), "auc": str(metrics["auc"]),
                              "baseline_auc": str(baseline["auc"]),
                              "sources": {r: s["dataset_id"] for r, s in sources.items()}})
    session.flush()
    return {"model_id": m.id, "matched": len(rows), "auc": metrics["auc"], "baseline_auc": baseline["auc"]}


@job_handler(KIND)
def run_train(session: Session, job: Job, ctx: JobContext) -> dict[str, Any]:
    m = session.get(JointModel, int(job.params["model_id"]))
    if m is None:
        raise NotFound(f"no joint model {job.params['model_id']}")
    return train(session, get_settings(), m, ctx, job_id=job.id)


# --- scoring --------------------------------------------------------------------------------------

class _Scores:
    """Each ready model's score table, decrypted once per process (keyed by its object key)."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._tables: dict[str, dict[bytes, tuple[int, str]]] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings, object_key: str) -> dict[bytes, tuple[int, str]]:
        with self._lock:
            have = self._tables.get(object_key)
            if have is None:
                t = rt.read_table(get_object_store(settings).get(object_key))
                have = dict(zip(t.column("digest").to_pylist(),
                                zip(t.column("score").to_pylist(), t.column("grade").to_pylist())))
                if len(self._tables) >= self.limit:
                    self._tables.pop(next(iter(self._tables)))
                self._tables[object_key] = have
            return have


_SCORES = _Scores()


def _require_consent(session: Session, settings: Settings, p: Product, customer: int, subject: str,
                     purpose: str | None, who: audit_log.Actor) -> int:
    try:
        return consent.check(session, p.id, customer, subject, purpose=purpose, settings=settings).id
    except AuthopsError as exc:
        audit_log.record(session, who, "gov.call.refused", outcome="denied", object_type="product", object_id=p.id,
                         details={"code": exc.code, "customer_org_id": customer,
                                  "subject_key": consent.subject_key(settings, subject), "channel": "joint_model"})
        raise


def score(session: Session, settings: Settings, *, principal: Principal | audit_log.Actor, model_id: int,
          subject: Any, purpose: Any = None) -> dict[str, Any]:
    """The owner's score of one enterprise under the base product's terms and the enterprise's consent."""
    who = audit_log.as_actor(principal)
    subject, purpose = calls.check_subject(subject), calls.check_purpose(purpose)
    m = get_model(session, model_id, org_id=who.org_id)
    state, _ = state_of(session, m)
    if state != "ready" or not m.scores_object_key:
        raise Conflict(f"joint model {m.id} is {state}; it scores once training has finished", code="not_ready",
                       details={"model": m.id, "state": state})
    p = session.get(Product, m.product_id)
    guard = guard_call(session, customer_org_id=m.customer_org_id, product_id=p.id, subject_id=subject,
                       purpose=purpose, actor=who, settings=settings)
    consent_id = guard.get("consent_id") or _require_consent(session, settings, p, m.customer_org_id, subject,
                                                             purpose, who)
    found = _SCORES.get(settings, m.scores_object_key).get(rt.subject_digest(model_key(settings, m.id), subject))
    request_id = calls.new_request_id()
    audit_log.record(session, who, "product.joint.score", object_type="joint_model", object_id=m.id, subjects=1,
                     details={"product": p.code, "request_id": request_id, "agreement": guard["agreement"],
                              "consent_id": consent_id, "subject_key": consent.subject_key(settings, subject),
                              "found": found is not None})
    return {"request_id": request_id, "model": m.id, "registration_number": p.registration_number,
            "status": "found" if found else "not_found", "score": found[0] if found else None,
            "grade": found[1] if found else None}
