"""Character masking and the presets for Chinese personal data.

Lengths and positions count characters (code points), not bytes, so 张三 and 13812345678 mask alike.
Nulls stay null. A value too short to hide anything under a rule is masked whole: a preset never
returns a non-empty value unchanged (unless it consists of the mask character already).

All-ASCII columns (identifiers, phones, card numbers) are masked on the Arrow data buffer with numpy:
every value is three runs of bytes (shown, masked, shown), so one `np.repeat` builds the mask for
the whole column and the offsets and validity are reused as they are. Other text goes through Arrow
string kernels (slice, repeat, join).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.errors import InvalidInput
from authops.sandbox.masking._arrow import Values, as_strings, check_char, per_chunk, string_buffers, validity

COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "慕容", "东方", "皇甫", "尉迟", "公孙", "令狐", "长孙", "宇文",
                     "司徒", "夏侯")
_COMPOUND_RE = "^(?:" + "|".join(COMPOUND_SURNAMES) + ")"
MOBILE_PATTERN = r"^1[3-9][0-9]{9}$"
_WHOLE = 1 << 30  # a min_masked no value reaches: mask the whole value


def _stars(char: str, count) -> Values:
    """`char` repeated `count` times (count: int array; negatives count as zero)."""
    return pc.binary_repeat(char, pc.max_element_wise(count, 0))


def full_mask(values, char: str = "*") -> Values:
    """Every character replaced by `char` (length-preserving)."""
    s = as_strings(values)
    return pc.binary_repeat(check_char(char), pc.utf8_length(s))


def _keep_first(s: Values, length: Values, n: int, char: str) -> Values:
    return pc.binary_join_element_wise(pc.utf8_slice_codeunits(s, 0, n), _stars(char, pc.subtract(length, n)), "")


def _ascii_keep(c: pa.Array, first, last, min_masked, char: str) -> pa.Array | None:
    """keep_ends on the bytes of an all-ASCII chunk (per-row parameters allowed); None if not ASCII."""
    if ord(char) >= 0x80:
        return None
    offsets, data = string_buffers(c)
    if len(data) and int(data.max()) >= 0x80:
        return None
    n = len(c)
    length = np.diff(offsets)
    first, last, min_masked = (np.broadcast_to(np.asarray(x, dtype=np.int64), (n,)) for x in (first, last, min_masked))
    middle = length - first - last
    whole = middle < min_masked
    shown = np.where(whole, 0, first), np.where(whole, 0, last)
    valid = validity(c)
    rows = [x if valid is None else x[valid] for x in (length, *shown)]
    if len(rows[0]) and all((x == x[0]).all() for x in rows) and (valid is None or not length[~valid].any()):
        # Fixed width and one rule (nulls aside, which hold no bytes): mask columns of a byte matrix.
        width, head, tail = (int(x[0]) for x in rows)
        out = data.reshape(len(rows[0]), width).copy()
        out[:, head:width - tail] = ord(char)
        out = out.ravel()
    else:  # each value is three runs of bytes: shown, masked, shown
        runs = np.stack([shown[0], length - shown[0] - shown[1], shown[1]], axis=1)
        out = np.where(np.repeat(np.tile(np.array([False, True, False]), n), runs.ravel()), np.uint8(ord(char)), data)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(out)],
                                 null_count=c.null_count)


def _arrow_keep(s: pa.Array, length: pa.Array, first: int, last: int, min_masked: int, char: str) -> pa.Array:
    middle = pc.subtract(length, first + last)
    head = pc.utf8_slice_codeunits(s, 0, first)
    tail = pc.utf8_slice_codeunits(s, -last) if last else pa.scalar("", pa.string())
    shown = pc.binary_join_element_wise(head, _stars(char, middle), tail, "")
    return pc.if_else(pc.less(middle, min_masked), pc.binary_repeat(char, length), shown)


def _keep(c: pa.Array, first, last, min_masked, char: str) -> pa.Array:
    """keep_ends of one string chunk; first, last and min_masked are ints or per-row int arrays."""
    out = _ascii_keep(c, first, last, min_masked, char)
    if out is not None:
        return out
    length = pc.utf8_length(c)
    if all(np.ndim(x) == 0 for x in (first, last, min_masked)):
        return _arrow_keep(c, length, int(first), int(last), int(min_masked), char)
    params = np.stack(np.broadcast_arrays(first, last, min_masked), axis=1).reshape(len(c), 3)
    combos, which = np.unique(params, axis=0, return_inverse=True)
    out = pc.binary_repeat(char, length)  # no rows (or every row replaced below)
    for i, (f, l_, m) in enumerate(combos):  # a handful of parameter sets, each a column-wide pass
        out = pc.if_else(pa.array(which.ravel() == i), _arrow_keep(c, length, int(f), int(l_), int(m), char), out)
    return out


def keep_ends(values, first: int, last: int, char: str = "*", *, min_masked: int = 1) -> Values:
    """Show the first `first` and last `last` characters, mask the middle (length-preserving).

    Values with fewer than `min_masked` characters left to mask between the ends are masked whole.
    """
    if first < 0 or last < 0 or min_masked < 1:
        raise InvalidInput("first and last must be >= 0 and min_masked >= 1")
    check_char(char)
    return per_chunk(lambda c: _keep(c, first, last, min_masked, char), as_strings(values), pa.string())


def _lengths(s: pa.Array) -> np.ndarray:
    return pc.utf8_length(s).fill_null(0).to_numpy(zero_copy_only=False)


def mask_name(values, char: str = "*") -> Values:
    """Keep the surname, mask the given name: 张三 -> 张*, 张小明 -> 张**, 欧阳娜娜 -> 欧阳**.

    Compound surnames (COMPOUND_SURNAMES) keep both characters when a given name follows; a
    two-character name keeps one (欧阳 -> 欧*), and a one-character value is masked whole.
    Surrounding whitespace is dropped first.
    """
    check_char(char)
    s = pc.utf8_trim_whitespace(as_strings(values))
    length = pc.utf8_length(s)
    compound = pc.and_(pc.match_substring_regex(s, _COMPOUND_RE), pc.greater_equal(length, 3))
    one = pc.if_else(pc.less_equal(length, 1), pc.binary_repeat(char, length), _keep_first(s, length, 1, char))
    return pc.if_else(compound, _keep_first(s, length, 2, char), one)


def mask_mobile(values, char: str = "*") -> Values:
    """Mobile numbers as 138****5678; any other phone (landlines, +86 forms) keeps only its last 4
    characters, and only when at least 4 others are masked."""
    check_char(char)

    def one(c: pa.Array) -> pa.Array:
        s = pc.utf8_trim_whitespace(c)
        mobile = pc.match_substring_regex(s, MOBILE_PATTERN).fill_null(False).to_numpy(zero_copy_only=False)
        return _keep(s, np.where(mobile, 3, 0), 4, np.where(mobile, 1, 4), char)

    return per_chunk(one, as_strings(values), pa.string())


def mask_resident_id(values, char: str = "*", *, region_digits: int = 6) -> Values:
    """Resident ID numbers showing at most their region code: 320508199001011234 -> 320508************.

    Birth date, sequence (which gives the sex) and check digit are never shown. `region_digits` is
    6 (county), 4 (city), 2 (province) or 0. Values that are not 15 or 18 characters are masked whole.
    """
    if region_digits not in (0, 2, 4, 6):
        raise InvalidInput("region_digits must be 0, 2, 4 or 6")
    return _keep_prefix(values, region_digits, (15, 18), char)


def mask_uscc(values, char: str = "*", *, keep: int = 8) -> Values:
    """Unified social credit codes showing registration type and region: 91320505MA1XXXXX0Y -> 91320505**********.

    `keep` is 8 (type + region code), 2 (type) or 0; the organisation code and check character are
    never shown. Values that are not 18 characters are masked whole.
    """
    if keep not in (0, 2, 8):
        raise InvalidInput("keep must be 0, 2 or 8")
    return _keep_prefix(values, keep, (18,), char)


def _keep_prefix(values, keep: int, lengths: tuple[int, ...], char: str) -> Values:
    """Upper-cased, trimmed values showing their first `keep` characters when their length is one of
    `lengths`, masked whole otherwise."""
    check_char(char)

    def one(c: pa.Array) -> pa.Array:
        s = pc.utf8_upper(pc.utf8_trim_whitespace(c))
        fits = np.isin(_lengths(s), lengths)
        return _keep(s, np.where(fits, keep, 0), 0, np.where(fits, 1, _WHOLE), char)

    return per_chunk(one, as_strings(values), pa.string())


def mask_plate(values, char: str = "*") -> Values:
    """Plate numbers as province + city letter, masked middle, last two: 苏E12345 -> 苏E·***45.

    Separators (·, -, spaces) are dropped first; a value shorter than 7 characters is masked whole.
    """
    check_char(char)
    s = pc.replace_substring_regex(pc.utf8_upper(as_strings(values)), r"[\s·\-•.]", "")
    length = pc.utf8_length(s)
    shown = pc.binary_join_element_wise(pc.utf8_slice_codeunits(s, 0, 2), "·",
                                        _stars(char, pc.subtract(length, 4)), pc.utf8_slice_codeunits(s, -2), "")
    return pc.if_else(pc.less(length, 7), pc.binary_repeat(char, length), shown)


def mask_bank_card(values, char: str = "*") -> Values:
    """Card and account numbers showing the first 6 (issuer) and last 4 digits, as payment-card
    rules allow: 6222021234567890123 -> 622202*********0123. Spaces and hyphens are dropped first;
    numbers that would leave fewer than 6 digits hidden are masked whole."""
    check_char(char)

    def one(c: pa.Array) -> pa.Array:
        if pc.any(pc.match_substring_regex(c, r"[\s\-]")).as_py():
            c = pc.replace_substring_regex(c, r"[\s\-]", "")
        return _keep(c, 6, 4, 6, char)

    return per_chunk(one, as_strings(values), pa.string())
