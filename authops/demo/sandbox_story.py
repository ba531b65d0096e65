"""The demo's sandbox chapter: a partner computes on data it never sees.

The bureau opens a workspace for the partner with the fields its approval grants and sets
privacy budgets; the partner's engineer reads schemas and mock data in full, submits a
declarative aggregate job (differentially private, paid for in ε) and a partner-code job
(run in the jail, scores released under tokens), and sees what the sandbox refuses and why.
Everything goes through the HTTP API; the jobs run on a real Celery worker.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from authops.core.settings import Settings
from authops.demo.checks import demo_worker, login

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

API = "/api/v1/sandbox"
TERMINAL = ("succeeded", "failed", "cancelled")

GRANTS = [
    {"resource": "enterprise_tax", "fields": ["uscc", "tax_period", "vat_amount", "has_violation_record"]},
    {"resource": "enterprise_basic_info",
     "fields": ["uscc", "enterprise_name", "registered_capital", "legal_rep_name"]},
    {"resource": "truck_violations", "fields": ["vin", "violation_time"]},
]
APPROVAL = "苏数授〔2026〕12号"  # the scenario's approval, as the bureau numbers it
BUDGETED = ("enterprise_tax", "enterprise_basic_info")
EPSILON_CAP = 3.0
JOB_EPSILON = 2.0
VAT_CAP_FEN = 10_000_000  # 100,000 yuan of flagged VAT per enterprise and year

# Partner code: a model score per enterprise. It prints real rows to stdout (operators' log only).
MANIFEST = {"name": "capital_score",
            "inputs": [{"alias": "basic", "resource": "enterprise_basic_info", "version": 1,
                        "fields": ["uscc", "registered_capital", "legal_rep_name"]}],
            "outputs": [{"name": "scores", "release": {"policy": "model", "key": "uscc", "score": "score",
                                                       "bounds": [0, 1]}}]}
CODE = """\
import numpy as np
import pandas as pd

def run(inputs, params):
    df = inputs["basic"]
    print(df.head(20).to_string())   # real rows: captured for operators, never shown to the partner
    cap = df["registered_capital"].fillna(0).astype("float64")
    score = 1 / (1 + np.exp(-(np.log1p(cap) - np.log1p(cap.median()))))
    return {"scores": pd.DataFrame({"uscc": df["uscc"], "score": score})}
"""
LEAKY_CODE = """\
def run(inputs, params):
    raise ValueError(repr(inputs["basic"].head(20).to_dict()))   # rows in the error message
"""
# A record output of a column computed from an identifier: refused whatever the data.
PREFIX_SPEC = {"spec_version": 1, "name": "uscc_prefixes",
               "inputs": [{"resource": "enterprise_basic_info", "version": 1, "fields": ["uscc", "enterprise_name"]}],
               "steps": [{"derive": {"name": "uscc_prefix", "expr": "substr(uscc, 1, 8)"}}],
               "outputs": [{"name": "prefixes", "release": {"policy": "record", "columns": ["uscc_prefix"], "k": 5}}]}


def _example(name: str) -> dict[str, Any]:
    from authops.sandbox.spec import EXAMPLES
    from authops.sandbox.spec.models import parse_text

    return parse_text((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))


def _jail_problem() -> str | None:
    """Why this host cannot run the jail (bubblewrap, root, namespaces), or None."""
    from authops.core.errors import AuthopsError
    from authops.sandbox.jail import JailConfig, _check_host

    try:
        _check_host(JailConfig().bwrap)
    except AuthopsError as exc:
        return exc.message
    except Exception as exc:  # noqa: BLE001 - e.g. the probe timing out; the demo goes on
        return f"{type(exc).__name__}: {exc}"
    return None


def _watch(client: TestClient, headers: dict, job_id: int, timeout: float = 90) -> tuple[dict, list[str]]:
    """Poll a sandbox job until it ends; its last state and the stages seen on the way."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        job = client.get(f"{API}/jobs/{job_id}", headers=headers).json()
        stage = job["state"] if job["state"] in ("queued", *TERMINAL) else (job["stage"] or job["state"])
        if not seen or seen[-1] != stage:
            seen.append(stage)
        if job["state"] in TERMINAL or time.monotonic() > deadline:
            return job, seen
        time.sleep(0.05)


def _refusal(r) -> str:
    err = r.json()["error"]
    return f"{r.status_code} {err['code']}: {err['message']}"


def _yuan(fen: float | int | None) -> str:
    return "-" if fen is None else f"{fen / 100:,.0f}"


