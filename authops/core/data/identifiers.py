"""Chinese identifier formats and check digits: resident ID, USCC, VIN, plate, phone.

`is_*` check one value; `valid_mask(check, values)` checks a column without a per-row Python loop
(fixed-width identifiers are read as a byte matrix straight out of the Arrow buffers and checked by
table look-up; nulls pass). `make_*` generate valid values from a numpy Generator the same way.
Standards: GB 11643-1999 (ISO 7064 MOD 11-2), GB 32100-2015 (MOD 31, embedding a GB 11714
organisation code), ISO 3779 / GB 16735 (VIN check digit at position 9), GA 36-2018 (plates).
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data.schema import Check

PROVINCE_CODES = frozenset({11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
                            46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82})
ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2
ID_CHECK = "10X98765432"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 organisation code (positions 9-17 of a USCC)
VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q
VIN_VALUES = {c: int(v) for c, v in zip(VIN_ALPHABET, "012345678912345678123457923456789", strict=True)}
VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
VIN_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"  # model years 2010, 2011, ... (30-year cycle)
PROVINCE_CHARS = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, O
_PLATE_SYM = "[A-HJ-NP-Z0-9]"
PLATE_PATTERN = (f"^[{PROVINCE_CHARS}][A-HJ-NP-Z](?:{_PLATE_SYM}{{5}}|[DF]{_PLATE_SYM}[0-9]{{4}}|[0-9]{{5}}[DF]"
                 f"|{_PLATE_SYM}{{4}}[挂学警])$")
PHONE_PATTERN = r"^(?:1[3-9][0-9]{9}|0[1-9][0-9]{1,2}-?[2-9][0-9]{6,7})$"
_PLATE_RE = re.compile(PLATE_PATTERN[1:-1])
_PHONE_RE = re.compile(PHONE_PATTERN[1:-1])


def _lookup(pairs: dict[str, int]) -> np.ndarray:
    """A 256-entry byte -> value table; -1 marks bytes outside the alphabet."""
    t = np.full(256, -1, dtype=np.int16)
    for ch, v in pairs.items():
        t[ord(ch)] = v
    return t


_DIGIT = _lookup({str(i): i for i in range(10)})
_USCC_VAL = _lookup({c: i for i, c in enumerate(USCC_ALPHABET)})
_VIN_VAL = _lookup(VIN_VALUES)
_ORG_VAL = _lookup({c: int(c, 36) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
_PROVINCE_OK = np.zeros(100, dtype=bool)
_PROVINCE_OK[list(PROVINCE_CODES)] = True
_ID_CHECK_B = np.frombuffer(ID_CHECK.encode(), dtype=np.uint8)
_USCC_B = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)
_VIN_CHECK_B = np.frombuffer(b"0123456789X", dtype=np.uint8)
_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int16)



def resident_id_check_char(first17: str) -> str:
    """The 18th character of a resident ID number whose first 17 digits are given."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError("a resident ID body is 17 ASCII digits")
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def is_resident_id(s: str) -> bool:
    """18 characters, a plausible province, a real birth date and the right MOD 11-2 check character."""
    if not isinstance(s, str) or len(s) != 18 or not s.isascii() or not s[:17].isdigit():
        return False
    if int(s[:2]) not in PROVINCE_CODES:
        return False
    try:
        dt.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    return s[17] == resident_id_check_char(s[:17])


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code (GB 32100 MOD 31)."""
    if len(first17) != 17 or any(c not in USCC_ALPHABET for c in first17):
        raise ValueError("a USCC body is 17 characters of 0-9 and ABCDEFGHJKLMNPQRTUWXY")
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_uscc(s: str) -> bool:
    if not isinstance(s, str) or len(s) != 18 or any(c not in USCC_ALPHABET for c in s):
        return False
    return s[17] == uscc_check_char(s[:17])


def org_code_check_char(first8: str) -> str:
    """The 9th character of a GB 11714 organisation code (embedded at USCC positions 9-17)."""
    total = sum(int(c, 36) * w for c, w in zip(first8, ORG_WEIGHTS, strict=True))
    return "0123456789X0"[11 - total % 11]


def vin_check_char(vin: str) -> str:
    """The check digit (position 9) of a 17-character VIN; the character at position 9 is ignored."""
    if len(vin) != 17 or any(c not in VIN_VALUES for c in vin[:8] + vin[9:]):
        raise ValueError("a VIN is 17 characters of 0-9 and A-Z without I, O, Q")
    r = sum(VIN_VALUES[c] * w for i, (c, w) in enumerate(zip(vin, VIN_WEIGHTS, strict=True)) if i != 8) % 11
    return "X" if r == 10 else str(r)


def is_vin(s: str) -> bool:
    if not isinstance(s, str) or len(s) != 17 or any(c not in VIN_VALUES for c in s):
        return False
    return s[8] == vin_check_char(s)


def is_plate(s: str) -> bool:
    """Mainland plate: province character, a letter, then 5 characters (6 on new-energy plates;
    trailer/coach/police plates end in 挂/学/警 after 4)."""
    return isinstance(s, str) and _PLATE_RE.fullmatch(s) is not None


def is_phone(s: str) -> bool:
    """Mobile 1[3-9] + 9 digits, or landline 0 + 2-3 digit area code, optional '-', 7-8 digits."""
    return isinstance(s, str) and _PHONE_RE.fullmatch(s) is not None


SCALAR = {Check.RESIDENT_ID: is_resident_id, Check.USCC: is_uscc, Check.VIN: is_vin,
          Check.PLATE: is_plate, Check.PHONE: is_phone}



def _id_ok(m: np.ndarray) -> np.ndarray:
    d = _DIGIT[m]
    ok = (d[:, :17] >= 0).all(axis=1)
    d = np.where(d < 0, 0, d)
    total = (d[:, :17] * np.asarray(ID_WEIGHTS, dtype=np.int16)).sum(axis=1, dtype=np.int32)
    ok &= m[:, 17] == _ID_CHECK_B[total % 11]
    ok &= _PROVINCE_OK[d[:, 0] * 10 + d[:, 1]]
    year = d[:, 6] * 1000 + d[:, 7] * 100 + d[:, 8] * 10 + d[:, 9]
    month = d[:, 10] * 10 + d[:, 11]
    day = d[:, 12] * 10 + d[:, 13]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = _DAYS[np.clip(month, 0, 12)] - ((month == 2) & ~leap)
    return ok & (month >= 1) & (month <= 12) & (day >= 1) & (day <= dim) & (year >= 1)


def _weighted(table: np.ndarray, m: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
    """(all characters in the alphabet?, weighted sum of their values) per row."""
    v = table[m]
    w = np.zeros(m.shape[1], dtype=np.int16)
    w[:len(weights)] = weights
    return (v >= 0).all(axis=1), (np.where(v < 0, 0, v) * w).sum(axis=1, dtype=np.int32)


def _uscc_ok(m: np.ndarray) -> np.ndarray:
    ok, total = _weighted(_USCC_VAL, m, USCC_WEIGHTS)
    return ok & (m[:, 17] == _USCC_B[(31 - total % 31) % 31])


def _vin_ok(m: np.ndarray) -> np.ndarray:
    ok, total = _weighted(_VIN_VAL, m, VIN_WEIGHTS)
    return ok & (m[:, 8] == _VIN_CHECK_B[total % 11])


_FIXED = {Check.RESIDENT_ID: (18, _id_ok), Check.USCC: (18, _uscc_ok), Check.VIN: (17, _vin_ok)}
_REGEX = {Check.PLATE: PLATE_PATTERN, Check.PHONE: PHONE_PATTERN}


def _chunks(values) -> list:
    if isinstance(values, pa.ChunkedArray):
        chunks = values.chunks
    elif isinstance(values, pa.Array):
        chunks = [values]
    else:  # pandas Series (None, NaN and NA are nulls), numpy array, list
        chunks = [pa.array(values, type=pa.string(), from_pandas=True)]
    return [c if pa.types.is_string(c.type) or pa.types.is_large_string(c.type) else c.cast(pa.string())
            for c in chunks]


def _byte_matrix(c, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, matrix): rows of exactly `width` bytes, and their bytes as an (k, width) matrix."""
    n = len(c)
    bufs = c.buffers()
    off_t = np.int64 if pa.types.is_large_string(c.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_t)[c.offset:c.offset + n + 1] if n else np.zeros(1, off_t)
    cand = np.diff(offsets) == width
    if c.null_count:
        cand &= c.is_valid().to_numpy(zero_copy_only=False)
    k = int(cand.sum())
    if k == 0:
        return cand, np.zeros((0, width), dtype=np.uint8)
    if k < n:
        return cand, _byte_matrix(c.filter(pa.array(cand)), width)[1]
    data = np.frombuffer(bufs[2], dtype=np.uint8)
    return cand, data[offsets[0]:offsets[-1]].reshape(n, width)


