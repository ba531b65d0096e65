"""The attacks themselves: partner code, specs and the attacker's decoding, shared by the tests in
this folder and by `bench/privacy.py`, which runs them at a larger size and prints the figures."""

from __future__ import annotations

import datetime as dt
import hashlib
import math

import numpy as np
import pyarrow as pa

from authops.core.data.identifiers import resident_id_check_char
from tests.attacks.world import REGION, YEAR

# --- re-identification from a record release --------------------------------------------------------

RECORD_COLUMNS = ["id_number", "sex", "birth_date", "district", "income", "arrears"]


def record_spec(code: str, columns: list[str], qis: list[str], k: int) -> dict:
    return {"spec_version": 1, "name": "arrears_rows", "params": {},
            "inputs": [{"resource": code, "version": 1, "fields": columns}],
            "outputs": [{"name": "rows", "release": {"policy": "record", "columns": columns, "k": k,
                                                     "quasi_identifiers": qis}}]}


def _month(v) -> str | None:
    return None if v is None else str(v)[:7]


def neighbour_attack(rows: pa.Table, release: pa.Table | None, known: list[str], targets: np.ndarray
                     ) -> tuple[float, float]:
    """What a neighbour knows of each target (`known` columns, a birth date as its month) looked up
    in the release: (share matched by exactly one row, share whose arrears flag is then read right)."""
    if release is None or release.num_rows == 0:
        return 0.0, 0.0
    rel = [tuple(_month(x) if c == "birth_date" else x for c, x in zip(known, r))
           for r in zip(*(release.column(c).to_pylist() for c in known))]
    flags = release.column("arrears").to_pylist()
    index: dict[tuple, list[int]] = {}
    for i, key in enumerate(rel):
        index.setdefault(key, []).append(i)
    matched = right = 0
    for t in targets:
        key = tuple(_month(rows.column(c)[int(t)].as_py()) if c == "birth_date" else rows.column(c)[int(t)].as_py()
                    for c in known)
        hits = index.get(key, [])
        if len(hits) == 1:
            matched += 1
            right += int(flags[hits[0]] == rows.column("arrears")[int(t)].as_py())
    return matched / len(targets), right / len(targets)


# --- aggregates: averaging and reconstruction --------------------------------------------------------

def count_spec(code: str, epsilon: float) -> dict:
    return {"spec_version": 1, "name": "arrears_by_district", "params": {},
            "inputs": [{"alias": "p", "resource": code, "version": 1, "fields": ["id_number", "district", "arrears"]}],
            "steps": [{"filter": "arrears"}],
            "outputs": [{"name": "n", "release": {"policy": "aggregate", "group_by": ["district"],
                                                  "measures": [{"name": "people", "fn": "count"}],
                                                  "epsilon": epsilon, "min_cell": 1}}]}


def without_ledger(session, db_settings, spec: dict, folder, output: str):
    """(the platform's own bounded aggregation of `output`, its DP spec): released any number of
    times, which is what the budget ledger forbids."""
    from authops.platform.sandbox import jobs
    from authops.sandbox.dp import partial_aggregate
    from authops.sandbox.spec.execute import lazy_outputs
    from authops.sandbox.spec.outputs import aggregate_spec

    planned = jobs.Planned(session, "spec", spec, None)
    folder.chmod(0o700)
    inputs = jobs._decrypt_inputs(session, db_settings, planned, folder, project=False)
    lazies = lazy_outputs(planned.plan, {a: str(p) for a, p in inputs.items()}, {})
    s = aggregate_spec(planned.outputs[output])
    return partial_aggregate(lazies[output], s), s


PER_JOB = 15  # subset-sum queries per job (a spec has at most 16 outputs)


