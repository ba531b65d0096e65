"""The sandbox masking library: each function on examples (nulls, non-ASCII, empty strings), the
vectorized paths against simple per-value reference implementations, and properties (hypothesis)."""

from __future__ import annotations

import bisect
import datetime as dt
import base64
import hashlib
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authops.core import crypto
from authops.core.data import identifiers as ids
from authops.core.data.schema import FieldSpec, Grade, Kind, PrivacyUnit, ResourceSchema
from authops.core.errors import InvalidInput
from authops.sandbox import masking as M
from authops.sandbox.masking import addresses, generalize, strings, tokens

MASTER = bytes(range(32))
KEY = M.token_key(MASTER, 7, 3)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text without the mask character (a value made of '*' masks to itself), surrogates excluded.
TEXT = st.text(st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), max_size=40)
CJK = st.text(st.sampled_from("张王李赵欧阳司马诸葛明华丽娜 abcXYZ0123·"), max_size=8)


def arr(*values, type_=pa.string()):
    return pa.array(list(values), type=type_)


def field(kind: Kind, grade: str, name: str = "f") -> FieldSpec:
    return FieldSpec(name=name, name_zh="字段", kind=kind, grade=Grade(grade))


# --- reference implementations: one value at a time, as obviously as possible ----------------------

def ref_keep_ends(v, first, last, min_masked=1):
    if v is None:
        return None
    if len(v) - first - last < min_masked:
        return "*" * len(v)
    return v[:first] + "*" * (len(v) - first - last) + (v[len(v) - last:] if last else "")


def ref_name(v):
    if v is None:
        return None
    v = v.strip()
    keep = 2 if v[:2] in strings.COMPOUND_SURNAMES and len(v) >= 3 else min(1, len(v) - 1) if v else 0
    return v[:keep] + "*" * (len(v) - keep)


def ref_token(key: bytes, domain: str, v: str | None, length: int = 20):
    if v is None:
        return None
    c = CMAC(algorithms.AES(crypto.derive_key(key, f"sandbox/token/domain/{domain}")))
    c.update(v.encode())
    bits = int.from_bytes(c.finalize(), "big")
    return "".join(tokens.ALPHABET[(bits >> (123 - 5 * i)) & 31] for i in range(length))


def ref_age(born: dt.date, as_of: dt.date) -> int:
    return as_of.year - born.year - ((born.month, born.day) > (as_of.month, as_of.day))


# --- keep_ends, full_mask ---------------------------------------------------------------------------

def test_keep_ends_examples():
    out = M.keep_ends(arr("13812345678", "abc", "ab", "", None, "中华人民共和国"), 3, 4)
    assert out.to_pylist() == ["138****5678", "***", "**", "", None, "*******"]
    assert M.keep_ends(arr("中华人民共和国"), 1, 1).to_pylist() == ["中*****国"]
    assert M.keep_ends(arr("abcdef"), 2, 0, "#").to_pylist() == ["ab####"]
    assert M.keep_ends(arr("abcdef"), 0, 2).to_pylist() == ["****ef"]
    assert M.keep_ends(arr("abcdef"), 2, 2, min_masked=3).to_pylist() == ["******"]


def test_keep_ends_keeps_containers_and_rejects_bad_arguments():
    chunked = pa.chunked_array([["abcdef", None], [], ["张三丰"]])
    out = M.keep_ends(chunked, 1, 1)
    assert isinstance(out, pa.ChunkedArray) and out.to_pylist() == ["a****f", None, "张*丰"]
    assert M.keep_ends(["abcd"], 1, 1).to_pylist() == ["a**d"]  # plain lists are accepted
    assert M.keep_ends(arr(12345, type_=pa.int64()), 1, 1).to_pylist() == ["1***5"]
    assert M.keep_ends(arr("张三丰", None, type_=pa.large_string()), 1, 1).to_pylist() == ["张*丰", None]
    assert M.keep_ends(arr("张三丰").dictionary_encode(), 0, 1).to_pylist() == ["**丰"]
    with pytest.raises(InvalidInput):
        M.keep_ends(arr("x"), 1, 1, "**")
    with pytest.raises(InvalidInput):
        M.keep_ends(arr("x"), -1, 1)


