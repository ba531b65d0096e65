"""Rating: which unit price applies, and the periods money is counted in.

The unit price of a use is the LOWEST of the prices that bind it:
    the usage agreement's price (the contract: the customer never pays more than agreed),
    the operator's price in force (the published price: never more than published),
    the bureau's cap in force (regulation: never more than the cap);
a missing price or cap does not bind. A free product (public governance / public welfare) is 0
whatever the agreement says. `price_source` names the binding one (agreement | price | cap | free).

Periods are Asia/Shanghai calendar years and months, as naive UTC bounds [start, end).
"""

from __future__ import annotations

from datetime import datetime, timezone

from authops.core.clock import SHANGHAI, to_shanghai

# usage agreement pricing method -> billing unit
METHOD_UNIT = {"per_call": "per_call", "per_record": "per_subject", "per_batch": "per_batch",
               "monthly": "per_month"}
FREE_CATEGORIES = ("public_governance", "public_welfare")


def rate(agreed_fen: int, price_fen: int | None, cap_fen: int | None, *, free: bool) -> tuple[int, str]:
    """(unit price in fen, the rule that set it)."""
    if free:
        return 0, "free"
    best, source = max(int(agreed_fen), 0), "agreement"
    for value, name in ((price_fen, "price"), (cap_fen, "cap")):
        if value is not None and value < best:
            best, source = int(value), name
    return best, source


def shanghai_year(at: datetime) -> int:
    return to_shanghai(at).year


def _utc(local: datetime) -> datetime:
    return local.replace(tzinfo=SHANGHAI).astimezone(timezone.utc).replace(tzinfo=None)


def year_bounds(year: int) -> tuple[datetime, datetime]:
    return _utc(datetime(year, 1, 1)), _utc(datetime(year + 1, 1, 1))


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return _utc(datetime(year, month, 1)), _utc(datetime(*nxt, 1))