def subset_spec(code: str, ids: list[str], A: np.ndarray, first: int, epsilon_each: float) -> dict:
    """Queries first … first+PER_JOB-1: each the noisy number owing among a subset of the named people."""
    steps: list[dict] = [{"filter": "id_number in (" + ", ".join(f"'{i}'" for i in ids) + ")"},
                         {"derive": {"name": "owes", "expr": "case when arrears then 1 else 0 end"}}]
    outputs = []
    for j in range(first, min(first + PER_JOB, len(A))):
        members = ", ".join(f"'{ids[i]}'" for i in np.flatnonzero(A[j]))
        expr = f"case when id_number in ({members}) then 'in' else 'out' end"
        steps.append({"derive": {"name": f"q{j}", "expr": expr}})
        outputs.append({"name": f"q{j}", "release": {
            "policy": "aggregate", "group_by": [f"q{j}"],
            "measures": [{"name": "owing", "fn": "sum", "column": "owes", "bounds": [0, 1]}],
            "epsilon": epsilon_each, "min_cell": 1}})
    return {"spec_version": 1, "name": "subset_sums", "params": {},
            "inputs": [{"alias": "p", "resource": code, "version": 1, "fields": ["id_number", "arrears"]}],
            "steps": steps, "outputs": outputs}


def epsilon_each(budget: float, queries: int) -> float:
    """The budget split over the queries, rounded down to whole micro-ε (the ledger's unit, which
    rounds a job's need up): the attacker spends it all and not a micro-ε more."""
    return math.floor(budget / queries * 1_000_000) / 1_000_000


