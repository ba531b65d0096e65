"""Enterprise registration, credit, lists, tax, social insurance, housing fund and annual reports.

Every table here is keyed by the enterprise pool, so a firm's USCC, name and legal representative
agree everywhere; the default signal (see pools.SIGNALS) shows in ratings, lists, arrears and
revoked registrations.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from authops.platform.synth import text, vocab
from authops.platform.synth.arrow import (
    AS_OF, choice, const, date_array, office_time, spread_days, take, ts_array)
from authops.platform.synth.columns import Rows, _mapped
from authops.platform.synth.pools import SIGNALS
from authops.platform.synth.registry import builder, per_entity

TAX_MONTHS = np.arange(np.datetime64("2024-07"), np.datetime64("2025-07")).astype("datetime64[D]")
REPORT_YEARS = (2022, 2023, 2024)


def _chosen(rng: np.random.Generator, flag: np.ndarray, p: tuple[float, float]) -> np.ndarray:
    """Indices picked with probability p[1] where flag is set and p[0] elsewhere."""
    return np.flatnonzero(rng.random(len(flag)) < np.where(flag, p[1], p[0]))


def _listed(rng: np.random.Generator, w, e: np.ndarray, start: str = "2019-01-01") -> np.ndarray:
    """A listing time per row: after the firm was set up, before AS_OF."""
    lo = np.maximum(w.enterprises.established[e], np.datetime64(start))
    span = (AS_OF - lo).astype(np.int64)
    days = lo + (rng.random(len(e)) * span).astype("timedelta64[D]")
    return office_time(rng, days)


def _removed(rng: np.random.Generator, listed: np.ndarray, share: float) -> np.ndarray:
    """Removal times for a share of listings (1-3 years later, before AS_OF); NaT for the rest."""
    out = listed + (rng.integers(365, 1100, len(listed)) * 86_400_000_000).astype("timedelta64[us]")
    keep = (rng.random(len(listed)) < share) & (out <= AS_OF.astype("datetime64[us]"))
    return np.where(keep, out, np.datetime64("NaT"))


def _ts_or_null(us: np.ndarray) -> pa.Array:
    return pa.array(us, type=pa.timestamp("us", tz="UTC"), from_pandas=True)


@builder("enterprise_basic_info")
def basic_info(w, defn, rng):
    return Rows(w.enterprises.n, e=np.arange(w.enterprises.n))


@builder("enterprise_credit_rating")
def credit_rating(w, defn, rng):
    ent = w.enterprises
    grade = np.where(ent.default, choice(rng, 4, ent.n, (0, 0.05, 0.4, 0.55)), choice(rng, 4, ent.n, (35, 55, 9, 1)))
    risk = rng.random(ent.n) < np.where(ent.default, *SIGNALS["major_risk_p"][::-1])
    return Rows(ent.n, e=np.arange(ent.n), cols={"credit_grade": take(("A", "B", "C", "D"), grade),
                                                  "has_major_risk": pa.array(risk)})


def tech_flags(w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tech SME, high-tech, specialised 'little giant') flags per enterprise."""
    def make():
        ent, rng = w.enterprises, w.rng("tech")
        techy = np.isin(ent.industry, [2, 8, 12])  # manufacturing, IT, R&D services
        sme = rng.random(ent.n) < np.where(techy, 0.30, 0.01)
        high = sme & (rng.random(ent.n) < 0.45)
        srdi = high & (rng.random(ent.n) < 0.15)
        return sme, high, srdi
    return w.memo("tech", make)


@builder("enterprise_tags")
def tags(w, defn, rng):
    sme, high, srdi = tech_flags(w)
    return Rows(w.enterprises.n, e=np.arange(w.enterprises.n), cols={
        "is_tech_sme": pa.array(sme), "is_high_tech_enterprise": pa.array(high),
        "is_srdi_sme_city_level_or_above": pa.array(srdi)})


def _blacklisted(w) -> tuple[np.ndarray, np.ndarray]:
    """(enterprise, listing time) of blacklisted firms, shared by the firm and legal-rep lists."""
    def make():
        e = _chosen(w.rng("blacklisted"), w.enterprises.default, SIGNALS["blacklist_p"])
        return e, _listed(w.rng("blacklisted_at"), w, e)
    return w.memo("blacklisted", make)