@FAST
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30), st.integers(0, 5), st.integers(0, 5))
def test_keep_ends_preserves_length_and_matches_reference(values, first, last):
    out = M.keep_ends(pa.array(values, pa.string()), first, last).to_pylist()
    assert out == [ref_keep_ends(v, first, last) for v in values]
    for v, o in zip(values, out, strict=True):
        assert (o is None) == (v is None)
        if v is not None:
            assert len(o) == len(v)
            assert o != v or v == ""


ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="*"), max_size=25)
PRESETS = {
    "keep_ends": (lambda a: M.keep_ends(a, 3, 4, min_masked=2), lambda v: ref_keep_ends(v, 3, 4, 2)),
    "mask_mobile": (M.mask_mobile, lambda v: ref_keep_ends(v.strip(), 3, 4) if re.fullmatch(
        strings.MOBILE_PATTERN, v.strip()) else ref_keep_ends(v.strip(), 0, 4, 4)),
    "mask_resident_id": (M.mask_resident_id, lambda v: ref_keep_ends(v.strip().upper(), 6, 0) if len(
        v.strip()) in (15, 18) else "*" * len(v.strip())),
    "mask_uscc": (M.mask_uscc, lambda v: ref_keep_ends(v.strip().upper(), 8, 0) if len(
        v.strip()) == 18 else "*" * len(v.strip())),
    "mask_bank_card": (M.mask_bank_card, lambda v: ref_keep_ends(re.sub(r"[\s\-]", "", v), 6, 4, 6)),
}


@FAST
@given(st.lists(st.one_of(st.none(), ASCII, st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
                          st.from_regex(r"[0-9]{17}[0-9Xx]", fullmatch=True), CJK), max_size=30),
       st.sampled_from(sorted(PRESETS)))
def test_byte_and_kernel_paths_agree_with_reference(values, preset):
    """All-ASCII chunks take the numpy byte path, others the Arrow kernels: same answers either way."""
    ours, ref = PRESETS[preset]
    expect = [None if v is None else ref(v) for v in values]
    assert ours(pa.array(values, pa.string())).to_pylist() == expect
    ascii_only = [v for v in values if v is None or v.isascii()]
    assert ours(pa.array(ascii_only, pa.string()).slice(0)).to_pylist() == [
        None if v is None else ref(v) for v in ascii_only]
    if len(values) > 2:  # a sliced array (non-zero offset) and a chunked one
        assert ours(pa.array(values, pa.string()).slice(1)).to_pylist() == expect[1:]
        assert ours(pa.chunked_array([values[:2], values[2:]], pa.string())).to_pylist() == expect


@FAST
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30))
def test_full_mask_preserves_length(values):
    out = M.full_mask(pa.array(values, pa.string())).to_pylist()
    assert out == [None if v is None else "*" * len(v) for v in values]


# --- presets ---------------------------------------------------------------------------------------

def test_two_and_three_character_names_keep_the_surname():
    out = M.mask_name(arr("张三", "张小明", "王", "", None, " 李四 ", "John Smith"))
    assert out.to_pylist() == ["张*", "张**", "*", "", None, "李*", "J*********"]


@pytest.mark.parametrize("surname", strings.COMPOUND_SURNAMES)
def test_compound_surnames_keep_both_characters(surname):
    out = M.mask_name(arr(surname + "明", surname + "小明", surname)).to_pylist()
    assert out == [surname + "*", surname + "**", surname[0] + "*"]


@FAST
@given(st.lists(st.one_of(st.none(), CJK), max_size=30))
def test_mask_name_matches_reference(values):
    assert M.mask_name(pa.array(values, pa.string())).to_pylist() == [ref_name(v) for v in values]


def test_mask_mobile():
    out = M.mask_mobile(arr("13812345678", " 19987654321 ", "0512-68001234", "12345", "", None))
    assert out.to_pylist() == ["138****5678", "199****4321", "*********1234", "*****", "", None]


def test_mask_resident_id_shows_at_most_the_region():
    rng = np.random.default_rng(3)
    born = np.datetime64("1960-01-01") + rng.integers(0, 20_000, 500).astype("timedelta64[D]")
    values = ids.make_resident_ids(rng, np.full(500, 320508), born, rng.random(500) < 0.5)
    out = M.mask_resident_id(pa.array(values)).to_pylist()
    assert all(o == v[:6] + "*" * 12 for o, v in zip(out, values, strict=True))
    assert M.mask_resident_id(arr("32050819900101123x", "320508900101123", "123", None)).to_pylist() == [
        "320508************", "320508*********", "***", None]
    assert M.mask_resident_id(arr("32050819900101123X"), region_digits=2).to_pylist() == ["32" + "*" * 16]
    assert M.mask_resident_id(arr("32050819900101123X"), region_digits=0).to_pylist() == ["*" * 18]
    with pytest.raises(InvalidInput):
        M.mask_resident_id(arr("x"), region_digits=8)


