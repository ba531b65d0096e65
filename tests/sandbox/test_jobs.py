"""Sandbox jobs end to end: workspace scope, the release gate, the budget ledger, spec and code jobs.

Jobs run through the real handler (job_service.run_job: claim, heartbeat, finish) on synthetic
data loaded into the real catalogue and stored encrypted; code jobs run in the real jail.
"""

from __future__ import annotations

import json
import pyarrow.compute as pc
import pytest
from sqlmodel import select

from authops.audit.models import AuditEvent
from authops.core.errors import AuthopsError
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job
from authops.platform.catalog import csvload, flows, service
from authops.policies import budget
from authops.policies.budget_models import BudgetReservation
from authops.platform.sandbox import jobs, workspace
from authops.sandbox import gate
from authops.sandbox.models import SandboxRelease
from authops.sandbox.spec import EXAMPLES
from authops.sandbox.spec.models import parse_text
from tests.support.builders import login, make_org, make_user
from tests.support.catalog import ACTOR

RESOURCES = {"enterprise_tax", "enterprise_basic_info", "truck_violations", "legal_rep_blacklist"}
SCALE = 0.01


def _jail_missing() -> str | None:
    from tests.sandbox.test_jail import _jail_missing as missing

    return missing()


@pytest.fixture
def world(session, db_settings):
    service.load_catalog(session, csvload.BUILTIN, actor=ACTOR)
    session.commit()
    flows.load_synthetic(db_settings, scale=SCALE, seed=5, only=RESOURCES)
    partner = make_org(session, OrgKind.PARTNER)
    other = make_org(session, OrgKind.PARTNER)
    grants = [{"resource": "enterprise_tax", "fields": ["uscc", "tax_period", "vat_amount", "has_violation_record"]},
              {"resource": "enterprise_basic_info",
               "fields": ["uscc", "enterprise_name", "legal_rep_name", "registration_status", "registered_capital"]},
              {"resource": "truck_violations", "fields": ["vin", "violation_time", "violation_type"]},
              {"resource": "legal_rep_blacklist", "fields": ["id_number", "legal_rep_name", "listed_at"]}]
    ws = workspace.create_workspace(session, org_id=partner.id, name="credit lab", grants=grants, actor=ACTOR)
    ws2 = workspace.create_workspace(session, org_id=other.id, name="other lab", grants=grants, actor=ACTOR)
    for org in (partner, other):
        for code in ("enterprise_tax", "enterprise_basic_info"):
            budget.set_budget(session, org_id=org.id, resource_code=code, epsilon=3.0, actor=ACTOR)
    session.commit()
    return {"partner": partner, "other": other, "ws": ws, "ws2": ws2}


def _example(name: str) -> dict:
    return parse_text((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))


def _submit(session, ws, **kw):
    sj, job = jobs.submit_job(session, ws=ws, actor=ACTOR, **kw)
    session.commit()
    return job.id


def _run(db_settings, job_id: int) -> Job:
    outcome = job_service.run_job(db_settings, job_id, worker="test")
    assert outcome in ("succeeded", "failed"), outcome
    from authops.core.db import session_scope

    with session_scope(db_settings) as s:
        return job_service.get_job(s, job_id)


def _left(session, org_id: int, code: str) -> float:
    session.expire_all()
    row = next(b for b in budget.balances(session, org_id, code) if b["period"] != "lifetime")
    return row["epsilon_left"]


