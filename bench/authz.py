"""Authorization decision latency at 10,000 policies and 10,000 role assignments.

Ours: `Authorizer` (casbin role manager + rule index, rules loaded from the database
through sqlalchemy-adapter). Baseline, same run, same rules: casbin's plain `Enforcer`.
Writes bench/results/authz.json. Target: p99 under 5 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import casbin
from sqlalchemy import insert
from sqlmodel import Session

from authops.core import db
from authops.core.identity import OrgKind, Principal
from authops.core.settings import Settings
from authops.policies import enforcer as authz
from authops.policies import permissions
from authops.policies.models import CasbinRule


def _percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000  # noqa: E731
    return {"p50_ms": round(pick(0.50), 4), "p99_ms": round(pick(0.99), 4),
            "max_ms": round(s[-1] * 1000, 4), "mean_ms": round(statistics.fmean(s) * 1000, 4)}


def build(settings: Settings, n_policies: int, n_users: int, n_orgs: int, rng: random.Random) -> list[tuple]:
    """Role rules from the matrix, padded with per-organisation grants up to n_policies."""
    db.upgrade(settings)
    actions = list(permissions.ACTIONS)
    rows: list[dict] = []
    role_rules = permissions.policy_rules()
    for sub, dom, act in role_rules:
        rows.append({"ptype": "p", "v0": sub, "v1": dom, "v2": act})
    for i in range(n_policies - len(role_rules)):
        rows.append({"ptype": "p", "v0": f"role:custom_{i % 500}", "v1": f"org:{i % n_orgs}",
                     "v2": rng.choice(actions)})
    roles = list(permissions.ROLES)
    requests = []
    for u in range(n_users):
        org = u % n_orgs
        role = rng.choice(roles)
        rows.append({"ptype": "g", "v0": f"user:{u}", "v1": f"role:{role}", "v2": f"org:{org}"})
        requests.append((u, org))
    with Session(db.get_engine(settings)) as s:
        s.execute(insert(CasbinRule), rows)
        authz.bump_version(s)
        s.commit()
    return requests


def measure(decide, requests, actions, n: int, rng: random.Random) -> list[float]:
    samples = []
    for _ in range(n):
        u, org = rng.choice(requests)
        act = rng.choice(actions)
        t = time.perf_counter()
        decide(u, org, act)
        samples.append(time.perf_counter() - t)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=500)
    parser.add_argument("--checks", type=int, default=5_000)
    parser.add_argument("--baseline-checks", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results/authz.json"))
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        requests = build(settings, args.policies, args.users, args.orgs, rng)
        engine = db.get_engine(settings)
        actions = list(permissions.ACTIONS)

        t = time.perf_counter()
        ours = authz.Authorizer(engine)
        load_s = time.perf_counter() - t
        kinds = list(OrgKind)
        principals = {}

        def decide(u, org, act):
            p = principals.get(u) or principals.setdefault(
                u, Principal(kind="user", id=u, org_id=org, org_kind=kinds[0], name=str(u)))
            return ours.allowed(p, act)

        measure(decide, requests, actions, 200, rng)  # warm-up
        ours_samples = measure(decide, requests, actions, args.checks, rng)

        plain = casbin.Enforcer(casbin.Enforcer.new_model(text=authz.MODEL_TEXT),
                                ours._enforcer.adapter)
        base_samples = measure(lambda u, org, act: plain.enforce(f"user:{u}", f"org:{org}", act),
                               requests, actions, args.baseline_checks, rng)
        allowed = sum(1 for u, org in requests[:2000] for a in actions[:3] if decide(u, org, a))
    result = {
        "benchmark": "authorization decision",
        "policies": args.policies, "role_assignments": args.users, "organisations": args.orgs,
        "ours (role manager + rule index)": {"checks": args.checks, **_percentiles(ours_samples),
                                                "load_s": round(load_s, 3)},
        "baseline (plain casbin Enforcer)": {"checks": args.baseline_checks, **_percentiles(base_samples)},
        "target_p99_ms": 5.0,
        "sanity_allowed_of_6000": allowed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
