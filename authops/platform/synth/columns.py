"""Turn a table's rows (entity indices plus hand-made columns) into an Arrow table of its schema.

A domain builder says which person, enterprise, truck or institution each row is about and
supplies the columns that need domain logic; every other field is filled here, first from the
row's entities (so names, ID numbers and codes agree across tables), then by the field's kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data.schema import Check, DType, FieldSpec, Kind, arrow_schema, arrow_type
from authops.platform.synth import pools, text, vocab
from authops.platform.synth.arrow import (
    AS_OF, cat, choice, const, date_array, days_between, digit_matrix, digits_to_arrow, lognormal_fen,
    luhn_digits, month_start, num, office_time, take, ts_array, year_start)

ID_TYPE = "居民身份证（户口簿）"
ETHNICITIES = ("汉族", "回族", "满族", "蒙古族", "壮族", "苗族", "土家族", "彝族", "藏族", "维吾尔族", "布依族", "侗族",
               "瑶族", "朝鲜族", "白族", "哈尼族", "黎族", "哈萨克族", "傣族", "畲族", "其他民族")
OCCUPATIONS = ("国家机关、党群组织、企业、事业单位负责人", "专业技术人员", "办事人员和有关人员", "社会生产服务和生活服务人员",
               "农、林、牧、渔业生产及辅助人员", "生产制造及有关人员", "军人", "不便分类的其他从业人员", "学生",
               "离退休人员", "无业人员", "学龄前儿童")
MARITAL = ("未婚", "已婚", "丧偶", "离婚")
ECONOMIC = ("私营经济",) * 3 + ("外商投资经济", "港澳台投资经济", "股份制经济", "股份制经济") + ("私营经济",) * 3 + (
    "国有经济", "集体经济")
REGION_CODES = tuple(str(d[1]) for d in vocab.DISTRICTS)


@dataclass
class Rows:
    """n rows of one table: entity indices per row (-1 = none) and the columns made by hand."""

    n: int
    cols: dict[str, pa.Array] = field(default_factory=dict)
    p: np.ndarray | None = None  # person
    e: np.ndarray | None = None  # enterprise
    v: np.ndarray | None = None  # vehicle
    i: np.ndarray | None = None  # medical institution
    at: np.ndarray | None = None  # event date (datetime64[D]) for ages and texts
    e_is_employer: bool = False  # e is the employer of p: enterprise fields come via the person
    taken: dict = field(default_factory=dict)  # linked columns already made for these rows


def _p(fn: Callable) -> Callable:
    return lambda w, r: None if r.p is None else fn(w, w.persons, r.p, r)


def _e(fn: Callable) -> Callable:
    return lambda w, r: None if r.e is None else fn(w, w.enterprises, r.e, r)


def _v(fn: Callable) -> Callable:
    return lambda w, r: None if r.v is None else fn(w, w.vehicles, r.v, r)


def _i(fn: Callable) -> Callable:
    return lambda w, r: None if r.i is None else fn(w, w.institutions, r.i, r)


def _at(r: Rows) -> np.ndarray:
    return r.at if r.at is not None else np.full(r.n, AS_OF)


def _mapped(values, codes: np.ndarray, idx: np.ndarray) -> pa.Array:
    """values[codes[idx]] with nulls where idx is -1."""
    if len(idx) == 0 or idx.min() >= 0:
        return take(values, codes[idx])
    return take(values, np.where(idx >= 0, codes[np.maximum(idx, 0)], -1))


def person_codes(w, prefix: str) -> pa.Array:
    """One scattered-looking code per person (insurance relation, e-voucher), made once per world."""
    salt = {"GX3205": 2, "E3205": 3}.get(prefix, 0)
    return w.memo("codes" + prefix, lambda: w.code(prefix, w.permuted(np.arange(w.persons.n), 10**10, salt), 10))


def _legal_rep(attr: str) -> Callable:
    def fn(w, ent, e, r):
        rep = np.where(e >= 0, ent.legal_rep[np.maximum(e, 0)], -1)
        return take(getattr(w.persons, attr), rep)
    return _e(fn)


def _region(w, r: Rows) -> pa.Array | None:
    return None if r.p is None else _mapped(REGION_CODES, w.persons.district, r.p)


# one function per meaning, shared by the field names that carry it (so a table holding two of them
# takes the values once)
_person_name = _p(lambda w, per, p, r: take(per.name, p))
_firm_name = _e(lambda w, ent, e, r: take(ent.name, e))
_firm_uscc = _e(lambda w, ent, e, r: take(ent.uscc, e))
_inst_code = _i(lambda w, ins, i, r: take(ins.code, i))
_inst_name = _i(lambda w, ins, i, r: take(ins.name, i))
_PRICE_GRADE = np.array([0, 0, 1, 1, 2, 2, 4])  # hospital grade -> 三级 二级 一级 社区 无等级
_price_grade = _i(lambda w, ins, i, r: _mapped(("三级", "二级", "一级", "社区", "无等级"),
                                               np.where(ins.kind == 1, 3, _PRICE_GRADE[ins.grade]), i))

PERSON = {
    "id_number": _p(lambda w, per, p, r: take(per.id, p)),
    "name": _person_name, "person": _person_name, "aid_recipient": _person_name, "bank_account_name": _person_name,
    "applicant": _person_name,
    "sex": _p(lambda w, per, p, r: _mapped(("男", "女"), (~per.male).astype(np.int64), p)),
    "birth_date": _p(lambda w, per, p, r: date_array(per.born[p])),
    "age": _p(lambda w, per, p, r: pa.array(per.age_at(p, _at(r)))),
    "ethnicity": _p(lambda w, per, p, r: _mapped(ETHNICITIES, per.ethnicity, p)),
    "marital_status": _p(lambda w, per, p, r: _mapped(MARITAL, per.marital, p)),
    "occupation_category": _p(lambda w, per, p, r: _mapped(OCCUPATIONS, per.occupation, p)),
    "vital_status": _p(lambda w, per, p, r: _mapped(("生存", "死亡"), per.vital, p)),
    "person_number": _p(lambda w, per, p, r: take(per.number, p)),
    "phone": _p(lambda w, per, p, r: take(per.phone, p)),
    "contact_address": _p(lambda w, per, p, r: take(per.address, p)),
    "home_address": _p(lambda w, per, p, r: take(per.address, p)),
    "insurance_relation": _p(lambda w, per, p, r: take(person_codes(w, "GX3205"), p)),
    "insurance_relation_id": _p(lambda w, per, p, r: take(person_codes(w, "GX3205"), p)),
    "id_type": _p(lambda w, per, p, r: const(ID_TYPE, r.n)),
    "enrollment_insurance_region": _region,
}
DIRECT = {"age"}  # link fields that depend on more than the entity (everything else is cached per entity)
ENTERPRISE = {
    "enterprise_name": _firm_name, "employer_name": _firm_name, "employer": _firm_name, "registered_name": _firm_name,
    "copyright_holder": _firm_name, "uscc": _firm_uscc, "tax_id": _firm_uscc, "employer_entity_code": _firm_uscc,
    "employer_number": _e(lambda w, ent, e, r: take(ent.number, e)),
    "org_code": _e(lambda w, ent, e, r: pc.utf8_slice_codeunits(take(ent.uscc, e), 8, 17)),
    "legal_rep_name": _legal_rep("name"),
    "legal_rep_id_number": _legal_rep("id"),
    "legal_rep_phone": _legal_rep("phone"),
    "legal_rep_id_type": _e(lambda w, ent, e, r: const("居民身份证", r.n)),
    "registration_status": _e(lambda w, ent, e, r: _mapped(pools.STATUSES, ent.status, e)),
    "enterprise_type": _e(lambda w, ent, e, r: _mapped(pools.ENTERPRISE_TYPES, ent.etype, e)),
    "industry": _e(lambda w, ent, e, r: _mapped(pools.INDUSTRIES, ent.industry, e)),
    "economic_type": _e(lambda w, ent, e, r: _mapped(ECONOMIC, ent.etype, e)),
    "employer_type": _e(lambda w, ent, e, r: _mapped(("企业",), np.zeros(ent.n, np.int64), e)),
    "affiliation": _e(lambda w, ent, e, r: _mapped(("其他", "市", "县（区）"), np.select(
        [ent.etype == 10, ent.etype == 11], [1, 2], 0), e)),
    "employer_management_type": _e(lambda w, ent, e, r: _mapped(("普通单位",), np.zeros(ent.n, np.int64), e)),
    "enterprise_address": _e(lambda w, ent, e, r: take(ent.address, e)),
    "employer_address": _e(lambda w, ent, e, r: take(ent.address, e)),
    "registration_authority": _e(lambda w, ent, e, r: _mapped(list(vocab.SAMR.values()), ent.district, e)),
    "establishment_date": _e(lambda w, ent, e, r: date_array(ent.established[e])),
    "approval_date": _e(lambda w, ent, e, r: date_array(ent.established[e])),
    "registered_capital": _e(lambda w, ent, e, r: pa.array(ent.capital[e])),
    "paid_in_capital": _e(lambda w, ent, e, r: pa.array(ent.paid_in[e])),
    "insurance_region": _e(lambda w, ent, e, r: _mapped(REGION_CODES, ent.district, e)),
    "postal_code": _e(lambda w, ent, e, r: _mapped([d[3] for d in vocab.DISTRICTS], ent.district, e)),
}
VEHICLE = {
    "vin": _v(lambda w, veh, v, r: take(veh.vin, v)),
    "plate_number": _v(lambda w, veh, v, r: take(veh.plate, v)),
    "vehicle_type": _v(lambda w, veh, v, r: _mapped(pools.VEHICLE_TYPES, veh.vtype, v)),
    "brand": _v(lambda w, veh, v, r: _mapped(pools.BRANDS, veh.brand, v)),
    "manufacture_date": _v(lambda w, veh, v, r: date_array(veh.made[v])),
    "plate_registration_date": _v(lambda w, veh, v, r: date_array(veh.registered[v])),
}
INSTITUTION = {
    "medical_institution_code": _inst_code, "designated_institution_code": _inst_code,
    "medical_institution_mgmt_code": _inst_code, "medical_institution_name": _inst_name,
    "designated_institution_name": _inst_name,
    "hospital_grade": _i(lambda w, ins, i, r: _mapped(pools.HOSPITAL_GRADES, ins.grade, i)),
    "price_cap_hospital_grade": _price_grade, "deductible_hospital_grade": _price_grade,
    "designated_institution_region": _i(lambda w, ins, i, r: _mapped(REGION_CODES, ins.district, i)),
    "out_of_area_institution_type": _i(lambda w, ins, i, r: const("本地定点", r.n)),
    "uscc": lambda w, r: None if r.i is None or r.e is not None else take(w.institutions.uscc, r.i),
}
LINKS = (("e", ENTERPRISE), ("i", INSTITUTION), ("p", PERSON), ("v", VEHICLE),
         ("e", {"enrollment_insurance_region": _e(lambda w, ent, e, r: _mapped(REGION_CODES, ent.district, e))}))


def _pool_size(w, kind: str) -> int:
    return {"p": w.persons, "e": w.enterprises, "v": w.vehicles, "i": w.institutions}[kind].n


def _per_entity(w, kind: str, fn: Callable) -> pa.Array:
    """The field's value for every member of the pool, computed once per world."""
    def make():
        n = _pool_size(w, kind)
        return fn(w, Rows(n, **{kind: np.arange(n)}))
    return w.memo(("link", kind, fn), make)