def test_an_aggregate_spec_releases_dp_cells_and_spends_its_budget(session, db_settings, world, client):
    ws = world["ws"]
    spec = _example("tax_arrears_by_industry")
    spec["params"]["year"]["default"] = 2024
    job_id = _submit(session, ws, kind="spec", spec=spec)
    assert _left(session, ws.org_id, "enterprise_tax") == pytest.approx(2.0)  # reserved at submission
    job = _run(db_settings, job_id)
    assert job.state == "succeeded", (job.error_code, job.error_message)
    rel = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id)).one()
    assert rel.policy == "aggregate" and rel.summary["epsilon"] == pytest.approx(1.0)
    assert set(rel.columns) == {"industry", "enterprises", "vat_total_fen"}
    assert _left(session, ws.org_id, "enterprise_tax") == pytest.approx(2.0)
    assert _left(session, ws.org_id, "enterprise_basic_info") == pytest.approx(2.0)
    assert budget.check_ledger(session) == []
    # the partner reads its release; another partner cannot
    user = make_user(session, world["partner"], "partner_engineer")
    stranger = make_user(session, world["other"], "partner_engineer")
    session.commit()
    r = client.get(f"/api/v1/sandbox/jobs/{job_id}/results/vat_by_industry", headers=login(client, user.username))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == "aggregate" and all(row["enterprises"] >= 10 for row in body["data"])
    r = client.get(f"/api/v1/sandbox/jobs/{job_id}/results/vat_by_industry",
                   headers=login(client, stranger.username))
    assert r.status_code == 404
    actions = [e.action for e in session.exec(select(AuditEvent).where(AuditEvent.object_id == str(job_id)))]
    assert "sandbox.submit" in actions and actions.count("sandbox.release") == 1


def test_verify_answers_only_the_claims_given(session, db_settings, world):
    ws = world["ws"]
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog.models import Dataset

    res = service.get_resource(session, "truck_violations")
    table = read_dataset(get_object_store(db_settings), session.get(Dataset, res.dataset_id).object_key)
    vins = pc.unique(table.column("vin")).to_pylist()[:3]
    as_of = str(max(table.column("violation_time").to_pylist()).date())
    claims = [*vins, "LSVAM4187C2184847"]
    job_id = _submit(session, ws, kind="spec", spec=_example("truck_violation_verify"),
                     params={"n": 0, "as_of": as_of}, claims={"more_than_n_violations": claims})
    job = _run(db_settings, job_id)
    assert job.state == "succeeded", job.error_message
    _, out = jobs.read_release(session, db_settings, job_id, "more_than_n_violations", reader_org=ws.org_id)
    assert out.column("claim").to_pylist() == claims  # exactly the claims, no other vehicle
    assert set(out.column("answer").to_pylist()) <= {"yes", "no"}
    assert out.column("answer").to_pylist()[-1] == "no"  # unknown VIN: the absent answer
    assert budget.check_ledger(session) == []


def test_a_job_outside_the_scope_is_refused_before_it_runs_naming_the_field(session, world):
    ws = world["ws"]
    spec = _example("tax_arrears_by_industry")
    spec["inputs"][0]["fields"].append("corporate_income_tax_amount")  # not granted
    with pytest.raises(workspace.OutOfScope, match=r"enterprise_tax\.corporate_income_tax_amount"):
        jobs.submit_job(session, ws=ws, kind="spec", spec=spec, actor=ACTOR)
    session.rollback()
    assert session.exec(select(Job)).all() == []


RECORD_SPEC = """
spec_version: 1
name: blacklisted_reps
inputs:
  - resource: legal_rep_blacklist
    version: 1
    fields: [id_number, legal_rep_name, listed_at]
steps:
  - derive: {name: listed_year, expr: "year(listed_at)"}
outputs:
  - name: reps
    release:
      policy: record
      columns: [id_number, legal_rep_name, listed_at]
      k: 2
"""


def test_record_outputs_tokenize_ids_and_mask_names(session, db_settings, world):
    ws, ws2 = world["ws"], world["ws2"]
    ids = []
    for w in (ws, ws2):
        job = _run(db_settings, _submit(session, w, kind="spec", spec=RECORD_SPEC))
        assert job.state == "succeeded", job.error_message
        _, out = jobs.read_release(session, db_settings, job.id, "reps", reader_org=w.org_id)
        ids.append(out.column("id_number").to_pylist())
        names = [n for n in out.column("legal_rep_name").to_pylist() if n]
        assert names and all(set(n) == {"*"} for n in names)  # L4 names: fully masked
        assert all(len(str(y)) == 4 for y in out.column("listed_at").to_pylist() if y)  # dates: the year
    assert ids[0] and not set(ids[0]) & set(ids[1])  # one person, two customers: unlinkable tokens
    from authops.core.data.identifiers import is_resident_id
    assert not any(is_resident_id(v) for v in ids[0] if v)


