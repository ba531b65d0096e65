"""Builders for the audit-work tests: a person resource released record by record through a real
sandbox job, privacy budget spent by a partner, and an assessment report dict."""

from __future__ import annotations

from itertools import count

import pyarrow as pa
from sqlmodel import Session

from authops.core.data.identifiers import resident_id_check_char
from authops.core.data.schema import Grade
from authops.core.jobs import service as job_service
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import ingest
from authops.platform.identity.models import Organisation
from authops.platform.sandbox import jobs as sandbox_jobs
from authops.platform.sandbox import workspace as ws_service
from authops.policies import budget
from tests.support.catalog import ACTOR, PERSON_SCHEMA, make_resource

_n = count(1)
# The person schema with sex graded L2: released as is, so it is a quasi-identifier k-anonymity works on.
SCHEMA = PERSON_SCHEMA.model_copy(update={"fields": tuple(
    f.model_copy(update={"grade": Grade.L2}) if f.name == "sex" else f for f in PERSON_SCHEMA.fields)})


def people(n: int, women: int) -> pa.Table:
    """n people with valid resident IDs; the first `women` are 女, the rest 男."""
    ids = []
    for i in range(n):
        body = f"32050219800101{i:03d}"
        ids.append(body + resident_id_check_char(body))
    return pa.table({"id_number": ids, "name": [f"测试人{i:03d}" for i in range(n)],
                     "phone": [f"139{i:08d}" for i in range(n)], "sex": ["女"] * women + ["男"] * (n - women),
                     "paid": [str(100 + i) for i in range(n)], "paid_on": ["2025-01-31"] * n})


def record_release(session: Session, settings: Settings, provider: Organisation, partner: Organisation,
                   rows: pa.Table, *, k: int, quasi_identifiers: list[str]) -> tuple[str, int]:
    """(resource code, job id) of a succeeded job releasing id_number and sex record by record."""
    res = make_resource(session, provider, schema=SCHEMA)
    run = ingest.new_run(session, res, path="bulk", mode="replace", actor=ACTOR)
    run = ingest.load(session, get_object_store(settings), res, rows, run=run, actor=ACTOR)
    assert run.state == "succeeded", run.message
    ws = ws_service.create_workspace(session, org_id=partner.id, name=f"audit lab {next(_n)}",
                                     grants=[{"resource": res.code}], actor=ACTOR, readers=[partner.id])
    session.commit()
    spec = {"spec_version": 1, "name": "audit_rows", "params": {},
            "inputs": [{"resource": res.code, "version": 1, "fields": ["id_number", "sex"]}],
            "outputs": [{"name": "rows", "release": {"policy": "record", "columns": ["id_number", "sex"], "k": k,
                                                     "quasi_identifiers": quasi_identifiers}}]}
    _, job = sandbox_jobs.submit_job(session, ws=ws, kind="spec", spec=spec, actor=ACTOR)
    session.commit()
    assert job_service.run_job(settings, job.id, worker="t") == "succeeded"
    session.expire_all()
    return res.code, job.id


def spend_budget(session: Session, partner: Organisation, resource: str, *, cap: float, spent: float) -> None:
    """A yearly cap on the resource and a job that reserved and spent `spent` of it."""
    budget.set_budget(session, org_id=partner.id, resource_code=resource, epsilon=cap, actor=ACTOR)
    job = job_service.create_job(session, kind="system.echo", params={}, org_id=partner.id)
    budget.reserve(session, job_id=job.id, org_id=partner.id, resources=[resource], epsilon=spent)
    budget.commit(session, job.id)
    session.commit()


def assessment_dict(operator: Organisation, *, year: int = 2026) -> dict:
    """An assessment as `assessment.report_data` returns it (the shape its helper documents)."""
    metrics = [
        {"key": "products", "name_zh": "产品和场景数量", "name_en": "Products and scenarios", "value": 7, "unit": "个",
         "weight": 0.2, "threshold": 5, "score": 84.0,
         "sources": {"query": "gov_product where state = registered", "record_ids": [1, 2], "count": 7}},
        {"key": "compliance", "name_zh": "安全合规率", "name_en": "Security compliance rate", "value": 0.97,
         "unit": "%", "weight": 0.3, "threshold": 0.95, "score": 91.5,
         "sources": {"query": "audit events sandbox.release", "record_ids": [3], "count": 413}},
        {"key": "revenue", "name_zh": "运营收入", "name_en": "Operating revenue", "value": 123456, "unit": "元",
         "weight": 0.5, "threshold": 100000, "score": 66.25,
         "sources": {"query": "billing_usage", "record_ids": [], "count": 2048}},
    ]
    return {"year": year, "operator": {"id": operator.id, "name_zh": operator.name_zh}, "grade": "qualified",
            "grade_zh": "合格", "total_score": 77.4, "thresholds": {"excellent": 90, "qualified": 60},
            "signed": {"by": "数据局 局长", "at": "2027-01-15T10:00:00Z", "signature": "ab" * 32},
            "metrics": metrics, "expert_scores": [{"expert": "王专家", "score": 80, "comment": "运营规范"}],
            "departments": [{"org": 9, "name_zh": "市场监管局", "timeliness": 0.9, "completeness": 0.95,
                             "accuracy": 0.99, "score": 94.5}],
            "rectification": None}
