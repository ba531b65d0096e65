"""Partner code that tries to get data out through a side door: the error it raises, the time it
takes, the values and the number of rows the release policy admits, and the tokenizer as an oracle.

Each attack is real partner code run in the real jail through the real job handler. Its control
shows that it works without the protection (what the jail itself reports, the platform with one
check switched off, or constant time off); then the same attack against the platform gets nothing.
"""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from authops.core.settings import reset_settings
from authops.platform.sandbox import jobs
from authops.sandbox import invariance
from authops.sandbox.jail import JailStatus, run_partner_code
from authops.sandbox.masking import tokens
from authops.sandbox.models import SandboxRelease
from tests.attacks.kit import (
    ERROR_CODE, ERROR_FIRST_LINE, MODEL, ORACLE, SCORE, SCORER, SMUGGLER, SMUGGLER_FIELDS, SMUGGLER_OUTPUTS,
    TIMING_CODE, decode_durations, error_secret, manifest, timing_bit,
)
from tests.attacks.world import figures, lab, load, released, residents, run, submit
from tests.sandbox.test_jail import SLOT, _jail_missing
from tests.support.services import services_required

if (_why := _jail_missing()) and services_required():
    pytest.fail(_why + " and AUTHOPS_REQUIRE_SERVICES=1", pytrace=False)
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""),
              pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)]


def _releases(session, job_id: int) -> list[SandboxRelease]:
    session.expire_all()
    return list(session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id)))


def test_the_error_and_its_line_carry_nothing_out(session, db_settings, tmp_path):
    code, rows = load(session, db_settings, residents(120, seed=11))
    partner = lab(session, code, rows)
    spec = manifest(code, ["income", "arrears"], {"s": SCORE})

    # Control: what the jail reports of the failure (the platform used to pass it on).
    tmp_path.chmod(0o755)
    inputs = jobs._decrypt_inputs(session, db_settings, jobs.Planned(session, "code", spec, ERROR_CODE), tmp_path,
                                  project=True)
    jailed = run_partner_code(ERROR_CODE, inputs, {}, slot=SLOT, output_dir=tmp_path / "out")
    assert jailed.status is JailStatus.ERROR
    line = int(re.search(r"line (\d+)", jailed.summary).group(1))
    control_bits = 8 if line - ERROR_FIRST_LINE == error_secret(rows) else 0

    job = run(db_settings, submit(session, partner, kind="code", spec=spec, code=ERROR_CODE))
    assert job.state == "failed" and job.error_code == "job_failed"
    assert job.error_message == jobs.CODE_FAILED  # one phrase for every failure: 0 bits beyond "failed"
    assert not re.search(r"\d", job.error_message) and "ValueError" not in job.error_message
    figures("error channel", secret_bits=8, control_summary=jailed.summary, control_bits_recovered=control_bits,
            platform_message=job.error_code, platform_bits_recovered=0)
    assert control_bits == 8


def _durations(session, db_settings, partner, code: str, picked: list[int]) -> list[float]:
    spec = manifest(code, ["income"], {"s": SCORE}, time_limit=6)
    out = []
    for row in picked:
        job = run(db_settings, submit(session, partner, kind="code", spec=spec, code=TIMING_CODE,
                                      params={"row": row}))
        assert job.state == "succeeded", job.error_message
        out.append((job.finished_at - job.started_at).total_seconds())  # what the job API shows the partner
    return out


def test_the_run_time_carries_nothing_out_in_constant_time(session, db_settings, monkeypatch):
    code, rows = load(session, db_settings, residents(60, seed=12))
    partner = lab(session, code, rows)
    income = rows.column("income").to_pylist()
    picked = [next(i for i, v in enumerate(income) if timing_bit(v) == 1),
              next(i for i, v in enumerate(income) if timing_bit(v) == 0)]
    truth = [timing_bit(income[i]) for i in picked]

    monkeypatch.setenv("AUTHOPS_SANDBOX_CODE_CONSTANT_TIME", "false")  # the development default
    reset_settings()
    assert not jobs.constant_time(jobs.get_settings())
    control = _durations(session, db_settings, partner, code, picked)
    monkeypatch.setenv("AUTHOPS_SANDBOX_CODE_CONSTANT_TIME", "true")  # production's default
    reset_settings()
    assert jobs.constant_time(jobs.get_settings()), "add sandbox_code_constant_time to authops/core/settings.py"
    platform = _durations(session, db_settings, partner, code, picked)

    got_c, got_p = decode_durations(control), decode_durations(platform)
    figures("timing channel", control_durations_s=[round(d, 2) for d in control],
            control_bits_recovered=sum(a == b for a, b in zip(got_c or [], truth)),
            platform_durations_s=[round(d, 2) for d in platform],
            platform_spread_s=round(max(platform) - min(platform), 3), platform_bits_recovered=0 if got_p is None
            else sum(a == b for a, b in zip(got_p, truth)))
    assert got_c == truth  # without constant time the partner reads the bits off the job's times
    assert got_p is None and max(platform) - min(platform) < 1.0  # with it every run takes the same time
    assert min(platform) >= 6 * (1 + jobs.GATE_SHARE) - 0.05  # the declared time limit, and the gate's share