def linked(w, name: str, r: Rows) -> pa.Array | None:
    """The field's values from the rows' entities, or None if no entity of the rows defines it."""
    for kind, links in LINKS:
        fn, idx = links.get(name), getattr(r, kind)
        if fn is None or idx is None or (kind == "i" and name == "uscc" and r.e is not None):
            continue
        if name in DIRECT:
            return fn(w, r)
        if (kind, fn) not in r.taken:
            if kind == "e" and r.e_is_employer and r.p is not None:
                via = w.memo(("employer", fn), lambda: take(_per_entity(w, "e", fn), w.employer))
                r.taken[kind, fn] = take(via, r.p)
            else:
                r.taken[kind, fn] = take(_per_entity(w, kind, fn), idx)
        return r.taken[kind, fn]
    return None


def _weights(f: FieldSpec) -> np.ndarray:
    k = len(f.enum or ())
    return 0.55 ** np.arange(k)  # code lists put the common value first


def _bank_accounts(rng: np.random.Generator, n: int, ns: str) -> pa.Array:
    body = np.hstack([digit_matrix(np.full(n, 6_222_020 + int(ns)), 7), rng.integers(0, 10, (n, 11))])
    return digits_to_arrow(np.hstack([body, luhn_digits(body)[:, None]]))


def generic(w, f: FieldSpec, r: Rows, rng: np.random.Generator) -> pa.Array:
    """A plausible column for a field nothing more specific filled, by its kind and name."""
    n, name, kind = r.n, f.name, f.kind
    if kind == Kind.CATEGORY and f.enum:
        return take(f.enum, choice(rng, len(f.enum), n, _weights(f)))
    if kind == Kind.DATE:
        days = days_between(rng, "2018-01-01", str(AS_OF), n) if r.at is None else r.at
        if name.endswith("month") or name.endswith("_year") or name == "year":
            days = month_start(days)
            if "year" in name:
                days = year_start(days)
        if "birth" in name:
            days = days_between(rng, "1940-01-01", "2024-12-31", n)
        return date_array(days)
    if kind == Kind.DATETIME:
        days = days_between(rng, "2018-01-01", str(AS_OF), n) if r.at is None else r.at
        return ts_array(office_time(rng, days))
    if kind == Kind.MONEY:
        return pa.array(lognormal_fen(rng, 5000, 1.0, n))
    if kind == Kind.COUNT:
        return pa.array(rng.poisson(3, n).astype(np.int64))
    if kind == Kind.RATIO:
        return pa.array(np.round(rng.uniform(0, 1, n), 4))
    if kind == Kind.FLAG:
        return pa.array(rng.random(n) < (0.98 if name == "valid_flag" else 0.05))
    if kind == Kind.TEXT:
        return text.render(w, name, r, rng)
    if f.check == Check.RESIDENT_ID:
        return take(w.persons.id, rng.integers(0, w.persons.n, n))
    if f.check == Check.USCC:
        return take(w.enterprises.uscc, rng.integers(0, w.enterprises.n, n))
    if f.check == Check.VIN:
        return take(w.vehicles.vin, rng.integers(0, w.vehicles.n, n))
    if f.check == Check.PLATE:
        return take(w.vehicles.plate, rng.integers(0, w.vehicles.n, n))
    if kind == Kind.PHONE:
        if "fax" in name:
            first = np.full(n, 5) if w.mock else rng.choice([6, 8], n)
            return cat("0512-", num(first * 10**7 + rng.integers(0, 10**7, n), 8))
        prefixes = [170, 171] if w.mock else [139, 138, 186, 189, 135, 151, 133, 180]
        return cat(num(rng.choice(prefixes, n)), num(rng.integers(0, 10**8, n), 8))
    if kind == Kind.NAME_PERSON:
        return take(w.persons.name, rng.integers(0, w.persons.n, n))
    if kind == Kind.NAME_ORG:
        if name in vocab.ORG_FIELDS:
            return take(vocab.ORG_FIELDS[name], rng.integers(0, len(vocab.ORG_FIELDS[name]), n))
        return take(w.enterprises.name, rng.integers(0, w.enterprises.n, n))
    if kind == Kind.ADDRESS:
        return w.addresses(rng, rng.integers(0, len(vocab.DISTRICTS), n), home=False)
    if kind == Kind.BANK_ACCOUNT:
        return _bank_accounts(rng, n, w.ns)
    if kind == Kind.CODE and name.endswith("region"):
        return take(REGION_CODES, rng.integers(0, len(REGION_CODES), n))
    # codes and unchecked identifiers: distinct per row, from a per-field prefix
    prefix = vocab.CODE_PREFIX.get(name)
    if prefix is None:
        prefix = "".join(p[0] for p in name.split("_")).upper()[:3]
    start = int(rng.integers(0, 9 * 10**9))
    return w.code(prefix, range(start, start + n), 10)


def column(w, f: FieldSpec, r: Rows, rng: np.random.Generator) -> pa.Array:
    arr = r.cols.get(f.name)
    if arr is None:
        arr = linked(w, f.name, r)
    if arr is None:
        arr = generic(w, f, r, rng)
    if isinstance(arr, np.ndarray):
        arr = date_array(arr) if f.dtype == DType.DATE else pa.array(arr)
    want = arrow_type(f.dtype)
    if arr.type != want:
        arr = arr.cast(want)
    if len(arr) != r.n:
        raise ValueError(f"{f.name}: {len(arr)} values for {r.n} rows")
    return arr


def complete(w, defn, r: Rows, rng: np.random.Generator) -> pa.Table:
    """The table of `defn`'s exact Arrow schema for these rows."""
    schema = arrow_schema(defn.schema)
    arrays = [column(w, f, r, rng) for f in defn.schema.fields]
    for f, a in zip(defn.schema.fields, arrays, strict=True):
        if f.required and a.null_count:
            raise ValueError(f"{defn.code}.{f.name} is required but {a.null_count} rows are empty")
    return pa.Table.from_arrays(arrays, schema=schema)