def test_a_record_column_computed_from_an_id_is_refused_naming_column_and_field(session, world):
    spec = RECORD_SPEC.replace('expr: "year(listed_at)"', 'expr: "substr(id_number, 7, 8)"').replace(
        "columns: [id_number, legal_rep_name, listed_at]", "columns: [legal_rep_name, listed_year]")
    with pytest.raises(gate.ReleaseRefused) as err:
        jobs.submit_job(session, ws=world["ws"], kind="spec", spec=spec, actor=ACTOR)
    assert "listed_year" in err.value.message and "legal_rep_blacklist.id_number" in err.value.message


def test_an_exhausted_budget_says_what_is_left_and_when_it_refreshes(session, world):
    ws = world["ws"]
    spec = _example("tax_arrears_by_industry")
    spec["outputs"][0]["release"]["epsilon"] = 2.0
    _submit(session, ws, kind="spec", spec=spec)
    with pytest.raises(AuthopsError) as err:
        jobs.submit_job(session, ws=ws, kind="spec", spec=spec, actor=ACTOR)
    assert err.value.code == "budget_exhausted"
    assert "ε 1 left" in err.value.message and "needs ε 2" in err.value.message
    assert "refreshes on" in err.value.message and "(Asia/Shanghai)" in err.value.message


def test_a_failed_job_gives_its_budget_back(session, db_settings, world):
    ws = world["ws"]
    spec = _example("tax_arrears_by_industry")
    job_id = _submit(session, ws, kind="spec", spec=spec)
    # the data disappears between submission and run: the job fails, nothing is spent
    res = service.get_resource(session, "enterprise_tax")
    res.dataset_id = None
    session.add(res)
    from authops.platform.catalog.models import Dataset
    for ds in session.exec(select(Dataset).where(Dataset.resource_id == res.id)):
        ds.schema_version = 99
        session.add(ds)
    session.commit()
    job = _run(db_settings, job_id)
    assert job.state == "failed" and job.error_code == "job_failed"
    assert _left(session, ws.org_id, "enterprise_tax") == pytest.approx(3.0)
    states = {r.state for r in session.exec(select(BudgetReservation).where(BudgetReservation.job_id == job_id))}
    assert states == {"returned"}
    assert budget.check_ledger(session) == []


# --- partner code -------------------------------------------------------------------------------

MANIFEST = {"name": "capital_score",
            "inputs": [{"alias": "basic", "resource": "enterprise_basic_info", "version": 1,
                        "fields": ["uscc", "registered_capital", "legal_rep_name"]}],
            "outputs": [{"name": "scores", "release": {"policy": "model", "key": "uscc", "score": "score",
                                                       "bounds": [0, 1]}}]}

CODE = """
import pandas as pd

def run(inputs, params):
    df = inputs["basic"]
    print(df.head(50).to_string())          # rows printed to stdout never reach the partner
    cap = df["registered_capital"].fillna(0).astype("float64")
    return {"scores": pd.DataFrame({"uscc": df["uscc"], "score": (cap / (cap.max() or 1))})}
"""


@pytest.mark.skipif(_jail_missing() is not None, reason=str(_jail_missing()))
def test_a_code_job_releases_bounded_scores_under_tokens(session, db_settings, world):
    ws = world["ws"]
    job = _run(db_settings, _submit(session, ws, kind="code", spec=MANIFEST, code=CODE))
    assert job.state == "succeeded", (job.error_code, job.error_message)
    _, out = jobs.read_release(session, db_settings, job.id, "scores", reader_org=ws.org_id)
    scores = out.column("score").to_pylist()
    assert out.num_rows > 10 and all(0 <= s <= 1 for s in scores if s is not None)
    from authops.core.data.identifiers import is_uscc
    assert not any(is_uscc(v) for v in out.column("uscc").to_pylist())
    assert "registered_capital" not in json.dumps(job.result) and "uscc" not in (job.message or "")


