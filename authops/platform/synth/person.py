"""Persons: household register, medical-insurance enrollment and contributions, chronic-disease
registrations, maternity allowances and medical-assistance recipients."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from authops.platform.synth import text, vocab
from authops.platform.synth.arrow import (
    AS_OF, cat, choice, const, date_array, days_between, month_start, num, office_time, sparse, take, ts_array)
from authops.platform.synth.columns import REGION_CODES, Rows, _bank_accounts
from authops.platform.synth.registry import builder

CATEGORIES = ("在职职工", "退休人员", "离休人员", "灵活就业人员", "成年居民", "老年居民", "大学生", "中小学生",
              "学龄前儿童", "新生儿")
CHRONIC = ("高血压", "糖尿病", "冠心病", "慢性阻塞性肺疾病", "恶性肿瘤门诊治疗", "尿毒症透析", "器官移植抗排异治疗",
           "精神分裂症", "帕金森病", "系统性红斑狼疮", "慢性肾功能衰竭", "血友病", "再生障碍性贫血", "肝硬化",
           "类风湿关节炎", "脑卒中后遗症")
CHRONIC_W = (40, 25, 8, 5, 6, 2, 0.5, 2, 1.5, 0.5, 2, 0.1, 0.2, 1, 1.5, 4)
SCHEMES = ("职工基本医疗保险", "城乡居民基本医疗保险")


def insurance(w) -> dict[str, np.ndarray]:
    """Per person: insured?, in the employee scheme?, retired?, and the person-category index."""
    def make():
        per, rng = w.persons, w.rng("insurance")
        age, employed = per.age(), w.employer >= 0
        flexible = ~employed & (age >= 25) & (age < 60) & (per.occupation != 8) & (rng.random(per.n) < 0.08)
        retired = (per.occupation == 9) & (rng.random(per.n) < 0.55)
        employee = employed | flexible | retired
        cat_ = np.select([employed, retired, flexible, age == 0, age < 6, age < 18, (age < 23) & (per.occupation == 8),
                          age >= 60], [0, 1, 3, 9, 8, 7, 6, 5], 4)
        return {"insured": rng.random(per.n) < 0.97, "employee": employee, "retired": retired, "category": cat_}
    return w.memo("insurance", make)


@builder("household_population")
def household(w, defn, rng):
    return Rows(w.persons.n, p=np.arange(w.persons.n))


def _scheme_cols(ins: dict, p: np.ndarray) -> dict[str, pa.Array]:
    return {"insurance_type": take(SCHEMES, (~ins["employee"][p]).astype(np.int64)),
            "person_category": take(CATEGORIES, ins["category"][p])}


@builder("medical_insurance_enrollment")
def enrollment(w, defn, rng):
    per, ins = w.persons, insurance(w)
    p = np.flatnonzero(ins["insured"])
    n = len(p)
    emp = ins["employee"][p]
    adult = per.born[p] + np.timedelta64(6575, "D")
    first = np.where(emp, np.maximum(adult, np.datetime64("1998-01-01")),
                     np.maximum(per.born[p], np.datetime64("2008-01-01")))
    first = first + (rng.random(n) * np.maximum((AS_OF - first).astype(np.int64), 1) * 0.5).astype("timedelta64[D]")
    first = np.minimum(first, AS_OF)
    current = first + (rng.random(n) * (AS_OF - first).astype(np.int64)).astype("timedelta64[D]")
    status = np.where(per.vital[p] == 1, 2, choice(rng, 3, n, (96, 3, 1)))
    e = w.employer[p]
    r = Rows(n, p=p, e=e, e_is_employer=True)
    r.cols = _scheme_cols(ins, p) | {
        "current_enrollment_date": date_array(current),
        "enrollment_suspension_date": pa.array(np.where(status == 1, current + np.timedelta64(180, "D"),
                                                        np.datetime64("NaT")), type=pa.date32(), from_pandas=True),
        "enrollment_status": take(("正常参保", "暂停参保", "终止参保"), status),
        "retiree_flag": pa.array(ins["retired"][p]),
        "collection_method": take(("税务部门征收", "个人自行缴纳"), (~emp).astype(np.int64)),
        "employment_form": take(["劳动合同制", "劳务派遣", "非全日制用工"], np.where(
            e >= 0, choice(rng, 3, n, (88, 8, 4)), -1)),
        "staffing_type": take(["企业"], np.where(e >= 0, 0, -1)),
        "collection_rule_type": take(("按月征缴", "按年征缴"), (~emp).astype(np.int64)),
        "base_assessment_rule_type": take(["申报工资核定", "最低基数核定"], np.where(
            emp, (rng.random(n) < 0.15).astype(np.int64), -1)),
        "medical_insurance_type": take(("职工医保", "居民医保"), (~emp).astype(np.int64)),
        "account_opened_month": date_array(month_start(first)),
        "first_enrollment_month": date_array(month_start(first)),
        "first_enrollment_date_in_system": date_array(first)}
    return r


@builder("resident_medical_insurance_payments")
def resident_payments(w, defn, rng):
    ins = insurance(w)
    p = np.flatnonzero(ins["insured"] & ~ins["employee"])
    n = len(p)
    cat_ = ins["category"][p]
    identity = choice(rng, 7, n, (93, 2, 0.5, 1, 2, 0.5, 0))
    young = cat_ >= 6
    individual = np.where(young, 29_000, 46_000)
    aided = identity > 0
    other = np.where(aided, individual, 0)  # the civil-affairs bureau pays the share of aided residents
    individual = np.where(aided, 0, individual)
    subsidy = np.where(young, 98_000, 83_000)
    r = Rows(n, p=p, at=np.full(n, np.datetime64("2025-01-01")))
    r.cols = _scheme_cols(ins, p) | {
        "resident_contribution_details": text.render(w, "resident_contribution_details", r, rng),
        "insured_identity": take(("普通参保人员", "低保对象", "特困供养人员", "重度残疾人员", "低收入人口", "优抚对象",
                                  "离休人员"), identity),
        "person_identity_category": take(("居民", "学生", "未成年人", "老年居民"),
                                         np.select([cat_ == 6, cat_ == 7, cat_ >= 8, cat_ == 5], [1, 1, 2, 3], 0)),
        "individual_contribution_amount": pa.array(individual), "retiree_flag": pa.array(np.zeros(n, bool)),
        "fiscal_subsidy_amount": pa.array(subsidy), "other_contribution_amount": pa.array(other),
        "total_contribution_amount": pa.array(individual + subsidy + other)}
    return r


def wage_base(w) -> np.ndarray:
    """Monthly contribution base per person (fen), between Jiangsu's 2024 floor and cap."""
    return w.memo("wage", lambda: np.clip(np.round(np.exp(w.rng("wage").normal(np.log(7800), 0.45, w.persons.n)))
                                          * 100, 449_400, 2_947_500).astype(np.int64))


