"""Privacy and sandbox attacks at a larger size than tests/attacks: each beside its control, in one run.

Every attack is the one tests/attacks runs (the partner code, specs and decoders are shared:
tests/attacks/kit.py), against the real platform in a temporary data folder (SQLite, encrypted
object store, the job handler, the jail): the control is the same attack without the protection
(exact or unlimited answers, the gate's measurement switched off, an unkeyed hash, constant time
off, the jail's own report, a process outside the jail); the platform is the attack as a partner
meets it. Also the cost of the gate's re-identification measurement: a record release with it
beside the same release without it, at several sizes.

    python -m bench.privacy [--people 2000] [--quick] [--out bench/results/privacy.json]

Prints a table (attack, control, platform, what was measured) and writes the JSON. Partner-code
attacks need the jail (bubblewrap, root); without it they are listed as not run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def platform_in(folder: Path):
    """Settings, an open session and the environment of a fresh embedded platform in `folder`."""
    from sqlmodel import Session

    from authops.core import db as core_db
    from authops.core.settings import Settings, reset_settings

    saved = {k: os.environ.get(k) for k in ("AUTHOPS_DATA_DIR", "AUTHOPS_DATABASE_URL")}
    os.environ["AUTHOPS_DATA_DIR"] = str(folder)
    os.environ["AUTHOPS_DATABASE_URL"] = f"sqlite:///{folder / 'authops.sqlite3'}"
    reset_settings()
    settings = Settings()
    core_db.upgrade(settings)
    try:
        with Session(core_db.get_engine(settings), expire_on_commit=False) as session:
            yield settings, session
    finally:
        core_db.dispose_engines()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()


def _row(attack: str, control: str, platform_: str, failed: bool, metric: tuple | None = None,
         **figures: Any) -> dict[str, Any]:
    """One attack: what it got without the protection and against the platform (text for the table),
    whether it failed against the platform while working on the control, and its headline figure
    for bench/report.py: (figure, ours, baseline = the control, unit, target, op, value)."""
    row = {"attack": attack, "control": control, "platform": platform_, "attack_failed": failed, "figures": figures}
    if metric is not None:
        name, ours, base, unit, target, op, value = metric
        row["figure"] = {"key": name.split(":")[0].replace(" ", "_"), "figure": name, "ours": ours, "baseline": base,
                         "unit": unit, "baseline_what": "the same attack without the protection", "target": target,
                         "target_op": op, "target_value": value, "ratio_ok": False, "headline": True}
    return row


# --- record releases -----------------------------------------------------------------------------

def reidentification(settings, session, people: int) -> dict[str, Any]:
    from sqlmodel import select

    from authops.sandbox import reid
    from authops.sandbox.models import SandboxRelease
    from tests.attacks.kit import RECORD_COLUMNS, neighbour_attack, record_spec
    from tests.attacks.world import lab, load, released, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=3, wide_births=True))
    targets = np.random.default_rng(0).choice(rows.num_rows, min(500, people // 4), replace=False)
    known = ["sex", "birth_date", "district"]
    risky = record_spec(code, RECORD_COLUMNS, [], 2)
    control = lab(session, code, rows)
    with mock.patch.dict(reid.THRESHOLDS, {k: 1.0 for k in reid.THRESHOLDS}):
        job = run(settings, submit(session, control, kind="spec", spec=risky))
    summary = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job.id)).one().summary
    risks = summary["reidentification"]
    matched_c, right_c = neighbour_attack(rows, released(session, settings, control, job.id, "rows"), known, targets)
    partner = lab(session, code, rows)
    refused = run(settings, submit(session, partner, kind="spec", spec=risky))
    safe = run(settings, submit(session, partner, kind="spec",
                                spec=record_spec(code, ["id_number", "district", "arrears"], ["district"], 10)))
    safe_risks = session.exec(select(SandboxRelease).where(SandboxRelease.job_id == safe.id)).one().summary[
        "reidentification"]
    matched_s, _ = neighbour_attack(rows, released(session, settings, partner, safe.id, "rows"), ["district"], targets)
    return _row("re-identification from a record release (anonymeter)",
                f"released: {matched_c:.0%} of targets singled out, arrears of {right_c:.0%} learned",
                f"refused ({refused.error_code}); a k-anonymous release passes, {matched_s:.0%} singled out",
                refused.state == "failed" and matched_s == 0.0 and matched_c > 0.5,
                ("re-identification: targets singled out", 0.0 if refused.state == "failed" else matched_c,
                 round(matched_c, 3), "share", "= 0", "==", 0.0),
                people=people, targets=len(targets), risky_release_risks={k: risks.get(k) for k in reid.RISKS},
                risky_release_ci_low=risks["ci_low"], sample_rows=risks["sample_rows"],
                control_rows=risks["control_rows"],
                refusal=refused.error_message, safe_release_risks={k: safe_risks.get(k) for k in reid.RISKS},
                safe_release_ci_low=safe_risks["ci_low"], thresholds=dict(reid.THRESHOLDS))


def reid_cost(sizes: list[int]) -> dict[str, Any]:
    """A record release through the gate with the measurement beside the same release without it."""
    from authops.sandbox import gate, reid
    from authops.sandbox.spec import build_plan, load_spec
    from tests.attacks.kit import record_spec
    from tests.attacks.world import SCHEMA, residents

    spec = load_spec(record_spec("residents", ["id_number", "district", "arrears"], ["district"], 10))
    plan = build_plan(spec, {"residents": {1: SCHEMA}})
    o = plan.outputs["rows"]
    fields = {("residents", f.name): f for f in SCHEMA.fields}
    out = {}
    gate.release(o, residents(300, seed=1, wide_births=True).select(list(o.roles["columns"])), token_key=bytes(32),
                 fields=fields)  # anonymeter's first use compiles its kernel: not timed
    for n in sizes:
        table = residents(n, seed=2, wide_births=True).select(list(o.roles["columns"]))
        t0 = time.perf_counter()
        gate.release(o, table, token_key=bytes(32), fields=fields)
        ours = time.perf_counter() - t0
        with mock.patch.object(reid, "assess", lambda *a, **k: {"measured": False, "reason": "baseline"}):
            t0 = time.perf_counter()
            gate.release(o, table, token_key=bytes(32), fields=fields)
            base = time.perf_counter() - t0
        out[str(n)] = {"with_measurement_s": round(ours, 3), "without_s": round(base, 3),
                       "measurement_s": round(ours - base, 3)}
    return out


# --- aggregates ------------------------------------------------------------------------------------

def averaging(settings, session, people: int, folder: Path) -> dict[str, Any]:
    from authops.core.errors import AuthopsError
    from authops.sandbox.dp import release_partial
    from tests.attacks.kit import cells, count_spec, without_ledger
    from tests.attacks.world import DISTRICTS, lab, load, released, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=21))
    truth = {d: 0 for d in DISTRICTS}
    for d, a in zip(rows.column("district").to_pylist(), rows.column("arrears").to_pylist()):
        truth[d] += int(a)
    eps, cap = 0.5, 2.0
    spec = count_spec(code, eps)
    (folder / "avg").mkdir()
    partial, s = without_ledger(session, settings, spec, folder / "avg", "n")
    draws = [cells(release_partial(partial, s).table, "district", "people") for _ in range(2000)]
    mean_c = {d: float(np.mean([c.get(d, 0) for c in draws])) for d in DISTRICTS}
    partner = lab(session, code, rows, epsilon=cap)
    got = []
    while True:
        try:
            job_id = submit(session, partner, kind="spec", spec=spec)
        except AuthopsError as exc:
            session.rollback()
            stopped = exc.code
            break
        got.append(cells(released(session, settings, partner, run(settings, job_id).id, "n"), "district", "people"))
    mean_p = {d: float(np.mean([c.get(d, 0) for c in got])) for d in DISTRICTS}

    def score(mean):
        return (sum(round(mean[d]) == truth[d] for d in DISTRICTS) / len(DISTRICTS),
                math.sqrt(np.mean([(mean[d] - truth[d]) ** 2 for d in DISTRICTS])))
    exact_c, rmse_c = score(mean_c)
    exact_p, rmse_p = score(mean_p)
    return _row("averaging repeated aggregates",
                f"{len(draws)} releases: {exact_c:.0%} of cells exact, RMSE {rmse_c:.2f}",
                f"{len(got)} releases then {stopped}: {exact_p:.0%} exact, RMSE {rmse_p:.2f}",
                stopped == "budget_exhausted" and exact_p < 1.0 and exact_c == 1.0,
                ("averaging: cells recovered exactly", round(exact_p, 3), round(exact_c, 3), "share", "< 1", "<", 1.0),
                people=people, cells=len(DISTRICTS), epsilon_each=eps, budget=cap)


def reconstruction(settings, session, people: int, targets_n: int, queries: int) -> dict[str, Any]:
    from tests.attacks.kit import PER_JOB, cells, epsilon_each, reconstruct, subset_spec
    from tests.attacks.world import lab, load, released, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=22))
    rng = np.random.default_rng(5)
    owes = np.asarray(rows.column("arrears"))
    targets = np.concatenate([rng.choice(np.flatnonzero(owes), targets_n // 2, replace=False),
                              rng.choice(np.flatnonzero(~owes), targets_n // 2, replace=False)])
    ids = [rows.column("id_number")[int(t)].as_py() for t in targets]
    secret = np.array([int(owes[int(t)]) for t in targets])
    A = (rng.random((queries, targets_n)) < 0.5).astype(int)
    acc_c = float((reconstruct(A, A @ secret) == secret).mean())
    by_cap = {}
    for cap in (1.0, 3.0):
        partner = lab(session, code, rows, epsilon=cap)
        y = np.zeros(queries)
        for first in range(0, queries, PER_JOB):
            spec = subset_spec(code, ids, A, first, epsilon_each(cap, queries))
            job = run(settings, submit(session, partner, kind="spec", spec=spec))
            for j in range(first, min(first + PER_JOB, queries)):
                y[j] = cells(released(session, settings, partner, job.id, f"q{j}"), f"q{j}", "owing").get("in", 0.0)
        acc = float((reconstruct(A, y) == secret).mean())
        bound = math.exp(cap) / (1 + math.exp(cap))
        by_cap[str(cap)] = {"accuracy": round(acc, 3), "dp_bound": round(bound, 3)}
    worst = max(v["accuracy"] - v["dp_bound"] for v in by_cap.values())
    return _row("reconstruction from overlapping counts (Dinur-Nissim)",
                f"exact subset sums: {acc_c:.0%} of secrets reconstructed",
                "; ".join(f"ε {k}: {v['accuracy']:.0%} (bound {v['dp_bound']:.0%})" for k, v in by_cap.items()),
                worst <= 3 * math.sqrt(0.25 / targets_n) and acc_c == 1.0,
                ("reconstruction at ε 1: secrets right", by_cap["1.0"]["accuracy"], acc_c, "share",
                 f"≤ e^ε/(1+e^ε) = {by_cap['1.0']['dp_bound']:.2f} (+3σ)", "<=",
                 round(by_cap["1.0"]["dp_bound"] + 3 * math.sqrt(0.25 / targets_n), 3)),
                people=targets_n, queries=queries, guessing=0.5, by_budget=by_cap)


# --- tokens ------------------------------------------------------------------------------------------

def token_linkage(settings, session, people: int) -> dict[str, Any]:
    from authops.sandbox.masking import tokens
    from tests.attacks.kit import candidates, roster_spec, unkeyed
    from tests.attacks.world import lab, load, released, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=31))
    ids = rows.column("id_number").to_pylist()
    a, b = lab(session, code, rows), lab(session, code, rows)
    a2 = lab(session, code, rows, partner=a.partner)
    got = {}
    for name, who in (("a", a), ("b", b), ("a2", a2)):
        job = run(settings, submit(session, who, kind="spec", spec=roster_spec(code)))
        got[name] = set(released(session, settings, who, job.id, "rows").column("id_number").to_pylist())
    space = candidates()
    t0 = time.perf_counter()
    hashed = set(unkeyed(space))
    brute_s = time.perf_counter() - t0
    reversed_c = len(set(unkeyed(ids)) & hashed) / len(ids)
    one_key = b"k" * 32  # control: one key for every customer
    for_a = set(tokens.tokenize(ids, one_key, domain="identifier_person").to_pylist())
    for_b = set(tokens.tokenize(ids, one_key, domain="identifier_person").to_pylist())
    linked_c = len(for_a & for_b) / len(ids)
    linked = {"customers": len(got["a"] & got["b"]) / len(ids), "products": len(got["a"] & got["a2"]) / len(ids)}
    reversed_p = len(got["a"] & hashed)
    return _row("linking tokens across customers; brute-forcing them",
                f"unkeyed hash: {reversed_c:.0%} reversed in {brute_s:.1f} s; one shared key: {linked_c:.0%} linked",
                f"{linked['customers']:.0%} linked across customers, {linked['products']:.0%} across products, "
                f"{reversed_p} reversed", not any(linked.values()) and reversed_p == 0 and reversed_c == 1.0,
                ("tokens: people linked across customers", linked["customers"], linked_c, "share", "= 0", "==", 0.0),
                people=people, candidates=len(space))


# --- partner code ------------------------------------------------------------------------------------

def error_channel(settings, session, people: int, folder: Path) -> dict[str, Any]:
    from authops.platform.sandbox import jobs
    from authops.sandbox.jail import run_partner_code
    from tests.attacks.kit import ERROR_CODE, ERROR_FIRST_LINE, SCORE, error_secret, manifest
    from tests.attacks.world import lab, load, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=11))
    partner = lab(session, code, rows)
    spec = manifest(code, ["income", "arrears"], {"s": SCORE})
    (folder / "err").mkdir()
    (folder / "err").chmod(0o755)
    inputs = jobs._decrypt_inputs(session, settings, jobs.Planned(session, "code", spec, ERROR_CODE), folder / "err",
                                  project=True)
    jailed = run_partner_code(ERROR_CODE, inputs, {}, slot=4090, output_dir=folder / "err" / "out")
    line = int(re.search(r"line (\d+)", jailed.summary).group(1))
    job = run(settings, submit(session, partner, kind="code", spec=spec, code=ERROR_CODE))
    bits = 8 if line - ERROR_FIRST_LINE == error_secret(rows) else 0
    return _row("error channel (exception and line)", f"\"{jailed.summary}\": {bits} of 8 bits",
                f"\"{job.error_message[:60]}…\": 0 bits", job.error_message == jobs.CODE_FAILED and bits == 8,
                ("error channel: bits out per job", 0 if job.error_message == jobs.CODE_FAILED else bits, bits, "bits",
                 "= 0", "==", 0))


def timing_channel(settings, session, people: int, bits: int) -> dict[str, Any]:
    from authops.core.settings import reset_settings
    from authops.platform.sandbox import jobs
    from tests.attacks.kit import SCORE, TIMING_CODE, decode_durations, manifest, timing_bit
    from tests.attacks.world import lab, load, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=12))
    partner = lab(session, code, rows)
    income = rows.column("income").to_pylist()
    picked = list(np.random.default_rng(1).choice(len(income), bits, replace=False))
    truth = [timing_bit(income[i]) for i in picked]
    spec = manifest(code, ["income"], {"s": SCORE}, time_limit=6)

    def durations() -> list[float]:
        out = []
        for row in picked:
            job = run(settings, submit(session, partner, kind="code", spec=spec, code=TIMING_CODE,
                                       params={"row": int(row)}))
            out.append((job.finished_at - job.started_at).total_seconds())
        return out

    os.environ["AUTHOPS_SANDBOX_CODE_CONSTANT_TIME"] = "false"
    reset_settings()
    control = durations()
    os.environ["AUTHOPS_SANDBOX_CODE_CONSTANT_TIME"] = "true"
    reset_settings()
    note = ""
    with contextlib.ExitStack() as stack:
        if not jobs.constant_time(jobs.get_settings()):  # settings.py without the field yet
            stack.enter_context(mock.patch.object(jobs, "constant_time", lambda s: True))
            note = " (switched on in-process: the setting sandbox_code_constant_time is missing)"
        padded = durations()
    os.environ.pop("AUTHOPS_SANDBOX_CODE_CONSTANT_TIME")
    reset_settings()
    got_c, got_p = decode_durations(control), decode_durations(padded)
    right_c = sum(a == b for a, b in zip(got_c or [], truth))
    return _row("timing channel (sleep on a secret bit)",
                f"{right_c} of {bits} bits; durations {min(control):.2f}-{max(control):.2f} s",
                f"no signal: every run {min(padded):.2f}-{max(padded):.2f} s{note}", got_p is None and right_c == bits,
                ("timing channel: bits out", 0 if got_p is None else sum(a == b for a, b in zip(got_p, truth)),
                 right_c, "bits", "= 0", "==", 0),
                control_durations_s=[round(d, 2) for d in control], platform_durations_s=[round(d, 2) for d in padded],
                time_limit_s=6, gate_share=jobs.GATE_SHARE)


def values_channel(settings, session, people: int) -> dict[str, Any]:
    from authops.platform.sandbox import jobs
    from authops.sandbox import invariance
    from authops.sandbox.masking import tokens
    from tests.attacks.kit import SMUGGLER, SMUGGLER_FIELDS, SMUGGLER_OUTPUTS, manifest
    from tests.attacks.world import lab, load, released, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=13))
    spec = manifest(code, SMUGGLER_FIELDS, SMUGGLER_OUTPUTS)
    ids = rows.column("id_number").to_pylist()
    control = lab(session, code, rows)
    with mock.patch.object(invariance, "identity_fields", lambda specs: {a: {} for a in specs}):
        job = run(settings, submit(session, control, kind="code", spec=spec, code=SMUGGLER))
    key = jobs.token_key(settings, control.ws.org_id, control.ws.id)
    token_of = dict(zip(ids, tokens.tokenize(ids, key, domain="model-key").to_pylist()))
    year = released(session, settings, control, job.id, "year").to_pydict()
    mmdd = dict(zip(*released(session, settings, control, job.id, "mmdd").to_pydict().values()))
    got = {t: f"{round(y * 10000):04d}{round(mmdd[t] * 10000):04d}" for t, y in zip(year["id_number"], year["score"])}
    dated = sum(got.get(token_of[i]) == i[6:14] for i in ids) / len(ids)
    partner = lab(session, code, rows)
    refused = run(settings, submit(session, partner, kind="code", spec=spec, code=SMUGGLER))
    return _row("birth dates as scores, surnames as rows", f"{dated:.0%} of birth dates read off the scores",
                f"{refused.state} ({refused.error_code}), nothing released",
                refused.state == "failed" and dated == 1.0,
                ("values channel: birth dates out", 0.0 if refused.state == "failed" else dated, dated, "share",
                 "= 0", "==", 0.0), people=people)


def oracle(settings, session, people: int) -> dict[str, Any]:
    from authops.sandbox import invariance
    from tests.attacks.kit import MODEL, ORACLE, SCORER, manifest
    from tests.attacks.world import lab, load, released, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=14))
    ids = rows.column("id_number").to_pylist()
    partner = lab(session, code, rows)
    scorer = manifest(code, ["id_number", "income"], {"s": MODEL})
    job = run(settings, submit(session, partner, kind="code", spec=scorer, code=SCORER))
    known = set(released(session, settings, partner, job.id, "s").column("id_number").to_pylist())
    guesses = ids[:100] + [i[:-4] + "0000" for i in ids[100:200]]
    blind = manifest(code, ["income"], {"s": MODEL})

    def attack():
        job = run(settings, submit(session, partner, kind="code", spec=blind, code=ORACLE, params={"guesses": guesses}))
        if job.state != "succeeded":
            return job, 0
        tokens_out = released(session, settings, partner, job.id, "s").column("id_number").to_pylist()
        return job, sum(t in known for t in tokens_out)

    with mock.patch.object(invariance, "unknown_keys", lambda *a: 0):
        _, confirmed_c = attack()
    job, confirmed_p = attack()
    return _row("the tokenizer as an oracle for guessed IDs", f"{confirmed_c} of 100 right guesses confirmed",
                f"{job.state} ({job.error_code}), {confirmed_p} confirmed", confirmed_p == 0 and confirmed_c == 100,
                ("tokenizer oracle: guesses confirmed", confirmed_p, confirmed_c, "IDs", "= 0", "==", 0),
                guesses=len(guesses))


def scratch(settings, session, people: int, folder: Path) -> dict[str, Any]:
    import pandas as pd

    from authops.sandbox.jail import run_partner_code
    from tests.attacks.kit import JAILED_PROBE, PROBE, SCORE, WRITER, manifest
    from tests.attacks.world import lab, load, residents, run, submit

    code, rows = load(session, settings, residents(people, seed=41))
    tenant = lab(session, code, rows)
    marker = uuid.uuid4().hex[:12]
    job_id = submit(session, tenant, kind="code", spec=manifest(code, ["income"], {"s": SCORE}, time_limit=40),
                    code=WRITER, params={"marker": marker, "hold": 8})
    thread = threading.Thread(target=run, args=(settings, job_id))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(Path("/proc").glob(f"[0-9]*/root/tmp/scratch-{marker}.csv")):
        time.sleep(0.2)
    host = subprocess.run([sys.executable, "-c", PROBE + f"\nimport json\nprint(json.dumps(probe({marker!r})))"],
                          capture_output=True, text=True, timeout=300)
    control = json.loads(host.stdout or "[]")
    own = folder / "b" / "b.parquet"
    own.parent.mkdir()
    own.parent.chmod(0o755)
    pd.DataFrame({"x": [1]}).to_parquet(own)
    own.chmod(0o644)
    jailed = run_partner_code(JAILED_PROBE, {"people": own}, {"marker": marker}, slot=4091,
                              output_dir=folder / "b" / "out")
    thread.join(timeout=120)
    found = [r for r in pd.read_parquet(jailed.outputs["result"]).itertuples(index=False) if r[0] != "none"]
    return _row("another tenant's scratch and decrypted inputs",
                f"a host process finds {len(control)} path(s): {', '.join(sorted({w for w, _ in control}))}",
                f"from the jail: {len(found)} path(s)", not found and bool(control),
                ("scratch: other tenants' files reached", len(found), len(control), "paths", "= 0", "==", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000, help="residents in the record, aggregate and token attacks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/privacy.json"))
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # the refused jobs' tracebacks are the point, not news
    people = 400 if args.quick else args.people
    from tests.sandbox.test_jail import _jail_missing

    jail_problem = _jail_missing()
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="authops-bench-privacy-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        with platform_in(folder / "data") as (settings, session):
            rows.append(reidentification(settings, session, people))
            rows.append(averaging(settings, session, people, folder))
            rows.append(reconstruction(settings, session, people, 40 if args.quick else 100,
                                       60 if args.quick else 200))
            rows.append(token_linkage(settings, session, people))
            code_attacks = [("error channel", lambda: error_channel(settings, session, 200, folder)),
                            ("timing channel", lambda: timing_channel(settings, session, 100, 2 if args.quick else 4)),
                            ("values channel", lambda: values_channel(settings, session, 200 if args.quick else 500)),
                            ("tokenizer oracle", lambda: oracle(settings, session, 300)),
                            ("other tenants' scratch", lambda: scratch(settings, session, 100, folder))]
            for name, attack in code_attacks:
                rows.append(attack() if jail_problem is None else
                            _row(name, "not run", f"not run: {jail_problem}", False))
        cost = reid_cost([2_000, 20_000] if args.quick else [2_000, 20_000, 200_000])
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
              "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - started, 1), "people": people, "attacks": rows,
              "all_failed": all(r["attack_failed"] for r in rows), "reid_measurement_cost": cost}
    from authops.sandbox.reid import SAMPLE_ROWS

    biggest = max(cost, key=int)
    result["figures"] = [r["figure"] for r in rows if "figure" in r] + [
        {"key": "reid_cost", "figure": f"record release of {int(biggest):,} rows through the gate, with the "
         "anonymeter measurement", "ours": cost[biggest]["with_measurement_s"], "baseline": cost[biggest]["without_s"],
         "unit": "s", "baseline_what": "the same release without the measurement", "headline": False,
         "note": f"a sample of at most {SAMPLE_ROWS:,} rows is measured whatever the size"}]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    width = max(len(r["attack"]) for r in rows)
    print(f"{'attack':<{width}}  {'failed':<6}  control (no protection)  |  platform   "
          "(failed: worked on the control, not on the platform)")
    for r in rows:
        print(f"{r['attack']:<{width}}  {'yes' if r['attack_failed'] else 'NO':<6}  {r['control']}  |  {r['platform']}")
    print("\nre-identification measurement in the gate (record release with it / without it):")
    for n, c in cost.items():
        print(f"  {int(n):>8,} rows: {c['with_measurement_s']:.2f} s / {c['without_s']:.2f} s "
              f"(+{c['measurement_s']:.2f} s)")
    reid_row = rows[0]["figures"]
    print(f"\nanonymeter on the risky release: {reid_row.get('risky_release_risks')} (lower bounds "
          f"{reid_row.get('risky_release_ci_low')}); on the k-anonymous one: {reid_row.get('safe_release_risks')}")
    print(f"\nall attacks failed: {result['all_failed']}; wrote {args.out}")


if __name__ == "__main__":
    main()