@builder("enterprise_blacklist")
def enterprise_blacklist(w, defn, rng):
    e, listed = _blacklisted(w)
    return Rows(len(e), e=e, cols={"listed_at": ts_array(listed),
                                   "blacklist_reason": take(vocab.BLACKLIST_REASONS, rng.integers(0, 7, len(e)))})


@builder("legal_rep_blacklist")
def legal_rep_blacklist(w, defn, rng):
    e, listed = _blacklisted(w)
    _, first = np.unique(w.enterprises.legal_rep[e], return_index=True)  # one listing per person
    e, listed = e[first], listed[first]
    removed = _removed(rng, listed, 0.3)
    return Rows(len(e), e=e, p=w.enterprises.legal_rep[e], cols={
        "listed_at": ts_array(listed), "blacklist_removed_at": _ts_or_null(removed),
        "reporting_authority": const("苏州市发展和改革委员会", len(e))})


@builder("serious_dishonest_enterprises")
def serious_dishonest(w, defn, rng):
    e = _chosen(rng, w.enterprises.default, SIGNALS["dishonest_p"])
    listed = _listed(rng, w, e)
    return Rows(len(e), e=e, cols={
        "serious_violation_listed_at": ts_array(listed),
        "serious_violation_removed_at": _ts_or_null(_removed(rng, listed, 0.2)),
        "reporting_authority": _mapped(list(vocab.SAMR.values()), w.enterprises.district, e)})


@builder("enterprise_abnormal_operations")
def abnormal_operations(w, defn, rng):
    ent = w.enterprises
    firms = _chosen(rng, ent.default, SIGNALS["abnormal_ops_p"])
    e = per_entity(np.bincount(firms, minlength=ent.n) * (1 + (rng.random(ent.n) < 0.25)))
    counts = np.bincount(e, minlength=ent.n)
    firms_listed = np.flatnonzero(counts)
    begin = np.maximum(ent.established[firms_listed], np.datetime64("2019-01-01"))
    listed = office_time(rng, spread_days(rng, counts[firms_listed], begin, str(AS_OF)))
    removed = _removed(rng, listed, 0.5)
    out = ~np.isnat(removed)
    samr = _mapped(list(vocab.SAMR.values()), ent.district, e)
    r = Rows(len(e), e=e, at=listed.astype("datetime64[D]"))
    r.cols = {"listed_at": ts_array(listed), "removed_at": _ts_or_null(removed), "listing_authority": samr,
              "removal_authority": _mapped(list(vocab.SAMR.values()), ent.district, np.where(out, e, -1)),
              "removal_reason": text.render(w, "removal_reason", r, rng, where=out)}
    return r


@builder("enterprise_admin_penalties", "enterprise_admin_coercion")
def admin_actions(w, defn, rng):
    ent = w.enterprises
    p = (0.03, 0.10) if defn.code == "enterprise_admin_penalties" else (0.01, 0.05)
    firms = _chosen(rng, ent.default, p)
    counts = np.zeros(ent.n, dtype=np.int64)
    counts[firms] = 1 + rng.poisson(0.5, len(firms))
    e = per_entity(counts)
    return Rows(len(e), e=e, at=(_listed(rng, w, e).astype("datetime64[D]")))


@builder("enterprise_tax")
def tax(w, defn, rng):
    ent = w.enterprises
    n = ent.n * len(TAX_MONTHS)
    e = np.repeat(np.arange(ent.n), len(TAX_MONTHS))
    month = np.tile(TAX_MONTHS, ent.n)
    season = np.tile(1 + 0.15 * np.sin(np.arange(len(TAX_MONTHS)) / 1.9), ent.n)
    revenue = ent.revenue[e] / 12 * season * np.exp(0.25 * rng.standard_normal(n))
    revenue = np.where(ent.default[e], revenue * 0.6, revenue)
    invoiced = np.round(revenue * 1.13 / 100) * 100
    vat = np.round(invoiced / 1.13 * 0.13 * rng.uniform(0.15, 0.45, n))
    quarter = np.isin(month.astype("datetime64[M]").astype(np.int64) % 12, (0, 3, 6, 9))  # Jan/Apr/Jul/Oct
    profit = np.maximum(0, revenue * 3 * rng.normal(0.06, 0.05, n))
    cit = np.where(quarter, np.round(profit * np.where(ent.staff[e] < 300, 0.05, 0.25)), 0)
    bad = np.where(ent.arrears[e], rng.random(n) < 0.3, rng.random(n) < 0.001)
    bad[np.flatnonzero(ent.arrears)[:, None] * len(TAX_MONTHS) + rng.integers(0, 12, (ent.arrears.sum(), 1))] = True
    return Rows(n, e=e, cols={
        "tax_period": date_array(month), "vat_amount": pa.array(vat.astype(np.int64)),
        "corporate_income_tax_amount": pa.array(cit.astype(np.int64)), "has_violation_record": pa.array(bad),
        "invoiced_amount": pa.array(invoiced.astype(np.int64))})