def test_mask_uscc_plate_bank_card():
    assert M.mask_uscc(arr("91320505MA1XXXXX0Y", "abc", None)).to_pylist() == ["91320505" + "*" * 10, "***", None]
    assert M.mask_uscc(arr("91320505MA1XXXXX0Y"), keep=2).to_pylist() == ["91" + "*" * 16]
    assert M.mask_plate(arr("苏E12345", "苏E·D12345", "苏e-a1234", "苏E1", None)).to_pylist() == [
        "苏E·***45", "苏E·****45", "苏E·***34", "***", None]
    assert M.mask_bank_card(arr("6222 0212 3456 7890 123", "6222021234567890", "1234567", None)).to_pylist() == [
        "622202*********0123", "622202******7890", "*******", None]


def test_address_to_district():
    values = arr(
        "江苏省苏州市姑苏区人民路100号金色小区3幢201室",
        "江苏省苏州市昆山市玉山镇前进西路1号",  # county-level city
        "内蒙古自治区呼和浩特市新城区中山路1号",  # 自治区 is a province, not a 区
        "新疆维吾尔自治区阿克苏地区阿克苏市人民路2号",
        "上海市浦东新区世纪大道1号",
        "江苏省苏州市人民路100号金色小区",  # no county: the city, not the estate
        "广东省东莞市南城街道鸿福社区",
        "江苏省 苏州市 吴中区 木渎镇",
        "姑苏区十全街5号",
        "云南省大理白族自治州宾川县金牛镇",
        "hello world", "", None)
    assert M.address_to_district(values).to_pylist() == [
        "江苏省苏州市姑苏区", "江苏省苏州市昆山市", "内蒙古自治区呼和浩特市新城区", "新疆维吾尔自治区阿克苏地区阿克苏市",
        "上海市浦东新区", "江苏省苏州市", "广东省东莞市", "江苏省苏州市吴中区", "姑苏区", "云南省大理白族自治州宾川县",
        None, None, None]
    assert M.address_to_district(values, "city").to_pylist()[:6] == [
        "江苏省苏州市", "江苏省苏州市", "内蒙古自治区呼和浩特市", "新疆维吾尔自治区阿克苏地区", "上海市", "江苏省苏州市"]
    assert M.mask_address(arr("江苏省苏州市姑苏区人民路1号", None)).to_pylist() == ["江苏省苏州市姑苏区****", None]
    assert M.address_to_district(arr("江苏省苏州市姑苏区１２号", "江苏省苏州市姑苏区人民路", "x" * 300)).to_pylist() == [
        "江苏省苏州市姑苏区", "江苏省苏州市姑苏区", None]
    sliced = pa.chunked_array([pa.array(["浙江省杭州市西湖区1号", "江苏省南京市玄武区2号", None], pa.large_string()).slice(1)])
    assert M.address_to_district(sliced).to_pylist() == ["江苏省南京市玄武区", None]


_ADDRESS = re.compile(addresses.ADDRESS_RE)
_STREET = re.compile(addresses.STREET_RE)


def ref_district(v):
    if v is None:
        return None
    m = _ADDRESS.match(re.sub(r"[\s　]+", "", re.split(r"[0-9０-９]", v)[0])[:40])
    p, c, d = (m.group(g) or "" for g in ("p", "c", "d"))
    c, d = ("" if _STREET.search(c) else c), ("" if _STREET.search(d) else d)
    return (p + c + d) or None


ADDRESS_PART = st.sampled_from(["江苏省", "内蒙古自治区", "上海市", "苏州市", "阿克苏地区", "延边朝鲜族自治州", "姑苏区",
                                "昆山市", "宾川县", "鄂温克族自治旗", "人民路", "金色小区", "玉山镇", "12", "３号", "幢",
                                "A座", " ", "　", "市", "区"])


@FAST
@given(st.lists(st.one_of(st.none(), st.lists(ADDRESS_PART, max_size=8).map("".join)), max_size=30))
def test_address_to_district_matches_reference(values):
    """The byte-level cut at the first digit and the per-distinct-prefix regex agree with re per value."""
    assert M.address_to_district(pa.array(values, pa.string())).to_pylist() == [ref_district(v) for v in values]


# --- tokens ----------------------------------------------------------------------------------------

