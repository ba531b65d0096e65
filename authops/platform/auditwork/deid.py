"""De-identification effectiveness for a year's releases (the yearly third-party audit, BRIEF 10).

Record releases: the k-anonymity actually achieved over the quasi-identifiers (the smallest group
of rows sharing a non-suppressed combination, read back from the stored release), the suppression
rate, and the re-identification risk: the release's own policy (each column's masking, then
k-anonymity) is applied again to a sample of the source, and anonymeter attacks it with the rest
of the source held out as control (`risk`). Aggregate releases: their ε and δ, and the budget each
partner has spent per resource. Nothing here returns a released or source value, only counts.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlmodel import Session, select

from authops.billing.rating import year_bounds
from authops.core.data.datasets import read_dataset
from authops.core.errors import AuthopsError
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.auditwork import risk
from authops.platform.catalog import service as catalog
from authops.platform.catalog.models import Dataset
from authops.platform.identity.models import Organisation
from authops.platform.sandbox.jobs import Planned, token_key
from authops.policies.budget_models import LIFETIME, MICRO, PICO, PrivacyBudget
from authops.sandbox.masking import fields as masking
from authops.sandbox.masking.kanon import group_sizes, k_anonymity
from authops.sandbox.models import SandboxJob, SandboxRelease, Workspace

SAMPLE_ROWS = 2000  # source rows the policy is re-applied to
CONTROL_SHARE = 0.2  # of the sample, held out of the release as anonymeter's control


def achieved_k(table: pa.Table, quasi_identifiers: list[str]) -> int | None:
    """The smallest number of rows sharing a combination of quasi-identifiers, suppressed rows aside."""
    if not quasi_identifiers or table.num_rows == 0:
        return None
    sizes = group_sizes(table, quasi_identifiers)
    kept = np.zeros(table.num_rows, dtype=bool)
    for name in quasi_identifiers:
        kept |= pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False)
    return int(sizes[kept].min()) if kept.any() else None


def _releases(session: Session, year: int, policy: str) -> list[tuple[SandboxRelease, SandboxJob]]:
    start, end = year_bounds(year)
    rows = session.exec(select(SandboxRelease, SandboxJob).join(SandboxJob, SandboxJob.id == SandboxRelease.sandbox_job_id)
                        .where(SandboxRelease.policy == policy, SandboxRelease.created_at >= start,
                               SandboxRelease.created_at < end).order_by(SandboxRelease.id)).all()
    return [(r, j) for r, j in rows if not r.summary.get("mock")]


def _names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {o.id: o.name_zh for o in session.exec(select(Organisation).where(Organisation.id.in_(ids)))}


def _source_sample(session: Session, settings: Settings, sj: SandboxJob, output: str):
    """(planned output, source sample with the released columns' names) or (None, why not)."""
    planned = Planned(session, sj.kind, sj.spec, sj.code)
    o = planned.outputs[output]
    cols = [o.column(name) for name in o.roles["columns"]]
    computed = [c.name for c in cols if c.origin is None or c.field is None]
    if computed:
        return None, f"columns {', '.join(computed)} are computed, not source fields: no source to attack"
    resources = {c.origin[0] for c in cols}
    if len(resources) != 1:
        return None, "the release joins several resources: no single source to attack"
    res = catalog.get_resource(session, resources.pop())
    ds = session.get(Dataset, res.dataset_id) if res.dataset_id else None
    if ds is None:
        return None, f"{res.code} has no current dataset"
    table = read_dataset(get_object_store(settings), ds.object_key, columns=sorted({c.origin[1] for c in cols}))
    rng = np.random.default_rng(sj.id)
    pick = rng.choice(table.num_rows, size=min(table.num_rows, SAMPLE_ROWS), replace=False)  # random order
    sample = table.take(pa.array(pick))
    return o, pa.table([sample.column(c.origin[1]) for c in cols], names=[c.name for c in cols])


def _policy(o, table: pa.Table, key: bytes) -> pa.Table:
    """The record policy of output `o` applied to `table`: each column's masking, then k-anonymity."""
    masked = pa.table([masking.plan(o.column(name).field, key)[1](table.column(name)) for name in table.column_names],
                      names=table.column_names)
    qis = list(o.roles.get("quasi_identifiers", ()))
    return k_anonymity(masked, qis, o.release.k)[0] if qis else masked


def release_risk(session: Session, settings: Settings, rel: SandboxRelease, sj: SandboxJob) -> dict[str, Any]:
    """anonymeter's risks for one record release, measured on a fresh sample of its source."""
    try:
        o, sample = _source_sample(session, settings, sj, rel.output)
    except AuthopsError as exc:  # the job no longer plans (its resource's schema moved on): say so
        return {"measured": False, "reason": f"the job cannot be planned again: {exc.message}"}
    if o is None:
        return {"measured": False, "reason": sample}
    cut = int(sample.num_rows * (1 - CONTROL_SHARE))
    original, control = sample.slice(0, cut), sample.slice(cut)
    ws = session.get(Workspace, sj.workspace_id)
    released = _policy(o, original, token_key(settings, ws.org_id, ws.id))
    qis = list(o.roles.get("quasi_identifiers", ()))
    others = [c for c in sample.column_names if c not in qis]
    return risk.measure(original, released, control, quasi_identifiers=qis, secret=others[-1] if others else None,
                        seed=sj.id)


def record_releases(session: Session, settings: Settings, year: int, *, measure: bool = True) -> list[dict[str, Any]]:
    store = get_object_store(settings)
    pairs = _releases(session, year, "record")
    names = _names(session, {j.org_id for _, j in pairs})
    out = []
    for rel, sj in pairs:
        qis = list(rel.summary.get("quasi_identifiers") or [])
        achieved = achieved_k(pq.read_table(io.BytesIO(store.get(rel.object_key)), columns=qis), qis) if qis else None
        suppressed = int(rel.summary.get("suppressed_rows") or 0)
        out.append({"release_id": rel.id, "job_id": rel.job_id, "output": rel.output, "partner": names.get(sj.org_id, ""),
                    "partner_org_id": sj.org_id, "rows": rel.rows, "quasi_identifiers": qis,
                    "k_required": rel.summary.get("k"), "k_achieved": achieved,
                    "suppressed_rows": suppressed, "suppression_rate": round(suppressed / rel.rows, 4) if rel.rows else 0.0,
                    "treatments": rel.summary.get("treatments", {}),
                    "risk": release_risk(session, settings, rel, sj) if measure else {"measured": False,
                                                                                         "reason": "not requested"}})
    return out


def aggregate_releases(session: Session, year: int) -> list[dict[str, Any]]:
    pairs = _releases(session, year, "aggregate")
    names = _names(session, {j.org_id for _, j in pairs})
    return [{"release_id": rel.id, "job_id": rel.job_id, "output": rel.output, "partner": names.get(sj.org_id, ""),
             "partner_org_id": sj.org_id, "rows": rel.rows, "epsilon": rel.summary.get("epsilon"),
             "delta": rel.summary.get("delta"), "threshold": rel.summary.get("threshold"),
             "suppressed_cells": rel.summary.get("suppressed")} for rel, sj in pairs]


def budgets(session: Session, year: int) -> list[dict[str, Any]]:
    """Per partner and resource: the year's ε cap and what was spent (lifetime caps listed too)."""
    rows = list(session.exec(select(PrivacyBudget).where(PrivacyBudget.period.in_((str(year), LIFETIME)))
                             .order_by(PrivacyBudget.org_id, PrivacyBudget.resource_code, PrivacyBudget.period)))
    names = _names(session, {b.org_id for b in rows})
    return [{"partner": names.get(b.org_id, ""), "partner_org_id": b.org_id, "resource": b.resource_code,
             "period": b.period, "epsilon_cap": b.epsilon_cap / MICRO, "epsilon_spent": b.epsilon_spent / MICRO,
             "epsilon_spent_micro": b.epsilon_spent, "epsilon_cap_micro": b.epsilon_cap,
             "delta_cap": b.delta_cap / PICO, "delta_spent": b.delta_spent / PICO,
             "spent_pct": round(100 * b.epsilon_spent / b.epsilon_cap, 1) if b.epsilon_cap else 0.0} for b in rows]


def report(session: Session, settings: Settings, year: int, *, measure: bool = True) -> dict[str, Any]:
    return {"year": year, "record_releases": record_releases(session, settings, year, measure=measure),
            "aggregate_releases": aggregate_releases(session, year), "budgets": budgets(session, year)}
