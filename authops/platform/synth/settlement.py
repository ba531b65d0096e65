"""Medical-insurance settlements: ten million rows at scale 1, built in chunks of a million.

Amounts follow the settlement arithmetic (total = self-paid parts + eligible amount; eligible -
deductible paid, times the pooling ratio, gives the pooled-fund payment; the person pays the rest
from their account and in cash), so supervision rules can check them. Institutions flagged
abnormal (pools.SIGNALS) bill 2.5-4 times the usual and split each visit into three settlements.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from authops.platform.synth import text, vocab
from authops.platform.synth.arrow import (
    AS_OF, choice, codes, const, date_array, office_time, sequence_digits, sparse, take, ts_array, year_start)
from authops.platform.synth.columns import Rows, person_codes
from authops.platform.synth.medical import CARE, diagnoses, visit_weights
from authops.platform.synth.person import CATEGORIES, SCHEMES, insurance
from authops.platform.synth.pools import SIGNALS
from authops.platform.synth.registry import builder

CHUNK = 1_000_000
START = np.datetime64("2024-07-01")
MEDIAN_YUAN = np.array([180, 350, 450, 12_000, 6_000, 90, 250, 6_500, 3_000])  # by CARE index
SIGMA = np.array([0.9, 0.8, 0.7, 0.8, 0.5, 0.8, 0.6, 0.4, 0.6])
STAY = np.array([0, 0, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
# pooling ratio by CARE index for (employee scheme, resident scheme)
RATIO = np.array([[0.70, 0.50], [0.70, 0.50], [0.85, 0.70], [0.88, 0.70], [0.88, 0.70], [0.0, 0.0], [0.80, 0.60],
                  [0.90, 0.75], [0.85, 0.70]])
GRADE_COST = np.array([1.3, 1.3, 1.0, 1.0, 0.6, 0.6, 0.6])  # by hospital grade index
DEDUCTIBLE = np.array([90_000, 90_000, 60_000, 60_000, 30_000, 30_000, 30_000])  # fen, employee inpatient
AGENCY_OF_DISTRICT = np.array([0, 0, 0, 0, 5, 0, 2, 3, 1, 4])


def _person_flags(w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per person: civil servant?, special-person type (-1 none), personal-account balance (fen)."""
    def make():
        rng, per = w.rng("settlement_people"), w.persons
        civil = (w.employer >= 0) & (rng.random(per.n) < 0.02)
        special = np.where(rng.random(per.n) < 0.015, choice(rng, 7, per.n, (2, 3, 2, 40, 10, 8, 35)), -1)
        account = np.round(np.exp(rng.normal(np.log(2500), 0.8, per.n)) * 100).astype(np.int64)
        return civil, special, account
    return w.memo("settlement_people", make)


@builder("medical_insurance_settlements")
def settlements(w, defn, rng):
    total = w.count(10_000_000, 500)
    for start in range(0, total, CHUNK):
        yield _chunk(w, w.rng(defn.code, start), start, min(CHUNK, total - start))


