"""The attack suite's world: a person-level resource of residents loaded through the real catalogue
and ingestion (encrypted, versioned), partners with workspaces on it, and helpers to run jobs.

The data are synthetic but shaped like the real thing: valid resident ID numbers (GB 11643) in a
narrow region and birth-year range (so an unkeyed hash of them could be brute-forced), names,
mobile numbers, sex, birth date, district, income and an arrears flag (the secret attribute).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from itertools import count

import numpy as np
import pyarrow as pa
from sqlmodel import Session

from authops.core.data.identifiers import resident_id_check_char
from authops.core.data.schema import Check, FieldSpec, Grade, Kind, PrivacyUnit, ResourceSchema
from authops.core.identity import OrgKind
from authops.core.jobs import service as job_service
from authops.core.jobs.models import Job
from authops.core.settings import Settings
from authops.core.storage.store import get_object_store
from authops.platform.catalog import ingest
from authops.platform.sandbox import jobs
from authops.platform.sandbox import workspace as ws_service
from authops.policies import budget
from authops.sandbox.models import Workspace
from tests.support.builders import make_org
from tests.support.catalog import ACTOR, make_resource

_n = count(1)
REGION = "320502"  # 苏州市沧浪区: every ID starts with it
YEAR = 1985  # and every birth date falls in it: 366 × 1,000 candidate IDs in all
DISTRICTS = ("姑苏区", "虎丘区", "吴中区", "相城区", "吴江区", "工业园区", "常熟市", "张家港市")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"

SCHEMA = ResourceSchema(
    fields=(
        FieldSpec(name="id_number", name_zh="身份证号码", kind=Kind.IDENTIFIER_PERSON, grade=Grade.L4, pii=True,
                  required=True, check=Check.RESIDENT_ID),
        FieldSpec(name="name", name_zh="姓名", kind=Kind.NAME_PERSON, grade=Grade.L3, pii=True),
        FieldSpec(name="phone", name_zh="手机号码", kind=Kind.PHONE, grade=Grade.L3, pii=True, check=Check.PHONE),
        FieldSpec(name="sex", name_zh="性别", kind=Kind.CATEGORY, grade=Grade.L2, enum=("男", "女")),
        FieldSpec(name="birth_date", name_zh="出生日期", kind=Kind.DATE, grade=Grade.L2),
        FieldSpec(name="district", name_zh="户籍区县", kind=Kind.CATEGORY, grade=Grade.L2, enum=DISTRICTS),
        FieldSpec(name="income", name_zh="年收入", kind=Kind.MONEY, grade=Grade.L3),
        FieldSpec(name="arrears", name_zh="是否欠缴", kind=Kind.FLAG, grade=Grade.L3),
    ),
    key=("id_number",), privacy_unit=PrivacyUnit.PERSON, unit_field="id_number")


def residents(n: int, seed: int = 7, *, wide_births: bool = False) -> pa.Table:
    """n residents with distinct valid IDs. wide_births spreads birth dates over 1950-1999 (the ID
    numbers then follow them) instead of YEAR alone."""
    rng = np.random.default_rng(seed)
    if wide_births:
        days = rng.integers(0, (dt.date(1999, 12, 31) - dt.date(1950, 1, 1)).days, n)
        births = [dt.date(1950, 1, 1) + dt.timedelta(days=int(d)) for d in days]
    else:
        births = [dt.date(YEAR, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, n)]
    sex = rng.choice(["男", "女"], n)
    ids, seen = [], set()
    for b, s in zip(births, sex):
        while True:  # a sequence number not yet taken on that birth date: distinct IDs
            q = int(rng.integers(0, 500))
            if (b, q) not in seen:
                seen.add((b, q))
                break
        body = f"{REGION}{b:%Y%m%d}{2 * q + (1 if s == '男' else 0):03d}"  # odd 17th digit: male
        ids.append(body + resident_id_check_char(body))
    names = [SURNAMES[a] + GIVEN[b] + (GIVEN[c] if c < len(GIVEN) else "")
             for a, b, c in zip(rng.integers(0, len(SURNAMES), n), rng.integers(0, len(GIVEN), n),
                                rng.integers(0, 2 * len(GIVEN), n))]
    phones = [f"1{rng.choice([39, 38, 58, 86])}{x:08d}" for x in rng.choice(10**8, n, replace=False)]
    district = rng.choice(DISTRICTS, n, p=[0.25, 0.15, 0.15, 0.1, 0.1, 0.1, 0.1, 0.05])
    income = (rng.lognormal(11, 0.6, n) * 100).astype(np.int64)  # fen
    arrears = rng.random(n) < 0.3
    return pa.table({"id_number": ids, "name": names, "phone": phones, "sex": sex,
                     "birth_date": pa.array(births, pa.date32()), "district": district, "income": income,
                     "arrears": arrears})


@dataclass
class Lab:
    code: str  # the resource
    rows: pa.Table  # what was loaded (the test knows the truth; the partner never sees it)
    partner: object
    ws: Workspace


def load(session: Session, settings: Settings, rows: pa.Table) -> tuple[str, pa.Table]:
    """(resource code, the rows as stored: decrypted from the dataset, in its order and types)."""
    from authops.core.data.datasets import read_dataset
    from authops.platform.catalog.models import Dataset

    provider = make_org(session, OrgKind.PROVIDER)
    res = make_resource(session, provider, code=f"residents_{next(_n)}", schema=SCHEMA)
    run = ingest.new_run(session, res, path="bulk", mode="replace", actor=ACTOR)
    run = ingest.load(session, get_object_store(settings), res, rows, run=run, actor=ACTOR)
    assert run.state == "succeeded", run.message
    session.commit()
    session.refresh(res)
    stored = read_dataset(get_object_store(settings), session.get(Dataset, res.dataset_id).object_key)
    return res.code, stored


def lab(session: Session, code: str, rows: pa.Table, *, epsilon: float = 1.0, partner=None) -> Lab:
    """A partner (new unless given) with a workspace granted every field of the resource, and a budget."""
    partner = partner or make_org(session, OrgKind.PARTNER)
    ws = ws_service.create_workspace(session, org_id=partner.id, name=f"attack lab {next(_n)}",
                                     grants=[{"resource": code}], actor=ACTOR, readers=[partner.id])
    budget.set_budget(session, org_id=partner.id, resource_code=code, epsilon=epsilon, actor=ACTOR)
    session.commit()
    return Lab(code, rows, partner, ws)


def submit(session: Session, lab: Lab, **kw) -> int:
    _, job = jobs.submit_job(session, ws=lab.ws, actor=ACTOR, **kw)
    session.commit()
    return job.id


def run(settings: Settings, job_id: int) -> Job:
    outcome = job_service.run_job(settings, job_id, worker="attack-test")
    assert outcome in ("succeeded", "failed"), outcome
    from authops.core.db import session_scope

    with session_scope(settings) as s:
        return job_service.get_job(s, job_id)


def released(session: Session, settings: Settings, lab: Lab, job_id: int, output: str) -> pa.Table:
    session.expire_all()
    return jobs.read_release(session, settings, job_id, output, reader_org=lab.partner.id, limit=10**6)[1]


def figures(title: str, **values) -> None:
    """Print an attack's figures (pytest -s shows them; bench/privacy.py prints them at scale)."""
    print(f"\n[attack] {title}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
