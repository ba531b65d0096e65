"""Attacks on the aggregate releases: averaging the noise away, and reconstructing every person's
secret from many overlapping counts (Dinur and Nissim, 2003).

Both would succeed against exact or freely repeatable answers, which each test shows first with
the platform's own aggregation; against the platform, the budget ledger stops the repetition and
the noise each release carries keeps the reconstruction at what ε allows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from authops.core.errors import AuthopsError
from authops.policies import budget
from authops.sandbox.dp import release_partial
from tests.attacks.kit import PER_JOB, cells, count_spec, epsilon_each, reconstruct, subset_spec, without_ledger
from tests.attacks.world import DISTRICTS, figures, lab, load, released, residents, run, submit

pytestmark = pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)


def test_averaging_repeated_releases_is_stopped_by_the_budget(session, db_settings, tmp_path):
    code, rows = load(session, db_settings, residents(400, seed=21))
    truth = {d: 0 for d in DISTRICTS}
    for d, a in zip(rows.column("district").to_pylist(), rows.column("arrears").to_pylist()):
        truth[d] += int(a)
    eps, cap = 0.5, 2.0
    spec = count_spec(code, eps)

    # Control: the same release repeated 1,000 times with no ledger: the mean is the exact count.
    partial, s = without_ledger(session, db_settings, spec, tmp_path, "n")
    draws = [cells(release_partial(partial, s).table, "district", "people") for _ in range(1000)]
    mean_c = {d: float(np.mean([c.get(d, 0) for c in draws])) for d in DISTRICTS}  # a cell under min_cell: 0
    exact_c = sum(round(mean_c[d]) == truth[d] for d in DISTRICTS) / len(DISTRICTS)

    # The platform: every release is charged; after cap / ε releases the next one is refused.
    partner = lab(session, code, rows, epsilon=cap)
    got = []
    for _ in range(int(cap / eps)):
        job = run(db_settings, submit(session, partner, kind="spec", spec=spec))
        assert job.state == "succeeded", job.error_message
        got.append(cells(released(session, db_settings, partner, job.id, "n"), "district", "people"))
    with pytest.raises(AuthopsError) as refused:
        submit(session, partner, kind="spec", spec=spec)
    session.rollback()
    assert refused.value.code == "budget_exhausted"
    assert budget.check_ledger(session) == []
    mean_p = {d: float(np.mean([c.get(d, 0) for c in got])) for d in DISTRICTS}
    exact_p = sum(round(mean_p[d]) == truth[d] for d in DISTRICTS) / len(DISTRICTS)
    rmse_p = math.sqrt(np.mean([(mean_p[d] - truth[d]) ** 2 for d in DISTRICTS]))
    rmse_c = math.sqrt(np.mean([(mean_c[d] - truth[d]) ** 2 for d in DISTRICTS]))
    figures("averaging noise away", releases_control=len(draws), control_cells_exact=exact_c,
            control_rmse=round(rmse_c, 3), releases_platform=len(got), platform_cells_exact=exact_p,
            platform_rmse=round(rmse_p, 3), platform_next=refused.value.code)
    assert exact_c == 1.0  # averaging works when nothing stops it
    assert exact_p < 1.0 and rmse_p > 0.3  # four releases leave the noise of ε = 2 in place


def test_reconstruction_from_overlapping_counts_is_held_to_what_epsilon_allows(session, db_settings, tmp_path):
    code, rows = load(session, db_settings, residents(200, seed=22))
    rng = np.random.default_rng(5)
    n, m, cap = 40, 60, 1.0
    owes = np.asarray(rows.column("arrears"))  # a roster the attacker can name, half of them owing:
    targets = np.concatenate([rng.choice(np.flatnonzero(owes), n // 2, replace=False),  # guessing gets 1/2
                              rng.choice(np.flatnonzero(~owes), n // 2, replace=False)])
    ids = [rows.column("id_number")[int(t)].as_py() for t in targets]
    secret = np.array([int(rows.column("arrears")[int(t)].as_py()) for t in targets])
    A = (rng.random((m, n)) < 0.5).astype(int)  # query j counts arrears among a random half of them

    # Control: the exact subset sums (what a platform answering counts would give) reconstruct everyone.
    exact = A @ secret
    acc_c = float((reconstruct(A, exact) == secret).mean())

    # The platform: the whole budget spent on m noisy subset sums; the next query is refused.
    partner = lab(session, code, rows, epsilon=cap)
    each = epsilon_each(cap, m)
    y = np.zeros(m)
    for first in range(0, m, PER_JOB):
        job = run(db_settings, submit(session, partner, kind="spec", spec=subset_spec(code, ids, A, first, each)))
        assert job.state == "succeeded", job.error_message
        for j in range(first, first + PER_JOB):
            y[j] = cells(released(session, db_settings, partner, job.id, f"q{j}"), f"q{j}", "owing").get("in", 0.0)
    acc_p = float((reconstruct(A, y) == secret).mean())
    with pytest.raises(AuthopsError) as refused:
        submit(session, partner, kind="spec", spec=subset_spec(code, ids, A, 0, each))
    session.rollback()
    assert refused.value.code == "budget_exhausted"
    bound = math.exp(cap) / (1 + math.exp(cap))  # the best per-person guess ε = cap allows from a prior of 1/2
    base = max(secret.mean(), 1 - secret.mean())  # guessing one value for everyone
    figures("reconstruction from overlapping counts", people=n, queries=m, control_accuracy=acc_c,
            platform_epsilon_total=cap, platform_accuracy=round(acc_p, 3), majority_guess=round(base, 3),
            dp_bound=round(bound, 3))
    assert acc_c == 1.0
    assert acc_p <= bound + 3 * math.sqrt(bound * (1 - bound) / n)  # no better than ε lets anyone be