@pytest.mark.skipif(_jail_missing() is not None, reason=str(_jail_missing()))
def test_code_that_leaks_rows_in_its_error_shows_the_partner_nothing(session, db_settings, world):
    ws = world["ws"]
    code = ("def run(inputs, params):\n"
            "    raise ValueError(repr(inputs['basic'].head(20).to_dict()))\n")
    job = _run(db_settings, _submit(session, ws, kind="code", spec=MANIFEST, code=code))
    assert job.state == "failed" and job.error_code == "job_failed"
    assert job.error_message == jobs.CODE_FAILED  # no exception type or line: they could carry data


def test_code_cannot_release_records_of_personal_fields_or_aggregates(session, world):
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["outputs"] = [{"name": "rows", "release": {"policy": "record", "columns": ["who"], "k": 2}}]
    with pytest.raises(gate.ReleaseRefused, match="enterprise_basic_info.legal_rep_name"):
        jobs.submit_job(session, ws=world["ws"], kind="code", spec=manifest, code=CODE, actor=ACTOR)
    manifest["outputs"] = [{"name": "stats", "release": {"policy": "aggregate", "measures": [{"name": "n", "fn": "count"}],
                                                         "epsilon": 1.0, "min_cell": 10}}]
    with pytest.raises(gate.ReleaseRefused, match="declarative spec"):
        jobs.submit_job(session, ws=world["ws"], kind="code", spec=manifest, code=CODE, actor=ACTOR)


def test_the_gate_refuses_output_that_looks_like_raw_ids():
    import pyarrow as pa

    from authops.core.data.schema import DType, FieldSpec, Grade, Kind
    from authops.sandbox import code_jobs
    from authops.sandbox.spec.plan import OutputColumn, PlannedOutput

    manifest = code_jobs.load_manifest({**MANIFEST, "outputs": [
        {"name": "flags", "release": {"policy": "record", "columns": ["status"], "k": 2}}]})
    col = OutputColumn("status", "status", DType.STRING, frozenset({("r", "status")}))
    out = PlannedOutput("flags", manifest.outputs[0].release, (col,), frozenset(),
                        roles={"columns": ("status",), "quasi_identifiers": ()})
    fields = {("r", "status"): FieldSpec(name="status", name_zh="状态", kind=Kind.CATEGORY, grade=Grade.L2)}
    key = b"k" * 32
    smuggled = pa.table({"status": ["正常", "11010519491231002X", "正常"]})
    with pytest.raises(gate.ReleaseRefused, match="resident ID numbers"):
        gate.release(out, smuggled, token_key=key, fields=fields)
    import numpy as np

    from authops.core.data.identifiers import make_usccs

    uscc = str(make_usccs(np.random.default_rng(1), 1)[0])
    with pytest.raises(gate.ReleaseRefused, match="unified social credit codes"):
        gate.release(out, pa.table({"status": ["正常", uscc]}), token_key=key, fields=fields)
    phones = pa.table({"status": ["正常", "tel 13912345678", "正常"]})
    with pytest.raises(gate.ReleaseRefused, match="mobile numbers"):
        gate.release(out, phones, token_key=key, fields=fields)
    assert gate.release(out, pa.table({"status": ["正常", "注销", "正常"]}), token_key=key,
                        fields=fields).table.num_rows == 3


def test_ids_beyond_the_database_range_are_client_errors(session, client):
    user = make_user(session, make_org(session, OrgKind.PARTNER), "partner_engineer")
    session.commit()
    headers = login(client, user.username)
    for path in ("/api/v1/sandbox/jobs/99999999999", "/api/v1/jobs/99999999999",
                 "/api/v1/sandbox/workspaces/99999999999"):
        r = client.get(path, headers=headers)
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
    assert client.get("/api/v1/sandbox/jobs/2147483647", headers=headers).status_code == 404


