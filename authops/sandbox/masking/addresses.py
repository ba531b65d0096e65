"""Chinese addresses generalized to their county (区, 县, 县级市, 旗) or city.

The administrative prefix is parsed by a regular expression, but only once per distinct prefix:
each address is first cut, with numpy on its UTF-8 bytes, at its first digit (no administrative
name has one; house numbers do) and at 40 characters, and the cut prefixes are dictionary-encoded.
A city's addresses share a few thousand such prefixes (district + road), so the regex runs on
those rather than on every row; Arrow's RE2 extraction costs microseconds per value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.errors import InvalidInput
from authops.sandbox.masking._arrow import Values, as_strings, check_char, per_chunk, string_buffers, validity

# Province (or municipality), prefecture and county levels. A level's name may not contain another
# level's suffix or digits, and a candidate containing a street-level word is rejected: an address
# with no county gives its city, never a street, estate or house number.
_NAME = "[^省市区县旗盟0-9０-９]"
ADDRESS_RE = (r"^(?P<p>(?:北京市|天津市|上海市|重庆市|" + _NAME + r"{2,8}?(?:省|自治区|特别行政区))?)"
              r"(?P<c>(?:" + _NAME + r"{1,10}?(?:市|自治州|地区|盟))?)"
              r"(?P<d>(?:" + _NAME + r"{1,10}?(?:区|县|市|旗))?)")
STREET_RE = "路|街|巷|弄|号|栋|幢|楼|室|村|镇|乡|小区|花园|家园|公寓|大厦|广场|社区|苑|中心|公司|大道|门牌"
_MUNICIPALITY_RE = "^(?:北京|天津|上海|重庆)市$"
_MAX_BYTES = 40 * 3  # 40 CJK characters: longer than any province + prefecture + county name


def _prefixes(c: pa.Array) -> pa.Array:
    """Each value cut before its first digit (ASCII or full-width) and to at most _MAX_BYTES bytes."""
    offsets, data = string_buffers(c)
    n, size = len(c), len(data)
    if size == 0:
        return c
    starts, ends = offsets[:-1], offsets[1:]
    digit = (data - np.uint8(0x30)) < 10
    lead = np.flatnonzero(data[:-2] == 0xEF)  # full-width ０-９ are EF BC 90..99
    digit[lead[(data[lead + 1] == 0xBC) & ((data[lead + 2] - np.uint8(0x90)) < 10)]] = True
    where = np.flatnonzero(digit)
    if len(where):
        nxt = np.searchsorted(where, starts)
        first = np.where(nxt < len(where), where[np.minimum(nxt, len(where) - 1)], size)
    else:
        first = np.full(n, size)
    cut = np.minimum(np.minimum(first, ends), starts + _MAX_BYTES)
    for _ in range(3):  # never split a UTF-8 character: back off continuation bytes
        cut = cut - ((cut < ends) & ((data[np.minimum(cut, size - 1)] & 0xC0) == 0x80))
    # Keep bytes [start, cut) and drop [cut, end) of every value: alternating runs of True and False.
    runs = np.empty(2 * n, dtype=np.int64)
    runs[0::2], runs[1::2] = cut - starts, ends - cut
    new_data = data[np.repeat(np.tile(np.array([True, False]), n), runs)]
    new_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cut - starts, out=new_offsets[1:])
    valid = validity(c)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.large_string(), n, [bitmap, pa.py_buffer(new_offsets), pa.py_buffer(new_data)],
                                 null_count=c.null_count).cast(pa.string())


def _generalize(prefixes: pa.Array, level: str) -> pa.Array:
    """The district (or city) of each distinct prefix; null when nothing administrative is found."""
    s = pc.replace_substring_regex(prefixes, r"[\s　]+", "")
    m = pc.extract_regex(s, ADDRESS_RE)
    p, c, d = (pc.struct_field(m, name) for name in ("p", "c", "d"))
    empty = pa.scalar("", pa.string())
    c = pc.if_else(pc.match_substring_regex(c, STREET_RE), empty, c)
    d = pc.if_else(pc.match_substring_regex(d, STREET_RE), empty, d)
    if level == "district":
        city = pc.binary_join_element_wise(p, c, "")
        out = pc.if_else(pc.equal(d, ""), city, pc.binary_join_element_wise(city, d, ""))
    else:
        out = pc.if_else(pc.equal(c, ""), pc.if_else(pc.match_substring_regex(p, _MUNICIPALITY_RE), p, empty),
                         pc.binary_join_element_wise(p, c, ""))
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


def address_to_district(values, level: str = "district") -> Values:
    """An address cut after its county-level part (区, 县, 县级市, 旗), else after its city.

    江苏省苏州市姑苏区人民路100号 -> 江苏省苏州市姑苏区; 江苏省苏州市人民路1号 -> 江苏省苏州市;
    内蒙古自治区呼和浩特市新城区… -> 内蒙古自治区呼和浩特市新城区 (自治区 is a province, not a 区).
    `level="city"` stops at the city (a municipality's city is the municipality). An address with
    no recognisable administrative part becomes null: nothing safe is left to show.
    """
    if level not in ("district", "city"):
        raise InvalidInput('level must be "district" or "city"')

    def one(c: pa.Array) -> pa.Array:
        enc = _prefixes(c).dictionary_encode()
        return _generalize(enc.dictionary, level).take(enc.indices)

    return per_chunk(one, as_strings(values), pa.string())


def mask_address(values, char: str = "*", *, level: str = "district") -> Values:
    """The district part of an address followed by four mask characters: 江苏省苏州市姑苏区****."""
    return pc.binary_join_element_wise(address_to_district(values, level), check_char(char) * 4, "")
