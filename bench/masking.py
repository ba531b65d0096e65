"""Masking throughput: values per second for each function of `authops.sandbox.masking`.

Ours: the vectorized library on --n (default 1,000,000) synthetic values per function, best of
--repeat runs, by wall clock and by this process's CPU time. Baseline, same run: a straightforward
per-value Python implementation of the same operation (Arrow -> Python objects -> Arrow included,
as a per-value implementation needs them) on --baseline-n values; for tokenization the baseline is
HMAC-SHA256 per value (the usual keyed hash), with keyed BLAKE2b and HMAC over distinct values only
(dictionary-encoded) measured beside it. When presidio-anonymizer can be imported (installed, or a
folder given with --presidio-path), its AnonymizerEngine is timed too on --presidio-n values for
the operations it has (mask, hash). Writes bench/results/masking.json.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import datetime as dt
import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.core.data import identifiers as ids
from authops.core.data.schema import FieldSpec, Grade, Kind, ResourceSchema
from authops.policies import masking as per_value_masking
from authops.sandbox import masking as M
from authops.sandbox.masking import addresses, generalize, strings

KEY = M.token_key(bytes(range(32)), 1001, 7)
AS_OF = dt.date(2025, 6, 30)
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈")
GIVEN = list("伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊芳娜敏静丽艳娟霞燕玲婷雪慧莉萍红琳颖倩洁佳梅")
DISTRICTS = ["姑苏区", "虎丘区", "吴中区", "相城区", "吴江区", "苏州工业园区", "常熟市", "张家港市", "昆山市", "太仓市"]
ROADS = ["人民路", "干将东路", "十全街", "长江路", "东吴北路", "相城大道", "中山南路", "星湖街", "黄河路", "前进西路"]
ESTATES = ["金色花园", "阳光新村", "翠苑", "锦绣家园", "玉兰小区", "桂花公寓"]


def _cat(*parts) -> np.ndarray:
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(out, p)
    return out


def _digits(v: np.ndarray, width: int) -> np.ndarray:
    return ids.matrix_to_str(ids.ascii_digits(v, width))


def synthesize(n: int, seed: int = 20250630) -> dict[str, pa.Array]:
    """One column per kind of value, n values each, about 2% null where nulls make sense."""
    rng = np.random.default_rng(seed)
    null = rng.random(n) < 0.02
    born = np.datetime64("1940-01-01") + rng.integers(0, 29_000, n).astype("timedelta64[D]")
    region = np.array([320508, 320505, 320506, 320507, 320509, 320581, 320582, 320583, 341221, 411523])
    resident = ids.resident_id_matrix(rng, region[rng.integers(0, len(region), n)], born, rng.random(n) < 0.5)
    surname = np.array(SURNAMES + ["欧阳", "司马", "诸葛", "上官"])[
        np.where(rng.random(n) < 0.02, rng.integers(len(SURNAMES), len(SURNAMES) + 4, n),
                 rng.integers(0, len(SURNAMES), n))]
    given = np.array(GIVEN)
    name = _cat(surname, given[rng.integers(0, len(given), n)],
                np.where(rng.random(n) < 0.6, given[rng.integers(0, len(given), n)], ""))
    mobile = _cat(np.array(["13", "15", "18", "19"])[rng.integers(0, 4, n)], _digits(rng.integers(0, 10**9, n), 9))
    card = _cat("622202", _digits(rng.integers(0, 10**13, n), 13))
    address = _cat("江苏省苏州市", np.array(DISTRICTS)[rng.integers(0, len(DISTRICTS), n)],
                   np.array(ROADS)[rng.integers(0, len(ROADS), n)], rng.integers(1, 999, n).astype("U3"), "号",
                   np.array(ESTATES)[rng.integers(0, len(ESTATES), n)], rng.integers(1, 40, n).astype("U2"), "幢",
                   rng.integers(101, 3304, n).astype("U4"), "室")
    fen = np.exp(rng.normal(12, 2.5, n)).astype(np.int64)

    def strs(a) -> pa.Array:
        out = pa.array(a, pa.string(), mask=null)  # numpy str arrays may come back chunked
        return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out

    return {
        "resident_id": strs(ids.matrix_to_str(resident)),
        "uscc": strs(ids.make_usccs(rng, n)),
        "plate": strs(ids.make_plates(rng, n)),
        "name": strs(name), "mobile": strs(mobile), "bank_card": strs(card), "address": strs(address),
        "birth_date": pa.array(born, pa.date32(), mask=null),
        "age": pa.array(rng.integers(0, 100, n), pa.int64(), mask=null),
        "amount_fen": pa.array(fen, pa.int64(), mask=null),
        "subject": strs(ids.matrix_to_str(resident[rng.integers(0, n, n) // 4 * 4 % n])).fill_null("-"),
    }


# --- per-value baselines (each takes and returns Arrow, working on Python objects in between) ------

def per_value(fn: Callable) -> Callable[[pa.Array], pa.Array]:
    return lambda a: pa.array([None if v is None else fn(v) for v in a.to_pylist()])


def _keep_ends(v: str, first: int, last: int, min_masked: int = 1) -> str:
    if len(v) - first - last < min_masked:
        return "*" * len(v)
    return v[:first] + "*" * (len(v) - first - last) + (v[len(v) - last:] if last else "")


def _name(v: str) -> str:
    v = v.strip()
    keep = 2 if v[:2] in strings.COMPOUND_SURNAMES and len(v) >= 3 else min(1, len(v) - 1) if v else 0
    return v[:keep] + "*" * (len(v) - keep)


_MOBILE = re.compile(strings.MOBILE_PATTERN)
_ADDRESS = re.compile(addresses.ADDRESS_RE)
_STREET = re.compile(addresses.STREET_RE)


def _district(v: str) -> str | None:
    m = _ADDRESS.match(re.sub(r"[\s　]+", "", v))
    p, c, d = (m.group(g) or "" for g in ("p", "c", "d"))
    c, d = ("" if _STREET.search(c) else c), ("" if _STREET.search(d) else d)
    return (p + c + d) or None


def _hmac_token(v: str, key: bytes = KEY) -> str:
    return base64.b32encode(hmac.digest(key, v.encode(), "sha256")).decode()[:20].lower()


def _blake_token(v: str, key: bytes = KEY) -> str:
    return base64.b32encode(hashlib.blake2b(v.encode(), key=key, digest_size=16).digest()).decode()[:20].lower()


def _hmac_distinct(a: pa.Array) -> pa.Array:
    enc = (a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a).dictionary_encode()
    return pa.array([_hmac_token(v) for v in enc.dictionary.to_pylist()]).take(enc.indices)


def _yuan_bands() -> tuple[list[int], list[str]]:
    edges = list(generalize.AMOUNT_BANDS_FEN)
    labels = M.amount_band(pa.array([edges[0] - 1] + edges, pa.int64())).to_pylist()
    return edges, labels


_EDGES, _LABELS = _yuan_bands()


def _age_band(born: dt.date) -> str | None:
    age = AS_OF.year - born.year - ((born.month, born.day) > (AS_OF.month, AS_OF.day))
    return None if age < 0 else "90+" if age >= 90 else f"{age // 10 * 10}–{age // 10 * 10 + 9}"


def _shift(values: pa.Array, subjects: pa.Array) -> pa.Array:
    out = []
    for v, s in zip(values.to_pylist(), subjects.to_pylist(), strict=True):
        if v is None or s is None:
            out.append(None)
            continue
        r = int.from_bytes(hmac.digest(KEY, s.encode(), "sha256")[:8], "big") % 60
        out.append(v + dt.timedelta(days=r - 30 if r < 30 else r - 29))
    return pa.array(out, pa.date32())


def _kanon(t: pa.Table) -> pa.Table:
    rows = list(zip(t.column("age").to_pylist(), t.column("district").to_pylist(), strict=True))
    counts = Counter(rows)
    keep = [counts[r] >= 5 for r in rows]
    cols = {q: [v if k else None for v, k in zip(t.column(q).to_pylist(), keep, strict=True)]
            for q in ("age", "district")}
    return pa.table({**cols, "amount": t.column("amount")})


TABLE_SCHEMA = ResourceSchema(fields=(
    FieldSpec(name="id_number", name_zh="身份证号", kind=Kind.IDENTIFIER_PERSON, grade=Grade.L4),
    FieldSpec(name="name", name_zh="姓名", kind=Kind.NAME_PERSON, grade=Grade.L3),
    FieldSpec(name="mobile", name_zh="手机号", kind=Kind.PHONE, grade=Grade.L3),
    FieldSpec(name="address", name_zh="住址", kind=Kind.ADDRESS, grade=Grade.L3),
    FieldSpec(name="born", name_zh="出生日期", kind=Kind.DATE, grade=Grade.L3),
    FieldSpec(name="income", name_zh="收入", kind=Kind.MONEY, grade=Grade.L3),
))


def _mask_rows(t: pa.Table) -> pa.Table:
    return pa.Table.from_pylist(per_value_masking.mask_rows(TABLE_SCHEMA, t.to_pylist()))


# --- presidio ------------------------------------------------------------------------------------

def load_presidio(path: str | None):
    if importlib.util.find_spec("presidio_anonymizer") is None and path:
        sys.path.append(path)
    if importlib.util.find_spec("presidio_anonymizer") is None:
        return None
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    engine = AnonymizerEngine()

    def op(span: Callable[[str], tuple[int, int]], name: str, params: dict) -> Callable[[pa.Array], pa.Array]:
        def one(v: str) -> str:
            start, end = span(v)
            if end <= start:
                return v
            return engine.anonymize(text=v, analyzer_results=[RecognizerResult("PII", start, end, 1.0)],
                                    operators={"PII": OperatorConfig(name, params)}).text
        return per_value(one)

    def mask(span):
        return op(span, "mask", {"masking_char": "*", "chars_to_mask": 10**6, "from_end": False})

    return importlib.metadata.version("presidio-anonymizer"), {
        "keep_ends": mask(lambda v: (3, len(v) - 4)),
        "full_mask": mask(lambda v: (0, len(v))),
        "mask_mobile": mask(lambda v: (3, len(v) - 4)),
        "mask_resident_id": mask(lambda v: (6, len(v))),
        "mask_bank_card": mask(lambda v: (6, len(v) - 4)),
        "tokenize": op(lambda v: (0, len(v)), "hash", {"hash_type": "sha256", "salt": KEY}),
    }


# --- the run -------------------------------------------------------------------------------------

def timed(fn: Callable, arg, repeat: int) -> tuple[float, float, object]:
    best_wall = best_cpu = float("inf")
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn(arg)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - w), min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu, out


def cases(d: dict[str, pa.Array]) -> list[tuple[str, str, Callable, Callable | None, str]]:
    """(function, input column, ours, per-value baseline, baseline description)."""
    table = pa.table({"id_number": d["resident_id"], "name": d["name"], "mobile": d["mobile"],
                      "address": d["address"], "born": d["birth_date"], "income": d["amount_fen"]})
    kanon = pa.table({"age": M.age_band(d["birth_date"], as_of=AS_OF), "district": M.address_to_district(d["address"]),
                      "amount": d["amount_fen"]})
    d = d | {"table": table, "kanon": kanon, "shift": pa.table({"v": d["birth_date"], "s": d["subject"]})}
    same = "per-value Python, same rule"
    return [
        ("keep_ends(3, 4)", "mobile", lambda a: M.keep_ends(a, 3, 4), per_value(lambda v: _keep_ends(v, 3, 4)), same),
        ("full_mask", "name", M.full_mask, per_value(lambda v: "*" * len(v)), same),
        ("mask_name", "name", M.mask_name, per_value(_name), same),
        ("mask_mobile", "mobile", M.mask_mobile, per_value(
            lambda v: _keep_ends(v.strip(), 3, 4) if _MOBILE.match(v.strip())
            else _keep_ends(v.strip(), 0, 4, 4)), same),
        ("mask_resident_id", "resident_id", M.mask_resident_id, per_value(
            lambda v: v[:6] + "*" * (len(v) - 6) if len(v) in (15, 18) else "*" * len(v)), same),
        ("mask_uscc", "uscc", M.mask_uscc,
         per_value(lambda v: v[:8] + "*" * 10 if len(v) == 18 else "*" * len(v)), same),
        ("mask_plate", "plate", M.mask_plate, per_value(
            lambda v: v[:2] + "·" + "*" * (len(v) - 4) + v[-2:] if len(v) >= 7 else "*" * len(v)), same),
        ("mask_bank_card", "bank_card", M.mask_bank_card, per_value(lambda v: _keep_ends(v, 6, 4, 6)), same),
        ("address_to_district", "address", M.address_to_district, per_value(_district), same + " (Python re)"),
        ("tokenize (AES-CMAC)", "resident_id", lambda a: M.tokenize(a, KEY, domain="identifier_person"),
         per_value(_hmac_token), "HMAC-SHA256 per value (hmac.digest), base32"),
        ("date_to month", "birth_date", lambda a: M.date_to(a, "month"),
         per_value(lambda v: f"{v.year:04d}-{v.month:02d}"), same),
        ("age_band", "birth_date", lambda a: M.age_band(a, as_of=AS_OF), per_value(_age_band), same),
        ("amount_band", "amount_fen", M.amount_band,
         per_value(lambda v: _LABELS[bisect.bisect_right(_EDGES, v)]), same + " (bisect)"),
        ("suppress", "name", M.suppress, lambda a: pa.array([None] * len(a), a.type), "list of None"),
        ("date_shift", "shift", lambda t: M.date_shift(t.column("v"), t.column("s"), KEY, domain="visits"),
         lambda t: _shift(t.column("v"), t.column("s")), "HMAC-SHA256 of the subject per row"),
        ("k_anonymity (k=5, 2 QIs), rows", "kanon", lambda t: M.k_anonymity(t, ["age", "district"], 5)[0], _kanon,
         "collections.Counter over row tuples"),
        ("mask_table (6 fields), rows", "table", lambda t: M.mask_table(t, TABLE_SCHEMA, KEY), _mask_rows,
         "authops.policies.masking.mask_rows (per-value catalogue masking, no tokens)"),
    ], d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--baseline-n", type=int, default=200_000)
    parser.add_argument("--presidio-n", type=int, default=20_000)
    parser.add_argument("--presidio-path", help="folder holding presidio_anonymizer (pip install --target)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/masking.json"))
    args = parser.parse_args()

    data = synthesize(args.n)
    presidio = load_presidio(args.presidio_path)
    presidio_note = (f"presidio-anonymizer {presidio[0]}: AnonymizerEngine, one value per call" if presidio else
                     "presidio-anonymizer is not installed in this environment (it is on the package index: "
                     "pip install --target DIR presidio-anonymizer, then --presidio-path DIR); baseline is "
                     "per-value Python")
    print(presidio_note)
    table_cases, data = cases(data)
    results = {}
    header = (f"{'function':34} {'ours values/s':>14} {'baseline values/s':>18} {'speed-up':>9} "
              f"{'presidio v/s':>13}  agrees")
    print(header + "\n" + "-" * len(header))
    for name, col, ours, base, base_what in table_cases:
        column = data[col]
        n = len(column) if not isinstance(column, pa.Table) else column.num_rows
        wall, cpu, out = timed(ours, column, args.repeat)
        bn = min(args.baseline_n, n)
        sub = column.slice(0, bn)
        b_wall, b_cpu, b_out = timed(base, sub, 1)
        agrees = None
        if "same rule" in base_what:
            agrees = out.slice(0, bn).to_pylist() == b_out.to_pylist()
        row = {"input": col, "n": n, "ours_wall_s": round(wall, 4), "ours_cpu_s": round(cpu, 4),
               "ours_values_per_s": round(n / wall), "ours_values_per_cpu_s": round(n / max(cpu, 1e-9)),
               "baseline": {"what": base_what, "n": bn, "wall_s": round(b_wall, 4),
                            "values_per_s": round(bn / b_wall), "values_per_cpu_s": round(bn / max(b_cpu, 1e-9))},
               "speedup_wall": round((n / wall) / (bn / b_wall), 1), "agrees_with_baseline": agrees}
        key = name.split(" ")[0]
        if presidio and key in presidio[1]:
            pn = min(args.presidio_n, n)
            p_wall, _, _ = timed(presidio[1][key], column.slice(0, pn), 1)
            row["presidio"] = {"n": pn, "wall_s": round(p_wall, 4), "values_per_s": round(pn / p_wall),
                               "what": "hash = sha256(value || key) (presidio 'salt')" if key == "tokenize"
                               else "mask operator over the same span"}
        if key == "tokenize":
            alt = {}
            for what, fn in (("keyed BLAKE2b-128 per value", per_value(_blake_token)),
                             ("HMAC-SHA256 per distinct value (dictionary_encode + take)", _hmac_distinct)):
                a_wall, _, _ = timed(fn, sub, 1)
                alt[what] = {"n": bn, "values_per_s": round(bn / a_wall)}
            distinct = data["subject"].slice(0, bn)  # each ID ~4 times
            a_wall, _, _ = timed(_hmac_distinct, distinct, 1)
            alt["HMAC-SHA256 per distinct value, 4 rows per ID"] = {"n": bn, "values_per_s": round(bn / a_wall)}
            w, _, _ = timed(lambda a: M.tokenize(a, KEY, domain="d"), data["subject"], args.repeat)
            alt["ours, 4 rows per ID"] = {"n": len(data["subject"]), "values_per_s": round(len(data["subject"]) / w)}
            w, _, _ = timed(lambda a: pc.unique(a), column, 1)
            alt["pc.unique alone (the cost of deduplicating first)"] = {"n": n, "values_per_s": round(n / w)}
            row["alternatives"] = alt
        results[name] = row
        p = row.get("presidio", {}).get("values_per_s")
        print(f"{name:34} {row['ours_values_per_s']:>14,} {row['baseline']['values_per_s']:>18,} "
              f"{row['speedup_wall']:>8}x {(f'{p:,}' if p else '-'):>13}  {'' if agrees is None else agrees}")
    for what, v in results["tokenize (AES-CMAC)"]["alternatives"].items():
        print(f"  tokenize alternative: {what}: {v['values_per_s']:,} values/s")
    result = {
        "benchmark": "masking library, values per second",
        "n": args.n, "baseline_n": args.baseline_n, "repeat_best_of": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pyarrow": pa.__version__,
                    "numpy": np.__version__},
        "presidio": presidio_note,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