def test_a_partitioned_aggregate_merges_bounded_partials_and_adds_noise_once(session, db_settings, world):
    from authops.core.jobs.models import JobAttempt
    from authops.sandbox.dp import merge_partials
    from authops.sandbox.spec.outputs import aggregate_spec

    ws = world["ws"]
    sj, job = jobs.submit_job(session, ws=ws, kind="spec", spec=_example("tax_arrears_by_industry"), partitions=3,
                              actor=ACTOR)
    session.commit()
    ids = jobs.job_ids(sj)
    assert len(ids) == 3
    done = _run(db_settings, job.id)  # no other worker: the main job runs the partition jobs itself
    assert done.state == "succeeded", (done.error_code, done.error_message)
    for child in ids[1:]:
        child_job = session.get(Job, child, populate_existing=True)
        assert child_job.state == "succeeded" and child_job.kind == jobs.PARTIAL_KIND
        assert len(session.exec(select(JobAttempt).where(JobAttempt.job_id == child)).all()) == 1
    rel = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job.id)).one()
    assert rel.summary["epsilon"] == pytest.approx(1.0)  # charged once, not once per partition
    assert _left(session, ws.org_id, "enterprise_tax") == pytest.approx(2.0)
    # the three stored partials add up to the unpartitioned bounded aggregate, exactly
    planned = jobs.Planned(session, "spec", sj.spec, None)
    spec = aggregate_spec(planned.outputs["vat_by_industry"])
    parts = [jobs._load_partials(db_settings, job.id, "vat_by_industry", i, 3) for i in range(3)]
    assert sorted(p.partition[0] for p in parts) == [0, 1, 2]
    merged = merge_partials(parts, spec)
    with jobs.private_folder() as folder:
        inputs = jobs._decrypt_inputs(session, db_settings, planned, folder, project=False)
        from authops.sandbox.dp import partial_aggregate
        lf = jobs.lazy_outputs(planned.plan, {a: str(p) for a, p in inputs.items()}, {})["vat_by_industry"]
        lf.sink_parquet(str(folder / "all.parquet"))
        whole = partial_aggregate(folder / "all.parquet", spec)
    key = spec.by
    assert merged.cells.sort(key).equals(whole.cells.sort(key))
    assert merged.rows_kept == whole.rows_kept > 0


def test_partitions_are_for_aggregate_spec_jobs_only(session, world):
    with pytest.raises(AuthopsError, match="only a spec job whose outputs are all aggregates"):
        jobs.submit_job(session, ws=world["ws"], kind="spec", spec=RECORD_SPEC, partitions=2, actor=ACTOR)


@pytest.mark.skipif(_jail_missing() is not None, reason=str(_jail_missing()))
def test_a_mock_run_shows_the_partner_everything_and_reads_no_real_row(session, db_settings, world, client):
    from authops.core.data.datasets import read_dataset
    from authops.core.storage.store import get_object_store
    from authops.platform.catalog.models import Dataset

    ws = world["ws"]
    store = get_object_store(db_settings)
    res = service.get_resource(session, "enterprise_basic_info")
    real = set(read_dataset(store, session.get(Dataset, res.dataset_id).object_key).column("uscc").to_pylist())
    mock = set(read_dataset(store, res.mock_object_key).column("uscc").to_pylist())
    failing = CODE.replace("return {", "raise RuntimeError('debug me: ' + str(df['uscc'].iloc[0]))\n    return {")
    user = make_user(session, world["partner"], "partner_engineer")
    session.commit()
    headers = login(client, user.username)
    r = client.post(f"/api/v1/sandbox/workspaces/{ws.id}/jobs", headers=headers,
                    json={"kind": "code", "spec": MANIFEST, "code": failing, "target": "mock"})
    assert r.status_code == 202, r.text
    job = _run(db_settings, r.json()["id"])
    assert job.state == "failed" and "debug me: " in job.error_message  # the traceback, on mock data
    shown = job.error_message.rsplit("debug me: ", 1)[1][:18]
    assert shown in mock and shown not in real
    r = client.post(f"/api/v1/sandbox/workspaces/{ws.id}/jobs", headers=headers,
                    json={"kind": "code", "spec": MANIFEST, "code": CODE, "target": "mock"})
    job = _run(db_settings, r.json()["id"])
    assert job.state == "succeeded", job.error_message
    view = client.get(f"/api/v1/sandbox/jobs/{job.id}", headers=headers).json()
    printed = view["console"]["stdout"]
    assert any(u in printed for u in mock) and not any(u in printed for u in real)
    out = client.get(f"/api/v1/sandbox/jobs/{job.id}/results/scores", headers=headers).json()
    assert out["summary"]["mock"] is True
    assert {row["uscc"] for row in out["pre_release"]} <= mock  # the rows the gate was given
    assert not {row["uscc"] for row in out["data"]} & (mock | real)  # what the gate let out: tokens
    assert _left(session, ws.org_id, "enterprise_basic_info") == pytest.approx(3.0)  # nothing charged
    # a real run shows none of it
    r = client.post(f"/api/v1/sandbox/workspaces/{ws.id}/jobs", headers=headers,
                    json={"kind": "code", "spec": MANIFEST, "code": failing})
    job = _run(db_settings, r.json()["id"])
    assert job.state == "failed" and "debug me" not in job.error_message
    view = client.get(f"/api/v1/sandbox/jobs/{job.id}", headers=headers).json()
    assert view["console"] is None


