"""The members of the synthetic city's pools (one numpy/Arrow array per attribute) and their code lists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from authops.platform.synth import vocab
from authops.platform.synth.arrow import AS_OF, ymd

INDUSTRIES = tuple(vocab.INDUSTRY_WORDS)
ENTERPRISE_TYPES = ("有限责任公司（自然人投资或控股）", "有限责任公司（自然人独资）", "有限责任公司（非自然人投资或控股的法人独资）",
                    "有限责任公司（外商投资企业法人独资）", "有限责任公司（港澳台投资、非独资）", "股份有限公司（非上市、自然人投资或控股）",
                    "股份有限公司（上市）", "个人独资企业", "普通合伙企业", "有限合伙企业", "全民所有制", "集体所有制")
ENTERPRISE_TYPE_W = (45, 25, 8, 4, 2, 5, 0.3, 5, 1, 3, 0.5, 1.2)
STATUSES = ("存续", "在业", "停业", "清算", "迁出", "吊销", "注销", "撤销")
BRANDS = ("中国重汽", "一汽解放", "东风商用车", "陕汽", "福田", "江淮", "上汽红岩", "北奔重汽", "大运", "江铃", "庆铃", "徐工")
BRAND_W = (18, 20, 15, 10, 12, 6, 4, 3, 3, 4, 2, 3)
BRAND_WMI = ("LZZ", "LFW", "LGA", "LZG", "LVB", "LJC", "LZF", "LBZ", "LYD", "LEF", "LWL", "LXG")
VEHICLE_TYPES = ("重型半挂牵引车", "重型厢式货车", "重型仓栅式货车", "重型普通货车", "重型自卸货车", "重型罐式货车",
                 "中型厢式货车", "中型普通货车", "轻型厢式货车", "轻型普通货车", "轻型仓栅式货车")
VEHICLE_TYPE_W = (30, 15, 8, 7, 6, 4, 6, 3, 14, 5, 2)
INSTITUTION_KINDS = ("hospital", "community", "clinic", "pharmacy")
_CHARS = tuple(dict.fromkeys(vocab.GIVEN_MALE + vocab.GIVEN_FEMALE + vocab.GIVEN_ANY))
_MOBILE = np.array([130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 157, 158, 159, 166, 173, 177,
                    180, 181, 182, 183, 186, 187, 188, 189, 191, 198, 199])


@dataclass
class Persons:
    n: int
    born: np.ndarray  # datetime64[D]
    male: np.ndarray
    district: np.ndarray  # index into vocab.DISTRICTS (where they live)
    region: np.ndarray  # region code of the ID number
    id: pa.Array
    name: pa.Array
    name_code: np.ndarray  # int: equal names have equal codes
    ethnicity: np.ndarray  # index into the ethnicity enum
    marital: np.ndarray
    occupation: np.ndarray
    vital: np.ndarray
    phone: pa.Array
    address: pa.Array
    number: pa.Array  # medical-insurance person number (人员编号)

    def age(self) -> np.ndarray:
        """Every person's whole years of age on AS_OF (computed once)."""
        if not hasattr(self, "_age"):
            self._age = self.age_at(np.arange(self.n), np.full(self.n, AS_OF))
            self._age.flags.writeable = False
        return self._age

    def age_at(self, p: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Whole years of age of persons p on dates at (one per row)."""
        if not hasattr(self, "_bymd"):
            by, bm, bd = ymd(self.born)
            self._bymd = (by, bm * 100 + bd)
        by, bmd = self._bymd
        y, m, d = ymd(at)
        return np.maximum(y - by[p] - (m * 100 + d < bmd[p]), 0)


@dataclass
class Enterprises:
    n: int
    uscc: pa.Array
    name: pa.Array
    district: np.ndarray
    address: pa.Array
    established: np.ndarray
    industry: np.ndarray  # index into INDUSTRIES
    etype: np.ndarray  # index into ENTERPRISE_TYPES
    status: np.ndarray  # index into STATUSES
    legal_rep: np.ndarray  # person index
    capital: np.ndarray  # registered capital, fen
    paid_in: np.ndarray
    staff: np.ndarray
    revenue: np.ndarray  # yearly, fen
    arrears: np.ndarray
    lawsuit: np.ndarray
    default: np.ndarray
    number: pa.Array  # medical/social insurance employer number (单位编号)

    def of(self, industry: str) -> np.ndarray:
        return self.industry == INDUSTRIES.index(industry)


@dataclass
class Vehicles:
    n: int
    vin: pa.Array
    plate: pa.Array
    vtype: np.ndarray
    brand: np.ndarray
    owner: np.ndarray  # enterprise index
    made: np.ndarray
    registered: np.ndarray
    violations: np.ndarray  # how many violations the truck has
    accidents: np.ndarray


@dataclass
class Institutions:
    n: int
    code: pa.Array
    name: pa.Array
    uscc: pa.Array
    kind: np.ndarray  # index into INSTITUTION_KINDS
    grade: np.ndarray  # index into the hospital_grade enum
    district: np.ndarray
    abnormal: np.ndarray
    volume: np.ndarray  # relative number of visits


HOSPITAL_GRADES = ("三级甲等", "三级乙等", "二级甲等", "二级乙等", "一级甲等", "一级", "无等级")
