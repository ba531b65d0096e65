"""Medical institutions and catalogues, insured employers, hospital outpatient and inpatient
records, and medical-insurance visits (settlements are in settlement.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.platform.synth import vocab
from authops.platform.synth.arrow import (
    AS_OF, cat, choice, const, date_array, num, office_time, sparse, spread_days, take, ts_array)
from authops.platform.synth.columns import REGION_CODES, Rows, generic
from authops.platform.synth.person import CHRONIC, insurance
from authops.platform.synth.registry import builder, per_entity

OUTPATIENT_VISITS_PER_YEAR = 6.0  # China averages about 6.5 outpatient visits per person a year
CARE = ("普通门诊", "急诊", "门诊慢特病", "住院", "日间手术", "定点药店购药", "生育门诊", "生育住院", "家庭病床")
DIAG_W = (30, 12, 8, 8, 6, 3, 4, 4, 3, 2, 2, 2, 2, 4, 1.5, 1.5, 0.6, 0.5, 0.4, 0.6, 0.6, 3, 1, 2, 0.6, 0.4, 0.8,
          1.5, 3, 1)


def visit_weights(w) -> np.ndarray:
    """How often each person sees a doctor, relative to the average (older people more)."""
    def make():
        age = w.persons.age().astype(float)
        wt = 0.6 + (age / 35.0) ** 2 + np.where(age < 6, 1.0, 0.0)
        return wt / wt.mean()
    return w.memo("visit_weights", make)


def care_institutions(w) -> np.ndarray:
    return np.flatnonzero(w.institutions.kind <= 2)


def diagnoses(rng: np.random.Generator, n: int) -> np.ndarray:
    return choice(rng, len(vocab.DIAGNOSES), n, DIAG_W)


def _diag_cols(d: np.ndarray, prefix: str, local: str) -> dict[str, pa.Array]:
    code = take([x[0] for x in vocab.DIAGNOSES], d)
    name = take([x[1] for x in vocab.DIAGNOSES], d)
    return {f"{prefix}_code": code, f"{prefix}_name": name, f"{local}_code": cat(code, "x001"), f"{local}_name": name}


@builder("designated_medical_institutions")
def institutions(w, defn, rng):
    return Rows(w.institutions.n, i=np.arange(w.institutions.n))


@builder("medical_insurance_catalogue")
def catalogue(w, defn, rng):
    n = w.count(8_000, 200)
    item = choice(rng, 14, n, (1, 2, 8, 8, 10, 4, 2, 12, 30, 6, 12, 1, 1, 3))
    usage = np.select([np.isin(item, (8, 10)), item == 9, item == 7], [0, 1, 3], 2)
    return Rows(n, cols={
        "enrollment_insurance_region": take(REGION_CODES, rng.integers(0, len(REGION_CODES), n)),
        "charge_item_category": take(("床位费", "诊察费", "检查费", "化验费", "治疗费", "手术费", "护理费", "卫生材料费",
                                      "西药费", "中药饮片费", "中成药费", "一般诊疗费", "挂号费", "其他费"), item),
        "charge_item_grade": take(("甲类", "乙类", "丙类"), choice(rng, 3, n, (45, 45, 10))),
        "restricted_use_flag": pa.array(rng.random(n) < 0.15),
        "catalogue_usage_category": take(("西药中成药", "中药饮片", "医疗服务项目", "医用耗材"), usage),
        "maternity_use_flag": pa.array(rng.random(n) < 0.1)})


@builder("chronic_special_disease_coverage")
def chronic_coverage(w, defn, rng):
    k, regions = len(CHRONIC), len(REGION_CODES)
    d = np.tile(np.repeat(np.arange(k), 2), regions)
    scheme = np.tile(np.arange(2), k * regions)
    region = np.repeat(np.arange(regions), 2 * k)
    n = len(d)
    special = np.isin(d, (4, 5, 6, 7, 11, 12))  # cancer, dialysis, transplant, schizophrenia, haemophilia, aplasia
    family = np.array([0, 1, 0, 2, 3, 4, 4, 5, 7, 7, 4, 6, 6, 7, 7, 0])
    start = np.datetime64("2016-01-01") + rng.integers(0, 1500, n).astype("timedelta64[D]")
    return Rows(n, at=start, cols={
        "special_disease_catalogue": take(CHRONIC, d), "enrollment_insurance_region": take(REGION_CODES, region),
        "insurance_type": take(("职工基本医疗保险", "城乡居民基本医疗保险"), scheme), "start_date": date_array(start),
        "disease_type": take(("门诊慢性病", "门诊特殊病"), special.astype(np.int64)),
        "chronic_special_disease_category": take(("心脑血管类", "内分泌代谢类", "呼吸系统类", "肿瘤类", "肾脏疾病类",
                                                  "精神类", "血液类", "其他类"), family[d]),
        "catalogue_usage_class": take(("全目录", "限定目录"), special.astype(np.int64)),
        "end_date": pa.nulls(n, pa.date32()),
        "data_updated_at": ts_array(office_time(rng, np.full(n, AS_OF - np.timedelta64(10, "D"))))})


@builder("insured_employers")
def insured_employers(w, defn, rng):
    from authops.platform.synth.enterprise import _insured

    ent = w.enterprises
    e = _insured(w)
    n = len(e)
    region = take(REGION_CODES, ent.district[e])
    staff = np.flatnonzero(w.employer >= 0)
    return Rows(n, e=e, cols={
        "parent_employer_number": pa.nulls(n, pa.string()), "linked_legal_entity_flag": pa.array(np.ones(n, bool)),
        "contact_name": take(w.persons.name, staff[rng.integers(0, len(staff), n)]),
        "registration_number": cat(region, w.ns, num(w.permuted(e, 10**8), 8)),
        "registration_document_type": take(("统一社会信用代码证书", "营业执照"), (ent.established[e] < np.datetime64(
            "2016-01-01")).astype(np.int64)),
        "approving_authority": take(list(vocab.SAMR.values()), ent.district[e]),
        "approval_document_number": cat("苏市监登字〔", num(ent.established[e].astype("datetime64[Y]").astype(np.int64)
                                                          + 1970), "〕", num(w.serial(np.arange(n))), "号"),
        "parent_insurance_region": const("320500", n),
        "org_valid_status": take(("正常", "注销"), np.isin(ent.status[e], (5, 6, 7)).astype(np.int64))})


@builder("hospital_outpatient_records")
def outpatient(w, defn, rng):
    counts = np.minimum(rng.poisson(OUTPATIENT_VISITS_PER_YEAR * visit_weights(w)), 300)
    p = per_entity(counts)
    seen = np.flatnonzero(counts)
    days = spread_days(rng, counts[seen], np.maximum(w.persons.born[seen], np.datetime64("2024-07-01")), str(AS_OF))
    n = len(p)
    care = care_institutions(w)
    i = care[choice(rng, len(care), n, w.institutions.volume[care])]
    return Rows(n, p=p, i=i, cols={"outpatient_visit_time": ts_array(office_time(rng, days))}
                | _diag_cols(diagnoses(rng, n), "outpatient_diagnosis", "hospital_diagnosis"))


@builder("hospital_inpatient_records")
def inpatient(w, defn, rng):
    counts = np.minimum(rng.poisson(0.15 * visit_weights(w) ** 1.3), 20)
    p = per_entity(counts)
    n = len(p)
    seen = np.flatnonzero(counts)
    days = spread_days(rng, counts[seen], np.maximum(w.persons.born[seen], np.datetime64("2023-07-01")),
                       str(AS_OF - np.timedelta64(30, "D")))
    hosp = np.flatnonzero(w.institutions.kind == 0)
    i = hosp[choice(rng, len(hosp), n, w.institutions.volume[hosp])]
    admitted = office_time(rng, days)
    stay = np.maximum(1, rng.poisson(8, n)).astype("timedelta64[D]")
    seen = admitted - (rng.integers(1, 72 * 3600, n) * 1_000_000).astype("timedelta64[us]")
    return Rows(n, p=p, i=i, cols={
        "admission_time": ts_array(admitted), "outpatient_visit_time": ts_array(seen),
        "discharge_time": ts_array(admitted + stay.astype("timedelta64[us]"))}
        | _diag_cols(diagnoses(rng, n), "outpatient_diagnosis", "hospital_diagnosis"))


_INPATIENT_ONLY = ("admission_diagnosis_description", "admission_dept_code", "admission_dept_name", "admission_bed",
                   "ward_bed", "dept_transfer_flag", "inpatient_main_diagnosis_code", "discharge_dept_code",
                   "discharge_dept_name", "discharge_bed", "discharge_method", "main_condition_description",
                   "procedure_code", "procedure_name", "inpatient_status", "length_of_stay_days",
                   "inpatient_main_diagnosis_name", "admission_dept_category", "discharge_dept_category",
                   "cross_year_hospitalization_flag")
_MATERNITY_ONLY = ("gestational_weeks", "family_planning_surgery_category", "parity", "fetus_count",
                   "childbirth_category", "pregnancy_date", "late_childbearing_flag", "premature_birth_flag",
                   "family_planning_certificate_number", "surgery_or_birth_date", "complication_flag")


def scatter(values: pa.Array, where: np.ndarray) -> pa.Array:
    """values (one per True in where) placed at those rows, nulls elsewhere."""
    if pa.types.is_string(values.type):
        return sparse(values, where)
    idx = np.cumsum(where) - 1
    return values.take(pa.array(idx, mask=~where))


@builder("medical_visits")
def visits(w, defn, rng):
    per, ins = w.persons, insurance(w)
    n = w.count(2_000_000, 100)
    p = np.sort(choice(rng, per.n, n, visit_weights(w)))  # listed person by person
    care = care_institutions(w)
    i = care[choice(rng, len(care), n, w.institutions.volume[care])]
    age = per.age()[p]
    kind = choice(rng, len(CARE), n, (66, 6, 12, 9, 1.5, 0, 1.5, 1, 0.5))
    kind[(kind >= 6) & (per.male[p] | (age < 20) | (age > 48))] = 0
    inpatient = np.isin(kind, (3, 4, 7))
    start = office_time(rng, np.maximum(per.born[p], np.datetime64("2024-07-01")
                                        + rng.integers(0, 364, n).astype("timedelta64[D]")))
    stay = np.where(inpatient, np.maximum(1, rng.poisson(7, n)), 0)
    end = start + (stay * 86_400_000_000 + rng.integers(600, 7200, n) * 1_000_000).astype("timedelta64[us]")
    d = diagnoses(rng, n)
    diag_code, diag_name = take([x[0] for x in vocab.DIAGNOSES], d), take([x[1] for x in vocab.DIAGNOSES], d)
    r = Rows(n, p=p, i=i, e=w.employer[p], at=start.astype("datetime64[D]"), e_is_employer=True)
    cols = {
        "visit_id": w.code("JZ3205", range(n), 12), "medical_category": take(CARE, kind),
        "start_time": ts_array(start), "end_time": ts_array(end), "insurance_type": take(
            ("职工基本医疗保险", "城乡居民基本医疗保险"), (~ins["employee"][p]).astype(np.int64)),
        "person_category": take(("在职职工", "退休人员", "离休人员", "灵活就业人员", "成年居民", "老年居民", "大学生",
                                 "中小学生", "学龄前儿童", "新生儿"), ins["category"][p]),
        "year": date_array(np.full(n, np.datetime64("2024-01-01"))), "disease_code": diag_code,
        "disease_name": diag_name, "outpatient_diagnosis_info": cat("门诊诊断：", diag_name),
        "death_date": pa.nulls(n, pa.date32()), "valid_flag": pa.array(np.ones(n, bool)),
        "remarks": pa.nulls(n, pa.string()), "pre_referral_visit_id": pa.nulls(n, pa.string()),
        "third_party_liability_flag": pa.array(np.zeros(n, bool)),
        "third_party_liability_ratio": pa.array(np.zeros(n)), "newborn_flag": pa.array(age == 0),
        "relocation_category": const("非异地安置", n), "payment_location_category": const("本地就医", n)}
    # fields of hospital stays and of births, made for those rows only
    k = np.flatnonzero(inpatient)
    dk = d[k]
    method = choice(rng, 4, len(k), (95, 2.5, 2, 0.5))
    surgery = np.where(rng.random(len(k)) < 0.35, rng.integers(0, len(vocab.PROCEDURES), len(k)), -1)
    dept = take([x[2] for x in vocab.DIAGNOSES], dk)
    dcode = take([vocab.DEPT_CODES[x[2]] for x in vocab.DIAGNOSES], dk)
    stays = {
        "admission_dept_code": dcode, "discharge_dept_code": dcode, "admission_dept_name": dept,
        "discharge_dept_name": dept, "admission_dept_category": dept, "discharge_dept_category": dept,
        "inpatient_main_diagnosis_code": diag_code.take(pa.array(k)),
        "inpatient_main_diagnosis_name": diag_name.take(pa.array(k)),
        "procedure_code": take([x[0] for x in vocab.PROCEDURES], surgery),
        "procedure_name": take([x[1] for x in vocab.PROCEDURES], surgery),
        "length_of_stay_days": pa.array(stay[k].astype(np.int64)), "inpatient_status": const("已出院", len(k)),
        "discharge_method": take(("医嘱离院", "医嘱转院", "非医嘱离院", "死亡"), method)}
    died = np.zeros(n, dtype=bool)
    died[k[method == 3]] = True
    cols["death_date"] = scatter(date_array(end[died].astype("datetime64[D]")), died)
    fields = {f.name: f for f in defn.schema.fields}
    for names, mask, made in ((_INPATIENT_ONLY, inpatient, stays), (_MATERNITY_ONLY, kind >= 6, {})):
        sub = Rows(int(mask.sum()), p=p[mask], i=i[mask], at=r.at[mask])
        done: dict[int, tuple[pa.Array, pa.Array]] = {}  # columns sharing one array share its scattered copy
        for name in names:
            if name in fields:
                part = made.get(name)
                part = generic(w, fields[name], sub, rng) if part is None else part
                cols[name] = done.setdefault(id(part), (part, scatter(part, mask)))[1]
    r.cols = cols
    return r
