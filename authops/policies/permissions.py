"""The permission matrix: which role may do which action. The single source of truth.

The README's role matrix, the casbin policies seeded into the database, the checks on
every route and the API-key scopes are all derived from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from authops.core.identity import OrgKind


@dataclass(frozen=True)
class Action:
    name: str
    area: str
    zh: str
    en: str
    # Cross-organisation actions see every organisation's objects (bureau, supervisors, auditors).
    cross_org: bool = False


@dataclass(frozen=True)
class Role:
    name: str
    org_kind: OrgKind
    zh: str
    en: str
    actions: tuple[str, ...]


def _a(name: str, area: str, zh: str, en: str, cross_org: bool = False) -> Action:
    return Action(name, area, zh, en, cross_org)


ACTIONS: dict[str, Action] = {a.name: a for a in [
    # identity and administration
    _a("self.read", "identity", "查看本人信息", "Read own profile"),
    _a("org.read", "identity", "查看本单位", "Read own organisation"),
    _a("org.read_all", "identity", "查看所有单位", "Read all organisations", cross_org=True),
    _a("org.manage", "identity", "登记和停用单位", "Register and deactivate organisations", cross_org=True),
    _a("user.read", "identity", "查看本单位用户", "Read own organisation's users"),
    _a("user.manage", "identity", "管理本单位用户和角色", "Manage own organisation's users and roles"),
    _a("apikey.manage", "identity", "管理本单位 API 密钥", "Manage own organisation's API keys"),
    _a("job.submit", "jobs", "提交后台作业", "Submit background jobs"),
    _a("job.read", "jobs", "查看本单位作业", "Read own organisation's jobs"),
    _a("system.read", "operations", "查看系统运行状态", "Read system status", cross_org=True),
    # the plan's workflows (routes arrive with later issues; the matrix is fixed now)
    _a("catalog.read", "catalogue", "查看数据目录", "Read the data catalogue"),
    _a("catalog.register", "catalogue", "登记数据资源", "Register data resources"),
    _a("data.ingest", "catalogue", "汇聚和更新数据", "Load and update data"),
    _a("todo.read", "governance", "查看待办和通知", "Read own to-do list and notifications"),
    _a("webhook.manage", "governance", "管理通知回调", "Manage notification webhooks"),
    _a("operator.apply", "governance", "申请授权运营、续期和退出", "Apply for, renew or exit the operator authorization"),
    _a("authorization.manage", "governance", "遴选、公示、授权、续期和退出管理",
       "Run operator selection, publicity, authorization, renewal and exit", cross_org=True),
    _a("partner.recruit", "governance", "招募生态合伙人", "Recruit partners and review their applications",
       cross_org=True),
    _a("partner.apply", "governance", "申请成为合伙人", "Apply to become a partner"),
    _a("tool.apply", "governance", "申请部署自有工具", "Apply to deploy an own tool"),
    _a("consent.submit", "governance", "提交个人授权", "Submit subjects' consent records"),
    _a("scenario.submit", "governance", "提交场景申请", "Submit scenario applications"),
    _a("review.provider", "governance", "数源部门初审", "First-level (provider) review"),
    _a("review.expert", "governance", "专家评审", "Expert review"),
    _a("review.final", "governance", "数据局终审", "Final (bureau) review", cross_org=True),
    _a("sandbox.use", "sandbox", "沙箱开发", "Develop in the sandbox"),
    _a("workspace.manage", "sandbox", "开通和停用沙箱工作区", "Open, scope and suspend sandbox workspaces",
       cross_org=True),
    _a("budget.manage", "sandbox", "设定和提高隐私预算", "Set and raise privacy budgets", cross_org=True),
    _a("product.submit", "products", "提交产品登记和安全自评", "Submit a product for registration with its self-review"),
    _a("product.register", "products", "审核登记数据产品", "Check and register data products", cross_org=True),
    _a("product.call", "products", "调用数据产品", "Call data products"),
    _a("agreement.sign", "governance", "签订使用协议", "Sign usage agreements"),
    _a("price.cap.set", "billing", "设定价格上限和最高准许收入", "Set price caps and maximum revenue", cross_org=True),
    _a("price.set", "billing", "设定产品价格", "Set product prices"),
    _a("billing.read", "billing", "查看账单", "Read invoices and usage"),
    _a("settlement.manage", "billing", "成本收益核算与分配", "Book costs, revenue and settlement"),
    _a("audit.read", "audit", "查看本单位日志", "Read own organisation's audit log"),
    _a("audit.read_all", "audit", "检索全部日志", "Search the whole audit log", cross_org=True),
    _a("audit.verify", "audit", "导出和验证日志", "Export and verify the log", cross_org=True),
    _a("anomaly.review", "audit", "异常处置", "Review anomaly cases", cross_org=True),
    _a("anomaly.configure", "audit", "配置异常规则", "Configure anomaly rules", cross_org=True),
    _a("incident.read", "audit", "查看异常、封禁和安全事件", "Read anomaly cases, blocks and incidents",
       cross_org=True),
    _a("incident.record", "audit", "登记安全事件", "Record security incidents", cross_org=True),
    _a("assessment.manage", "audit", "年度评估", "Run annual assessments", cross_org=True),
    # supervision over the year (issue 9)
    _a("prefiling.submit", "assessment", "提交事前风险评估报告", "File pre-use risk-assessment reports"),
    _a("rectification.submit", "assessment", "提交整改方案", "Submit rectification plans"),
    _a("product.rate", "assessment", "评价已使用的数据产品", "Rate data products used"),
    _a("supervise.read", "audit", "监督查看", "Read-only supervision", cross_org=True),
    _a("disclosure.publish", "audit", "信息公开", "Publish disclosures", cross_org=True),
    # SME credit services (issue 7, item 4)
    _a("whitelist.subscribe", "sme", "订阅白名单推送", "Subscribe to the SME white list"),
    _a("loan_product.manage", "sme", "管理本行信贷产品", "Manage own bank's loan products"),
    _a("financing.handle", "sme", "受理匹配的融资需求", "Handle financing requests matched to own bank"),
    _a("financing.request", "sme", "提交和跟踪本企业融资需求", "Submit and track own enterprise's financing requests"),
]}

_BASE = ("self.read", "org.read", "todo.read")
_ADMIN = _BASE + ("user.read", "user.manage", "apikey.manage", "job.read", "audit.read", "webhook.manage")


def _r(name: str, kind: OrgKind, zh: str, en: str, *actions: str) -> Role:
    return Role(name, kind, zh, en, tuple(dict.fromkeys(actions)))


ROLES: dict[str, Role] = {r.name: r for r in [
    _r("bureau_admin", OrgKind.BUREAU, "数据局管理员", "Bureau administrator", *_ADMIN,
       "org.read_all", "org.manage", "system.read", "catalog.read", "review.final",
       "price.cap.set", "audit.read_all", "anomaly.review", "assessment.manage",
       "disclosure.publish", "billing.read", "anomaly.configure", "incident.read", "incident.record",
       "audit.verify", "workspace.manage", "budget.manage", "authorization.manage", "agreement.sign"),
    _r("bureau_reviewer", OrgKind.BUREAU, "数据局审核员", "Bureau reviewer", *_BASE,
       "org.read_all", "catalog.read", "review.final", "anomaly.review", "audit.read",
       "audit.read_all", "job.read", "incident.read", "incident.record", "workspace.manage"),
    _r("supervisor", OrgKind.SUPERVISOR, "监管部门", "Supervising department", *_BASE,
       "org.read_all", "catalog.read", "supervise.read", "audit.read", "audit.read_all", "incident.read"),
    _r("provider_admin", OrgKind.PROVIDER, "数源部门管理员", "Provider administrator", *_ADMIN,
       "catalog.read", "catalog.register", "data.ingest", "review.provider", "job.submit",
       "billing.read"),
    _r("provider_data_officer", OrgKind.PROVIDER, "数源部门数据专员", "Provider data officer", *_BASE,
       "catalog.read", "catalog.register", "data.ingest", "review.provider", "job.submit",
       "job.read"),
    _r("expert", OrgKind.EXPERT, "评审专家", "Expert reviewer", *_BASE, "catalog.read",
       "review.expert"),
    _r("operator_admin", OrgKind.OPERATOR, "运营机构管理员", "Operator administrator", *_ADMIN,
       "catalog.read", "product.register", "price.set", "agreement.sign", "billing.read",
       "settlement.manage", "job.submit", "operator.apply", "partner.recruit", "tool.apply",
       "prefiling.submit", "rectification.submit"),
    _r("operator_staff", OrgKind.OPERATOR, "运营机构人员", "Operator staff", *_BASE,
       "catalog.read", "product.register", "agreement.sign", "billing.read", "job.read"),
    _r("partner_admin", OrgKind.PARTNER, "合伙人管理员", "Partner administrator", *_ADMIN,
       "catalog.read", "scenario.submit", "sandbox.use", "job.submit", "partner.apply", "product.submit",
       "tool.apply", "agreement.sign"),
    _r("partner_engineer", OrgKind.PARTNER, "合伙人数据工程师", "Partner data engineer", *_BASE,
       "catalog.read", "sandbox.use", "job.submit", "job.read"),
    _r("customer_admin", OrgKind.CUSTOMER, "用户单位管理员", "Customer administrator", *_ADMIN,
       "catalog.read", "agreement.sign", "product.call", "billing.read", "consent.submit", "product.rate"),
    _r("customer_integrator", OrgKind.CUSTOMER, "用户单位集成工程师", "Customer integration engineer",
       *_BASE, "product.call", "billing.read", "consent.submit", "product.rate"),
    _r("bank_credit_officer", OrgKind.CUSTOMER, "银行信贷经理", "Bank credit officer", *_BASE,
       "product.call", "whitelist.subscribe", "loan_product.manage", "financing.handle", "product.rate"),
    _r("enterprise_finance", OrgKind.CUSTOMER, "企业融资专员", "Enterprise financing officer", *_BASE,
       "financing.request"),
    _r("auditor", OrgKind.AUDITOR, "第三方审计", "Third-party auditor", *_BASE, "org.read_all",
       "audit.read", "audit.read_all", "audit.verify"),
]}

ADMIN_ROLE_BY_KIND: dict[OrgKind, str] = {
    OrgKind.BUREAU: "bureau_admin", OrgKind.SUPERVISOR: "supervisor",
    OrgKind.PROVIDER: "provider_admin", OrgKind.EXPERT: "expert",
    OrgKind.OPERATOR: "operator_admin", OrgKind.PARTNER: "partner_admin",
    OrgKind.CUSTOMER: "customer_admin", OrgKind.AUDITOR: "auditor",
}


def roles_for_kind(kind: OrgKind) -> list[Role]:
    return [r for r in ROLES.values() if r.org_kind == kind]


def actions_for_kind(kind: OrgKind) -> set[str]:
    """Everything some role of this organisation kind may do (the ceiling for API-key scopes)."""
    return {a for r in roles_for_kind(kind) for a in r.actions}


def policy_rules() -> list[tuple[str, str, str]]:
    """The casbin `p` rules: (role subject, domain, action); '*' = in the user's own domain."""
    return [(f"role:{r.name}", "*", a) for r in ROLES.values() for a in r.actions]


def validate() -> None:
    for role in ROLES.values():
        unknown = [a for a in role.actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"role {role.name} names unknown actions {unknown}")


def render_markdown(lang: str = "en") -> str:
    """The role × action matrix as a Markdown table (rendered into the README)."""
    roles = list(ROLES.values())
    head = "| action | " + " | ".join(r.name for r in roles) + " |"
    sep = "|---|" + "---|" * len(roles)
    rows = []
    for a in ACTIONS.values():
        label = a.en if lang == "en" else a.zh
        cells = ["✓" if a.name in r.actions else "" for r in roles]
        rows.append(f"| `{a.name}` {label} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


validate()
