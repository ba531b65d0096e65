"""Trucks: registration, inspection, violations, accidents, routes, cargo and trip frequency.

Violations and accidents per truck come from the truck pool (pools.SIGNALS): a truck's accident
count rises with its violation count, which is what freight-insurance pricing should pick up.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from authops.platform.synth import text, vocab
from authops.platform.synth.arrow import AS_OF, cat, choice, date_array, num, spread_times, take, ts_array
from authops.platform.synth.columns import Rows
from authops.platform.synth.registry import builder, per_entity

HIGHWAYS = ("G2京沪高速", "G15沈海高速", "G42沪蓉高速", "G1522常台高速", "S17苏台高速", "S58沪宜高速", "G524国道",
            "G312国道", "S227省道", "G4221沪武高速")
VIOLATIONS = ("超速行驶", "货车超载", "违反禁令标志指示", "不按规定车道行驶", "货车违反限行规定", "违法停车", "闯红灯",
              "未按规定使用安全带", "驾驶时拨打接听手持电话", "疲劳驾驶", "未按规定定期进行安全技术检验", "遮挡污损号牌",
              "逆向行驶", "不按规定避让行人")
VIOLATION_W = (22, 8, 14, 16, 12, 9, 4, 5, 3, 2, 1, 1, 1, 2)
ACCIDENTS = ("追尾碰撞", "侧面碰撞", "正面碰撞", "刮擦", "碰撞行人", "碰撞非机动车", "撞固定物", "翻车", "坠车", "失火",
             "碾压", "其他")
ACCIDENT_W = (30, 18, 5, 25, 3, 6, 6, 2, 0.5, 0.5, 1, 3)
CARGO = ("普通货物", "集装箱", "冷藏保鲜货物", "危险货物", "大件货物", "快递包裹", "建筑材料", "钢材", "煤炭", "粮食",
         "机械设备", "电子产品", "日用百货", "汽车零部件", "化工原料（非危险品）")


def _locations(w, rng: np.random.Generator, n: int) -> pa.Array:
    """Half on highways ("G2京沪高速K1123+400"), half at city crossings ("昆山市前进西路与...交叉口")."""
    roads = [(d[0], r) for d in vocab.DISTRICTS for r in d[5]]
    a, b = rng.integers(0, len(roads), n), rng.integers(0, len(roads), n)
    highway = cat(take(HIGHWAYS, rng.integers(0, len(HIGHWAYS), n)), "K", num(rng.integers(1, 1300, n)), "+",
                  num(rng.integers(0, 10, n) * 100, 3))
    city = cat(take([f"江苏省苏州市{d}{r}" for d, r in roads], a), "与", take([r for _, r in roads], b), "交叉口")
    import pyarrow.compute as pc

    return pc.if_else(pa.array(rng.random(n) < 0.5), highway, city)


@builder("vehicle_basic_info")
def basic(w, defn, rng):
    veh = w.vehicles
    return Rows(veh.n, v=np.arange(veh.n), e=veh.owner)


@builder("vehicle_annual_inspection")
def inspection(w, defn, rng):
    veh = w.vehicles
    since = np.maximum(veh.registered, AS_OF - np.timedelta64(365, "D"))
    span = (AS_OF - since).astype(np.int64)
    last = since + (rng.random(veh.n) * span).astype("timedelta64[D]")
    overdue = rng.random(veh.n) < 0.04 * (veh.violations > 3)  # a few risky trucks skip a year
    last = np.where(overdue & (veh.registered < last - np.timedelta64(400, "D")), last - np.timedelta64(400, "D"),
                    last)
    return Rows(veh.n, v=np.arange(veh.n), cols={"last_inspection_date": date_array(last)})


def _events(w, rng, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = per_entity(counts)
    used = np.flatnonzero(counts)
    times = spread_times(rng, counts[used], np.maximum(w.vehicles.registered[used], np.datetime64("2022-07-01")),
                         str(AS_OF))
    return v, times


@builder("truck_violations")
def violations(w, defn, rng):
    v, times = _events(w, rng, w.vehicles.violations)
    n = len(v)
    return Rows(n, v=v, cols={"violation_time": ts_array(times),
                              "violation_type": take(VIOLATIONS, choice(rng, len(VIOLATIONS), n, VIOLATION_W)),
                              "violation_location": _locations(w, rng, n)})


@builder("vehicle_accident_history")
def accidents(w, defn, rng):
    v, times = _events(w, rng, w.vehicles.accidents)
    n = len(v)
    return Rows(n, v=v, cols={"accident_time": ts_array(times),
                              "accident_type": take(ACCIDENTS, choice(rng, len(ACCIDENTS), n, ACCIDENT_W)),
                              "accident_location": _locations(w, rng, n)})


@builder("truck_routes")
def routes(w, defn, rng):
    r = Rows(w.vehicles.n, v=np.arange(w.vehicles.n))
    r.cols = {"transport_route": text.render(w, "transport_route", r, rng)}
    return r


@builder("truck_cargo_types")
def cargo(w, defn, rng):
    veh = w.vehicles
    n = veh.n
    general = choice(rng, len(CARGO), n, (25, 12, 6, 0, 2, 10, 8, 6, 2, 3, 6, 6, 7, 6, 1))
    kind = np.select([veh.vtype == 5, veh.vtype == 4], [3, 6], general)  # tankers: dangerous goods; tippers: building
    return Rows(n, v=np.arange(n), cols={"cargo_type": take(CARGO, kind)})


@builder("truck_transport_frequency")
def frequency(w, defn, rng):
    veh = w.vehicles
    trips = rng.poisson(12 + 2.0 * veh.violations)  # trips a month: more time on the road, more tickets
    return Rows(veh.n, v=np.arange(veh.n), cols={"transport_frequency": pa.array(trips.astype(np.int64))})
