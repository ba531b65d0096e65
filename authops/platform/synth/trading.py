"""Public-resource trading: tenders with bidders and winners, and the announcements built on them.

One set of tender projects (shared through the world) feeds tendering_bidding_records, the bid
award and procurement announcements and the contracts, so a "bid loan" product sees the same
winner, amount and date in each. The remaining notices are filled from templates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from authops.platform.synth import text, vocab
from authops.platform.synth.arrow import (
    AS_OF, cat, choice, date_zh, num, office_time, take, ts_array, yuan)
from authops.platform.synth.columns import Rows
from authops.platform.synth.registry import builder

METHODS = ("公开招标", "邀请招标", "竞争性谈判", "竞争性磋商", "单一来源采购", "询价", "框架协议采购")


@dataclass
class Projects:
    n: int
    number: pa.Array
    name: pa.Array
    procurer: pa.Array
    works: np.ndarray  # construction works (else goods and services)
    budget: np.ndarray  # fen
    award: np.ndarray  # fen
    winner: np.ndarray  # enterprise index
    published: np.ndarray  # datetime64[us]
    method: np.ndarray


def projects(w) -> Projects:
    def make():
        ent, rng = w.enterprises, w.rng("projects")
        n = w.count(20_000, 30)
        works = rng.random(n) < 0.45
        builders = np.flatnonzero(ent.of("建筑业"))
        builders = builders if len(builders) else np.arange(ent.n)
        other = np.flatnonzero(~ent.default) if (~ent.default).any() else np.arange(ent.n)
        winner = np.where(works, builders[rng.integers(0, len(builders), n)], other[rng.integers(0, len(other), n)])
        budget = np.round(np.exp(rng.normal(np.where(works, 15.5, 13.3), 1.1, n)), -3).astype(np.int64) * 100
        days = np.datetime64("2022-01-01") + rng.integers(0, int((AS_OF - np.datetime64("2022-01-31")).astype(
            np.int64)), n).astype("timedelta64[D]")
        procurer = rng.integers(0, len(vocab.PROCURERS), n)
        kind = rng.integers(0, len(text.PHRASES["project_kind"]), n)
        goods = rng.integers(0, len(text.PHRASES["goods"]), n)
        service = rng.integers(0, len(text.PHRASES["service"]), n)
        bought = pc.if_else(pa.array(rng.random(n) < 0.5), cat(take(text.PHRASES["goods"], goods), "采购项目"),
                            take(text.PHRASES["service"], service))
        name = pc.if_else(pa.array(works), cat(take(text.PHRASES["district"], rng.integers(0, 10, n)),
                                               take(text.PHRASES["project_kind"], kind)),
                          cat(take(vocab.PROCURERS, procurer), bought))
        year = days.astype("datetime64[Y]").astype(np.int64) + 1970
        number = cat(take(("JSGC", "ZFCG"), (~works).astype(np.int64)), num(year), "-", num(w.serial(np.arange(n)), 6))
        return Projects(n=n, number=number, name=name, procurer=take(vocab.PROCURERS, procurer), works=works,
                        budget=budget, award=(budget * rng.uniform(0.82, 0.99, n)).astype(np.int64) // 100 * 100,
                        winner=winner, published=office_time(rng, days),
                        method=np.where(works, choice(rng, 2, n, (90, 10)),
                                        choice(rng, 7, n, (45, 2, 8, 25, 5, 10, 5))))
    return w.memo("projects", make)


@builder("tendering_bidding_records")
def tenders(w, defn, rng):
    pj, ent = projects(w), w.enterprises
    n = pj.n
    rivals = [take(ent.name, rng.integers(0, ent.n, n)) for _ in range(3)]
    count = rng.integers(1, 4, n)
    parts = [take(ent.name, pj.winner)]
    for k, rival in enumerate(rivals):
        more = pa.array(count > k)
        parts += [take(["", "、"], (count > k).astype(np.int64)), pc.if_else(more, rival, pa.scalar("", pa.string()))]
    deadline = pj.published + (rng.integers(20, 35, n) * 86_400_000_000).astype("timedelta64[us]")
    r = Rows(n, e=pj.winner, at=pj.published.astype("datetime64[D]"))
    r.cols = {"project_number": pj.number, "project_name": pj.name, "budget_amount": pa.array(pj.budget),
              "published_at": ts_array(pj.published), "procuring_entity": pj.procurer,
              "winning_bidder": take(ent.name, pj.winner), "winning_bid_amount": pa.array(pj.award),
              "tender_method": take(METHODS, pj.method), "bidder_list": cat(*parts),
              "bid_submission_time": ts_array(deadline), "bid_opening_time": ts_array(deadline),
              "evaluation_result": text.render(w, "evaluation_result", r, rng)}
    return r


def _notice(pj: Projects, ent, pick: np.ndarray, *parts) -> pa.Array:
    return cat(*[p(pick) if callable(p) else p for p in parts])


@builder("bid_award_announcements", "project_contracts", "construction_project_announcements",
         "government_procurement_announcements")
def project_notices(w, defn, rng):
    pj, ent = projects(w), w.enterprises
    name = lambda k: pj.name.take(pa.array(k))  # noqa: E731
    procurer = lambda k: pj.procurer.take(pa.array(k))  # noqa: E731
    winner = lambda k: take(ent.name, pj.winner[k])  # noqa: E731
    when = lambda k: date_zh(pj.published[k].astype("datetime64[D]") + np.timedelta64(30, "D"))  # noqa: E731
    if defn.code == "bid_award_announcements":
        k = np.arange(pj.n)
        value = _notice(pj, ent, k, name, "中标结果公告：采购人", procurer, "，中标单位", winner, "，中标金额",
                        lambda k: yuan(pj.award[k], "万元"), "，公告日期", when)
    elif defn.code == "project_contracts":
        k = np.flatnonzero(rng.random(pj.n) < 0.75)
        value = _notice(pj, ent, k, procurer, "与", winner, "签订《", name, "》合同，合同金额",
                        lambda k: yuan(pj.award[k], "万元"), "，签订日期", when)
    elif defn.code == "construction_project_announcements":
        k = np.flatnonzero(pj.works)
        value = _notice(pj, ent, k, name, "施工招标公告：招标人", procurer, "，最高投标限价",
                        lambda k: yuan(pj.budget[k], "万元"), "，投标截止时间",
                        lambda k: date_zh(pj.published[k].astype("datetime64[D]") + np.timedelta64(20, "D")))
    else:
        k = np.flatnonzero(~pj.works)
        value = _notice(pj, ent, k, name, take(METHODS, pj.method[k]), "公告：采购人", procurer, "，预算金额",
                        lambda k: yuan(pj.budget[k], "万元"), "，获取采购文件截止",
                        lambda k: date_zh(pj.published[k].astype("datetime64[D]") + np.timedelta64(10, "D")))
    field = defn.schema.fields[0].name
    return Rows(len(k), cols={field: value})


@builder("trading_penalties", "other_trading_info", "land_use_right_announcements", "bidding_objections")
def template_notices(w, defn, rng):
    base = {"trading_penalties": 2_000, "other_trading_info": 5_000, "land_use_right_announcements": 3_000,
            "bidding_objections": 1_000}[defn.code]
    n = w.count(base, 10)
    ent = w.enterprises
    r = Rows(n, e=rng.integers(0, ent.n, n), at=np.datetime64("2022-01-01") + rng.integers(0, 1200, n).astype(
        "timedelta64[D]"))
    field = defn.schema.fields[0]
    r.cols = {field.name: text.render(w, field.name, r, rng)}
    return r