def test_tokens_are_deterministic_per_key_and_differ_across_customers_products_domains():
    ids_ = arr("32050819900101123X", "91320505MA1XXXXX0Y", "", None, "张三")
    a = M.tokenize(ids_, KEY, domain="identifier_person").to_pylist()
    assert a == M.tokenize(ids_, KEY, domain="identifier_person").to_pylist()
    assert a[3] is None and all(len(t) == 20 and set(t) <= set(tokens.ALPHABET) for t in a if t is not None)
    others = [M.tokenize(ids_, M.token_key(MASTER, 8, 3), domain="identifier_person").to_pylist(),
              M.tokenize(ids_, M.token_key(MASTER, 7, 4), domain="identifier_person").to_pylist(),
              M.tokenize(ids_, KEY, domain="identifier_vehicle").to_pylist()]
    for other in others:
        assert all(x != y for x, y in zip(a, other, strict=True) if x is not None)
    assert M.token_key(MASTER, 7, 3) == KEY and len(KEY) == 32
    assert M.token_key(MASTER, 1, 23) != M.token_key(MASTER, 12, 3)


def test_tokens_known_answer():
    """Tokens already released must stay the same: changing the scheme breaks customers' joins."""
    assert M.tokenize(arr("32050819900101123X"), KEY, domain="identifier_person").to_pylist() == [
        ref_token(KEY, "identifier_person", "32050819900101123X")]
    assert ref_token(bytes(32), "d", "abc") == "w5dm36we2jdzpb7xtt22"
    assert M.tokenize(arr("abc"), bytes(32), domain="d").to_pylist() == ["w5dm36we2jdzpb7xtt22"]


