"""Court cases and judicial records, patents and software copyrights, construction and R&D filings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from authops.platform.synth import text
from authops.platform.synth.arrow import (
    AS_OF, cat, choice, digit_matrix, num, office_time, spread_days, take, ts_array, year_of)
from authops.platform.synth.columns import Rows
from authops.platform.synth.enterprise import tech_flags
from authops.platform.synth.registry import builder, per_entity

CAUSES = ("买卖合同纠纷", "金融借款合同纠纷", "民间借贷纠纷", "建设工程施工合同纠纷", "劳动争议", "租赁合同纠纷",
          "服务合同纠纷", "承揽合同纠纷", "运输合同纠纷", "股权转让纠纷", "侵害商标权纠纷", "侵害发明专利权纠纷",
          "追偿权纠纷", "票据追索权纠纷", "申请破产清算", "申请执行")
CAUSE_W_OK = (22, 10, 8, 8, 12, 8, 8, 6, 5, 3, 3, 2, 2, 3, 0, 0)
CAUSE_W_DEFAULT = (18, 18, 12, 6, 10, 6, 4, 4, 3, 2, 1, 1, 5, 6, 2, 12)
JUDGMENTS = ("判决被告于判决生效之日起十日内支付货款及逾期付款利息", "驳回原告的全部诉讼请求", "准予原告撤回起诉",
             "经本院主持调解，双方当事人自愿达成调解协议", "判决解除双方合同，被告返还已付款项",
             "终结本次执行程序", "裁定受理破产清算申请")


@builder("court_cases")
def court_cases(w, defn, rng):
    ent = w.enterprises
    counts = np.where(ent.lawsuit, 1 + rng.poisson(1.2, ent.n), 0)
    e = per_entity(counts)
    n = len(e)
    sued = np.flatnonzero(counts)
    begin = np.maximum(ent.established[sued] + np.timedelta64(30, "D"), np.datetime64("2019-01-01"))
    filed = office_time(rng, spread_days(rng, counts[sued], begin, str(AS_OF)))
    bad = ent.default[e]
    cause = np.where(bad, choice(rng, len(CAUSES), n, CAUSE_W_DEFAULT), choice(rng, len(CAUSES), n, CAUSE_W_OK))
    kind = np.select([cause == 14, cause == 15, rng.random(n) < 0.2], [2, 3, 1], 0)
    year = year_of(filed.astype("datetime64[D]"))
    number = cat("（", num(year), "）苏05", take(("民初", "民终", "破", "执"), kind), num(w.serial(np.arange(n))), "号")
    judgment = np.select([kind == 2, kind == 3], [6, 5], choice(rng, 5, n, (40, 15, 10, 25, 10)))
    r = Rows(n, e=e, at=filed.astype("datetime64[D]"))
    r.cols = {
        "case_number": number, "cause_of_action": take(CAUSES, cause), "case_filed_at": ts_array(filed),
        "trial_court": take(("苏州市中级人民法院",), np.zeros(n, np.int64)), "judgment_result": take(JUDGMENTS, judgment),
        "dishonest_judgment_debtor_info": text.render(w, "dishonest_judgment_debtor_info", r, rng,
                                                      where=bad & (kind == 3) & (rng.random(n) < 0.6)),
        "judgment_debtor_info": text.render(w, "judgment_debtor_info", r, rng, where=kind == 3),
        "judicial_auction_info": text.render(w, "judicial_auction_info", r, rng,
                                             where=bad & (kind == 3) & (rng.random(n) < 0.3)),
        "bankruptcy_liquidation_info": text.render(w, "bankruptcy_liquidation_info", r, rng, where=kind == 2)}
    return r


@builder("enterprise_judicial_records")
def judicial_records(w, defn, rng):
    ent = w.enterprises
    e = np.flatnonzero(ent.lawsuit | ent.default | (rng.random(ent.n) < 0.08))
    n = len(e)
    law, bad = ent.lawsuit[e], ent.default[e]
    r = Rows(n, e=e)

    def some(name: str, where: np.ndarray) -> pa.Array:
        return text.render(w, name, r, rng, where=where)
    u = rng.random((10, n))
    r.cols = {
        "equity_pledge_info": some("equity_pledge_info", u[0] < 0.25),
        "spot_check_info": some("spot_check_info", (u[1] < 0.5) | ~(law | bad | (u[0] < 0.25) | (u[2] < 0.2))),
        "chattel_mortgage_info": some("chattel_mortgage_info", u[2] < 0.2),
        "bidding_info": some("bidding_info", u[3] < 0.15),
        "court_announcement": some("court_announcement", law & (u[4] < 0.6)),
        "dishonest_judgment_debtor_info": some("dishonest_judgment_debtor_info", bad & (u[5] < 0.5)),
        "judgment_debtor_info": some("judgment_debtor_info", (bad & (u[6] < 0.6)) | (law & (u[6] < 0.2))),
        "hearing_announcement": some("hearing_announcement", law & (u[7] < 0.5)),
        "litigation_info": some("litigation_info", law & (u[8] < 0.9)),
        "serious_violation_info": some("serious_violation_info", bad & (u[9] < 0.3))}
    return r


def _patent_numbers(w, year: np.ndarray, kind: int, idx: np.ndarray) -> pa.Array:
    """CN application numbers with check digit: ZL + year + type + 7-digit serial + '.' + check."""
    serial = (9_000_000 + idx) if w.mock else w.permuted(idx, 9_000_000)
    body = np.hstack([digit_matrix(year, 4), np.full((len(idx), 1), kind), digit_matrix(serial, 7)])
    check = (body * np.array([2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5])).sum(axis=1) % 11
    return cat("ZL", num(year), num(np.full(len(idx), kind)), num(serial, 7), ".",
               take(tuple("0123456789X"), check))


@builder("invention_patents", "pct_patents")
def patents(w, defn, rng):
    ent = w.enterprises
    sme, high, _ = tech_flags(w)
    mean = np.where(high, 3.0, np.where(sme, 1.0, 0.0)) * (0.15 if defn.code == "pct_patents" else 1.0)
    e = per_entity(rng.poisson(mean))
    n = len(e)
    filed = np.maximum(ent.established[e], np.datetime64("2015-01-01")) + rng.integers(30, 3000, n).astype(
        "timedelta64[D]")
    year = np.minimum(year_of(filed), 2025)
    if defn.code == "pct_patents":
        serial = (900_000 + np.arange(n)) if w.mock else w.permuted(np.arange(n), 900_000)
        number = cat("PCT/CN", num(year), "/", num(serial, 6))
    else:
        number = _patent_numbers(w, year, 1, np.arange(n))
    staff = np.flatnonzero(w.employer >= 0)  # the first-named inventor, one of the city's employees
    r = Rows(n, e=e)
    r.cols = {"patent_number": number, "inventor": take(w.persons.name, staff[rng.integers(0, len(staff), n)]),
              "patent_title": text.render(w, "patent_title", r, rng)}
    return r


@builder("software_copyrights")
def copyrights(w, defn, rng):
    ent = w.enterprises
    sme, _, _ = tech_flags(w)
    mean = np.where(ent.industry == 8, 2.0, 0.0) + np.where(sme, 1.0, 0.0)
    e = per_entity(rng.poisson(mean))
    n = len(e)
    year = np.clip(year_of(ent.established[e]) + rng.integers(0, 6, n), 2015, 2025)
    serial = (9_000_000 + np.arange(n)) if w.mock else w.permuted(np.arange(n), 9_000_000)
    r = Rows(n, e=e)
    r.cols = {"copyright_registration_number": cat(num(year), "SR", num(serial, 7)),
              "copyright_work_title": text.render(w, "copyright_work_title", r, rng)}
    return r


@builder("construction_industry_supervision")
def construction(w, defn, rng):
    ent = w.enterprises
    e = np.flatnonzero(ent.of("建筑业"))
    n = len(e)
    bad = ent.default[e]
    r = Rows(n, e=e)
    r.cols = {
        "qualification_grade": take(("施工综合资质", "施工总承包甲级", "施工总承包乙级", "专业承包甲级", "专业承包乙级",
                                     "专业作业资质"), choice(rng, 6, n, (1, 6, 20, 8, 35, 30))),
        "safety_production_license_info": text.render(w, "safety_production_license_info", r, rng),
        "project_performance_record": text.render(w, "project_performance_record", r, rng, where=rng.random(n) < 0.8),
        "site_violation_record": text.render(w, "site_violation_record", r, rng,
                                             where=rng.random(n) < np.where(bad, 0.35, 0.1)),
        "quality_safety_accident_info": text.render(w, "quality_safety_accident_info", r, rng,
                                                    where=rng.random(n) < np.where(bad, 0.08, 0.02))}
    return r


@builder("rd_project_applications")
def rd_applications(w, defn, rng):
    ent = w.enterprises
    sme, high, _ = tech_flags(w)
    e = np.flatnonzero(sme)
    n = len(e)
    ratio = np.round(np.clip(rng.lognormal(np.log(np.where(high[e], 0.07, 0.04)), 0.4), 0.01, 0.6), 4)
    return Rows(n, e=e, cols={
        "annual_rd_investment": pa.array((np.round(ent.revenue[e] * ratio / 10_000) * 10_000).astype(np.int64)),
        "staff_share_by_education": pa.array(np.round(rng.beta(5, 3, n), 4)),
        "rd_expense_ratio": pa.array(ratio)})