@builder("employee_medical_insurance_payments")
def employee_payments(w, defn, rng):
    ins = insurance(w)
    p = np.flatnonzero(ins["insured"] & ins["employee"] & ~ins["retired"])
    n = len(p)
    base = wage_base(w)[p]
    flexible = ins["category"][p] == 3
    individual = np.round(base * np.where(flexible, 0.09, 0.02)).astype(np.int64)
    employer = np.where(flexible, 0, np.round(base * 0.07)).astype(np.int64)
    r = Rows(n, p=p, at=np.full(n, np.datetime64("2025-06-01")))
    r.cols = _scheme_cols(ins, p) | {
        "individual_contribution_details": text.render(w, "individual_contribution_details", r, rng),
        "employer_contribution_details": text.render(w, "employer_contribution_details", r, rng, where=~flexible),
        "person_identity_category": take(("职工", "灵活就业人员"), flexible.astype(np.int64)),
        "insured_identity": take(("普通参保人员", "优抚对象"), (rng.random(n) < 0.005).astype(np.int64)),
        "employer_contribution_base": pa.array(np.where(flexible, 0, base)),
        "individual_contribution_base": pa.array(base), "fiscal_subsidy_amount": pa.array(np.zeros(n, np.int64)),
        "other_contribution_amount": pa.array(np.zeros(n, np.int64)),
        "total_contribution_amount": pa.array(individual + employer)}
    return r


