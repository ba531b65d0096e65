"""The operators' revenue against their maximum permitted revenue, and the warnings' notifications.

`status` shows each visible operator's year: metered revenue (the running total), the ceiling, the
warnings raised. `notify_warnings` turns warnings not yet notified into to-do notifications for the
operator, the bureau that granted its authorization and the DRC that co-set the ceiling (run it from
maintenance or after billing; it is idempotent: each warning is notified once).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from authops.billing import prices as rules
from authops.billing.models import RevenueCounter, RevenueWarning
from authops.billing.statements import yuan
from authops.core.clock import utcnow
from authops.core.identity import OrgKind
from authops.platform.governance import agreements, notifications
from authops.platform.identity.models import Organisation


def status(session: Session, org_id: int | None, year: int) -> list[dict[str, Any]]:
    org = session.get(Organisation, org_id) if org_id else None
    if org is None or OrgKind(org.kind) not in (OrgKind.OPERATOR, OrgKind.BUREAU):
        return []
    q = select(RevenueCounter).where(RevenueCounter.year == year)
    if OrgKind(org.kind) == OrgKind.OPERATOR:
        q = q.where(RevenueCounter.operator_org_id == org.id)
    out = []
    for c in session.exec(q.order_by(RevenueCounter.operator_org_id)):
        warned = session.exec(select(RevenueWarning).where(RevenueWarning.operator_org_id == c.operator_org_id,
                                                           RevenueWarning.year == year)
                              .order_by(RevenueWarning.id)).all()
        out.append({"operator_org_id": c.operator_org_id, "operator": agreements.org_name(session, c.operator_org_id),
                    "year": year, "revenue_fen": c.revenue_fen, "ceiling_fen": c.ceiling_fen,
                    "used_pct": round(100 * c.revenue_fen / c.ceiling_fen, 1) if c.ceiling_fen else None,
                    "warn_at_pct": c.warn_at_pct,
                    "warnings": [{"threshold_pct": w.threshold_pct, "revenue_fen": w.revenue_fen,
                                  "ceiling_fen": w.ceiling_fen, "at": w.at} for w in warned]})
    return out


def notify_warnings(session: Session) -> int:
    """Notify each warning not yet notified; how many were notified."""
    n = 0
    for w in session.exec(select(RevenueWarning).where(RevenueWarning.notified_at.is_(None))  # type: ignore[union-attr]
                          .order_by(RevenueWarning.id)):
        cap = rules.max_revenue_in_force(session, w.operator_org_id, w.year)
        auth = agreements.get_active(session, "operator_authorization", party_b=w.operator_org_id)
        orgs = [w.operator_org_id, auth.party_a_org_id if auth else None, cap.co_set_by_org_id if cap else None]
        notifications.notify(session, [o for o in orgs if o], "billing.revenue.warning",
                             f"收入已达最高准许收入的 {w.threshold_pct}% Revenue reached {w.threshold_pct}% of the "
                             f"maximum ({w.year})",
                             f"{agreements.org_name(session, w.operator_org_id)}: {yuan(w.revenue_fen)} / "
                             f"{yuan(w.ceiling_fen)} yuan")
        w.notified_at = utcnow()
        session.add(w)
        n += 1
    session.flush()
    return n
