"""The console's one string catalogue: every label in Chinese (the default) and English.

`words(lang)` gives a page its labels; `lang_of(request)` picks the language: `?lang=` first, then the
language cookie, else Chinese. A key missing from the catalogue fails at import (the test renders every
page in both languages), never silently on a page.
"""

from __future__ import annotations

from fastapi import Request

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_COOKIE = "authops_lang"

CATALOGUE: dict[str, tuple[str, str]] = {
    # frame
    "app_name": ("公共数据授权运营平台", "Public data authorized operation"),
    "skip": ("跳到主要内容", "Skip to main content"),
    "main_nav": ("主导航", "Main navigation"),
    "language": ("语言", "Language"),
    "other_lang": ("English", "中文"),
    "signed_in_as": ("当前用户", "Signed in as"),
    "logout": ("退出登录", "Log out"),
    "footer": ("原始数据不出域。本页只显示已审核发布的结果。", "Raw data never leaves. Pages show only released results."),
    # login
    "login": ("登录", "Log in"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "login_failed": ("用户名或密码错误，或账户已锁定。", "Wrong username or password, or the account is locked."),
    "login_blocked": ("该账户或地址已被异常处置封禁。", "This account or address is blocked by anomaly supervision."),
    # navigation
    "nav_home": ("首页", "Home"),
    "nav_scenarios": ("场景申请", "Scenario applications"),
    "nav_billing": ("用量与账单", "Usage and statements"),
    "nav_jobs": ("作业", "Jobs"),
    "nav_anomalies": ("异常处置", "Anomaly cases"),
    "nav_audit": ("日志检索", "Audit log"),
    "nav_disclosure": ("信息公开", "Public disclosure"),
    # home
    "home_title": ("工作台", "Workspace"),
    "todo": ("待办事项", "To-do"),
    "todo_empty": ("暂无待办。", "Nothing to do."),
    "cases_waiting": ("待本单位处理的事项", "Cases awaiting your organisation"),
    "overdue": ("已逾期", "overdue"),
    "due": ("办理期限", "Due"),
    "notifications": ("未读通知", "Unread notifications"),
    "agreements_to_accept": ("待确认的协议", "Agreements to accept"),
    "agreements_expiring": ("即将到期的协议", "Agreements ending soon"),
    "renewals": ("可申请续期", "Renewal window open"),
    "role": ("角色", "Role"),
    "organisation": ("单位", "Organisation"),
    "review_queue": ("待我评审的场景申请", "Scenario applications awaiting my review"),
    "my_scenarios": ("本单位的场景申请", "Our scenario applications"),
    "products": ("数据产品", "Data products"),
    "agreements": ("协议", "Agreements"),
    "open_anomalies": ("待处置的异常", "Open anomaly cases"),
    "revenue_by_month": ("按月计量收入（元）", "Metered revenue by month (yuan)"),
    "budget_burn": ("收入占最高准许收入（%）", "Revenue against the maximum permitted (%)"),
    "calls_by_day": ("每日调用次数", "Calls per day"),
    "recent_events": ("最近的日志", "Recent log events"),
    "my_resources": ("本部门的数据资源", "Our data resources"),
    "rows": ("行数", "Rows"),
    "loads": ("近期汇聚次数", "Recent loads"),
    "completeness": ("完整性", "Completeness"),
    "accuracy": ("准确性", "Accuracy"),
    "timeliness": ("及时性", "Timeliness"),
    "agreement": ("协议", "Agreement"),
    "accepted_by": ("已确认", "Accepted by"),
    "accept_text": ("我已阅读并接受以上文本", "I have read and accept this text"),
    "quality": ("数据质量与汇聚", "Quality and loads"),
    "upload": ("上传数据", "Upload data"),
    "download_template": ("下载 Excel 模板", "Download the Excel template"),
    "filled_template": ("填好的模板（.xlsx）或 CSV", "The filled template (.xlsx) or a CSV"),
    "load_mode": ("汇聚方式", "Load mode"),
    "mode_replace": ("全量替换", "replace"),
    "mode_upsert": ("增量更新", "upsert"),
    "recent_loads": ("最近的汇聚", "Recent loads"),
    "received": ("接收行数", "Rows received"),
    "rejected": ("被拒行数", "Rows rejected"),
    "completeness_chart": ("各资源完整性（%）", "Completeness per resource (%)"),
    "st_on_time": ("按时", "on time"), "st_late": ("逾期", "late"), "st_never_loaded": ("尚未汇聚", "never loaded"),
    "none": ("无", "None"),
    "open": ("查看", "Open"),
    # tables
    "number": ("编号", "Number"),
    "title": ("名称", "Title"),
    "state": ("状态", "State"),
    "stage": ("阶段", "Stage"),
    "kind": ("类型", "Kind"),
    "at": ("时间", "Time"),
    "actor": ("操作人", "Actor"),
    "action": ("操作", "Action"),
    "reason": ("理由", "Reasons"),
    "decision": ("结论", "Decision"),
    "score": ("评分", "Score"),
    "code": ("代码", "Code"),
    "registration": ("登记编号", "Registration number"),
    "price": ("价格", "Price"),
    "counterparty": ("对方", "Counterparty"),
    "term": ("期限", "Term"),
    "product": ("产品", "Product"),
    "customer": ("客户", "Customer"),
    "units": ("数量", "Units"),
    "amount": ("金额（元）", "Amount (yuan)"),
    "total": ("合计（元）", "Total (yuan)"),
    "uses": ("次数", "Uses"),
    "period": ("期间", "Period"),
    "progress": ("进度", "Progress"),
    "message": ("说明", "Message"),
    "subject": ("对象", "Subject"),
    "rule": ("规则", "Rule"),
    "opened": ("发现时间", "Opened"),
    # scenarios
    "scenario": ("场景申请", "Scenario application"),
    "timeline": ("审核时间线", "Review timeline"),
    "reviews": ("评审意见", "Reviews"),
    "application": ("申请内容", "Application"),
    "goal": ("场景目标", "Goal"),
    "resources": ("申请的数据资源", "Resources requested"),
    "review_form": ("评审", "Review"),
    "approve": ("同意", "Approve"),
    "return": ("退回修改", "Return for changes"),
    "reject": ("不同意", "Reject"),
    "reasons_hint": ("退回或不同意时必须写明理由。", "Returning or rejecting needs reasons."),
    "submit": ("提交", "Submit"),
    "decided": ("已提交评审意见。", "Your review was recorded."),
    "stage_provider": ("数源部门初审", "Provider review"),
    "stage_expert": ("专家评审", "Expert review"),
    "stage_bureau": ("数据局终审", "Bureau final review"),
    # billing
    "billing_title": ("用量与账单", "Usage and statements"),
    "month": ("月份", "Month"),
    "show": ("显示", "Show"),
    "usage": ("用量明细", "Usage"),
    "statements": ("月度账单", "Monthly statements"),
    "download_pdf": ("下载 PDF", "Download PDF"),
    "download_xlsx": ("下载 Excel", "Download Excel"),
    "no_usage": ("本月没有用量。", "No usage this month."),
    # jobs
    "jobs_title": ("后台作业", "Background jobs"),
    "no_jobs": ("暂无作业。", "No jobs."),
    "live": ("进度自动刷新", "Progress refreshes live"),
    # anomalies
    "anomalies_title": ("异常处置", "Anomaly cases"),
    "confirm": ("确认异常", "Confirm"),
    "release": ("误报解除", "Release (false alarm)"),
    "severity": ("严重程度", "Severity"),
    "minor": ("一般", "minor"),
    "major": ("较大", "major"),
    "critical": ("重大", "critical"),
    "no_anomalies": ("没有待处置的异常。", "No open anomaly cases."),
    "decided_cases": ("已处置", "Decided"),
    # audit
    "audit_title": ("日志检索", "Audit log search"),
    "filter_action": ("操作（前缀）", "Action (prefix)"),
    "search": ("检索", "Search"),
    "seq": ("序号", "Seq"),
    "outcome": ("结果", "Outcome"),
    # disclosure
    "disclosure_title": ("公共数据授权运营信息公开", "Public data authorized operation: disclosure"),
    "authorized": ("授权运营单位", "Authorized operator"),
    "scope": ("授权范围", "Scope"),
    "partners": ("生态合伙人", "Partners"),
    "price_caps": ("价格上限", "Price caps"),
    "audit_results": ("审计结果", "Audit results"),
    "generated": ("生成时间", "Generated"),
    # states (shown as `t["st_" + state]`, the code itself when not listed)
    "st_draft": ("草稿", "draft"), "st_provider_review": ("数源部门初审中", "in provider review"),
    "st_expert_review": ("专家评审中", "in expert review"), "st_bureau_review": ("数据局终审中", "in bureau review"),
    "st_returned": ("已退回修改", "returned"), "st_approved": ("已批准", "approved"),
    "st_rejected": ("未通过", "rejected"), "st_withdrawn": ("已撤回", "withdrawn"),
    "st_active": ("生效中", "active"), "st_pending": ("待确认", "pending"), "st_applied": ("已申请", "applied"),
    "st_expired": ("已到期", "expired"), "st_terminated": ("已终止", "terminated"),
    "st_registered": ("已登记", "registered"), "st_queued": ("排队中", "queued"), "st_running": ("运行中", "running"),
    "st_succeeded": ("已完成", "succeeded"), "st_failed": ("失败", "failed"), "st_cancelled": ("已取消", "cancelled"),
    "st_open": ("待处置", "open"), "st_confirmed": ("已确认", "confirmed"), "st_released": ("已解除", "released"),
    # errors
    "error": ("出错了", "Something went wrong"),
    "forbidden": ("您没有访问此页面的权限。", "You do not have permission for this page."),
    "not_found": ("找不到该对象，或您无权查看。", "Not found, or not visible to you."),
    "csrf": ("表单已失效，请刷新页面后重试。", "The form expired: reload the page and try again."),
    "invalid": ("输入有误", "Invalid input"),
    "back_home": ("返回首页", "Back to home"),
}


def words(lang: str) -> dict[str, str]:
    """Every label in `lang` (zh or en)."""
    i = 0 if lang == "zh" else 1
    return {k: v[i] for k, v in CATALOGUE.items()}


def lang_of(request: Request) -> str:
    """?lang= wins, then the cookie, then Chinese."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGS:
            return candidate
    return DEFAULT_LANG