def _sample_people(w, rng, n: int, weight: np.ndarray) -> np.ndarray:
    """Up to n distinct persons, drawn with the given weights."""
    p = choice(rng, w.persons.n, int(n * 1.3) + 10, weight)
    p = p[np.sort(np.unique(p, return_index=True)[1])][:n]
    return p


@builder("chronic_special_disease_registrations")
def chronic_registrations(w, defn, rng):
    per, ins = w.persons, insurance(w)
    age = per.age()
    p = _sample_people(w, rng, w.count(30_000, 20), np.where(ins["insured"], np.clip(age - 25, 0, None) ** 2, 0.0))
    n = len(p)
    disease = choice(rng, len(CHRONIC), n, CHRONIC_W)
    applied = days_between(rng, "2016-01-01", str(AS_OF - np.timedelta64(40, "D")), n)
    appraised = applied + rng.integers(3, 20, n).astype("timedelta64[D]")
    hospitals = np.flatnonzero(w.institutions.kind == 0)
    i = hospitals[rng.integers(0, len(hospitals), n)]
    r = Rows(n, p=p, e=w.employer[p], at=applied, e_is_employer=True)
    r.cols = {"benefit_declaration_serial_no": w.code("MT3205", range(n), 10),
              "chronic_special_disease_catalogue": take(CHRONIC, disease),
              "chronic_special_disease_name": take(CHRONIC, disease),
              "disease_type_code": cat("M", num(disease * 100 + 1001, 5)),
              "start_date": date_array(appraised + np.timedelta64(1, "D")), "application_date": date_array(applied),
              "hospital_appraisal_date": date_array(appraised),
              "insurance_type": take(SCHEMES, (~ins["employee"][p]).astype(np.int64)),
              "appraisal_institution_code": take(w.institutions.code, i),
              "appraisal_institution_name": take(w.institutions.name, i),
              "application_reason": text.render(w, "application_reason", r, rng)}
    return r


@builder("maternity_allowances")
def maternity(w, defn, rng):
    per = w.persons
    age = per.age()
    mothers = ~per.male & (age >= 22) & (age <= 42) & (w.employer >= 0)
    p = _sample_people(w, rng, w.count(4_600, 10), mothers * np.exp(-((age - 30) / 5.0) ** 2))
    n = len(p)
    fathers = np.flatnonzero(per.male & (age >= 23) & (age <= 50))
    spouse = fathers[rng.integers(0, len(fathers), n)]
    kind = choice(rng, 5, n, (55, 38, 3, 3, 1))  # 顺产 剖宫产 难产 流产 引产
    born = kind <= 2
    fetus = np.where(born & (rng.random(n) < 0.02), 2, 1)
    days = np.where(born, 158 + 15 * (kind == 2) + 15 * (fetus - 1), np.where(kind == 3, 42, 15))
    monthly = (wage_base(w)[p] * 1.15).astype(np.int64) // 100 * 100
    daily = monthly // 30
    when = days_between(rng, "2024-07-01", str(AS_OF), n)
    r = Rows(n, p=p, e=w.employer[p], at=when, e_is_employer=True)
    r.cols = {
        "maternity_allowance_registration": w.code("SY3205", range(n), 10), "insurance_type": const("生育保险", n),
        "childbirth_category": take(("顺产", "剖宫产", "难产", "流产", "引产"), kind),
        "family_planning_surgery_category": sparse(const("人工流产", int((kind >= 3).sum())), kind >= 3),
        "surgery_or_birth_date": date_array(when), "late_childbearing_flag": pa.array(age[p] >= 24),
        "birth_certificate_number": sparse(cat("O", num(rng.integers(0, 10**9, int(born.sum())), 9)), born),
        "gestational_weeks": pa.array(np.where(born, rng.integers(36, 42, n), rng.integers(8, 24, n))),
        "parity": pa.array(choice(rng, 3, n, (55, 40, 5)) + 1), "fetus_count": pa.array(fetus.astype(np.int64)),
        "only_child_flag": pa.array(np.zeros(n, bool)),
        "only_child_certificate_issued_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
        "only_child_certificate_number": pa.nulls(n, pa.string()),
        "complication_flag": pa.array(rng.random(n) < 0.05),
        "spouse_name": take(per.name, spouse), "spouse_id_type": const("居民身份证（户口簿）", n),
        "spouse_id_number": take(per.id, spouse),
        "benefit_payment_method": const("拨付至单位", n), "payee_type": const("单位", n),
        "allowance_base_type": const("用人单位上年度职工月平均工资", n),
        "monthly_base_value": pa.array(monthly), "base_conversion_factor": pa.array(np.full(n, 30.0)),
        "base_value": pa.array(daily), "allowance_entitled_value": pa.array(days.astype(np.int64)),
        "maternity_allowance_total": pa.array(daily * days), "calculation_ratio": pa.array(np.ones(n))}
    return r