def test_no_unkeyed_token():
    for bad in (None, b"", b"short", "x" * 32, bytes(31)):
        with pytest.raises(InvalidInput):
            M.tokenize(arr("1"), bad, domain="d")
    with pytest.raises(TypeError):
        M.tokenize(arr("1"), domain="d")  # type: ignore[call-arg]  # no default key
    with pytest.raises(InvalidInput):
        M.tokenize(arr("1"), KEY, domain="")
    for length in (8, 15, 26):
        with pytest.raises(InvalidInput):
            M.tokenize(arr("1"), KEY, domain="d", length=length)
    for bad_id in (-1, True, "7"):
        with pytest.raises(InvalidInput):
            M.token_key(MASTER, bad_id, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        M.token_key(b"short", 1, 1)


@FAST
@given(st.lists(st.one_of(st.none(), st.text(max_size=70)), max_size=40),
       st.integers(tokens.MIN_LENGTH, tokens.MAX_LENGTH))
def test_vectorized_cmac_matches_reference(values, length):
    """Every byte length (0, exact blocks, partial blocks, many blocks) and non-ASCII text."""
    out = M.tokenize(pa.array(values, pa.string()), KEY, domain="d", length=length).to_pylist()
    assert out == [ref_token(KEY, "d", v, length) for v in values]


def test_tokenize_chunked_dictionary_and_integer_inputs_agree():
    values = ["a", None, "bb", "a", "张三", "x" * 40]
    plain = M.tokenize(pa.array(values), KEY, domain="d").to_pylist()
    assert M.tokenize(pa.chunked_array([values[:2], values[2:]]), KEY, domain="d").to_pylist() == plain
    assert M.tokenize(pa.array(values).dictionary_encode(), KEY, domain="d").to_pylist() == plain
    assert M.tokenize(pa.array(values, pa.large_string()), KEY, domain="d").to_pylist() == plain
    assert M.tokenize(pa.array(values).slice(2), KEY, domain="d").to_pylist() == plain[2:]
    assert M.tokenize(pa.array([12, None]), KEY, domain="d").to_pylist() == [ref_token(KEY, "d", "12"), None]
    same_width = ["abc", None, "xyz", None]  # fixed width but for nulls: the no-copy path
    assert M.tokenize(pa.array(same_width), KEY, domain="d").to_pylist() == [ref_token(KEY, "d", v) for v in same_width]
    # Null slots that still hold bytes (Arrow allows it): validity decides, not the bytes.
    dirty = pa.Array.from_buffers(pa.string(), 3, [pa.py_buffer(np.packbits([1, 0, 1], bitorder="little")),
                                                   pa.py_buffer(np.array([0, 3, 7, 12], np.int32)),
                                                   pa.py_buffer(b"abcSECRhello")], null_count=1)
    assert M.tokenize(dirty, KEY, domain="d").to_pylist() == [ref_token(KEY, "d", "abc"), None,
                                                               ref_token(KEY, "d", "hello")]
    assert M.keep_ends(dirty, 1, 1).to_pylist() == ["a*c", None, "h***o"]
    dirty_fixed = pa.Array.from_buffers(pa.string(), 3, [pa.py_buffer(np.packbits([1, 0, 1], bitorder="little")),
                                                         pa.py_buffer(np.array([0, 3, 7, 10], np.int32)),
                                                         pa.py_buffer(b"abcSECRxyz")], null_count=1)
    assert M.keep_ends(dirty_fixed, 1, 1).to_pylist() == ["a*c", None, "x*z"]
    assert M.tokenize(dirty_fixed, KEY, domain="d").to_pylist()[1:] == [None, ref_token(KEY, "d", "xyz")]
    assert M.address_to_district(dirty).to_pylist() == [None, None, None]


def _region_ids(n: int) -> np.ndarray:
    """n distinct resident IDs of one county, born in one decade: the space a dictionary attack enumerates."""
    rng = np.random.default_rng(11)
    born = np.datetime64("1990-01-01") + rng.integers(0, 3652, n).astype("timedelta64[D]")
    return ids.make_resident_ids(rng, np.full(n, 320508), born, rng.random(n) < 0.5)


def test_100k_distinct_ids_have_distinct_tokens():
    values = _region_ids(100_000)
    assert len(set(values)) == 100_000
    out = M.tokenize(pa.array(values), KEY, domain="identifier_person")
    assert len(set(out.to_pylist())) == 100_000


def test_tokens_are_no_unkeyed_hash_of_the_id():
    """Anyone can hash all ~10^7 IDs of a county and birth decade; without the key that dictionary
    matches no token, in any usual encoding or truncation."""
    values = _region_ids(20_000)
    out = set(M.tokenize(pa.array(values), KEY, domain="identifier_person").to_pylist())
    unkeyed = set()
    for v in values:
        for algo in ("sha256", "md5", "sha1", "blake2b", "sm3" if "sm3" in hashlib.algorithms_available else "sha512"):
            digest = hashlib.new(algo, v.encode()).digest()
            for text in (digest.hex(), base64.b32encode(digest).decode().lower(),
                         base64.b32hexencode(digest).decode().lower()):
                unkeyed.add(text[:20])
        unkeyed.add(ref_token(bytes(32), "identifier_person", v))  # an all-zero key is no secret either
    assert out.isdisjoint(unkeyed)


# --- generalization --------------------------------------------------------------------------------

def test_date_to_month_and_year():
    d = pa.array([dt.date(1990, 5, 17), None, dt.date(2024, 12, 31)])
    assert M.date_to(d, "month").to_pylist() == ["1990-05", None, "2024-12"]
    assert M.date_to(d, "year").to_pylist() == ["1990", None, "2024"]
    utc = pa.array([dt.datetime(2024, 12, 31, 17, 0, tzinfo=dt.UTC), None], pa.timestamp("us", tz="UTC"))
    assert M.date_to(utc, "month").to_pylist() == ["2025-01", None]  # 01:00 on 1 January in Shanghai
    naive = pa.array([dt.datetime(2024, 12, 31, 17, 0)], pa.timestamp("ms"))
    assert M.date_to(naive, "year").to_pylist() == ["2024"]
    assert M.date_to(arr("2023-02-03", None), "month").to_pylist() == ["2023-02", None]
    assert M.date_to(pa.chunked_array([[dt.date(2000, 1, 1)], []], pa.date32()), "year").to_pylist() == ["2000"]
    with pytest.raises(InvalidInput):
        M.date_to(d, "day")
    with pytest.raises(InvalidInput):
        M.date_to(arr("not a date"), "year")
    with pytest.raises(InvalidInput):
        M.date_to(arr(1, type_=pa.int64()), "year")


@FAST
@given(st.lists(st.one_of(st.none(), st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))), max_size=30))
def test_date_to_matches_reference(values):
    a = pa.array(values, pa.date32())
    assert M.date_to(a, "month").to_pylist() == [None if v is None else f"{v.year:04d}-{v.month:02d}" for v in values]
    assert M.date_to(a, "year").to_pylist() == [None if v is None else f"{v.year:04d}" for v in values]