def valid_mask(check: Check, values) -> np.ndarray:
    """Per entry: does it pass `check`? Nulls pass. `values`: Arrow (chunked) string array or pandas Series."""
    check = Check(check)
    parts = []
    for c in _chunks(values):
        if check in _FIXED:
            width, fn = _FIXED[check]
            cand, mat = _byte_matrix(c, width)
            ok = c.is_null().to_numpy(zero_copy_only=False).copy() if c.null_count else np.zeros(len(c), bool)
            ok[cand] = fn(mat)
        else:
            ok = pc.match_substring_regex(c, _REGEX[check]).fill_null(True).to_numpy(zero_copy_only=False)
        parts.append(np.asarray(ok, dtype=bool))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def matrix_to_arrow(m: np.ndarray):
    """An (n, w) uint8 matrix of ASCII bytes as an Arrow string array (one w-character value per row)."""
    n, w = m.shape
    offsets = np.arange(0, w * (n + 1), w, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                 pa.py_buffer(np.ascontiguousarray(m, dtype=np.uint8))])


def matrix_to_str(m: np.ndarray) -> np.ndarray:
    """An (n, w) uint8 ASCII matrix as a numpy array of str."""
    m = np.ascontiguousarray(m, dtype=np.uint8)
    return m.view(f"S{m.shape[1]}").ravel().astype(f"U{m.shape[1]}")


