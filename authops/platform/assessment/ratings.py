"""User satisfaction: a customer rates a product after using it (1-5 and a comment).

Only a customer with metered usage of the product (a billing usage record) may rate it; one
rating per customer, product and year (Asia/Shanghai), which the customer may update.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, func, select

from authops.audit import log as audit_log
from authops.billing.models import UsageRecord
from authops.core.clock import utcnow
from authops.core.errors import Forbidden, InvalidInput, NotFound
from authops.core.identity import Principal
from authops.platform.assessment.models import ProductRating
from authops.platform.governance import workdays
from authops.platform.governance.models import Product

MAX_COMMENT = 2000


def rate(session: Session, *, actor: audit_log.Actor | Principal, product_code: str, score: int, comment: str = "",
         now: datetime | None = None) -> ProductRating:
    """Add or update the caller's organisation's rating of a product for this year."""
    who = audit_log.as_actor(actor)
    now = now or utcnow()
    customer = int(who.org_id or 0)
    product = session.exec(select(Product).where(Product.code == product_code)).first()
    if product is None:
        raise NotFound(f"no product {product_code!r}")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise InvalidInput("score must be a whole number from 1 to 5", details={"field": "score"})
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidInput(f"the comment is longer than {MAX_COMMENT} characters", details={"field": "comment"})
    used = session.exec(select(func.count()).select_from(UsageRecord).where(
        UsageRecord.customer_org_id == customer, UsageRecord.product_id == product.id)).one()
    if not used:
        raise Forbidden(f"only a customer that has used product {product.code} may rate it: your organisation has no "
                        "metered usage of it", code="no_usage", details={"field": "product_code"})
    year = workdays.shanghai_date(now).year
    row = session.exec(select(ProductRating).where(ProductRating.customer_org_id == customer,
                                                   ProductRating.product_id == product.id,
                                                   ProductRating.year == year)).first()
    before = None if row is None else row.score
    if row is None:
        row = ProductRating(customer_org_id=customer, product_id=int(product.id or 0), year=year, score=score)
    row.score, row.comment, row.rated_by, row.rated_at = score, comment, who.name[:64], now
    session.add(row)
    session.flush()
    audit_log.record(session, who, "assessment.rating.set", object_type="product", object_id=product.id,
                     details={"year": year, "score": score, "before": before, "rating": row.id})
    return row


def rating_view(row: ProductRating, product_code: str) -> dict[str, Any]:
    return {"id": row.id, "product": product_code, "year": row.year, "score": row.score, "comment": row.comment,
            "rated_at": row.rated_at}