def test_budgets_are_set_for_partners_on_real_resources(session, client, world):
    from authops.core.identity import OrgKind as K

    admin = make_user(session, make_org(session, K.BUREAU), "bureau_admin")
    customer = make_org(session, K.CUSTOMER)
    session.commit()
    headers = login(client, admin.username)
    body = {"org_id": world["partner"].id, "resource": "enterprise_tax", "epsilon": 4.0}
    r = client.put("/api/v1/sandbox/budgets", headers=headers, json=body)
    assert r.status_code == 200 and r.json()[0]["epsilon_cap"] == 4.0
    for bad, field in (({"org_id": 999999}, "org_id"), ({"org_id": customer.id}, "org_id"),
                       ({"resource": "nope"}, "resource")):
        r = client.put("/api/v1/sandbox/budgets", headers=headers, json={**body, **bad})
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text
    assert client.get("/api/v1/sandbox/orgs/999999/budgets", headers=headers).status_code == 404


def test_code_that_deploys_an_own_tool_runs_only_after_the_bureau_approved_it(session, world):
    """A manifest naming a tool is refused on real data until a tool deployment request for that
    tool and each resource it reads was approved by the bureau; mock runs need no approval."""
    from authops.platform.governance import tools
    from tests.platform.governance.matrix_scenarios import org_actor, tool_body

    ws = world["ws"]
    manifest = {**MANIFEST, "tool": "risk-model-runner"}
    with pytest.raises(AuthopsError) as exc:
        jobs.submit_job(session, ws=ws, kind="code", spec=manifest, code=CODE, actor=ACTOR)
    assert exc.value.code == "tool_not_approved" and "risk-model-runner" in exc.value.message
    session.rollback()
    jobs.submit_job(session, ws=ws, kind="code", spec=manifest, code=CODE, target="mock", actor=ACTOR)
    bureau = make_org(session, OrgKind.BUREAU)
    case = tools.apply(session, actor=org_actor(world["partner"]), body=tool_body("enterprise_tax"))
    tools.review(session, case, actor=org_actor(bureau), decision="approve", reasons="承诺充分")
    with pytest.raises(AuthopsError) as exc:  # approved for another resource only
        jobs.submit_job(session, ws=ws, kind="code", spec=manifest, code=CODE, actor=ACTOR)
    assert exc.value.code == "tool_not_approved" and "enterprise_basic_info" in exc.value.message
    case = tools.apply(session, actor=org_actor(world["partner"]),
                       body=tool_body("enterprise_basic_info", name="risk-model-runner"))
    tools.review(session, case, actor=org_actor(bureau), decision="approve", reasons="承诺充分")
    both = {**manifest, "inputs": [*MANIFEST["inputs"], {"alias": "tax", "resource": "enterprise_tax", "version": 1,
                                                        "fields": ["uscc", "tax_period"]}]}
    sj, _ = jobs.submit_job(session, ws=ws, kind="code", spec=both, code=CODE, actor=ACTOR)
    assert sj.kind == "code"  # the two approvals add up