def test_age_band():
    as_of = dt.date(2025, 5, 16)
    born = pa.array([dt.date(1990, 5, 16), dt.date(1990, 5, 17), dt.date(1930, 1, 1), dt.date(2026, 1, 1), None])
    assert M.age_band(born, as_of=as_of).to_pylist() == ["30–39", "30–39", "90+", None, None]
    assert M.age_band(pa.array([dt.date(1995, 5, 16), dt.date(1995, 5, 17)]), as_of=as_of).to_pylist() == [
        "30–39", "20–29"]  # 30 on the birthday, 29 the day before
    assert M.age_band(arr(0, 9, 10, 64, 95, -1, None, type_=pa.int64())).to_pylist() == [
        "0–9", "0–9", "10–19", "60–69", "90+", None, None]
    assert M.age_band(arr(17, 18, type_=pa.int32()), 5, top=80).to_pylist() == ["15–19", "15–19"]
    assert M.age_band(arr(29.9, float("nan"), None, type_=pa.float64())).to_pylist() == ["20–29", None, None]
    with pytest.raises(InvalidInput):
        M.age_band(arr(1, type_=pa.int64()), 10, top=95)


@FAST
@given(st.lists(st.one_of(st.none(), st.dates(dt.date(1900, 1, 1), dt.date(2025, 1, 1))), max_size=30),
       st.dates(dt.date(2025, 1, 1), dt.date(2030, 1, 1)), st.sampled_from([1, 5, 10]))
def test_age_band_matches_reference(values, as_of, width):
    def ref(v):
        if v is None:
            return None
        age = ref_age(v, as_of)
        if age >= 90:
            return "90+"
        lo = age // width * width
        return str(lo) if width == 1 else f"{lo}–{lo + width - 1}"

    assert M.age_band(pa.array(values, pa.date32()), width, as_of=as_of).to_pylist() == [ref(v) for v in values]


def test_amount_band():
    fen = arr(-5, 0, 99_999, 100_000, 999_999, 1_000_000, 1_234_567, 10**10, 10**12, None, type_=pa.int64())
    assert M.amount_band(fen).to_pylist() == [
        "<0", "0–1000", "0–1000", "1000–5000", "5000–1万", "1万–5万", "1万–5万", "≥1亿", "≥1亿", None]
    assert M.amount_band(arr(50, 150, type_=pa.int32()), bands=[0, 100, 250]).to_pylist() == ["0–1", "1–2.5"]
    assert generalize.yuan_label(150_000_000) == "150万" and generalize.yuan_label(15 * 10**9) == "1.5亿"
    with pytest.raises(InvalidInput):
        M.amount_band(arr(1.5, type_=pa.float64()))  # money is never a float
    with pytest.raises(InvalidInput):
        M.amount_band(arr(1, type_=pa.int64()), bands=[10, 5])


@FAST
@given(st.lists(st.one_of(st.none(), st.integers(-10**12, 10**12)), max_size=30))
def test_amount_band_matches_reference(values):
    edges = list(generalize.AMOUNT_BANDS_FEN)
    labels = M.amount_band(pa.array(edges, pa.int64())).to_pylist()  # each edge opens its own band
    below = M.amount_band(pa.array([-1], pa.int64())).to_pylist()[0]

    def ref(v):
        if v is None:
            return None
        i = bisect.bisect_right(edges, v)
        return below if i == 0 else labels[i - 1]

    assert M.amount_band(pa.array(values, pa.int64())).to_pylist() == [ref(v) for v in values]


def test_suppress():
    assert M.suppress(arr("a", None)).to_pylist() == [None, None]
    out = M.suppress(pa.chunked_array([[1, 2], [3]], pa.int64()))
    assert out.type == pa.int64() and out.null_count == 3 and isinstance(out, pa.ChunkedArray)


def test_date_shift_keeps_intervals_within_a_subject():
    rng = np.random.default_rng(5)
    subjects = np.array([f"S{i % 50}" for i in range(1000)])
    days = rng.integers(7000, 20000, 1000)
    values = pa.array(days.astype("datetime64[D]"), pa.date32())
    out = M.date_shift(values, pa.array(subjects), KEY, domain="visits", max_days=30)
    shift = out.cast(pa.int32()).to_numpy() - days
    assert ((np.abs(shift) >= 1) & (np.abs(shift) <= 30)).all()
    per_subject = {s: set(shift[subjects == s]) for s in set(subjects)}
    assert all(len(v) == 1 for v in per_subject.values())  # one shift per subject: intervals kept
    assert len({next(iter(v)) for v in per_subject.values()}) > 10  # and subjects differ
    again = M.date_shift(values, pa.array(subjects), KEY, domain="visits", max_days=30)
    assert again.equals(out)
    other = M.date_shift(values, pa.array(subjects), M.token_key(MASTER, 8, 3), domain="visits")
    assert not other.equals(out)


