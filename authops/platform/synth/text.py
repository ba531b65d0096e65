"""Short Chinese texts from templates: announcements, reasons, records, filled column-wise.

A template is a string with {slot}s; each slot is filled for all rows at once (an enterprise
name from the row's enterprise, a date, an amount, a phrase from a list), and the template is
picked per row, so a million texts cost a few Arrow concatenations, not a million format calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from authops.platform.synth import vocab
from authops.platform.synth.arrow import (
    AS_OF, cat, const, date_zh, days_between, num, pick, sparse, take, year_of, yuan)

_SLOT = re.compile(r"\{(\w+)\}")

PHRASES = {
    "penalty_reason": vocab.PENALTY_REASONS,
    "blacklist_reason": vocab.BLACKLIST_REASONS,
    "authority": vocab.CITY_AUTHORITIES,
    "court": vocab.COURTS,
    "procurer": vocab.PROCURERS,
    "bank": vocab.BANKS,
    "city": vocab.ROUTE_CITIES,
    "topic": vocab.PATENT_TOPICS,
    "work": vocab.WORK_TITLES,
    "district": tuple(d[0] for d in vocab.DISTRICTS),
    "road": tuple(r for d in vocab.DISTRICTS for r in d[5]),
    "project_kind": ("道路提升改造工程", "学校新建工程", "河道综合整治工程", "安置房建设项目", "污水管网改造工程",
                     "医院门急诊楼改扩建工程", "公园景观提升工程", "老旧小区改造工程"),
    "service": ("智慧城市平台建设项目", "绿化养护服务项目", "公共自行车运营服务项目", "信息化运维服务项目",
                "物业管理服务项目", "保洁服务项目"),
    "goods": ("办公家具", "计算机设备", "医疗设备", "教学设备", "安防监控设备", "车辆", "绿化苗木", "图书资料"),
    "land_use": ("住宅用地", "商服用地", "工业用地", "研发用地", "仓储用地"),
    "objection_reason": ("评标委员会未按招标文件规定的评标标准评审", "中标候选人业绩存在虚假", "招标文件设置倾向性条款",
                         "开标程序不符合规定", "投标人资格条件不满足要求"),
    "objection_result": ("异议不成立，维持原评标结果", "异议成立，责令重新评标", "异议部分成立，已要求招标人澄清"),
    "scope": ("技术开发、技术咨询、技术服务", "机械设备销售", "电子产品研发、生产、销售", "货物进出口、技术进出口",
              "道路货物运输（不含危险货物）", "建设工程施工", "普通货物仓储服务", "软件开发", "企业管理咨询",
              "食品销售", "五金产品批发", "塑料制品制造", "人力资源服务", "广告设计、代理"),
    "coercion": ("查封经营场所", "扣押涉案物品", "冻结银行存款", "责令停产停业"),
    "pledge_state": ("有效", "已注销"),
    "collateral": ("生产设备", "运输车辆", "存货", "机器设备及原材料"),
    "spot_result": ("未发现问题", "未按规定公示应当公示的信息", "通过登记的住所（经营场所）无法联系", "公示信息隐瞒真实情况"),
    "judgment": ("判决被告支付货款及利息", "驳回原告全部诉讼请求", "准予原告撤回起诉", "双方达成调解协议",
                 "判决解除合同并返还款项", "裁定终结本次执行程序"),
    "safety_state": ("有效", "已延续", "暂扣", "已注销"),
    "site_issue": ("未按规定设置安全防护设施", "特种作业人员无证上岗", "扬尘治理措施不到位", "未按规定进行隐蔽工程验收"),
    "accident": ("一般质量事故", "脚手架局部坍塌", "高处坠落一般事故", "机械伤害一般事故"),
    "arbitration": ("追索劳动报酬", "解除劳动合同经济补偿", "工伤保险待遇", "加班工资争议"),
    "rectify": ("已完成整改，信用修复中", "整改中", "未整改", "已完成信用修复"),
    "reimburse": ("异地就医未备案", "急诊抢救未能联网结算", "医保卡故障", "外伤无第三方责任"),
    "apply": ("病情需要长期门诊治疗", "经专科医院诊断符合认定标准", "原认定到期申请续期", "家庭经济困难申请救助"),
    "abnormal_reason": ("未按照规定的期限公示年度报告", "通过登记的住所或者经营场所无法联系",
                        "未在责令的期限内公示有关企业信息", "公示企业信息隐瞒真实情况、弄虚作假"),
    "removal_reason": ("补报未报年份的年度报告并公示", "依法办理住所变更登记", "提出通过住所可以重新取得联系",
                       "更正其公示的信息"),
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "blacklist_reason": ("{blacklist_reason}", "{blacklist_reason}，经{authority}认定"),
    "info_retention_period": ("自列入之日起{years}年", "{date}至{date_later}"),
    "penalty_info": (
        "{ent}因{penalty_reason}，被{samr}处以罚款{amount}，决定文书号苏市监罚〔{year}〕{n}号",
        "{ent}在{project_kind}投标活动中{penalty_reason}，{authority}给予警告并罚款{amount}",
        "{ent}{penalty_reason}，责令改正，没收违法所得{amount}"),
    "construction_project_announcement": (
        "{district}{road}{project_kind}施工招标公告：招标人{procurer}，估算总投资{wan}，投标截止时间{date}",),
    "other_transaction_info": ("{district}{goods}产权转让项目，挂牌价{wan}，受让方{ent}，成交日期{date}",
                               "{procurer}{goods}处置项目经竞价成交，成交价{wan}，买受人{ent}"),
    "land_use_right_transaction_announcement": (
        "苏地{year}-WG-{n}号地块（{district}{road}东侧，{land_use}）国有建设用地使用权挂牌出让，起始价{wan}，竞得人{ent}",),
    "project_contract_info": ("{procurer}与{ent}签订{service}合同，合同金额{wan}，签订日期{date}，履约期限{months}个月",),
    "bid_award_announcement": ("{procurer}{project_kind}中标结果公告：中标单位{ent}，中标金额{wan}，公告日期{date}",),
    "bidding_objection_info": ("{ent}对{procurer}{project_kind}提出异议：{objection_reason}。处理结果：{objection_result}",),
    "government_procurement_announcement": (
        "{procurer}{goods}采购项目公开招标公告，预算金额{wan}，获取招标文件截止{date}",
        "{procurer}{service}竞争性磋商公告，预算金额{wan}，响应文件提交截止{date}"),
    "project_name": ("{district}{road}{project_kind}", "{procurer}{goods}采购项目"),
    "evaluation_result": ("综合评分第一名{ent}，得分{score}分", "经评审，推荐{ent}为第一中标候选人"),
    "transport_route": ("苏州—{city2}", "{city2}—苏州", "苏州—{stops}", "{stops}—苏州"),
    "social_insurance_arrears_record": ("{year}年{month}月至{year}年{month2}月欠缴社会保险费{amount}",),
    "labor_arbitration_info": ("{year}年劳动仲裁案件{n_small}件，案由：{arbitration}",),
    "patent_title": ("{topic}", "{topic}及其制备方法", "{topic}的控制方法"),
    "business_scope": ("许可项目：{scope}；一般项目：{scopes}（除依法须经批准的项目外，凭营业执照依法自主开展经营活动）",),
    "shareholder_info": ("{person}（自然人股东，认缴出资{wan}）；{person2}（自然人股东，认缴出资{wan2}）",
                         "{ent2}（企业法人，认缴出资{wan}）"),
    "abnormal_operation_record": ("{year}年度因{abnormal_reason}被列入经营异常名录",),
    "listing_reason": ("{abnormal_reason}",),
    "removal_reason": ("{removal_reason}",),
    "copyright_work_title": ("{work}V{version}.0", "{ent_short}{work}软件V{version}.0"),
    "admin_coercion_info": ("{samr}对{ent}实施{coercion}，文书号苏市监强〔{year}〕{n}号",),
    "rectification_status": ("{rectify}",),
    "resident_contribution_details": ("{year}年度城乡居民医保个人缴费{amount}，财政补助{amount2}",),
    "individual_contribution_details": ("{year}年{month}月个人缴费{amount}",),
    "employer_contribution_details": ("{year}年{month}月单位缴费{amount}",),
    "application_reason": ("{apply}",),
    "ad_hoc_reimbursement_reason": ("{reimburse}",),
    "equity_pledge_info": ("出质股权数额{wan}，质权人{bank}，登记日期{date}，状态{pledge_state}",),
    "spot_check_info": ("{year}年度“双随机”抽查：{spot_result}",),
    "chattel_mortgage_info": ("抵押物{collateral}，被担保债权数额{wan}，抵押权人{bank}，登记日期{date}",),
    "bidding_info": ("参与{procurer}{project_kind}投标，{date}中标，中标金额{wan}",),
    "court_announcement": ("苏州市中级人民法院公告：{ent}与{ent2}{cause}一案已审理终结，{judgment}",),
    "dishonest_judgment_debtor_info": ("苏州市中级人民法院（{year}）苏05执{n}号，被执行人{ent}有履行能力而拒不履行，"
                                       "列入失信被执行人名单",),
    "judgment_debtor_info": ("苏州市中级人民法院（{year}）苏05执{n}号，执行标的{amount}",),
    "hearing_announcement": ("定于{date}在{court}第{n_small}法庭公开开庭审理{ent2}诉{ent}{cause}一案",),
    "litigation_info": ("（{year}）苏05民初{n}号 {cause}，{judgment}",),
    "serious_violation_info": ("因{blacklist_reason}被列入严重违法失信名单",),
    "judgment_result": ("{judgment}",),
    "judicial_auction_info": ("{court}拍卖被执行人{ent}名下{collateral}，起拍价{wan}",),
    "bankruptcy_liquidation_info": ("{court}裁定受理{ent}破产清算申请，指定管理人为江苏某律师事务所",),
    "safety_production_license_info": ("（苏）JZ安许证字〔{year}〕{n}号，有效期至{date_later}，状态{safety_state}",),
    "project_performance_record": ("承建{procurer}{project_kind}，合同金额{wan}，{year}年竣工验收合格",),
    "site_violation_record": ("{date}检查发现{site_issue}，已责令整改",),
    "quality_safety_accident_info": ("{date}发生{accident}，已按规定报告处理",),
    "remarks": ("无", "补录", "信息已核实"),
    "outpatient_diagnosis_info": ("门诊诊断：{diagnosis}",),
    "main_condition_description": ("患者因{diagnosis}入院，一般情况可，生命体征平稳",),
    "admission_diagnosis_description": ("{diagnosis}",),
    "photo_url": ("https://ybj.suzhou.gov.cn/photo/{hex}.jpg",),
    "contact_email": ("hr{n}@{pinyin}.com.cn", "service{n}@{pinyin}.cn"),
}
DEFAULT_TEMPLATES = ("{year}年{month}月登记，内容已核实", "{date}更新：信息正常")


def _ent(w, r, rng, m):
    ent = w.enterprises
    e = r.e if r.e is not None and (r.e >= 0).all() else rng.integers(0, ent.n, m)
    return take(ent.name, e)


def _ent2(w, r, rng, m):
    return take(w.enterprises.name, rng.integers(0, w.enterprises.n, m))


def _samr(w, r, rng, m):
    dist = w.enterprises.district[r.e] if r.e is not None and (r.e >= 0).all() else rng.integers(0, 10, m)
    return take(list(vocab.SAMR.values()), dist)


def _two(rng, phrases, m, sep="、"):
    """Two different phrases joined by sep."""
    a = rng.integers(0, len(phrases), m)
    b = (a + rng.integers(1, len(phrases), m)) % len(phrases)
    return cat(take(phrases, a), sep, take(phrases, b))


def _dates(rng, m, r):
    return r.at if r.at is not None else days_between(rng, "2019-01-01", str(AS_OF), m)


SLOTS: dict[str, Callable] = {
    "ent": _ent, "ent2": _ent2, "samr": _samr,
    "ent_short": lambda w, r, rng, m: take(vocab.ZIHAO, rng.integers(0, len(vocab.ZIHAO), m)),
    "person": lambda w, r, rng, m: take(w.persons.name, rng.integers(0, w.persons.n, m)),
    "person2": lambda w, r, rng, m: take(w.persons.name, rng.integers(0, w.persons.n, m)),
    "date": lambda w, r, rng, m: date_zh(_dates(rng, m, r)),
    "date_later": lambda w, r, rng, m: date_zh(_dates(rng, m, r) + rng.integers(365, 1826, m).astype("timedelta64[D]")),
    "year": lambda w, r, rng, m: num(year_of(_dates(rng, m, r))),
    "month": lambda w, r, rng, m: num(rng.integers(1, 7, m)),
    "month2": lambda w, r, rng, m: num(rng.integers(7, 13, m)),
    "months": lambda w, r, rng, m: num(rng.integers(3, 37, m)),
    "years": lambda w, r, rng, m: num(rng.choice([1, 3, 5], m)),
    "n": lambda w, r, rng, m: num(rng.integers(1, 9999, m)),
    "n_small": lambda w, r, rng, m: num(rng.integers(1, 9, m)),
    "version": lambda w, r, rng, m: num(rng.integers(1, 6, m)),
    "score": lambda w, r, rng, m: cat(num(rng.integers(80, 99, m)), ".", num(rng.integers(0, 100, m), 2)),
    "amount": lambda w, r, rng, m: yuan(np.round(np.exp(rng.normal(9.5, 1.2, m))) * 100),
    "amount2": lambda w, r, rng, m: yuan(np.round(np.exp(rng.normal(6.5, 0.4, m))) * 100),
    "wan": lambda w, r, rng, m: yuan(np.round(np.exp(rng.normal(14.5, 1.3, m)), -2) * 100, "万元"),
    "wan2": lambda w, r, rng, m: yuan(np.round(np.exp(rng.normal(13.5, 1.0, m)), -2) * 100, "万元"),
    "city2": lambda w, r, rng, m: pick(rng, vocab.ROUTE_CITIES[1:], m),
    "stops": lambda w, r, rng, m: _two(rng, vocab.ROUTE_CITIES[1:], m, "—"),
    "scopes": lambda w, r, rng, m: _two(rng, PHRASES["scope"], m),
    "cause": lambda w, r, rng, m: pick(rng, ("买卖合同纠纷", "金融借款合同纠纷", "建设工程施工合同纠纷", "租赁合同纠纷"), m),
    "diagnosis": lambda w, r, rng, m: pick(rng, [d[1] for d in vocab.DIAGNOSES], m),
    "hex": lambda w, r, rng, m: cat(num(rng.integers(0, 10**12, m), 12), num(rng.integers(0, 10**8, m), 8)),
    "pinyin": lambda w, r, rng, m: pick(rng, ("hengda", "xinda", "ruitai", "boyuan", "huasheng", "kaidi", "jiayi"), m),
}


class _Sub:
    """The slice of a row context that one template renders."""

    def __init__(self, rows, idx: np.ndarray):
        self.e = rows.e[idx] if rows.e is not None else None
        self.at = rows.at[idx] if rows.at is not None else None


def _render_one(w, template: str, rows, rng: np.random.Generator, m: int) -> pa.Array:
    parts: list = []
    pos = 0
    for mt in _SLOT.finditer(template):
        if mt.start() > pos:
            parts.append(template[pos:mt.start()])
        slot = mt.group(1)
        fn = SLOTS.get(slot)
        parts.append(fn(w, rows, rng, m) if fn else pick(rng, PHRASES[slot], m))
        pos = mt.end()
    if pos < len(template):
        parts.append(template[pos:])
    if not any(isinstance(p, pa.Array) for p in parts):
        return const("".join(parts), m)
    return cat(*parts)


def render(w, name: str, rows, rng: np.random.Generator, where: np.ndarray | None = None) -> pa.Array:
    """Texts for field `name` for every row (or only where `where` is True; nulls elsewhere)."""
    templates = TEMPLATES.get(name, DEFAULT_TEMPLATES)
    idx_all = np.arange(rows.n) if where is None else np.flatnonzero(where)
    which = rng.integers(0, len(templates), len(idx_all))
    pieces, order = [], []
    for k, tpl in enumerate(templates):
        idx = idx_all[which == k]
        if len(idx):
            pieces.append(_render_one(w, tpl, _Sub(rows, idx), rng, len(idx)))
            order.append(idx)
    if not pieces:
        out = pa.array([], type=pa.string())
    elif len(pieces) == 1:
        out = pieces[0]
    else:
        inv = np.argsort(np.concatenate(order), kind="stable")
        out = pa.concat_arrays(pieces).take(pa.array(inv))
    return out if where is None else sparse(out, where)
