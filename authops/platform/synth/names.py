"""Names of organisations: enterprises (distinct, like real registrations) and medical institutions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from authops.platform.synth import vocab
from authops.platform.synth.arrow import cat, num, take

_WORDS = [w for words in (v[1] for v in vocab.INDUSTRY_WORDS.values()) for w in words]
_WORD_START = np.cumsum([0] + [len(v[1]) for v in vocab.INDUSTRY_WORDS.values()])
# enterprise type index (pools.ENTERPRISE_TYPES) -> organisational-form suffix
_SUFFIX = ("有限公司", "有限公司", "有限公司", "有限公司", "有限公司", "股份有限公司", "股份有限公司", "经营部",
           "合伙企业（普通合伙）", "合伙企业（有限合伙）", "公司", "厂")
_PARTNERSHIP = (8, 9)
_SUFFIX_ID = np.unique(np.array(_SUFFIX), return_inverse=True)[1]


def enterprise_names(rng: np.random.Generator, district: np.ndarray, industry: np.ndarray,
                     etype: np.ndarray) -> pa.Array:
    """"苏州鑫达精密机械有限公司": place + trade name + business word + form, distinct per city.

    Trade names are two characters, or three where two would repeat a name already taken.
    """
    n = len(district)
    k = len(vocab.ZIHAO)
    nwords = np.diff(_WORD_START)
    word = _WORD_START[industry] + (rng.random(n) * nwords[industry]).astype(np.int64)
    word = np.where(np.isin(etype, _PARTNERSHIP), -1, word)
    prefix = np.array([d[2] for d in vocab.DISTRICTS])
    place = np.unique(prefix, return_inverse=True)[1][district]
    c1, c2 = rng.integers(0, k, n), rng.integers(0, k, n)
    c3 = np.zeros(n, dtype=np.int64)  # 0 = no third character
    for _ in range(20):
        key = ((place * (len(_WORDS) + 1) + word + 1) * k + c1) * k * (k + 1) + c2 * (k + 1) + c3
        key = key * len(_SUFFIX) + _SUFFIX_ID[etype]
        _, first = np.unique(key, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        if not dup.any():
            break
        c3[dup] = rng.integers(1, k + 1, int(dup.sum()))
        c1[dup] = rng.integers(0, k, int(dup.sum()))
    else:  # pragma: no cover - 20 rounds of 58^3 choices do not run out at any sane scale
        raise RuntimeError("could not make enterprise names distinct")
    words = take(_WORDS + ["企业管理"], np.where(word < 0, len(_WORDS), word))
    return cat(take(list(prefix), district), take(vocab.ZIHAO, c1), take(vocab.ZIHAO, c2),
               take(("",) + vocab.ZIHAO, c3), words, take(_SUFFIX, etype))


def institution_names(rng: np.random.Generator, kind: np.ndarray, district: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Names by kind (hospital, community health centre, clinic, pharmacy), each distinct; and the
    grade index of the city's well-known hospitals (-1 for the rest)."""
    from authops.platform.synth.pools import HOSPITAL_GRADES

    n = len(kind)
    serial = np.arange(n)
    dcity = [f"苏州市{d[0]}" if d[0].endswith("区") and d[0] != "苏州工业园区" else d[0] for d in vocab.DISTRICTS]
    dshort = [d[0].removesuffix("区").removesuffix("市") if d[0] != "苏州工业园区" else "园区" for d in vocab.DISTRICTS]
    famous = np.full(n, -1, dtype=np.int64)
    hosp = np.flatnonzero(kind == 0)
    nf = min(len(vocab.HOSPITALS), len(hosp))
    famous[hosp[:nf]] = np.arange(nf)
    grade = np.full(n, -1, dtype=np.int64)
    grade[hosp[:nf]] = [HOSPITAL_GRADES.index(g) for _, g in vocab.HOSPITALS[:nf]]
    options = [
        cat(take([h for h, _ in vocab.HOSPITALS] + [""], np.where(famous >= 0, famous, len(vocab.HOSPITALS))),
            take(["", "苏州"], (famous < 0).astype(np.int64)),
            take(["", ""] + list(vocab.ZIHAO), np.where(famous >= 0, 0, 2 + serial % len(vocab.ZIHAO))),
            take(["", ""] + list(vocab.ZIHAO), np.where(famous >= 0, 0, 2 + serial // 7 % len(vocab.ZIHAO))),
            take(["", "医院"], (famous < 0).astype(np.int64))),
        cat(take(dcity, district), take(vocab.ESTATES, serial % len(vocab.ESTATES)), "街道社区卫生服务中心"),
        cat("苏州", take(vocab.ZIHAO, serial % len(vocab.ZIHAO)), take(vocab.ZIHAO, serial // 5 % len(vocab.ZIHAO)),
            take(("口腔", "中医", "综合", "眼科", "医疗美容"), serial % 5), "门诊部"),
        cat("苏州", take(vocab.PHARMACY_CHAINS, serial % len(vocab.PHARMACY_CHAINS)), "大药房",
            take(dshort, district), num(serial), "店"),
    ]
    import pyarrow.compute as pc

    out = options[3]
    for k in (2, 1, 0):
        out = pc.if_else(pa.array(kind == k), options[k], out)
    return out, grade