@builder("medical_assistance_recipients")
def assistance(w, defn, rng):
    per = w.persons
    age = per.age()
    p = _sample_people(w, rng, w.count(10_000, 10), np.where(age >= 60, 3.0, 1.0) * (w.employer < 0))
    n = len(p)
    start = np.maximum(days_between(rng, "2018-01-01", str(AS_OF - np.timedelta64(30, "D")), n), per.born[p])
    created = office_time(rng, start - rng.integers(5, 30, n).astype("timedelta64[D]"))
    head = rng.random(n) < 0.5
    staff = rng.integers(0, per.n, (3, n))
    region = per.district[p]
    r = Rows(n, p=p, at=start)
    r.cols = {
        "start_time": ts_array(office_time(rng, start)), "end_time": pa.nulls(n, pa.timestamp("us", tz="UTC")),
        "relation_to_household_head": take(("户主", "配偶", "子", "女", "父亲", "母亲"),
                                           np.where(head, 0, choice(rng, 5, n, (40, 20, 15, 12, 13)) + 1)),
        "household_head_name": take(per.name, np.where(head, p, staff[0])),
        "aid_recipient_category": take(("特困供养人员", "最低生活保障对象", "低保边缘家庭成员", "防止返贫监测对象", "孤儿",
                                        "事实无人抚养儿童", "重度残疾人", "因病致贫重病患者"),
                                       choice(rng, 8, n, (12, 40, 18, 6, 0.5, 0.5, 12, 11))),
        "student_status": take(("非在校生", "学龄前", "小学在读", "初中在读", "高中在读", "中职在读", "大学在读"),
                               np.select([age[p] < 6, age[p] < 12, age[p] < 15, age[p] < 18, age[p] < 22],
                                         [1, 2, 3, 4, 6], 0)),
        "labor_skill": take(("普通劳动力", "弱劳动力或半劳动力", "丧失劳动力", "无劳动力"),
                            np.select([age[p] < 16, age[p] >= 70, age[p] >= 60], [3, 2, 1], 0)),
        "poverty_cause": take(("因病", "因残", "因学", "因灾", "缺劳力", "缺资金"), choice(rng, 6, n, (50, 25, 6, 1, 12, 6))),
        "bank_name": take(vocab.BANKS, rng.integers(0, len(vocab.BANKS), n)),
        "bank_account": _bank_accounts(rng, n, w.ns),
        "data_created_at": ts_array(created), "data_updated_at": ts_array(created + np.timedelta64(3, "D")),
        "handled_at": ts_array(created + np.timedelta64(1, "D")), "applied_at": ts_array(created),
        "creator_name": take(per.name, staff[1]), "handler_name": take(per.name, staff[2]),
        "applicant": take(per.name, np.where(head | (age[p] >= 18), p, staff[0])),
        "creating_agency_code": cat(take(REGION_CODES, region), "0101"),
        "handling_agency_code": cat(take(REGION_CODES, region), "0101"),
        "version_number": take(("1", "2", "3"), choice(rng, 3, n, (80, 15, 5))),
        "photo_url": text.render(w, "photo_url", r, rng),
        "application_reason": text.render(w, "application_reason", r, rng)}
    return r