def run(settings: Settings, client: TestClient, password: str, say: Callable[..., None]) -> None:
    ok, warn = dict(fg="green"), dict(fg="yellow")
    bureau = login(client, "bureau-admin", password)
    eng = login(client, "finrisk-eng", password)
    finrisk = next(o for o in client.get("/api/v1/orgs", headers=bureau).json() if o["code"] == "finrisk")

    # 1. The bureau opens the workspace the approval grants, and sets the privacy budgets.
    r = client.post(f"{API}/workspaces", headers=bureau, json={
        "org_id": finrisk["id"], "name": "小微企业信贷风控实验室", "scenario": "小微企业贷前信用评估",
        "approval_ref": APPROVAL, "grants": GRANTS})
    r.raise_for_status()
    ws = r.json()
    say(f"   bureau-admin opens workspace {ws['id']} 「{ws['name']}」 for {finrisk['name_zh']} "
        f"(approval {ws['approval_ref']}), granting:", **ok)
    for g in ws["resources"]:
        names = ", ".join(f["name"] for f in g["fields"])
        zh = f"{g['name_zh']:<{16 - _wide(g['name_zh'])}}"
        say(f"     {g['resource']:<22} {zh} {names}  [{'/'.join(g['share_modes'])}]")
    for code in BUDGETED:
        r = client.put(f"{API}/budgets", headers=bureau, json={
            "org_id": finrisk["id"], "resource": code, "epsilon": EPSILON_CAP, "note": f"approval {APPROVAL}"})
        r.raise_for_status()
    row = next(b for b in r.json() if b["period"] != "lifetime")
    say(f"   privacy budgets for {row['period']}: ε {EPSILON_CAP:g} on {' and on '.join(BUDGETED)} "
        f"(refresh on {row['refreshes_on']})", **ok)

    # 2. The partner's engineer reads schemas, grades and mock data; real rows are never shown.
    view = client.get(f"{API}/workspaces/{ws['id']}", headers=eng).json()
    say("   finrisk-eng sees the schemas of the granted fields (grade; pii marked), never a real row:")
    for g in view["resources"]:
        say(f"     {g['resource']:<22} " + ", ".join(f"{f['name']} {f['grade']}" + (" pii" if f["pii"] else "")
                                                for f in g["fields"]) + f"; mock {g['mock_rows']} rows")
    mock = client.get(f"{API}/workspaces/{ws['id']}/mock/enterprise_tax", headers=eng,
                      params={"rows": 1000}).json()
    say(f"   mock enterprise_tax: {mock['total']} synthetic rows, shown in full (they share no identifier "
        "with the real data); 3 of them:")
    for rec in mock["data"][:3]:
        say("     " + "  ".join(f"{k}={v}" for k, v in rec.items()))
    flagged = Counter(str(rec["tax_period"])[:4] for rec in mock["data"] if rec["has_violation_record"])
    periods = sorted(str(rec["tax_period"])[:7] for rec in mock["data"])
    year = max(flagged, key=lambda y: (flagged[y], y)) if flagged else periods[-1][:4]
    say(f"   the mock's tax periods run {periods[0]} … {periods[-1]}; finrisk-eng picks {year}, the year with "
        f"the most violation flags in the mock")

    problem = _jail_problem()
    with demo_worker(settings, concurrency=2):
        # 3. A declarative aggregate job: differentially private cells, paid for in ε.
        spec = _example("tax_arrears_by_industry")
        rel = spec["outputs"][0]["release"]
        vat = next(m for m in rel["measures"] if m["name"] == "vat_total_fen")
        example_cap = vat["bounds"][1]
        vat["bounds"] = [0, VAT_CAP_FEN]  # the partner's choices: a tighter clamp, more ε for less noise
        rel["epsilon"] = JOB_EPSILON
        r = client.post(f"{API}/workspaces/{ws['id']}/jobs", headers=eng,
                        json={"kind": "spec", "spec": spec, "params": {"year": int(year)}})
        r.raise_for_status()
        sub = r.json()
        code_jobs: dict[str, int] = {}
        if problem is None:  # queue the code jobs now: they run next to the spec job
            for name, code in (("scores", CODE), ("leaky", LEAKY_CODE)):
                r = client.post(f"{API}/workspaces/{ws['id']}/jobs", headers=eng,
                                json={"kind": "code", "spec": MANIFEST, "code": code})
                r.raise_for_status()
                code_jobs[name] = r.json()["id"]
        say(f"   finrisk-eng submits {spec['name']} for {year}, clamping each enterprise's yearly VAT to "
            f"{_yuan(VAT_CAP_FEN)} yuan (the example's {_yuan(example_cap)} would drown cells this small in "
            f"noise) -> job {sub['id']} {sub['state']}, ε {sub['epsilon_reserved']:g} reserved on each resource "
            "it reads", **ok)
        job, stages = _watch(client, eng, sub["id"])
        say(f"   stages seen: {' → '.join(stages)}", fg="green" if job["state"] == "succeeded" else "red")
        if job["state"] == "succeeded":
            out = client.get(f"{API}/jobs/{job['id']}/results/vat_by_industry", headers=eng).json()
            s, scales = out["summary"], out["summary"]["scales"]
            say(f"   released vat_by_industry ({out['policy']}, ε {s['epsilon']:.3g} spent): noise added once per "
                f"cell (scale ±{scales['enterprises']:.0f} enterprises, ±{_yuan(scales['vat_total_fen'])} yuan), "
                f"{s['suppressed']} of {s['suppressed'] + s['cells']} industries suppressed under "
                f"{rel['min_cell']} enterprises after noise:", **ok)
            say(f"     {'industry':<26}{'enterprises':>12}{'VAT (yuan)':>16}")
            for rec in sorted(out["data"], key=lambda d: -(d["enterprises"] or 0)):
                say(f"     {rec['industry']:<{26 - _wide(rec['industry'])}}{rec['enterprises']:>12,}"
                    f"{_yuan(rec['vat_total_fen']):>16}")
        else:
            say(f"   job {job['id']} {job['state']}: {job['error_code']} {job['error_message']}", fg="red")
        left = [b for b in client.get(f"{API}/budgets", headers=eng).json() if b["period"] != "lifetime"]
        say("   budget left: " + "; ".join(f"{b['resource']} ε {b['epsilon_left']:g} of {b['epsilon_cap']:g} "
                                           f"(spent {b['epsilon_spent']:g})" for b in left)
            + f"; refreshes on {left[0]['refreshes_on']}", **ok)

        # 4. Partner code in the jail: bounded scores under tokens; its stdout stays with operators.
        if problem is not None:
            say(f"   partner code skipped: this host cannot run the jail ({problem})", **warn)
        else:
            job, _ = _watch(client, eng, code_jobs["scores"])
            if job["state"] == "succeeded":
                out = client.get(f"{API}/jobs/{job['id']}/results/scores", headers=eng,
                                 params={"rows": 3}).json()
                s = out["summary"]
                say(f"   partner code capital_score ran in the jail (bubblewrap, its own uid, no network) -> "
                    f"{out['rows']:,} scores released, key {s['key']}, bounds {s['bounds']}, "
                    f"{s['decimals']} decimals:", **ok)
                for rec in out["data"]:
                    say(f"     uscc token {rec['uscc']}  score {rec['score']}")
                rel = job["releases"][0]
                say(f"   what finrisk sees of the run: state {job['state']} ({job['progress']:.0%}), "
                    f"release {rel['output']} ({rel['policy']}, {rel['rows']:,} rows, columns "
                    f"{', '.join(rel['columns'])}); the rows the code printed stay in the operators' log", **ok)
            elif job["error_code"] in ("configuration_error", "unavailable"):  # the host, not the code
                say(f"   partner code could not run on this host: {job['error_message']}", **warn)
                problem = job["error_message"]
            else:
                say(f"   job {job['id']} {job['state']}: {job['error_code']} {job['error_message']}", fg="red")

        # 5. What the sandbox refuses, and how it says so.
        say("   refused, with the reason:")
        bad = copy.deepcopy(spec)
        bad["inputs"][0]["fields"].append("corporate_income_tax_amount")
        r = client.post(f"{API}/workspaces/{ws['id']}/jobs", headers=eng,
                        json={"kind": "spec", "spec": bad, "params": {"year": int(year)}})
        say(f"     a field outside the grant -> {_refusal(r)}", fg="green" if r.status_code == 403 else "red")
        r = client.post(f"{API}/workspaces/{ws['id']}/jobs", headers=eng, json={"kind": "spec", "spec": PREFIX_SPEC})
        say(f"     a record column computed from an identifier -> {_refusal(r)}",
            fg="green" if r.status_code == 422 else "red")
        r = client.post(f"{API}/workspaces/{ws['id']}/jobs", headers=eng,
                        json={"kind": "spec", "spec": spec, "params": {"year": int(year)}})
        say(f"     the same ε {JOB_EPSILON:g} job again -> {_refusal(r)}",
            fg="green" if r.status_code == 409 else "red")
        if "leaky" in code_jobs:
            job, _ = _watch(client, eng, code_jobs["leaky"])  # let it end before the worker stops
        if "leaky" in code_jobs and problem is None:
            from authops.platform.sandbox import jobs as sandbox_jobs

            good = job["state"] == "failed" and job["error_message"] == sandbox_jobs.CODE_FAILED
            say(f"     partner code raising an exception full of rows -> job {job['state']}: "
                f"\"{job['error_message']}\" (and nothing else)", fg="green" if good else "red")


def _wide(text: str) -> int:
    """How many extra columns East Asian wide characters take in a terminal (for alignment)."""
    import unicodedata

    return sum(unicodedata.east_asian_width(ch) in ("W", "F") for ch in text)