def test_date_shift_nulls_and_timestamps():
    ts = pa.array([dt.datetime(2024, 1, 1, 8), dt.datetime(2024, 1, 3, 9), None, dt.datetime(2024, 1, 1)],
                  pa.timestamp("us", tz="UTC"))
    out = M.date_shift(ts, arr("a", "a", "a", None), KEY, domain="d").to_pylist()
    assert out[1] - out[0] == dt.timedelta(days=2, hours=1) and out[2] is None and out[3] is None
    assert out[0] != dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC)
    with pytest.raises(InvalidInput):
        M.date_shift(arr("2024-01-01"), arr("a"), KEY, domain="d")
    with pytest.raises(InvalidInput):
        M.date_shift(ts, arr("a"), KEY, domain="d")


# --- by field --------------------------------------------------------------------------------------

def test_mask_by_field_identifiers_are_tokens_with_a_key_and_fully_masked_without():
    f = field(Kind.IDENTIFIER_PERSON, "L2")
    values = arr("32050819900101123x", " 32050819900101123X", None)
    out = M.mask_by_field(values, f, token_key=KEY).to_pylist()
    assert out[0] == out[1] == ref_token(KEY, "identifier_person", "32050819900101123X") and out[2] is None
    assert M.mask_by_field(values, f, token_key=None).to_pylist() == ["*" * 18, "*" * 19, None]
    assert M.mask_by_field(values, field(Kind.IDENTIFIER_PERSON, "L1"), token_key=KEY).to_pylist() == out
    public = M.mask_by_field(arr("91320505MA1XXXXX0Y"), field(Kind.IDENTIFIER_ENTERPRISE, "L1"), token_key=KEY)
    assert public.to_pylist() == ["91320505MA1XXXXX0Y"]


def test_mask_by_field_by_kind_and_grade():
    def run(kind, grade, *values, type_=pa.string()):
        return M.mask_by_field(pa.array(list(values), type_), field(kind, grade), token_key=KEY).to_pylist()

    assert run(Kind.NAME_PERSON, "L1", "张三") == ["张*"]
    assert run(Kind.NAME_PERSON, "L4", "张三") == ["**"]
    assert run(Kind.PHONE, "L2", "13812345678") == ["138****5678"]
    assert run(Kind.PHONE, "L4", "13812345678") == ["*" * 11]
    assert run(Kind.BANK_ACCOUNT, "L3", "6222021234567890") == ["622202******7890"]
    assert run(Kind.ADDRESS, "L3", "江苏省苏州市姑苏区人民路1号") == ["江苏省苏州市姑苏区****"]
    assert run(Kind.ADDRESS, "L4", "江苏省苏州市姑苏区人民路1号") == ["江苏省苏州市****"]
    assert run(Kind.DATE, "L2", dt.date(1990, 5, 17), type_=pa.date32()) == ["1990-05"]
    assert run(Kind.DATE, "L3", dt.date(1990, 5, 17), type_=pa.date32()) == ["1990"]
    assert run(Kind.DATE, "L1", dt.date(1990, 5, 17), type_=pa.date32()) == [dt.date(1990, 5, 17)]
    assert run(Kind.MONEY, "L2", 1_234_567, type_=pa.int64()) == [1_234_567]
    assert run(Kind.MONEY, "L3", 1_234_567, None, type_=pa.int64()) == ["1万–5万", None]
    assert run(Kind.COUNT, "L3", 0, 42, type_=pa.int64()) == ["0", "10–99"]
    assert run(Kind.RATIO, "L3", 0.1234, type_=pa.float64()) == [0.1]
    assert run(Kind.RATIO, "L4", 0.1234, type_=pa.float64()) == [None]
    assert run(Kind.TEXT, "L2", "备注") == ["备注"]
    assert run(Kind.TEXT, "L3", "备注") == [None]
    assert run(Kind.CATEGORY, "L3", "已婚") == ["已婚"]
    assert run(Kind.CATEGORY, "L4", "已婚") == [None]
    assert run(Kind.NAME_ORG, "L3", "苏州恒瑞科技有限公司") == ["苏州********"]
    assert run(Kind.CODE, "L3", "C39") == [ref_token(KEY, "code", "C39")]


