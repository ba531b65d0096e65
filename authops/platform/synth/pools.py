"""The synthetic city every resource draws from: persons, enterprises, trucks, medical institutions.

One `World(scale, seed)` holds the shared pools, so the same enterprise has the same USCC and
name in every table and the same person the same ID number, name, sex and birth date. At scale 1
there are about 100,000 enterprises, 1,000,000 persons, 200,000 trucks and 2,000 institutions.

Planted signals (all constants in `SIGNALS`, which products and tests may read):

* Enterprise default. 10% of firms are "stressed". A stressed firm has tax arrears (shown as
  `enterprise_tax.has_violation_record` in some months) with probability 0.35 (others 0.03) and
  lawsuits (rows in `court_cases`) with probability 0.45 (others 0.04). The latent default flag
  is then drawn with probability 0.02 + 0.10·arrears + 0.12·lawsuit + 0.30·(arrears and lawsuit),
  so firms with both default about 27 times as often as firms with neither. Default shows in
  `enterprise_credit_rating` (has_major_risk for 90% of defaulters and 1% of others; grades C/D),
  `enterprise_blacklist` (50% of defaulters, 0.2% of others), `serious_dishonest_enterprises`
  (35% / 0.1%), `enterprise_abnormal_operations` (30% / 3%), 欠缴 social-insurance months and
  revoked (吊销) registrations.
* Truck accidents. Each truck has a latent risk r ~ Gamma(0.7, 1/0.7) (mean 1); violations over
  the three years are Poisson(2.5·r) and accidents Poisson(0.03 + 0.04·violations), so trucks with
  many violations have more accidents.
* Abnormal billing. About 1% of the institutions (at least one), all private hospitals or
  clinics, bill abnormally: in `medical_insurance_settlements` their totals are 2.5-4 times the
  usual, each visit is split into three settlements (more settlement items per visit_id), and they
  draw 6 times a like clinic's visits (patients recruited for billing).

`mock=True` builds a disjoint world for openly shown mock data: resident IDs use sequence codes
800-999 (generated data 000-799), USCCs the organisation-code series "MD", VINs serials from
900000, plates 苏U (generated 苏E), phones the 170/171 ranges, other codes a namespace digit 9
where generated data has 0, and case, patent, copyright and tender numbers run from 900001, so
no identifier value appears in both.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pyarrow as pa

from authops.core.data import identifiers as ids
from authops.platform.synth import vocab
from authops.platform.synth.arrow import AS_OF, BIRTH_END, cat, choice, codes, num, rng_for, sequence_digits, take
from authops.platform.synth.entities import (  # noqa: F401 - the code lists are part of the pools' vocabulary
    _CHARS, _MOBILE, BRAND_W, BRAND_WMI, BRANDS, ENTERPRISE_TYPE_W, ENTERPRISE_TYPES, HOSPITAL_GRADES, INDUSTRIES,
    INSTITUTION_KINDS, STATUSES, VEHICLE_TYPE_W, VEHICLE_TYPES, Enterprises, Institutions, Persons, Vehicles)

SIGNALS = {
    "stressed_share": 0.10,
    "arrears_p": (0.03, 0.35),  # (not stressed, stressed)
    "lawsuit_p": (0.04, 0.45),
    "default_base": 0.02, "default_arrears": 0.10, "default_lawsuit": 0.12, "default_both": 0.30,
    "major_risk_p": (0.01, 0.90),  # (not default, default)
    "blacklist_p": (0.002, 0.50),
    "dishonest_p": (0.001, 0.35),
    "abnormal_ops_p": (0.03, 0.30),
    "truck_risk_shape": 0.7, "violations_per_risk": 2.5, "accident_base": 0.03, "accident_per_violation": 0.04,
    "abnormal_institution_share": 0.01, "abnormal_cost_factor": (2.5, 4.0), "abnormal_split": 3,
    "abnormal_volume_factor": 6.0,
}


class World:
    """Pools for one (scale, seed); each pool is built on first use, deterministically."""

    def __init__(self, scale: float = 1.0, seed: int = 0, *, mock: bool = False):
        self.scale, self.seed, self.mock = float(scale), int(seed), mock
        self.ns = "9" if mock else "0"

    def rng(self, *names: object) -> np.random.Generator:
        return rng_for(self.seed, "mock" if self.mock else "gen", *names)

    def count(self, base: float, minimum: int = 1) -> int:
        return max(minimum, int(round(base * self.scale)))

    def code(self, prefix: str, idx: np.ndarray | range, width: int) -> pa.Array:
        """prefix + namespace digit + idx zero-padded: distinct per idx, disjoint between worlds.
        A range (start, stop) is formatted without per-row arithmetic."""
        if isinstance(idx, range):
            return codes(prefix + self.ns, sequence_digits(idx.start, len(idx), width))
        return codes(prefix + self.ns, ids.ascii_digits(idx, width))

    def serial(self, idx: np.ndarray) -> np.ndarray:
        """Running numbers shown without padding (case and certificate numbers): from 1, or 900001 in mock."""
        return np.asarray(idx, dtype=np.int64) + (900_001 if self.mock else 1)

    def memo(self, key: str, fn):
        """fn() computed once per world (shared intermediate results such as tender projects)."""
        cache = self.__dict__.setdefault("_memo", {})
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    def permuted(self, idx: np.ndarray, modulus: int, salt: int = 0) -> np.ndarray:
        """A fixed bijection of [0, modulus) (a power of ten or 9 x one) that makes sequential numbers
        look scattered; different salts give unrelated-looking bijections."""
        mult = (7_919_317, 4_256_249, 6_700_417, 2_147_483_647)[salt % 4]
        return (np.asarray(idx, dtype=np.int64) * mult + 104_729 * (salt + 1)) % modulus

    @cached_property
    def persons(self) -> Persons:
        rng = self.rng("persons")
        n = self.count(1_000_000, 200)
        age_w = np.r_[np.full(18, 0.85), np.full(17, 1.45), np.full(25, 1.5), np.linspace(1.3, 0.25, 25)]
        age = choice(rng, len(age_w), n, age_w)
        born = BIRTH_END - (age * 365.25 + rng.integers(0, 365, n)).astype("timedelta64[D]")
        male = rng.random(n) < 0.51
        dw = [d[4] for d in vocab.DISTRICTS]
        district = choice(rng, len(dw), n, dw)
        local = np.array([d[1] for d in vocab.DISTRICTS])[district]
        migrant = rng.random(n) < 0.22
        region = np.where(migrant, np.array(vocab.MIGRANT_REGIONS)[rng.integers(0, len(vocab.MIGRANT_REGIONS), n)],
                          local)
        seq = (800, 1000) if self.mock else (0, 800)
        id_ = ids.matrix_to_arrow(ids.resident_id_matrix(rng, region, born, male, seq_range=seq))
        sur = choice(rng, len(vocab.SURNAMES), n, vocab.SURNAME_WEIGHTS)
        nm, nf, na = len(vocab.GIVEN_MALE), len(vocab.GIVEN_FEMALE), len(vocab.GIVEN_ANY)
        idx_of = {c: i for i, c in enumerate(_CHARS)}
        male_ix = np.array([idx_of[c] for c in vocab.GIVEN_MALE + vocab.GIVEN_ANY])
        female_ix = np.array([idx_of[c] for c in vocab.GIVEN_FEMALE + vocab.GIVEN_ANY])
        g1 = np.where(male, male_ix[rng.integers(0, nm + na, n)], female_ix[rng.integers(0, nf + na, n)])
        g2 = np.where(male, male_ix[rng.integers(0, nm + na, n)], female_ix[rng.integers(0, nf + na, n)]) + 1
        g2[rng.random(n) < 0.22] = 0
        name = cat(take(vocab.SURNAMES, sur), take(_CHARS, g1), take(("",) + _CHARS, g2))
        eth = np.where(rng.random(n) < 0.985, 0, rng.integers(1, 21, n))
        marital = np.select([age < 22, age < 30, age > 75], [0, np.where(rng.random(n) < 0.45, 1, 0),
                                                            np.where(rng.random(n) < 0.35, 2, 1)],
                            np.where(rng.random(n) < 0.06, 3, 1))
        work = choice(rng, 8, n, (3, 14, 12, 30, 2, 30, 0.5, 8))
        occupation = np.select([age < 6, age < 22, age >= 62], [11, 8, 9], work)
        occupation[(age >= 22) & (age < 62) & (rng.random(n) < 0.05)] = 10
        vital = np.where(rng.random(n) < 0.0002 * np.maximum(age - 40, 0), 1, 0)
        mobile = _MOBILE[rng.integers(0, len(_MOBILE), n)] if not self.mock else rng.integers(170, 172, n)
        phone = cat(num(mobile), num(rng.integers(0, 100_000_000, n), 8))
        return Persons(n=n, born=born, male=male, district=district, region=region, id=id_, name=name,
                       name_code=sur * 1_000_000 + g1 * 1000 + g2, ethnicity=eth, marital=marital,
                       occupation=occupation, vital=vital, phone=phone,
                       address=self.addresses(rng, district, home=True),
                       number=codes("3205" + self.ns, ids.ascii_digits(self.permuted(np.arange(n), 10**11, 1), 11)))

    def addresses(self, rng: np.random.Generator, district: np.ndarray, *, home: bool) -> pa.Array:
        """Street addresses in the person's or firm's district; homes get an estate, building and room."""
        n = len(district)
        roads = [f"江苏省苏州市{d[0]}{r}" for d in vocab.DISTRICTS for r in d[5]]
        first = np.cumsum([0] + [len(d[5]) for d in vocab.DISTRICTS])
        road = first[district] + (rng.random(n) * np.diff(first)[district]).astype(np.int64)
        parts = [take(roads, road), num(rng.integers(1, 999, n)), "号"]
        if home:
            estates = [e + s for e in vocab.ESTATES for s in vocab.ESTATE_SUFFIX]
            room = rng.integers(1, 40, n) * 10_000 + rng.integers(1, 33, n) * 100 + rng.integers(1, 5, n)
            parts += [take(estates, rng.integers(0, len(estates), n)), num(room // 10_000), "幢",
                      num(room % 10_000), "室"]
        return cat(*parts)

    @cached_property
    def enterprises(self) -> Enterprises:
        from authops.platform.synth.names import enterprise_names

        per = self.persons
        rng = self.rng("enterprises")
        n = self.count(100_000, 100)
        sg = SIGNALS
        district = choice(rng, len(vocab.DISTRICTS), n, [d[4] for d in vocab.DISTRICTS])
        industry = choice(rng, len(INDUSTRIES), n, [v[0] for v in vocab.INDUSTRY_WORDS.values()])
        etype = choice(rng, len(ENTERPRISE_TYPES), n, ENTERPRISE_TYPE_W)
        years = np.arange(1990, 2026)
        year = years[choice(rng, len(years), n, np.exp(0.12 * (years - 1990)))]
        est = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]") + rng.integers(0, 365, n).astype(
            "timedelta64[D]")
        est = np.minimum(est, AS_OF - np.timedelta64(30, "D"))
        region = np.array([d[1] for d in vocab.DISTRICTS])[district]
        old = year < 2016
        m = np.empty((n, 18), dtype=np.uint8)
        if self.mock:
            m = ids.uscc_matrix(rng, n, region_codes=region, series="MD", start=0)
        else:
            m[old] = ids.uscc_matrix(rng, int(old.sum()), region_codes=region[old], series="", start=0)
            m[~old] = ids.uscc_matrix(rng, int((~old).sum()), region_codes=region[~old], series="MA", start=0)
        adults = np.flatnonzero((per.age() >= 25) & (per.age() <= 70))
        staff = np.maximum(1, np.round(np.exp(np.log(8) + 1.2 * rng.standard_normal(n)))).astype(np.int64)
        capital = np.maximum(10, np.round(100 * np.exp(1.3 * rng.standard_normal(n)))).astype(np.int64) * 1_000_000
        paid = np.where(rng.random(n) < 0.5, 0, (capital * rng.uniform(0.2, 1.0, n)).astype(np.int64) // 100 * 100)
        revenue = (staff * 400_000 * np.exp(0.8 * rng.standard_normal(n)) * 100).astype(np.int64)
        stressed = rng.random(n) < sg["stressed_share"]
        arrears = rng.random(n) < np.where(stressed, sg["arrears_p"][1], sg["arrears_p"][0])
        lawsuit = rng.random(n) < np.where(stressed, sg["lawsuit_p"][1], sg["lawsuit_p"][0])
        p_default = (sg["default_base"] + sg["default_arrears"] * arrears + sg["default_lawsuit"] * lawsuit
                     + sg["default_both"] * (arrears & lawsuit))
        default = rng.random(n) < p_default
        status = np.where(default & (rng.random(n) < 0.15), 5, choice(rng, 8, n, (88, 7, 1, 0.5, 1, 0, 2.5, 0)))
        return Enterprises(
            n=n, uscc=ids.matrix_to_arrow(m), name=enterprise_names(rng, district, industry, etype), district=district,
            address=self.addresses(rng, district, home=False), established=est, industry=industry, etype=etype,
            status=status, legal_rep=adults[rng.integers(0, len(adults), n)], capital=capital, paid_in=paid,
            staff=staff, revenue=revenue, arrears=arrears, lawsuit=lawsuit, default=default,
            number=cat("3205", self.ns, num(self.permuted(np.arange(n), 10**9), 9)))

    @cached_property
    def employer(self) -> np.ndarray:
        """Each person's employer (enterprise index) or -1."""
        per, ent = self.persons, self.enterprises
        rng = self.rng("employment")
        age = per.age()
        eligible = (age >= 18) & (age < 62) & ~np.isin(per.occupation, (8, 9, 10, 11))
        employed = eligible & (rng.random(per.n) < 0.6)
        out = np.full(per.n, -1, dtype=np.int64)
        out[employed] = choice(rng, ent.n, int(employed.sum()), ent.staff.astype(float))
        return out

    @cached_property
    def vehicles(self) -> Vehicles:
        ent = self.enterprises
        rng = self.rng("vehicles")
        n = self.count(200_000, 100)
        freight = np.flatnonzero(ent.of("交通运输、仓储和邮政业"))
        if len(freight) == 0:
            freight = np.arange(ent.n)
        owner = freight[choice(rng, len(freight), n, ent.staff[freight] ** 1.1)]
        brand = choice(rng, len(BRANDS), n, BRAND_W)
        made = np.datetime64("2012-01-01") + rng.integers(0, 4748, n).astype("timedelta64[D]")
        year = made.astype("datetime64[Y]").astype(np.int64) + 1970
        reg = np.minimum(made + rng.integers(10, 120, n).astype("timedelta64[D]"), AS_OF)
        vin = ids.vin_matrix(rng, n, wmis=np.asarray(BRAND_WMI)[brand], years=year,
                             serial_range=(900_000, 1_000_000) if self.mock else (0, 900_000))
        plates = ids.make_plates(rng, n, "苏", city="U" if self.mock else "E")
        sg = SIGNALS
        risk = rng.gamma(sg["truck_risk_shape"], 1 / sg["truck_risk_shape"], n)
        viol = rng.poisson(sg["violations_per_risk"] * risk)
        acc = rng.poisson(sg["accident_base"] + sg["accident_per_violation"] * viol)
        return Vehicles(n=n, vin=ids.matrix_to_arrow(vin), plate=pa.array(plates, type=pa.string()),
                        vtype=choice(rng, len(VEHICLE_TYPES), n, VEHICLE_TYPE_W), brand=brand, owner=owner,
                        made=made, registered=reg, violations=viol, accidents=acc)

    @cached_property
    def institutions(self) -> Institutions:
        from authops.platform.synth.names import institution_names

        rng = self.rng("institutions")
        n = self.count(2000, 40)
        kind = np.sort(choice(rng, 4, n, (8, 12, 20, 60)))
        kind[: min(len(vocab.HOSPITALS), n // 4)] = 0
        kind = np.sort(kind)
        district = choice(rng, len(vocab.DISTRICTS), n, [d[4] for d in vocab.DISTRICTS])
        grade = np.select([kind == 0, kind == 1, kind == 2],
                          [choice(rng, 4, n, (1, 1, 4, 3)) + 2, choice(rng, 2, n, (3, 2)) + 4,
                           np.where(rng.random(n) < 0.3, 5, 6)], 6)
        names, famous_grade = institution_names(rng, kind, district)
        grade = np.where(famous_grade >= 0, famous_grade, grade)
        region = np.array([d[1] for d in vocab.DISTRICTS])[district]
        letter = take(("H", "H", "H", "P"), kind)
        code = cat(letter, num(region), self.ns, num(np.arange(n), 5))
        public = kind <= 1
        m = np.empty((n, 18), dtype=np.uint8)
        m[public] = ids.uscc_matrix(rng, int(public.sum()), region_codes=region[public], kind="12",
                                    series="MD" if self.mock else "", start=0)
        m[~public] = ids.uscc_matrix(rng, int((~public).sum()), region_codes=region[~public],  # after the firms
                                     series="MD" if self.mock else "MA", start=50_000_000)
        care = np.flatnonzero((kind <= 2) & (famous_grade < 0))  # private hospitals and clinics, not the big ones
        k = max(1, int(round(SIGNALS["abnormal_institution_share"] * n)))
        abnormal = np.zeros(n, dtype=bool)
        abnormal[rng.choice(care, min(k, len(care)), replace=False)] = True
        volume = np.select([grade <= 1, grade <= 3, kind == 1, kind == 2], [60.0, 12.0, 4.0, 1.5], 1.0)
        volume[abnormal] *= SIGNALS["abnormal_volume_factor"]
        return Institutions(n=n, code=code, name=names, uscc=ids.matrix_to_arrow(m), kind=kind, grade=grade,
                            district=district, abnormal=abnormal, volume=volume * rng.uniform(0.6, 1.4, n))
