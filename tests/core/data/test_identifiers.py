"""Check digits and formats of Chinese identifiers, one value at a time and a column at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authops.core.data import identifiers as ids
from authops.core.data.schema import Check

# Examples printed in the standards or published by the registrant.
RESIDENT_IDS = ["11010519491231002X", "440524188001010014"]  # GB 11643-1999's own examples
USCCS = ["91350100M000100Y43", "914403001922038216"]  # GB 32100-2015's example; Huawei Technologies
VINS = ["1M8GDM9AXKP042788", "11111111111111111", "1HGCM82633A004352"]  # ISO 3779 check-digit examples
SCALAR = {Check.RESIDENT_ID: ids.is_resident_id, Check.USCC: ids.is_uscc, Check.VIN: ids.is_vin,
          Check.PLATE: ids.is_plate, Check.PHONE: ids.is_phone}


def test_published_examples_are_valid():
    assert ids.resident_id_check_char("11010519491231002") == "X"
    assert all(ids.is_resident_id(s) for s in RESIDENT_IDS)
    assert ids.uscc_check_char("91350100M000100Y4") == "3"
    assert all(ids.is_uscc(s) for s in USCCS)
    assert ids.vin_check_char("1M8GDM9AXKP042788") == "X"
    assert all(ids.is_vin(s) for s in VINS)


@pytest.mark.parametrize("bad", [
    "11010519491231002x",  # lower-case check character
    "110105194912310021",  # wrong check digit
    "99010519491231002X",  # no province 99
    "110105194902300021",  # 30 February
    "11010519491231002",  # 17 characters
    "１１０１０５１９４９１２３１００２X",  # full-width digits
])
def test_malformed_resident_ids_are_rejected(bad):
    assert not ids.is_resident_id(bad)


def test_a_european_vin_without_check_digit_fails_the_chinese_rule():
    assert not ids.is_vin("WP0ZZZ99ZTS392124")  # valid in Europe, where position 9 is free
    assert not ids.is_vin("1M8GDM9AXKP04278O")  # letter O is never used


def _substitutions(value: str, alphabet: str):
    for i, c in enumerate(value):
        for other in alphabet:
            if other != c:
                yield value[:i] + other + value[i + 1:]


@pytest.mark.parametrize("value", RESIDENT_IDS)
def test_every_single_character_change_of_a_resident_id_is_caught(value):
    changed = list(_substitutions(value, "0123456789X"))
    assert not any(ids.is_resident_id(s) for s in changed)
    assert not ids.valid_mask(Check.RESIDENT_ID, pa.array(changed)).any()


@pytest.mark.parametrize("value", USCCS)
def test_every_single_character_change_of_a_uscc_is_caught(value):
    changed = list(_substitutions(value, ids.USCC_ALPHABET + "IOSVZ"))
    assert not any(ids.is_uscc(s) for s in changed)
    assert not ids.valid_mask(Check.USCC, pa.array(changed)).any()


@pytest.mark.parametrize("value", VINS)
def test_every_vin_change_the_check_digit_can_see_is_caught(value):
    """ISO 3779 transliterates A, J and 1 (and B, K, S, 2 ...) to the same number, so swapping
    those outside position 9 is invisible to the check digit by design; every other change is caught."""
    changed = list(_substitutions(value, ids.VIN_ALPHABET + "IOQ"))
    blind = [s for s in changed if s[8] == value[8]
             and all(ids.VIN_VALUES.get(a) == ids.VIN_VALUES.get(b) for a, b in zip(s, value, strict=True))]
    assert blind and all(ids.is_vin(s) for s in blind)  # the documented weakness of the standard
    seen = [s for s in changed if s not in blind]
    assert not any(ids.is_vin(s) for s in seen)
    assert not ids.valid_mask(Check.VIN, pa.array(seen)).any()


@pytest.mark.parametrize(("value", "ok"), [
    ("苏E12345", True), ("苏EA1234", True), ("京A00001", True), ("苏E12345D", True), ("苏ED12345", True),
    ("苏E1234挂", True), ("苏E1234", False), ("沪AI2345", False), ("XE12345", False), ("苏E12345A", False),
    ("苏e12345", False), ("苏E123456", False)])
def test_plate_numbers(value, ok):
    assert ids.is_plate(value) is ok
    assert ids.valid_mask(Check.PLATE, pa.array([value])).tolist() == [ok]


@pytest.mark.parametrize(("value", "ok"), [
    ("13912345678", True), ("19912345678", True), ("0512-65123456", True), ("01012345678", True),
    ("0512-6512345", True), ("12912345678", False), ("1391234567", False), ("0512-05123456", False),
    ("+8613912345678", False), ("1391234567８", False)])
def test_phone_numbers(value, ok):
    assert ids.is_phone(value) is ok
    assert ids.valid_mask(Check.PHONE, pa.array([value])).tolist() == [ok]


regions = st.sampled_from([320505, 320508, 320583, 110105, 440305, 341222, 650102, 820000])
dates = st.dates(min_value=pd.Timestamp("1900-01-01").date(), max_value=pd.Timestamp("2024-12-31").date())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), people=st.lists(st.tuples(regions, dates, st.booleans()), min_size=1,
                                                       max_size=300))
def test_generated_resident_ids_are_valid_distinct_and_carry_sex_and_birth(seed, people):
    region, born, male = (np.array(x) for x in zip(*people, strict=True))
    out = ids.make_resident_ids(np.random.default_rng(seed), region, born.astype("datetime64[D]"), male)
    assert all(ids.is_resident_id(s) for s in out)
    assert ids.valid_mask(Check.RESIDENT_ID, pa.array(out)).all()
    assert len(set(out)) == len(out)
    assert [int(s[16]) % 2 == 1 for s in out] == male.tolist()
    assert [s[6:14] for s in out] == [d.strftime("%Y%m%d") for d in born]
    assert [s[:6] for s in out] == [str(r) for r in region]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400))
def test_generated_usccs_vins_and_plates_are_valid_and_distinct(seed, n):
    rng = np.random.default_rng(seed)
    for make, check in ((ids.make_usccs, Check.USCC), (ids.make_vins, Check.VIN), (ids.make_plates, Check.PLATE)):
        out = make(rng, n)
        assert len(set(out)) == n
        assert all(SCALAR[check](s) for s in out)
        assert ids.valid_mask(check, pa.array(out)).all()
    old_style = ids.make_usccs(rng, n, series="")
    assert all(ids.is_uscc(s) and ids.org_code_check_char(s[8:16]) == s[16] for s in old_style)


def test_generators_repeat_for_the_same_seed():
    a = ids.make_vins(np.random.default_rng(5), 50)
    b = ids.make_vins(np.random.default_rng(5), 50)
    assert (a == b).all()


def _mutants(draw, base: str) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return base
    if kind == 1:  # one character replaced, possibly by a non-ASCII one
        i = draw(st.integers(0, len(base) - 1))
        return base[:i] + draw(st.characters(codec="utf-8")) + base[i + 1:]
    if kind == 2:  # too long or too short
        return base + draw(st.text(min_size=1, max_size=2)) if draw(st.booleans()) else base[:-1]
    if kind == 3:
        return draw(st.text(max_size=20))
    return draw(st.text(alphabet="0123456789X苏EABDF-", min_size=len(base) - 1, max_size=len(base) + 1))


@st.composite
def columns(draw):
    check = draw(st.sampled_from(list(Check)))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    bases = {Check.RESIDENT_ID: ids.make_resident_ids(rng, [320505] * 5, np.array(["1990-01-01"] * 5, "datetime64[D]"),
                                                      [True, False] * 2 + [True]),
             Check.USCC: ids.make_usccs(rng, 5), Check.VIN: ids.make_vins(rng, 5), Check.PLATE: ids.make_plates(rng, 5),
             Check.PHONE: ["13912345678", "0512-65123456", "01087654321", "15800001111", "0571-8888888"]}[check]
    values = draw(st.lists(st.one_of(st.none(), st.sampled_from(list(bases)).flatmap(
        lambda b: st.composite(lambda d: _mutants(d, str(b)))())), max_size=60))
    return check, values


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(columns(), st.integers(0, 5))
def test_column_check_agrees_with_the_scalar_check(case, cut):
    check, values = case
    expected = [v is None or SCALAR[check](v) for v in values]
    arr = pa.array(values, type=pa.string())
    assert ids.valid_mask(check, arr).tolist() == expected
    # a slice (non-zero offset), a multi-chunk column and a pandas Series give the same answers
    assert ids.valid_mask(check, arr.slice(min(cut, len(values)))).tolist() == expected[cut:]
    chunked = pa.chunked_array([arr.slice(0, cut), arr.slice(cut)], type=pa.string())
    assert ids.valid_mask(check, chunked).tolist() == expected
    assert ids.valid_mask(check, pd.Series(values, dtype=object)).tolist() == expected
    assert ids.valid_mask(check, arr.cast(pa.large_string())).tolist() == expected


def test_empty_and_all_null_columns():
    assert ids.valid_mask(Check.USCC, pa.array([], type=pa.string())).tolist() == []
    assert ids.valid_mask(Check.VIN, pa.array([None, None], type=pa.string())).tolist() == [True, True]