ALWAYS_MASKED = [(k, g) for k in (Kind.IDENTIFIER_PERSON, Kind.NAME_PERSON, Kind.PHONE, Kind.BANK_ACCOUNT)
                 for g in ("L1", "L2", "L3", "L4")] + [
    (k, g) for k in (Kind.IDENTIFIER_ENTERPRISE, Kind.IDENTIFIER_VEHICLE, Kind.ADDRESS, Kind.TEXT, Kind.NAME_ORG)
    for g in ("L3", "L4")]


@FAST
@given(st.lists(TEXT.filter(bool), min_size=1, max_size=20), st.sampled_from(ALWAYS_MASKED), st.booleans())
def test_masking_never_returns_the_original_value(values, kind_grade, with_key):
    kind, grade = kind_grade
    out = M.mask_by_field(pa.array(values, pa.string()), field(kind, grade),
                          token_key=KEY if with_key else None).to_pylist()
    assert all(o != v for o, v in zip(out, values, strict=True))


def test_mask_table():
    schema = ResourceSchema(fields=(
        FieldSpec(name="id_number", name_zh="身份证号", kind=Kind.IDENTIFIER_PERSON, grade=Grade.L4),
        FieldSpec(name="name", name_zh="姓名", kind=Kind.NAME_PERSON, grade=Grade.L3),
        FieldSpec(name="born", name_zh="出生日期", kind=Kind.DATE, grade=Grade.L3),
        FieldSpec(name="income", name_zh="收入", kind=Kind.MONEY, grade=Grade.L3),
    ), privacy_unit=PrivacyUnit.PERSON, unit_field="id_number")
    table = pa.table({"id_number": ["32050819900101123X", None], "name": ["张三", "欧阳娜娜"],
                      "born": pa.array([dt.date(1990, 1, 1), None], pa.date32()), "income": [5_000_000, 0]})
    out = M.mask_table(table, schema, KEY)
    assert out.column_names == table.column_names
    assert out.to_pylist() == [
        {"id_number": ref_token(KEY, "identifier_person", "32050819900101123X"), "name": "张*", "born": "1990",
         "income": "5万–10万"},
        {"id_number": None, "name": "欧阳**", "born": None, "income": "0–1000"}]
    with pytest.raises(InvalidInput, match="secret"):
        M.mask_table(table.append_column("secret", pa.array([1, 2])), schema, KEY)


# --- k-anonymity -----------------------------------------------------------------------------------

def test_k_anonymity_nulls_small_cells_or_drops_them():
    t = pa.table({"age": ["30–39", "30–39", "30–39", "40–49", "40–49", None],
                  "district": ["姑苏区", "姑苏区", "姑苏区", "吴中区", "虎丘区", None], "score": [1, 2, 3, 4, 5, 6]})
    out, n = M.k_anonymity(t, ["age", "district"], 2)
    assert n == 3
    assert out.column("age").to_pylist() == ["30–39"] * 3 + [None] * 3
    assert out.column("district").to_pylist() == ["姑苏区"] * 3 + [None] * 3
    assert out.column("score").to_pylist() == [1, 2, 3, 4, 5, 6]  # other fields are kept
    dropped, n = M.k_anonymity(t, ["age", "district"], 2, drop=True)
    assert n == 3 and dropped.column("score").to_pylist() == [1, 2, 3]
    same, n = M.k_anonymity(t, ["age"], 1)
    assert n == 0 and same.equals(t)
    for bad in ({"k": 0}, {"quasi_identifiers": []}, {"quasi_identifiers": ["nope"]}):
        with pytest.raises(InvalidInput):
            M.k_anonymity(t, **({"quasi_identifiers": ["age"], "k": 2} | bad))


@FAST
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 3), st.sampled_from(["x", "y"])),
                max_size=60), st.integers(1, 5))
def test_k_anonymity_property(rows, k):
    t = pa.table({"q1": pa.array([r[0] for r in rows], pa.string()), "q2": pa.array([r[1] for r in rows], pa.int64()),
                  "v": pa.array([r[2] for r in rows], pa.string())})
    counts = Counter((r[0], r[1]) for r in rows)
    out, n = M.k_anonymity(t, ["q1", "q2"], k)
    assert n == sum(1 for r in rows if counts[(r[0], r[1])] < k)
    assert out.num_rows == len(rows) and out.column("v").to_pylist() == [r[2] for r in rows]
    after = Counter(zip(out.column("q1").to_pylist(), out.column("q2").to_pylist(), strict=True))
    assert all(c >= k for combo, c in after.items() if combo != (None, None))