def _chunk(w, rng: np.random.Generator, start: int, n: int) -> Rows:
    per, inst, ins = w.persons, w.institutions, insurance(w)
    civil, special, account = _person_flags(w)
    i = choice(rng, inst.n, n, inst.volume)
    p = np.sort(choice(rng, per.n, n, w.memo("insured_visits", lambda: visit_weights(w) * ins["insured"])))
    seq = sequence_digits(start, n, 12)
    visit_digits = sequence_digits(500_000_000_000 + start, n, 12)  # apart from medical_visits' ids
    day = START + rng.integers(0, int((AS_OF - START).astype(np.int64)) + 1, n).astype("timedelta64[D]")
    ab = np.flatnonzero(inst.abnormal[i])  # abnormal institutions: three settlements per visit
    lead = ab[(np.arange(len(ab)) // SIGNALS["abnormal_split"]) * SIGNALS["abnormal_split"]]
    visit_digits[ab], p[ab], day[ab] = visit_digits[lead], p[lead], day[lead]
    day = np.maximum(day, per.born[p])  # babies: no bills before birth
    emp = ins["employee"][p]
    age = per.age_at(p, day)
    kind = choice(rng, len(CARE), n, (66, 6, 14, 8, 1.5, 0, 1, 1, 0.5))
    kind[inst.kind[i] == 3] = 5
    odd = np.flatnonzero(kind >= 6)  # maternity care only for women of child-bearing age
    kind[odd[per.male[p[odd]] | (age[odd] < 20) | (age[odd] > 48)]] = 0
    stay = STAY[kind]
    where_stay = np.flatnonzero(stay)
    los = np.zeros(n, dtype="timedelta64[D]")
    los[where_stay] = (1 + rng.poisson(7, len(where_stay))).astype("timedelta64[D]")
    grade = inst.grade[i]
    u = rng.random((3, n))

    cost = MEDIAN_YUAN[kind] * GRADE_COST[grade] * np.exp(SIGMA[kind] * rng.standard_normal(n))
    lo, hi = SIGNALS["abnormal_cost_factor"]
    flagged = np.flatnonzero(inst.abnormal[i])
    cost[flagged] *= rng.uniform(lo, hi, len(flagged))
    total = np.maximum(np.round(cost * 100), 100).astype(np.int64)
    fully_self = (total * (u[0] * 0.06)).astype(np.int64)
    advance = (total * (0.02 + u[1] * 0.08)).astype(np.int64)
    over_cap = np.zeros(n, dtype=np.int64)
    capped = np.flatnonzero(u[2] < 0.05)
    over_cap[capped] = total[capped] * u[2][capped] * 0.8
    eligible = total - fully_self - over_cap - advance
    standard = np.zeros(n, dtype=np.int64)
    standard[where_stay] = DEDUCTIBLE[grade[where_stay]] * np.where(emp[where_stay], 1, 2)
    ded_paid = np.minimum(standard, eligible)
    ratio = RATIO[kind, (~emp).view(np.int8)]
    ratio[where_stay[ins["retired"][p[where_stay]]]] += 0.05
    pooled = ((eligible - ded_paid) * ratio).astype(np.int64)
    rest = eligible - ded_paid - pooled
    large, critical, civil_sub, assist = (np.zeros(n, dtype=np.int64) for _ in range(4))
    k = np.flatnonzero(emp & (total > 10_000_000))
    large[k] = rest[k] * 0.8
    k = np.flatnonzero(~emp & (rest > 1_500_000))
    critical[k] = (rest[k] - 1_500_000) * 0.6
    k = np.flatnonzero(civil[p])
    civil_sub[k] = (rest[k] - large[k]) * 0.5
    k = np.flatnonzero(special[p] >= 3)
    assist[k] = (rest[k] - large[k] - critical[k] - civil_sub[k]) * 0.7
    fund = pooled + large + critical + civil_sub + assist
    individual = total - fund
    acct = np.minimum(individual, account[p])
    acct[~emp] = 0
    mutual = np.zeros(n, dtype=np.int64)
    k = np.flatnonzero(emp & (u[0] < 0.01))
    mutual[k] = np.minimum(individual[k] - acct[k], 20_000)
    cash = individual - acct - mutual
    refund = np.flatnonzero(u[1] < 0.003)
    zeros = pa.array(np.zeros(n, dtype=np.int64))
    balance = account[p] - acct
    by_disease = np.zeros(n, dtype=np.int64)
    method = np.select([kind == 8, stay], [4, choice(rng, 3, n, (55, 35, 10)) + 1], 0)
    drg = np.flatnonzero((method == 1) | (method == 2))
    by_disease[drg] = pooled[drg]
    amounts = (total, fully_self, over_cap, advance, eligible, ded_paid, pooled, civil_sub, critical, large, assist,
               fund, individual, acct, cash, mutual, by_disease)
    for x in amounts:  # refunds (退费) carry negative amounts
        x[refund] = -x[refund]
    money = pa.array

    is_refund = np.zeros(n, dtype=bool)
    is_refund[refund] = True
    category = choice(rng, 4, n, (96, 2, 1.5, 0.5))
    category = np.where((category == 3) & ~stay, 0, category)
    ad_hoc = category == 2
    chronic_or_stay = stay | (kind == 2)
    d = diagnoses(rng, int(chronic_or_stay.sum()))
    tier = ~emp & (age >= 18)
    r = Rows(n, p=p, i=i, e=w.employer[p], at=day, e_is_employer=True)
    r.cols = {
        "settlement_id": codes("JS3205" + w.ns, seq), "institution_settlement_id": codes("YJ3205" + w.ns, seq),
        "visit_id": codes("JZ3205" + w.ns, visit_digits), "invoice_number": codes("FP3205" + w.ns, seq),
        "original_settlement_id": sparse(w.code("JS3205", np.maximum(
            start + refund - rng.integers(1, 1000, len(refund)), 0), 12), is_refund),
        "clearing_agency": take(vocab.MEDICAL_FUND_AGENCIES, AGENCY_OF_DISTRICT[per.district[p]]),
        "insurance_type": take(SCHEMES, (~emp).astype(np.int64)),
        "person_category": take(CATEGORIES, ins["category"][p]),
        "civil_servant_flag": pa.array(civil[p]),
        "civil_servant_grade": sparse(take(("县处级副职", "乡科级正职", "乡科级副职", "科员", "办事员"),
                                           choice(rng, 5, int(civil[p].sum()), (3, 10, 15, 60, 12))), civil[p]),
        "special_person_type": take(["离休人员", "二等乙级以上革命伤残军人", "建国前老工人", "最低生活保障对象",
                                     "特困供养人员", "优抚对象", "重度残疾人"], special[p]),
        "special_person_type_grade": sparse(take(("一级", "二级", "三级", "四级"), rng.integers(
            0, 4, int((special[p] >= 0).sum()))), special[p] >= 0),
        "contribution_tier": sparse(take(("一档", "二档"), (rng.random(int(tier.sum())) < 0.15).astype(np.int64)), tier),
        "flexible_employment_flag": pa.array(ins["category"][p] == 3), "newborn_flag": pa.array(age == 0),
        "payment_location_category": take(("本地就医", "省内异地就医", "跨省异地就医"), choice(rng, 3, n, (97, 2, 1))),
        "start_date": date_array(day - los), "end_date": date_array(day), "settled_at": ts_array(office_time(rng, day)),
        "visit_credential_type": take(("医保电子凭证", "社会保障卡", "居民身份证"), choice(rng, 3, n, (65, 30, 5))),
        "visit_credential_number": take(person_codes(w, "E3205"), p),
        "medical_category": take(CARE, kind),
        "settlement_category": take(("联网结算", "异地联网结算", "手工零星报销", "中途结算"), category),
        "clearing_category": take(("门诊清算", "住院清算", "药店清算", "生育清算"),
                                  np.select([kind == 5, kind >= 6, stay], [2, 3, 1], 0)),
        "clearing_method": take(("按项目付费", "按疾病诊断相关分组付费（DRG）", "按病种分值付费（DIP）", "按床日付费",
                                 "按床日付费"), method),
        "individual_settlement_method": take(("联网直接结算", "个人垫付后报销"), ad_hoc.astype(np.int64)),
        "total_medical_cost": money(total), "fully_self_paid_amount": money(fully_self),
        "over_price_cap_self_paid_amount": money(over_cap), "advance_self_paid_amount": money(advance),
        "eligible_amount": money(eligible), "deductible_standard": pa.array(standard.astype(np.int64)),
        "current_deductible": pa.array(standard.astype(np.int64)), "actual_deductible_paid": money(ded_paid),
        "pooled_fund_payment": money(pooled), "pooled_fund_payment_ratio": pa.array(np.round(ratio, 4)),
        "insurance_approved_total": money(eligible), "civil_servant_subsidy_payment": money(civil_sub),
        "supplementary_insurance_payment": zeros, "critical_illness_insurance_payment": money(critical),
        "large_medical_expense_subsidy_payment": money(large), "disabled_person_fund_payment": zeros,
        "medical_assistance_fund_payment": money(assist), "other_fund_payment": zeros,
        "total_fund_payment": money(fund), "individual_payment_amount": money(individual),
        "personal_account_payment": money(acct), "cash_payment_amount": money(cash),
        "hospital_borne_self_pay_amount": zeros, "balance": pa.array(balance),
        "family_mutual_aid_payment": money(mutual), "refund_settlement_flag": pa.array(is_refund),
        "count_as_hospitalization_flag": pa.array(stay),
        "cash_payment_method": take(("医保移动支付", "微信支付", "支付宝", "银行卡", "现金", "数字人民币"),
                                    choice(rng, 6, n, (30, 30, 20, 14, 5, 1))),
        "year": date_array(year_start(day)),
        "disease_code": sparse(take([x[0] for x in vocab.DIAGNOSES], d), chronic_or_stay),
        "disease_name": sparse(take([x[1] for x in vocab.DIAGNOSES], d), chronic_or_stay),
        "disease_based_settlement_amount": money(by_disease),
        "excluded_item_fund_payment": zeros,
        "ad_hoc_reimbursement_reason": text.render(w, "ad_hoc_reimbursement_reason", r, rng, where=ad_hoc),
        "id_type": const("居民身份证（户口簿）", n), "age": pa.array(age)}
    return r