def test_scores_and_row_counts_cannot_carry_who_the_subjects_are(session, db_settings, monkeypatch):
    code, rows = load(session, db_settings, residents(120, seed=13))
    spec = manifest(code, SMUGGLER_FIELDS, SMUGGLER_OUTPUTS)
    ids = rows.column("id_number").to_pylist()
    births = {i: i[6:14] for i in ids}
    zhang = {i for i, n in zip(ids, rows.column("name").to_pylist()) if n.startswith("张")}

    def attack(partner, job_id):
        key = jobs.token_key(db_settings, partner.ws.org_id, partner.ws.id)
        token_of = dict(zip(ids, tokens.tokenize(ids, key, domain="model-key").to_pylist()))  # to score it
        year = released(session, db_settings, partner, job_id, "year").to_pydict()
        mmdd = dict(zip(*released(session, db_settings, partner, job_id, "mmdd").to_pydict().values()))
        got = {t: f"{round(y * 10000):04d}{round(mmdd[t] * 10000):04d}"
               for t, y in zip(year["id_number"], year["score"])}
        dated = sum(got.get(token_of[i]) == births[i] for i in ids) / len(ids)
        flagged = set(released(session, db_settings, partner, job_id, "zhang").column("id_number").to_pylist())
        surnames = sum((token_of[i] in flagged) == (i in zhang) for i in ids) / len(ids)
        return dated, surnames

    control = lab(session, code, rows)  # without the second run (identity fields not recognised)
    monkeypatch.setattr(invariance, "identity_fields", lambda specs: {a: {} for a in specs})
    job = run(db_settings, submit(session, control, kind="code", spec=spec, code=SMUGGLER))
    assert job.state == "succeeded", job.error_message
    dated_c, surnames_c = attack(control, job.id)
    monkeypatch.undo()

    partner = lab(session, code, rows)
    job = run(db_settings, submit(session, partner, kind="code", spec=spec, code=SMUGGLER))
    assert job.state == "failed" and job.error_message == jobs.CODE_FAILED
    assert _releases(session, job.id) == []
    figures("values and rows channel", control_birth_dates_recovered=dated_c, control_surname_zhang_known=surnames_c,
            control_zhang_rows=len(zhang), platform=job.error_code, platform_rows_released=0)
    assert dated_c == 1.0 and surnames_c == 1.0

    job = run(db_settings, submit(session, partner, kind="code", spec=manifest(code, SMUGGLER_FIELDS, {"s": MODEL}),
                                  code=SCORER))
    assert job.state == "succeeded", job.error_message  # a score of what people did passes both runs
    assert released(session, db_settings, partner, job.id, "s").num_rows == rows.num_rows


def test_code_cannot_make_the_tokenizer_an_oracle_for_guessed_ids(session, db_settings, monkeypatch):
    code, rows = load(session, db_settings, residents(80, seed=14))
    ids = rows.column("id_number").to_pylist()
    blind = manifest(code, ["income"], {"s": MODEL})  # reads no identity field: runs once
    guesses = ids[:20] + [i[:-4] + "0000" for i in ids[20:40]]  # 20 right guesses, 20 wrong

    partner = lab(session, code, rows)
    job = run(db_settings, submit(session, partner, kind="code", spec=manifest(code, ["id_number", "income"],
                                                                               {"s": MODEL}), code=SCORER))
    assert job.state == "succeeded", job.error_message
    known = set(released(session, db_settings, partner, job.id, "s").column("id_number").to_pylist())

    def attack():
        job = run(db_settings, submit(session, partner, kind="code", spec=blind, code=ORACLE,
                                      params={"guesses": guesses}))
        if job.state != "succeeded":
            return job, 0
        oracle = released(session, db_settings, partner, job.id, "s").column("id_number").to_pylist()
        return job, sum(t in known for t in oracle)  # guessed IDs confirmed, and their tokens de-tokenized

    monkeypatch.setattr(invariance, "unknown_keys", lambda *a: 0)  # control: keys not checked
    _, confirmed_c = attack()
    monkeypatch.undo()
    job, confirmed_p = attack()
    figures("tokenizer oracle", guesses=len(guesses), control_confirmed=confirmed_c, platform=job.error_code,
            platform_confirmed=confirmed_p)
    assert confirmed_c == 20
    assert job.state == "failed" and confirmed_p == 0
