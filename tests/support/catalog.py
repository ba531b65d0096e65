"""Catalogue builders: a small person-level resource with valid and invalid rows."""

from __future__ import annotations

from itertools import count

import pyarrow as pa
from sqlmodel import Session

from authops.audit import log as audit_log
from authops.core.data.schema import (
    Check,
    FieldSpec,
    Grade,
    Kind,
    PrivacyUnit,
    ProvisionMode,
    ResourceSchema,
    ShareMode,
    UpdateCycle,
)
from authops.platform.catalog import service
from authops.platform.catalog.models import DataResource
from authops.platform.identity.models import Organisation

_seq = count(1)
ACTOR = audit_log.Actor(kind="system", name="tests")

# Valid resident IDs (GB 11643 check digits), names and phones that must never appear in clear.
IDS = ["11010519491231002X", "32050219880715001X", "320505199203082240", "320583197511300035"]
NAMES = ["张三丰", "李小龙", "王语嫣", "赵敏敏"]
PHONES = ["13912345678", "13800001111", "15055556666", "18912340000"]

PERSON_SCHEMA = ResourceSchema(
    fields=(
        FieldSpec(name="id_number", name_zh="身份证号码", kind=Kind.IDENTIFIER_PERSON, grade=Grade.L4, pii=True,
                  required=True, check=Check.RESIDENT_ID),
        FieldSpec(name="name", name_zh="姓名", kind=Kind.NAME_PERSON, grade=Grade.L4, pii=True),
        FieldSpec(name="phone", name_zh="联系电话", kind=Kind.PHONE, grade=Grade.L4, pii=True, check=Check.PHONE),
        FieldSpec(name="sex", name_zh="性别", kind=Kind.CATEGORY, grade=Grade.L4, enum=("男", "女")),
        FieldSpec(name="paid", name_zh="缴费金额", kind=Kind.MONEY, grade=Grade.L4),
        FieldSpec(name="paid_on", name_zh="缴费日期", kind=Kind.DATE, grade=Grade.L4),
    ),
    key=("id_number",), privacy_unit=PrivacyUnit.PERSON, unit_field="id_number")


def person_rows(n: int = 4) -> pa.Table:
    return pa.table({"id_number": IDS[:n], "name": NAMES[:n], "phone": PHONES[:n], "sex": ["男", "男", "女", "女"][:n],
                     "paid": ["1234.56", "10", "0.5", "99999.99"][:n],
                     "paid_on": ["2025-01-31", "2025-02-28", "2025-03-31", "2025-04-30"][:n]})


def make_resource(session: Session, org: Organisation, code: str | None = None,
                  schema: ResourceSchema = PERSON_SCHEMA, cycle: UpdateCycle = UpdateCycle.MONTHLY) -> DataResource:
    return service.register_resource(
        session, org=org, code=code or f"persons_{next(_seq)}", name_zh="测试人员缴费", name_en="Test payments",
        description="", grade=Grade.L4, schema=schema, share_modes=(ShareMode.VERIFY, ShareMode.QUERY),
        provision_modes=(ProvisionMode.EXCEL, ProvisionMode.TABLE), update_cycle=cycle, actor=ACTOR)
