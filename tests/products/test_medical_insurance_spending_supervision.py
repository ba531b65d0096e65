"""Medical-insurance supervision: DP reports, and the planted abnormal institutions are flagged."""

from __future__ import annotations

import numpy as np
import polars as pl

from authops.products.catalog import PRODUCTS

CODE = "medical_insurance_spending_supervision"
# public codes a report may show: institution codes (the designated-institution list) and region codes
PUBLIC = ("designated_institution_code", "designated_institution_region", "enrollment_insurance_region")


def test_product_is_public_governance_and_free():
    p = PRODUCTS[CODE]
    assert p.category == "public_governance" and p.free and p.price_fen == 0 and not p.consent_required


def test_anomalous_institutions_flagged_and_almost_no_others(city):
    inst = city.world.institutions
    abnormal = {str(c) for c in np.asarray(inst.code.to_pylist())[inst.abnormal]}
    rel = city.report(CODE, "institution_billing")
    df = pl.from_arrow(rel.table)
    assert rel.epsilon <= 3.0 + 1e-9 and rel.delta <= 1e-6
    assert set(df.columns) == {"designated_institution_code", "person_months", "visits_sum", "split_visits_sum",
                               "cost_fen_sum", "split_visit_share", "billing_flag"}
    flagged = set(df.filter(pl.col("billing_flag") == "anomalous")["designated_institution_code"])
    shares = df.filter(pl.col("designated_institution_code").is_in(list(abnormal)))["split_visit_share"].to_list()
    others = df.filter(~pl.col("designated_institution_code").is_in(list(abnormal)))["split_visit_share"]
    print(f"{df.height} institutions released of {inst.n}; abnormal {sorted(abnormal)}, share {shares}; "
          f"others max share {others.max():.3f}; flagged {sorted(flagged)}")
    assert abnormal <= flagged
    assert len(flagged - abnormal) <= max(1, int(0.01 * df.height))
    assert df["person_months"].min() >= 40  # min cell


def test_region_month_statistics(city):
    rel = city.report(CODE, "spending_by_region_month")
    df = pl.from_arrow(rel.table)
    assert rel.epsilon <= 1.0 + 1e-9
    s = city.frame("medical_insurance_settlements")
    true_cells = s.select(pl.col("designated_institution_region"), pl.col("settled_at")).height
    assert df.height >= 60 and true_cells > 0
    assert df["person_months"].min() >= 20
    # noisy totals track the truth, less what contribution bounding drops (each person's first 12 rows)
    ratio = df["settlements_sum"].sum() / s.height
    print(f"released settlements / true settlements: {ratio:.3f}")
    assert 0.7 < ratio < 1.02


def test_reports_hold_no_raw_data(city):
    for out in ("institution_billing", "spending_by_region_month"):
        rel = city.report(CODE, out)
        problems = city.leaks(CODE, rel.table, public=PUBLIC,
                              exempt_numeric=("person_months", "visits_sum", "split_visits_sum", "cost_fen_sum",
                                              "settlements_sum", "month"))
        assert problems == [], (out, problems[:5])