def reconstruct(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The attacker's least-squares solution, rounded to bits (Dinur-Nissim with an L2 decoder)."""
    x, *_ = np.linalg.lstsq(A, y, rcond=None)
    return (x > 0.5).astype(int)


def cells(table: pa.Table, key: str, value: str) -> dict:
    return dict(zip(table.column(key).to_pylist(), table.column(value).to_pylist()))


# --- tokens --------------------------------------------------------------------------------------------

def roster_spec(code: str) -> dict:
    return record_spec(code, ["id_number", "district"], ["district"], 5)


def candidates() -> list[str]:
    """Every valid resident ID of the region born in YEAR: what a brute-force attacker enumerates."""
    out = []
    day = dt.date(YEAR, 1, 1)
    while day.year == YEAR:
        for seq in range(1000):
            body = f"{REGION}{day:%Y%m%d}{seq:03d}"
            out.append(body + resident_id_check_char(body))
        day += dt.timedelta(days=1)
    return out


def unkeyed(values) -> list[str]:
    return [hashlib.sha256(v.encode()).hexdigest() for v in values]


# --- partner code -----------------------------------------------------------------------------------------

def manifest(code: str, fields: list[str], outputs: dict[str, dict], time_limit: int | None = None) -> dict:
    m = {"name": "attack", "inputs": [{"alias": "people", "resource": code, "version": 1, "fields": fields}],
         "outputs": [{"name": n, "release": r} for n, r in outputs.items()]}
    return m | ({"time_limit": time_limit} if time_limit else {})


SCORE = {"policy": "model", "score": "score", "bounds": [0, 1]}  # one bounded score, no key
MODEL = {"policy": "model", "key": "id_number", "score": "score", "bounds": [0, 1]}

# The error channel: 8 bits of the data chosen as the line the code fails at.
ERROR_CODE = """
def run(inputs, params):
    df = inputs["people"]
    v = int(df.loc[df["arrears"], "income"].sum() // 100) % 256  # 8 bits of the data
""" + "\n".join(f"    if v == {i}: raise ValueError" for i in range(256)) + "\n"
ERROR_FIRST_LINE = 5  # the line of `if v == 0`


def error_secret(rows: pa.Table) -> int:
    income, owes = np.asarray(rows.column("income")), np.asarray(rows.column("arrears"))
    return int(income[owes].sum() // 100) % 256


# The timing channel: one bit of one person's income as 2.5 s of sleep.
TIMING_CODE = """
import time
import pandas as pd

def run(inputs, params):
    bit = int(inputs["people"]["income"].iloc[params["row"]]) // 100 % 2  # one bit of one person's income
    if bit:
        time.sleep(2.5)
    return {"s": pd.DataFrame({"score": [0.5]})}
"""


def timing_bit(income: int) -> int:
    return income // 100 % 2


def decode_durations(durations: list[float], gap: float = 1.25) -> list[int] | None:
    """The attacker's reading: long runs are 1s, if long and short runs can be told apart at all."""
    lo, hi = min(durations), max(durations)
    if hi - lo < gap:
        return None  # no signal: every run took the same time
    return [int(d > (lo + hi) / 2) for d in durations]


# Values and row counts the release policy admits: birth dates as scores, surnames as which rows.
SMUGGLER = """
import pandas as pd

def run(inputs, params):
    df = inputs["people"]
    ids = df["id_number"]
    year = ids.str[6:10].astype(int) / 10000   # "scores" that are really birth dates
    mmdd = ids.str[10:14].astype(int) / 10000
    zhang = df[df["name"].str.startswith("张")]   # rows for people surnamed 张 only
    return {"year": pd.DataFrame({"id_number": ids, "score": year}),
            "mmdd": pd.DataFrame({"id_number": ids, "score": mmdd}),
            "zhang": pd.DataFrame({"id_number": zhang["id_number"], "score": 0.5})}
"""
SMUGGLER_OUTPUTS = {"year": MODEL, "mmdd": MODEL, "zhang": MODEL}
SMUGGLER_FIELDS = ["id_number", "name", "income"]

# An honest model: a score of what people did, keys passed through.
SCORER = """
import pandas as pd

def run(inputs, params):
    df = inputs["people"]
    return {"s": pd.DataFrame({"id_number": df["id_number"], "score": df["income"].rank(pct=True)})}
"""

# The tokenizer as an oracle: keys that are guesses, not subjects of the inputs.
ORACLE = """
import pandas as pd

def run(inputs, params):
    return {"s": pd.DataFrame({"id_number": params["guesses"], "score": 0.0})}
"""

# Another tenant's scratch: A writes what it read to its /tmp and holds on; B searches for it.
WRITER = """
import time
import pandas as pd

def run(inputs, params):
    df = inputs["people"]
    with open("/tmp/scratch-" + params["marker"] + ".csv", "w") as f:   # A's scratch: what it read
        df.to_csv(f)
    time.sleep(params["hold"])
    return {"s": pd.DataFrame({"score": [0.5]})}
"""

PROBE = r'''
import glob, os

def probe(marker):
    found = []
    def look(where, path):
        try:
            if os.path.isfile(path) and os.access(path, os.R_OK):
                with open(path, "rb") as f:
                    f.read(64)
                found.append((where, path))
        except OSError:
            pass
    for path in glob.glob("/tmp/*") + glob.glob("/var/tmp/*") + glob.glob("/run/**", recursive=True):
        if marker in path:
            look("tmp", path)
    for path in glob.glob("/dev/shm/**", recursive=True):  # where the worker decrypts inputs
        if "authops-job-" in path and path.endswith(".parquet"):
            look("decrypted input", path)
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        for sub in ("root/tmp", "cwd"):
            try:
                names = os.listdir(f"/proc/{pid}/{sub}")
            except OSError:
                continue
            for name in names:
                if marker in name:
                    look("other process", f"/proc/{pid}/{sub}/{name}")
    skip = {"/proc", "/sys", "/usr", "/dev", "/work", "/root", "/home", "/opt", "/var/lib", "/var/cache"}
    for top, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip and d not in (".venv", "site-packages")]
        for name in files:
            if marker in name:
                look("file tree", os.path.join(top, name))
    return sorted(set(found))
'''

JAILED_PROBE = PROBE + """
import pandas as pd

def run(inputs, params):
    return {"result": pd.DataFrame(probe(params["marker"]) or [("none", "")], columns=["where", "path"])}
"""