_QUAD = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8).view(np.uint32).ravel()


def ascii_digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as an (n, width) matrix of ASCII digits, zero-padded (last width digits)."""
    v = np.asarray(values, dtype=np.int64)
    blocks = (width + 3) // 4
    out = np.empty((len(v), blocks), dtype=np.uint32)
    ten4 = np.uint32(10_000)
    rest = v // 100_000_000
    part = (v - rest * 100_000_000).astype(np.uint32)  # 8 digits at a time in uint32, where division is cheap
    for j in range(blocks - 1, -1, -1):
        if (blocks - 1 - j) % 2 == 0 and j != blocks - 1:
            high = rest // 100_000_000
            part = (rest - high * 100_000_000).astype(np.uint32)
            rest = high
        q = part // ten4
        out[:, j] = _QUAD[part - q * ten4]
        part = q
    m = out.view(np.uint8).reshape(len(v), blocks * 4)
    return m if blocks * 4 == width else np.ascontiguousarray(m[:, blocks * 4 - width:])


def _distinct(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    """n distinct integers drawn uniformly from [lo, hi)."""
    if n > hi - lo:
        raise ValueError(f"cannot draw {n} distinct values from a range of {hi - lo}")
    return lo + rng.choice(hi - lo, size=n, replace=False)


def resident_id_matrix(rng: np.random.Generator, region_codes, birth_dates, sex, *,
                       seq_range: tuple[int, int] = (0, 800)) -> np.ndarray:
    """(n, 18) bytes of distinct resident ID numbers. The sequence code comes from `seq_range` (odd
    for men), without repeats per (region, birth date, sex); disjoint ranges give disjoint numbers."""
    region = np.asarray(region_codes).astype(np.int64)
    born = np.asarray(birth_dates, dtype="datetime64[D]")
    male = np.asarray(sex, dtype=bool)
    n = len(region)
    lo, hi = seq_range
    if lo % 2 or not 0 <= lo < hi <= 1000:
        raise ValueError("seq_range must be an even start and an end within 0..1000")
    slots = (hi - lo) // 2
    group = (region * 200_000 + (born.astype(np.int64) + 60_000)) * 2 + male
    order = np.argsort(group * 1024 + rng.integers(0, 1024, n))
    g_sorted = group[order]
    starts = np.r_[0, np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1] if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    if n and sizes.max() > slots:
        raise ValueError(f"more than {slots} people share a region, birth date and sex")
    stride = next(p for p in (7, 11, 13, 17, 19, 23, 1) if np.gcd(p, slots) == 1)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    first = np.empty(n, dtype=np.int64)
    first[order] = np.repeat(rng.integers(0, slots, len(starts)), sizes)
    seq = lo + ((first + rank * stride) % slots) * 2 + male
    z = born.astype(np.int64) + 719_468  # civil date from day number (H. Hinnant's algorithm)
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    mon = np.where(mp < 10, mp + 3, mp - 9)
    ymd = (yoe + era * 400 + (mon <= 2)) * 10_000 + mon * 100 + doy - (153 * mp + 2) // 5 + 1
    m = np.empty((n, 18), dtype=np.uint8)
    m[:, :6] = ascii_digits(region, 6)
    m[:, 6:14] = ascii_digits(ymd, 8)
    m[:, 14:17] = ascii_digits(seq, 3)
    total = ((m[:, :17].astype(np.int16) - 48) * np.asarray(ID_WEIGHTS, dtype=np.int16)).sum(axis=1)
    m[:, 17] = _ID_CHECK_B[total % 11]
    return m


def make_resident_ids(rng: np.random.Generator, region_codes, birth_dates, sex, *,
                      seq_range: tuple[int, int] = (0, 800)) -> np.ndarray:
    """Valid, distinct resident ID numbers (numpy str array); the sequence digit's parity matches `sex`."""
    return matrix_to_str(resident_id_matrix(rng, region_codes, birth_dates, sex, seq_range=seq_range))