def _insured(w) -> np.ndarray:
    return w.memo("si_firms", lambda: np.flatnonzero((w.rng("si").random(w.enterprises.n) < 0.9)
                                                     | w.enterprises.default))


def _base_per_head(w) -> np.ndarray:
    """Average monthly contribution base per employee (fen), within Jiangsu's 2024 floor and cap."""
    return w.memo("si_base", lambda: np.clip(np.round(np.exp(w.rng("base").normal(np.log(7200), 0.35,
                                                              w.enterprises.n))) * 100, 449_400, 2_947_500))


@builder("enterprise_social_insurance_registration")
def si_registration(w, defn, rng):
    ent, e = w.enterprises, _insured(w)
    n = len(e)
    owing = ent.default[e] & (rng.random(n) < 0.4) | (rng.random(n) < 0.02)
    status = np.where(owing, 1, choice(rng, 5, n, (95, 0, 3, 1, 1)))
    arbitration = rng.random(n) < np.where(ent.default[e], 0.2, 0.03)
    r = Rows(n, e=e)
    r.cols = {"insured_employee_count": pa.array(ent.staff[e]),
              "enrollment_type": take(("五险全参", "养老医疗失业工伤", "养老医疗", "仅工伤保险", "单建统筹医疗"),
                                      choice(rng, 5, n, (85, 8, 4, 2, 1))),
              "contribution_base": pa.array(_base_per_head(w)[e].astype(np.int64)),
              "contribution_status": take(("正常", "欠缴", "暂停", "封存", "终止"), status),
              "social_insurance_arrears_record": text.render(w, "social_insurance_arrears_record", r, rng,
                                                             where=owing),
              "labor_arbitration_info": text.render(w, "labor_arbitration_info", r, rng, where=arbitration)}
    return r


