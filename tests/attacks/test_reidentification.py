"""Re-identification from record releases, measured with anonymeter; the release gate enforces thresholds.

The attacker is a partner with a record release and what a neighbour knows of some residents
(sex, birth month, district): it looks each one up in the release and, where one row matches,
reads off the arrears flag (and the token, to link that person's other releases). The gate
measures singling-out, linkability and inference risk on a sample with held-out rows before the
release leaves (authops.sandbox.reid) and refuses it over the thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlmodel import select

from authops.policies import budget
from authops.sandbox import reid
from authops.sandbox.models import SandboxRelease
from tests.attacks.kit import RECORD_COLUMNS, neighbour_attack, record_spec
from tests.attacks.world import figures, lab, load, released, residents, run, submit

pytestmark = pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)


def _summary(session, job_id: int) -> dict:
    return session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job_id)).one().summary


def test_a_record_release_that_singles_people_out_is_refused_and_would_have_reidentified_them(
        session, db_settings, monkeypatch):
    code, rows = load(session, db_settings, residents(300, seed=3, wide_births=True))
    targets = np.random.default_rng(0).choice(rows.num_rows, 60, replace=False)
    known = ["sex", "birth_date", "district"]
    risky = record_spec(code, RECORD_COLUMNS, [], 2)  # no quasi-identifiers: k-anonymity never applies

    # Control: the same release with the gate's measurement switched off (thresholds of 1).
    control = lab(session, code, rows)
    for name in reid.THRESHOLDS:
        monkeypatch.setitem(reid.THRESHOLDS, name, 1.0)
    job = run(db_settings, submit(session, control, kind="spec", spec=risky))
    assert job.state == "succeeded", job.error_message
    risks = _summary(session, job.id)["reidentification"]  # what the gate measured on it
    matched_c, right_c = neighbour_attack(rows, released(session, db_settings, control, job.id, "rows"), known,
                                          targets)
    monkeypatch.undo()

    # The platform: the gate measures, finds the release over the thresholds and refuses it.
    partner = lab(session, code, rows)
    job = run(db_settings, submit(session, partner, kind="spec", spec=risky))
    assert job.state == "failed" and job.error_code == "reidentification_risk", (job.error_code, job.error_message)
    assert "singling-out risk" in job.error_message and "> 0.05" in job.error_message
    assert "quasi_identifiers" in job.error_message  # what to do about it
    session.expire_all()
    assert session.exec(select(SandboxRelease).where(SandboxRelease.job_id == job.id)).all() == []
    assert budget.check_ledger(session) == []
    matched_p, right_p = neighbour_attack(rows, None, known, targets)

    figures("record release re-identification (anonymeter)", singling_out=risks["singling_out"],
            linkability=risks.get("linkability"), inference=risks.get("inference"), ci_low=risks["ci_low"],
            control_targets_singled_out=round(matched_c, 3), control_arrears_learned=round(right_c, 3),
            platform=job.error_code, platform_targets_singled_out=matched_p)
    assert risks["ci_low"]["singling_out"] > 0.5
    assert matched_c > 0.5 and right_c > 0.5  # the attack works on that release ...
    assert matched_p == right_p == 0.0  # ... and gets nothing from the platform


def test_a_release_k_anonymous_over_what_a_neighbour_knows_passes_with_its_risks_shown(session, db_settings):
    code, rows = load(session, db_settings, residents(300, seed=3, wide_births=True))
    partner = lab(session, code, rows)
    job = run(db_settings, submit(session, partner, kind="spec",
                                  spec=record_spec(code, ["id_number", "district", "arrears"], ["district"], 10)))
    assert job.state == "succeeded", job.error_message
    out = released(session, db_settings, partner, job.id, "rows")
    risks = _summary(session, job.id)["reidentification"]
    targets = np.random.default_rng(0).choice(rows.num_rows, 60, replace=False)
    matched, _ = neighbour_attack(rows, out, ["district"], targets)
    figures("k-anonymous record release (anonymeter)", **{k: risks.get(k) for k in reid.RISKS},
            ci_low=risks["ci_low"], sample_rows=risks["sample_rows"], control_rows=risks["control_rows"],
            targets_singled_out=matched)
    assert risks["measured"] and all(risks["ci_low"][k] <= reid.THRESHOLDS[k] for k in risks["ci_low"])
    assert matched == 0.0
