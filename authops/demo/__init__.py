"""`authops demo`: the cast of the plan in a fresh data folder, and what each may do.

Later issues extend this story (catalogue, sandbox, products, billing, assessment).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import typer

from authops.core import db
from authops.core.identity import OrgKind
from authops.core.settings import Settings, reset_settings
from authops.platform import bootstrap
from authops.platform.identity import service as identity_service
from authops.policies import permissions

DEMO_PASSWORD = "Demo-2026-authops"  # a demo on synthetic data in a throw-away folder


@dataclass(frozen=True)
class CastMember:
    kind: OrgKind
    code: str
    name_zh: str
    name_en: str
    users: tuple[tuple[str, str, tuple[str, ...]], ...]  # (username, display name, roles)
    uscc: str | None = None  # unified social credit code (the operator selection checks it)


def _uscc(body: str) -> str:
    """A synthetic but well-formed USCC: the 17-character body and its check character."""
    from authops.core.data.identifiers import uscc_check_char

    return body + uscc_check_char(body)


def provider_departments() -> list[tuple[str, str]]:
    """The 16 data-providing departments of the plan's first-batch catalogue (annex 2)."""
    path = resources.files("authops") / "data" / "catalog" / "resources.csv"
    seen: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            seen.setdefault(row["provider_zh"], row["provider_en"])
    return list(seen.items())


def cast() -> list[CastMember]:
    members = [
        CastMember(OrgKind.BUREAU, "szdata", "市数据资源管理局", "Municipal Data Resource Administration Bureau",
                   (("bureau-admin", "局管理员 周敏", ("bureau_admin",)),
                    ("bureau-reviewer", "审核员 陈晓", ("bureau_reviewer",)))),
        CastMember(OrgKind.SUPERVISOR, "drc-price", "市发展改革委价格管理处", "DRC price administration division",
                   (("drc-officer", "价格处 王磊", ("supervisor",)),)),
        CastMember(OrgKind.SUPERVISOR, "cac", "市委网信办", "Municipal Cyberspace Administration",
                   (("cac-officer", "网信办 李娜", ("supervisor",)),)),
        CastMember(OrgKind.OPERATOR, "szdataops", "苏州数据运营有限公司", "Suzhou Data Operations Co., Ltd.",
                   (("ops-admin", "运营 张伟", ("operator_admin",)),
                    ("ops-staff", "运营 刘洋", ("operator_staff",))), _uscc("91320505661234567")),
        CastMember(OrgKind.EXPERT, "experts", "公共数据授权运营专家委员会", "Expert committee",
                   (("expert-1", "专家 孙教授", ("expert",)), ("expert-2", "专家 吴研究员", ("expert",)),
                    ("expert-3", "专家 周律师", ("expert",)))),
        # A second candidate in the operator selection; it scores lower and is not authorized.
        CastMember(OrgKind.OPERATOR, "szcloud", "苏州云数科技有限公司", "Suzhou CloudData Tech Co., Ltd.",
                   (("szcloud-admin", "候选 蒋涛", ("operator_admin",)),), _uscc("91320594723456781")),
        CastMember(OrgKind.PARTNER, "finrisk", "苏州金融风控科技有限公司", "Suzhou FinRisk Tech Co., Ltd.",
                   (("finrisk-admin", "合伙人 赵强", ("partner_admin",)),
                    ("finrisk-eng", "工程师 钱多", ("partner_engineer",)))),
        CastMember(OrgKind.PARTNER, "healthins", "苏州健康保险科技有限公司", "Suzhou HealthIns Tech Co., Ltd.",
                   (("healthins-admin", "合伙人 冯丽", ("partner_admin",)),
                    ("healthins-eng", "工程师 郑浩", ("partner_engineer",)))),
        CastMember(OrgKind.CUSTOMER, "scb", "苏州城市商业银行", "Suzhou City Commercial Bank",
                   (("scb-admin", "银行 何静", ("customer_admin",)),
                    ("scb-dev", "集成 许峰", ("customer_integrator",)))),
        CastMember(OrgKind.CUSTOMER, "pinsure", "苏州人寿保险分公司", "Suzhou Life Insurance Branch",
                   (("pinsure-admin", "保险 吕婷", ("customer_admin",)),
                    ("pinsure-dev", "集成 韩松", ("customer_integrator",)))),
        # The medical-insurance bureau's fund-supervision division, a user of the free supervision product.
        CastMember(OrgKind.CUSTOMER, "ybj", "市医疗保障局基金监管处", "Medical Insurance Bureau, fund supervision",
                   (("ybj-admin", "医保 邵军", ("customer_admin",)),
                    ("ybj-analyst", "医保 谢敏", ("customer_integrator",)))),
        CastMember(OrgKind.AUDITOR, "audit-firm", "苏州信安会计师事务所", "Suzhou Xin'an Audit Firm",
                   (("auditor-1", "审计师 林芳", ("auditor",)),)),
    ]
    for i, (zh, en) in enumerate(provider_departments(), start=1):
        code = f"prov-{i:02d}"
        members.append(CastMember(OrgKind.PROVIDER, code, zh, en,
                                  ((f"{code}-officer", f"{zh} 数据专员", ("provider_admin",)),)))
    return members


def _say(text: str = "", **style) -> None:
    typer.secho(text, **style)


def run(data_dir: Path) -> None:
    started = time.monotonic()
    data_dir = data_dir.expanduser().resolve()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    # The demo is its own embedded installation: its data folder, SQLite, broker.
    os.environ["AUTHOPS_DATA_DIR"] = str(data_dir)
    for key in ("AUTHOPS_DATABASE_URL", "AUTHOPS_BROKER_URL", "AUTHOPS_STORAGE_URL"):
        os.environ.pop(key, None)
    reset_settings()
    settings = Settings()

    _say("authops demo — 公共数据授权运营 (Suzhou model), on synthetic data", bold=True)
    _say(f"data folder: {data_dir}\n")
    _say("1. The cast of the plan", bold=True)
    bootstrap.upgrade_and_seed(settings)
    members = cast()
    with db.session_scope(settings) as session:
        for m in members:
            org = identity_service.create_org(session, kind=m.kind, code=m.code, name_zh=m.name_zh,
                                              name_en=m.name_en, uscc=m.uscc)
            for username, display, roles in m.users:
                identity_service.create_user(session, org=org, username=username, display_name=display,
                                             password=DEMO_PASSWORD, roles=list(roles))
    counts: dict[OrgKind, int] = {}
    for m in members:
        counts[m.kind] = counts.get(m.kind, 0) + 1
    for kind, n in counts.items():
        names = "、".join(m.name_zh for m in members if m.kind == kind)
        _say(f"   {kind.value:10} {n:2}  {names[:110]}{'…' if len(names) > 110 else ''}")
    users = sum(len(m.users) for m in members)
    _say(f"   {len(members)} organisations, {users} users (password for all: {DEMO_PASSWORD})\n")

    _say("2. Who can do what (role × permission, from authops/policies/permissions.py)", bold=True)
    for role in permissions.ROLES.values():
        _say(f"   {role.name:22} {role.zh:12} " + ", ".join(role.actions))
    _say("")
    _say("3. The rules at work, through the real HTTP API", bold=True)
    from authops.demo.checks import run_checks

    run_checks(settings, DEMO_PASSWORD, _say)
    _say(f"\ndemo finished in {time.monotonic() - started:.1f} s", bold=True)