def _monthly(w, rng, firms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Rows of firms x 12 months: (firm, month, arrears flag, status strings); defaulters fall behind."""
    k = len(TAX_MONTHS)
    e = np.repeat(firms, k)
    month = np.tile(TAX_MONTHS, len(firms))
    m_idx = np.tile(np.arange(k), len(firms))
    behind_from = np.where(w.enterprises.default[firms], rng.integers(3, 16, len(firms)), 99)
    owing = m_idx >= np.repeat(behind_from, k)
    return e, month, owing, take(("正常", "欠缴"), owing.astype(np.int64))


@builder("enterprise_social_insurance_payments")
def si_payments(w, defn, rng):
    ent, firms = w.enterprises, _insured(w)
    e, month, owing, status = _monthly(w, rng, firms)
    base = (_base_per_head(w)[e] * ent.staff[e]).astype(np.int64)
    rate = np.round(np.repeat(rng.choice([0.243, 0.2455, 0.2505], len(firms)), len(TAX_MONTHS)), 4)
    paid = np.where(owing, 0, 1)
    return Rows(len(e), e=e, cols={
        "contribution_month": date_array(month), "contribution_base": pa.array(base),
        "contribution_rate": pa.array(rate),
        "individual_contribution_amount": pa.array(np.round(base * 0.105).astype(np.int64) * paid),
        "employer_contribution_amount": pa.array(np.round(base * rate).astype(np.int64) * paid),
        "contribution_status": status})


def _fund_firms(w) -> tuple[np.ndarray, np.ndarray]:
    def make():
        ent, rng = w.enterprises, w.rng("hf")
        firms = np.flatnonzero(rng.random(ent.n) < np.clip(0.35 + 0.1 * np.log(ent.staff), 0, 0.95))
        rate = np.zeros(ent.n)
        rate[firms] = rng.choice([0.05, 0.08, 0.10, 0.12], len(firms), p=[0.3, 0.2, 0.2, 0.3])
        return firms, rate
    return w.memo("hf_firms", make)


@builder("enterprise_housing_fund_registration")
def hf_registration(w, defn, rng):
    ent = w.enterprises
    firms, rate = _fund_firms(w)
    n = len(firms)
    status = np.where(ent.default[firms] & (rng.random(n) < 0.4), 1, choice(rng, 5, n, (93, 0, 2, 4, 1)))
    return Rows(n, e=firms, cols={
        "housing_fund_depositor_count": pa.array(np.maximum(1, np.round(ent.staff[firms] * rng.uniform(0.6, 1, n)))
                                                 .astype(np.int64)),
        "contribution_base": pa.array((_base_per_head(w)[firms] * 1.1).astype(np.int64)),
        "contribution_rate": pa.array(rate[firms]),
        "contribution_status": take(("正常", "欠缴", "暂停", "封存", "终止"), status)})


@builder("enterprise_housing_fund_payments")
def hf_payments(w, defn, rng):
    per, employer = w.persons, w.employer
    firms, rate = _fund_firms(w)
    member = np.flatnonzero((employer >= 0) & np.isin(employer, firms))
    # one account per (firm, name): namesakes in a firm are told apart by ID elsewhere, not here
    key = employer[member] * 10**10 + per.name_code[member]
    member = member[np.unique(key, return_index=True)[1]]
    k = len(TAX_MONTHS)
    p = np.repeat(member, k)
    e = employer[p]
    month = np.tile(TAX_MONTHS, len(member))
    m_idx = np.tile(np.arange(k), len(member))
    base = np.repeat(np.clip(np.round(np.exp(rng.normal(np.log(7500), 0.45, len(member)))) * 100, 249_000,
                             3_458_000), k).astype(np.int64)
    behind = w.enterprises.default[e] & (m_idx >= 6)
    amount = np.where(behind, 0, np.round(base * rate[e])).astype(np.int64)
    return Rows(len(p), p=p, e=e, e_is_employer=True, cols={
        "contribution_month": date_array(month), "contribution_base": pa.array(base),
        "contribution_rate": pa.array(rate[e]), "individual_contribution_amount": pa.array(amount),
        "employer_contribution_amount": pa.array(amount),
        "contribution_status": take(("正常", "欠缴"), behind.astype(np.int64))})


@builder("enterprise_annual_reports")
def annual_reports(w, defn, rng):
    ent = w.enterprises
    year = np.tile(np.array(REPORT_YEARS), ent.n)
    e = np.repeat(np.arange(ent.n), len(REPORT_YEARS))
    keep = ent.established[e].astype("datetime64[Y]").astype(np.int64) + 1970 <= year
    e, year = e[keep], year[keep]
    n = len(e)
    bad = ent.default[e]
    revenue = ent.revenue[e] * (1.06 ** (year - 2024)) * np.exp(0.2 * rng.standard_normal(n))
    margin = np.where(bad, rng.normal(-0.06, 0.06, n), rng.normal(0.05, 0.06, n))
    profit = revenue * margin
    assets = revenue * rng.uniform(0.6, 2.0, n)
    liabilities = assets * np.where(bad, rng.uniform(0.8, 1.15, n), rng.uniform(0.2, 0.75, n))

    def fen(x):
        return pa.array(np.round(np.asarray(x) / 100).astype(np.int64) * 100)
    return Rows(n, e=e, cols={
        "report_year": date_array((year - 1970).astype("datetime64[Y]").astype("datetime64[D]")),
        "total_assets": fen(assets), "total_owners_equity": fen(assets - liabilities),
        "total_sales_revenue": fen(revenue), "main_business_revenue": fen(revenue * rng.uniform(0.85, 1.0, n)),
        "total_profit": fen(profit), "net_profit": fen(np.where(profit > 0, profit * 0.8, profit)),
        "total_tax_paid": fen(revenue * rng.uniform(0.01, 0.05, n)), "total_liabilities": fen(liabilities),
        "government_subsidies_received": fen(np.where(rng.random(n) < 0.1, revenue * 0.01, 0)),
        "financial_loan_amount": fen(np.where(rng.random(n) < 0.4, liabilities * rng.uniform(0.1, 0.6, n), 0))})