def uscc_matrix(rng: np.random.Generator, n: int, *, region_codes=None, kind: str = "91",
                series: str = "MA", start: int | None = None) -> np.ndarray:
    """(n, 18) bytes of USCCs, distinct within the call.

    `kind` = registration authority + organisation type ("91" enterprise, "92" sole trader,
    "12" public institution, "52" social organisation); positions 3-8 the region code; 9-17 a GB 11714
    organisation code: `series` (e.g. "MA", the new-code series) + random characters, or 8 digits when
    `series` is "", plus its check character. Different series never collide. With `start`, the
    codes are numbers start, start+1, ... through a fixed scrambling bijection instead of random
    draws, so calls with disjoint number ranges never collide either.
    """
    region = np.full(n, 320500, dtype=np.int64) if region_codes is None else np.asarray(region_codes).astype(np.int64)
    m = np.empty((n, 18), dtype=np.uint8)
    m[:, :2] = np.frombuffer(kind.encode("ascii"), dtype=np.uint8)
    m[:, 2:8] = ascii_digits(region, 6)
    free = 8 - len(series)
    space = 31 ** free if series else 90_000_000
    if start is not None and start + n > space:
        raise ValueError("USCC number range exhausted")
    body = (_distinct(rng, 0, space, n) if start is None
            else (np.arange(start, start + n, dtype=np.int64) * 7_919_317 + 104_729) % space)
    if series:
        m[:, 8:8 + len(series)] = np.frombuffer(series.encode(), dtype=np.uint8)
        for j in range(free):
            m[:, 7 + len(series) + free - j] = _USCC_B[body // 31 ** j % 31]
    else:
        m[:, 8:16] = ascii_digits(10_000_000 + body, 8)
    total = (_ORG_VAL[m[:, 8:16]] * np.asarray(ORG_WEIGHTS, dtype=np.int16)).sum(axis=1, dtype=np.int32)
    m[:, 16] = np.frombuffer(b"0123456789X0", dtype=np.uint8)[11 - total % 11]
    total = (_USCC_VAL[m[:, :17]] * np.asarray(USCC_WEIGHTS, dtype=np.int16)).sum(axis=1, dtype=np.int32)
    m[:, 17] = _USCC_B[(31 - total % 31) % 31]
    return m


def make_usccs(rng: np.random.Generator, n: int, **kw) -> np.ndarray:
    """n valid, distinct USCCs (numpy str array); keywords as in `uscc_matrix`."""
    return matrix_to_str(uscc_matrix(rng, n, **kw))


_WMIS = ("LZZ", "LFW", "LGA", "LZG", "LVB", "LJC", "LZF", "LFN")
_VIN_B = np.frombuffer(VIN_ALPHABET.encode(), dtype=np.uint8)
_VIN_LETTERS_DIGITS = np.frombuffer(b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789", dtype=np.uint8)


def vin_matrix(rng: np.random.Generator, n: int, *, wmis=None, years=None,
               serial_range: tuple[int, int] = (0, 900_000)) -> np.ndarray:
    """(n, 17) bytes of VINs, distinct within the call: WMI, 5 descriptor characters, check digit,
    model-year code, plant code and a 6-digit serial; the (plant, serial) pair is drawn without
    repeats from `serial_range`, so disjoint ranges give disjoint VINs."""
    m = np.empty((n, 17), dtype=np.uint8)
    w = np.asarray(_WMIS)[rng.integers(0, len(_WMIS), n)] if wmis is None else np.asarray(wmis).astype("U3")
    m[:, :3] = np.char.encode(w, "ascii").view(np.uint8).reshape(n, 3) if n else m[:, :3]
    m[:, 3:8] = _VIN_B[rng.integers(0, len(_VIN_B), (n, 5))]
    yr = rng.integers(2012, 2025, n) if years is None else np.asarray(years, dtype=np.int64)
    m[:, 9] = np.frombuffer(VIN_YEAR_CODES.encode(), dtype=np.uint8)[(yr - 2010) % 30]
    lo, hi = serial_range
    q = _distinct(rng, 0, len(_VIN_LETTERS_DIGITS) * (hi - lo), n)
    m[:, 10] = _VIN_LETTERS_DIGITS[q // (hi - lo)]
    m[:, 11:17] = ascii_digits(lo + q % (hi - lo), 6)
    v = _VIN_VAL[m].copy()
    v[:, 8] = 0
    total = (v * np.asarray(VIN_WEIGHTS, dtype=np.int16)).sum(axis=1, dtype=np.int32)
    m[:, 8] = _VIN_CHECK_B[total % 11]
    return m


def make_vins(rng: np.random.Generator, n: int, **kw) -> np.ndarray:
    """n valid, distinct VINs (numpy str array); keywords as in `vin_matrix`."""
    return matrix_to_str(vin_matrix(rng, n, **kw))


def make_plates(rng: np.random.Generator, n: int, province: str = "苏", *, city: str = "E",
                new_energy: float = 0.05) -> np.ndarray:
    """n distinct plate numbers of one city (numpy str array).

    Ordinary plates: 5 characters, the first two letters or digits, the last three digits. About a
    `new_energy` share get large-vehicle new-energy plates: 5 digits then D (battery) or F (hybrid).
    """
    if province not in PROVINCE_CHARS or len(city) != 1 or city not in PLATE_LETTERS:
        raise ValueError("province must be a province character and city one plate letter")
    sym = np.frombuffer(b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", dtype=np.uint8)
    k = int(rng.binomial(n, new_energy)) if n and new_energy > 0 else 0
    q = _distinct(rng, 0, 34 * 34 * 1000, n - k)
    ordinary = np.empty((n - k, 5), dtype=np.uint8)
    ordinary[:, 0] = sym[q // 34_000 % 34]
    ordinary[:, 1] = sym[q // 1000 % 34]
    ordinary[:, 2:5] = ascii_digits(q % 1000, 3)
    q = _distinct(rng, 0, 200_000, k)
    nev = np.empty((k, 6), dtype=np.uint8)
    nev[:, :5] = ascii_digits(q % 100_000, 5)
    nev[:, 5] = np.where(q < 100_000, ord("D"), ord("F"))
    out = np.empty(n, dtype="U6")
    is_nev = np.zeros(n, dtype=bool)
    is_nev[rng.choice(n, k, replace=False)] = True
    out[~is_nev], out[is_nev] = matrix_to_str(ordinary), matrix_to_str(nev)
    return np.char.add(province + city, out)
