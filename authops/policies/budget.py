"""The privacy budget ledger: the bureau sets caps; jobs reserve, then commit or give back.

A partner's differential-privacy spending on a resource is capped per calendar year
(years counted in Asia/Shanghai) and, optionally, over its lifetime. A job reserves its ε
(and δ) before it runs, on the current year's row and on the lifetime row if there is one;
when it is released the reservation is committed (what it actually spent moves to
`spent`, the rest goes back), and when it fails or is cancelled the reservation is given
back. Amounts are integers (micro-ε, pico-δ; see `budget_models`), so the ledger balances
to the unit and `check_ledger()` can demand exact equality.

Concurrency: every change to a budget row is one UPDATE whose arithmetic happens in SQL,
and a charge is conditional (`... WHERE spent + reserved + need <= cap`), so two
transactions racing for the last units cannot both win: on PostgreSQL the second UPDATE
waits for the first's row lock and re-checks its condition against the committed row; on
SQLite writers are serialised. Rows are always charged in id order, so two jobs charging
the same rows cannot deadlock. Settling a reservation is conditional on its state
(`WHERE state = 'reserved'`), so commit and give-back are idempotent even when raced.

Functions flush but never commit: the caller's transaction is the unit of work.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlmodel import Session

from authops.audit import log as audit
from authops.core.clock import SHANGHAI, as_utc, utcnow
from authops.core.errors import Conflict, InvalidInput
from authops.policies.budget_models import LIFETIME, MICRO, PICO, BudgetReservation, PrivacyBudget

__all__ = [
    "BudgetExhausted", "period_of", "to_micro", "to_pico", "set_budget", "reserve", "commit", "give_back",
    "balances", "check_ledger", "MAX_EPSILON", "MAX_DELTA", "LIFETIME", "MICRO", "PICO",
]

MAX_EPSILON = 1000.0  # the largest cap the bureau may set on one row
MAX_DELTA = 1e-3  # caps on δ must stay below this (δ is a failure probability)
RESERVED, COMMITTED, RETURNED = "reserved", "committed", "returned"
_YEAR = re.compile(r"^[0-9]{4}$")
_B = PrivacyBudget.__table__
_R = BudgetReservation.__table__


class BudgetExhausted(Conflict):
    """A job needs more privacy budget than is left (or none is set) on one of its resources."""

    code = "budget_exhausted"


# --- periods and units --------------------------------------------------------------------------

def period_of(at: datetime | None = None) -> tuple[str, date, date]:
    """The yearly period containing the UTC instant `at` (default now): ("2026", 2026-01-01, 2027-01-01).

    Years are counted in Asia/Shanghai: 2026-12-31 16:00 UTC is already 2027. A naive `at` is
    UTC (as everything stored is); the end date is exclusive.
    """
    local = as_utc(utcnow() if at is None else at).astimezone(SHANGHAI)
    year = local.year
    return str(year), date(year, 1, 1), date(year + 1, 1, 1)


def _to_units(value: float, scale: int, up: bool, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise InvalidInput(f"{what} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number")
    # str() gives the shortest decimal that round-trips, i.e. what a person wrote: 1.1 is
    # 1.1, not 1.100000000000000088817…, so 1.1 ε is exactly 1,100,000 micro-ε.
    exact = (value if isinstance(value, Decimal) else Decimal(str(value))) * scale
    if not exact.is_finite():
        raise InvalidInput(f"{what} must be a finite number")
    return int(exact.to_integral_value(rounding=ROUND_CEILING if up else ROUND_HALF_UP))


def to_micro(eps: float, *, up: bool = True) -> int:
    """ε in integer micro-units.

    `up=True` (the default, for amounts charged to a budget) rounds up, so a job is never
    charged less than it asked for: 1e-9 ε costs 1 micro-ε. `up=False` (for caps the bureau
    types in) rounds to the nearest unit, half up.
    """
    return _to_units(eps, MICRO, up, "epsilon")


def to_pico(delta: float, *, up: bool = True) -> int:
    """δ in integer pico-units (1e-12); rounding as for `to_micro`."""
    return _to_units(delta, PICO, up, "delta")


def _fmt(units: int, scale: int) -> str:
    """Units as a decimal without float error or trailing zeros: 300000 micro → "0.3"."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), scale)
    digits = len(str(scale)) - 1
    text = f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".")
    return sign + text


def _eps(units: int) -> str:
    return _fmt(units, MICRO)


def _delta(units: int) -> str:
    return _fmt(units, PICO)


def _period_bounds(period: str) -> tuple[date | None, date | None]:
    if period == LIFETIME:
        return None, None
    year = int(period)
    return date(year, 1, 1), date(year + 1, 1, 1)


def _refresh_words(period: str, ends_on: date | None) -> str:
    if period == LIFETIME or ends_on is None:
        return "the lifetime cap never refreshes; the bureau can raise it"
    return f"refreshes on {ends_on.isoformat()} (Asia/Shanghai)"


def _where(period: str) -> str:
    return "over its lifetime" if period == LIFETIME else f"for {period}"


def _actor_name(actor: Any) -> str:
    name = getattr(actor, "name", "") or getattr(actor, "kind", "") or "system"
    return str(name)[:64]


def _org_label(session: Session, org_id: int) -> str:
    from authops.platform.identity.models import Organisation

    row = session.execute(select(Organisation.code).where(Organisation.id == org_id)).first()
    return f"{row[0]}" if row else f"organisation {org_id}"


def _row(session: Session, budget_id: int) -> Any:
    """A budget row as committed (or as written by this transaction), bypassing the ORM cache."""
    return session.execute(select(_B).where(_B.c.id == budget_id)).one()


# --- the bureau sets caps -----------------------------------------------------------------------

def set_budget(session: Session, *, org_id: int, resource_code: str, epsilon: float, delta: float = 0.0,
               period: str | None = None, actor: Any, note: str = "") -> PrivacyBudget:
    """Create or change the cap of a partner × resource × period (None: this year; "lifetime").

    A cap below what is already spent plus reserved is refused (Conflict): lowering never
    takes back budget a job holds. Audited as `budget.set` with old and new caps (micro-ε,
    pico-δ).
    """
    code = (resource_code or "").strip()
    if not code:
        raise InvalidInput("resource code must not be empty")
    if len(code) > 64:
        raise InvalidInput("resource code must be at most 64 characters")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
            or epsilon <= 0 or epsilon > MAX_EPSILON:
        raise InvalidInput(f"epsilon cap must be a finite number above 0 and at most {MAX_EPSILON:g}, "
                           f"not {epsilon!r}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta) \
            or delta < 0 or delta >= MAX_DELTA:
        raise InvalidInput(f"delta cap must be at least 0 and below {MAX_DELTA:g}, not {delta!r}")
    if period is None:
        period = period_of()[0]
    period = str(period).strip().lower()
    if period != LIFETIME and not _YEAR.match(period):
        raise InvalidInput(f'period must be a year such as "2026" or "{LIFETIME}", not {period!r}')
    if len(note or "") > 500:
        raise InvalidInput("note must be at most 500 characters")
    e_cap, d_cap = to_micro(epsilon, up=False), to_pico(delta, up=False)
    if e_cap <= 0:
        raise InvalidInput("epsilon cap must be at least 0.000001")
    now = utcnow()
    who = _actor_name(actor)

    existing = session.execute(select(_B).where(
        _B.c.org_id == org_id, _B.c.resource_code == code, _B.c.period == period)).first()
    if existing is None:
        starts, ends = _period_bounds(period)
        budget = PrivacyBudget(org_id=org_id, resource_code=code, period=period, starts_on=starts, ends_on=ends,
                               epsilon_cap=e_cap, delta_cap=d_cap, set_by=who, note=note or "",
                               created_at=now, updated_at=now)
        session.add(budget)
        session.flush()
        old_e, old_d = None, None
    else:
        # Conditional, so a reservation racing with the change cannot end up above the new cap.
        done = session.execute(
            _B.update()
            .where(_B.c.id == existing.id,
                   _B.c.epsilon_spent + _B.c.epsilon_reserved <= e_cap,
                   _B.c.delta_spent + _B.c.delta_reserved <= d_cap)
            .values(epsilon_cap=e_cap, delta_cap=d_cap, set_by=who, note=note or "", updated_at=now)
        ).rowcount
        if done != 1:
            row = _row(session, existing.id)
            used_e = row.epsilon_spent + row.epsilon_reserved
            used_d = row.delta_spent + row.delta_reserved
            if used_e > e_cap:
                what = (f"ε {_eps(e_cap)} is below the ε {_eps(used_e)} already in use "
                        f"({_eps(row.epsilon_spent)} spent + {_eps(row.epsilon_reserved)} reserved)")
            else:
                what = (f"δ {_delta(d_cap)} is below the δ {_delta(used_d)} already in use "
                        f"({_delta(row.delta_spent)} spent + {_delta(row.delta_reserved)} reserved)")
            raise Conflict(
                f"cannot set the privacy budget of {code} {_where(period)} to this cap: {what}",
                code="budget_below_use",
                details={"resource": code, "period": period,
                         "epsilon_cap": e_cap, "epsilon_spent": row.epsilon_spent,
                         "epsilon_reserved": row.epsilon_reserved,
                         "delta_cap": d_cap, "delta_spent": row.delta_spent, "delta_reserved": row.delta_reserved})
        old_e, old_d = existing.epsilon_cap, existing.delta_cap
        budget = session.get(PrivacyBudget, existing.id, populate_existing=True)
    audit.record(session, actor, "budget.set", object_type="privacy_budget", object_id=budget.id,
                 details={"org_id": org_id, "resource": code, "period": period,
                          "old_epsilon_cap_micro": old_e, "new_epsilon_cap_micro": e_cap,
                          "old_delta_cap_pico": old_d, "new_delta_cap_pico": d_cap, "note": note or ""})
    return budget


# --- jobs reserve, commit, give back ------------------------------------------------------------

def _job_reservations(session: Session, job_id: int) -> list[BudgetReservation]:
    return list(session.execute(
        select(BudgetReservation).where(BudgetReservation.job_id == job_id).order_by(BudgetReservation.id)
        .execution_options(populate_existing=True)).scalars().all())


def _exhausted(session: Session, org_id: int, resource: str, period: str, budget_id: int | None,
               need_e: int, need_d: int) -> BudgetExhausted:
    if budget_id is None:  # no row for this year at all
        return BudgetExhausted(
            f"no privacy budget is set for {_org_label(session, org_id)} on {resource} for {period}; "
            f"the bureau sets budgets",
            details={"resource": resource, "period": period, "epsilon_left": "0",
                     "epsilon_needed": _eps(need_e), "refreshes_on": None})
    row = _row(session, budget_id)
    left_e = max(0, row.epsilon_cap - row.epsilon_spent - row.epsilon_reserved)
    left_d = max(0, row.delta_cap - row.delta_spent - row.delta_reserved)
    refreshes = None if row.period == LIFETIME else (row.ends_on.isoformat() if row.ends_on else None)
    cap_words = "the lifetime privacy budget" if row.period == LIFETIME else f"the {row.period} privacy budget"
    msg = (f"{cap_words} of {resource} is exhausted: ε {_eps(left_e)} left, this job needs ε {_eps(need_e)}")
    details: dict[str, Any] = {"resource": resource, "period": row.period, "epsilon_left": _eps(left_e),
                               "epsilon_needed": _eps(need_e), "refreshes_on": refreshes}
    if need_d > 0 or row.delta_cap > 0:
        msg += f"; δ {_delta(left_d)} left, this job needs δ {_delta(need_d)}"
        details.update(delta_left=_delta(left_d), delta_needed=_delta(need_d))
    msg += f"; {_refresh_words(row.period, row.ends_on)}"
    return BudgetExhausted(msg, details=details)


def reserve(session: Session, *, job_id: int, org_id: int, resources: list[str], epsilon: float,
            delta: float = 0.0, at: datetime | None = None) -> list[BudgetReservation]:
    """Reserve ε (and δ) for `job_id` on each resource: this year's row and the lifetime row if any.

    All or nothing: if any row cannot take the charge, the charges this call already made are
    undone before BudgetExhausted is raised, so nothing is left held even if the caller
    catches the error and commits. Idempotent per job: if the job already has reservations
    they are returned unchanged (whatever their state). ε = δ = 0 reserves nothing.
    Amounts are rounded up to whole micro-ε / pico-δ.
    """
    existing = _job_reservations(session, job_id)
    if existing:
        return existing
    need_e, need_d = to_micro(epsilon), to_pico(delta)
    if need_e < 0 or need_d < 0:
        raise InvalidInput("epsilon and delta to reserve must not be negative")
    if need_e == 0 and need_d == 0:
        return []
    if isinstance(resources, str):
        raise InvalidInput("resources must be a list of resource codes, not one string")
    wanted: list[str] = []
    for r in resources or []:
        code = (r or "").strip() if isinstance(r, str) else ""
        if not code:
            raise InvalidInput("resource codes must be non-empty strings")
        if code not in wanted:
            wanted.append(code)
    if not wanted:
        raise InvalidInput("a reservation needs at least one resource")
    period, _, _ = period_of(at)

    rows = session.execute(select(_B.c.id, _B.c.resource_code, _B.c.period).where(
        _B.c.org_id == org_id, _B.c.resource_code.in_(wanted), _B.c.period.in_([period, LIFETIME]))).all()
    found = {(r.resource_code, r.period): r.id for r in rows}
    for code in wanted:
        if (code, period) not in found:
            raise _exhausted(session, org_id, code, period, None, need_e, need_d)
    targets = sorted(((bid, code, p) for (code, p), bid in found.items()), key=lambda t: t[0])

    charged: list[int] = []
    for bid, code, p in targets:  # id order: two jobs charging the same rows cannot deadlock
        ok = session.execute(
            _B.update()
            .where(_B.c.id == bid,
                   _B.c.epsilon_spent + _B.c.epsilon_reserved + need_e <= _B.c.epsilon_cap,
                   _B.c.delta_spent + _B.c.delta_reserved + need_d <= _B.c.delta_cap)
            .values(epsilon_reserved=_B.c.epsilon_reserved + need_e,
                    delta_reserved=_B.c.delta_reserved + need_d, updated_at=utcnow())
        ).rowcount
        if ok != 1:
            error = _exhausted(session, org_id, code, p, bid, need_e, need_d)
            for done in charged:  # undo this call's earlier charges (rows we hold locked)
                session.execute(_B.update().where(_B.c.id == done).values(
                    epsilon_reserved=_B.c.epsilon_reserved - need_e,
                    delta_reserved=_B.c.delta_reserved - need_d))
            raise error
        charged.append(bid)

    now = utcnow()
    made = [BudgetReservation(job_id=job_id, budget_id=bid, org_id=org_id, resource_code=code, period=p,
                              epsilon=need_e, delta=need_d, state=RESERVED, created_at=now)
            for bid, code, p in targets]
    session.add_all(made)
    session.flush()
    return made


def commit(session: Session, job_id: int, *, spent: dict[str, tuple[float, float]] | None = None) -> None:
    """The job was released: each of its reservations moves from reserved to spent.

    `spent` maps resource → (ε, δ) actually spent, at most what was reserved (else
    InvalidInput); a resource not in it (or spent=None) spends its whole reservation. The
    unspent part goes back to the budget. Reservations already settled are left alone, so a
    second call changes nothing.
    """
    reservations = _job_reservations(session, job_id)
    spent = dict(spent or {})
    codes = {r.resource_code for r in reservations}
    unknown = sorted(set(spent) - codes)
    if unknown:
        raise InvalidInput(f"job {job_id} holds no privacy budget on {', '.join(unknown)}")
    amounts: dict[int, tuple[int, int]] = {}
    for r in reservations:
        if r.resource_code in spent:
            pair = spent[r.resource_code]
            try:
                e_raw, d_raw = pair
            except (TypeError, ValueError):
                raise InvalidInput(f"spent on {r.resource_code} must be a pair (epsilon, delta)") from None
            e, d = to_micro(e_raw), to_pico(d_raw)
            if e < 0 or d < 0:
                raise InvalidInput(f"spent on {r.resource_code} must not be negative")
            if e > r.epsilon or d > r.delta:
                raise InvalidInput(
                    f"job {job_id} spent more than it reserved on {r.resource_code}: "
                    f"ε {_eps(e)} of {_eps(r.epsilon)}, δ {_delta(d)} of {_delta(r.delta)}")
            amounts[r.id] = (e, d)
        else:
            amounts[r.id] = (r.epsilon, r.delta)
    now = utcnow()
    for r in sorted(reservations, key=lambda x: (x.budget_id, x.id)):
        e, d = amounts[r.id]
        moved = session.execute(
            _R.update().where(_R.c.id == r.id, _R.c.state == RESERVED)
            .values(state=COMMITTED, epsilon_spent=e, delta_spent=d, settled_at=now)).rowcount
        if moved == 1:
            session.execute(_B.update().where(_B.c.id == r.budget_id).values(
                epsilon_reserved=_B.c.epsilon_reserved - r.epsilon, epsilon_spent=_B.c.epsilon_spent + e,
                delta_reserved=_B.c.delta_reserved - r.delta, delta_spent=_B.c.delta_spent + d,
                updated_at=now))
    session.flush()
    _job_reservations(session, job_id)  # refresh cached objects the caller may hold


def give_back(session: Session, job_id: int) -> int:
    """The job failed or was cancelled: its still-reserved reservations return to their budgets.

    Returns how many reservations were returned (0 on a second call).
    """
    reservations = _job_reservations(session, job_id)
    now = utcnow()
    returned = 0
    for r in sorted(reservations, key=lambda x: (x.budget_id, x.id)):
        moved = session.execute(
            _R.update().where(_R.c.id == r.id, _R.c.state == RESERVED)
            .values(state=RETURNED, epsilon_spent=0, delta_spent=0, settled_at=now)).rowcount
        if moved == 1:
            session.execute(_B.update().where(_B.c.id == r.budget_id).values(
                epsilon_reserved=_B.c.epsilon_reserved - r.epsilon,
                delta_reserved=_B.c.delta_reserved - r.delta, updated_at=now))
            returned += 1
    session.flush()
    _job_reservations(session, job_id)
    return returned


# --- reading the ledger -------------------------------------------------------------------------

def balances(session: Session, org_id: int, resource_code: str | None = None,
             at: datetime | None = None) -> list[dict[str, Any]]:
    """The partner's budgets for the current period and its lifetime caps, per resource.

    Each row: resource, period, epsilon_{cap,spent,reserved,left} as floats for display and
    the same as integer `*_micro` fields; delta likewise (`*_pico`); refreshes_on (ISO date,
    None for a lifetime cap).
    """
    period, _, _ = period_of(at)
    q = select(_B).where(_B.c.org_id == org_id, _B.c.period.in_([period, LIFETIME]))
    if resource_code is not None:
        q = q.where(_B.c.resource_code == resource_code)
    out = []
    for row in session.execute(q).all():
        e_left = max(0, row.epsilon_cap - row.epsilon_spent - row.epsilon_reserved)
        d_left = max(0, row.delta_cap - row.delta_spent - row.delta_reserved)
        out.append({
            "resource": row.resource_code, "period": row.period,
            "epsilon_cap": row.epsilon_cap / MICRO, "epsilon_spent": row.epsilon_spent / MICRO,
            "epsilon_reserved": row.epsilon_reserved / MICRO, "epsilon_left": e_left / MICRO,
            "epsilon_cap_micro": row.epsilon_cap, "epsilon_spent_micro": row.epsilon_spent,
            "epsilon_reserved_micro": row.epsilon_reserved, "epsilon_left_micro": e_left,
            "delta_cap": row.delta_cap / PICO, "delta_spent": row.delta_spent / PICO,
            "delta_reserved": row.delta_reserved / PICO, "delta_left": d_left / PICO,
            "delta_cap_pico": row.delta_cap, "delta_spent_pico": row.delta_spent,
            "delta_reserved_pico": row.delta_reserved, "delta_left_pico": d_left,
            "refreshes_on": None if row.period == LIFETIME or row.ends_on is None else row.ends_on.isoformat(),
        })
    out.sort(key=lambda b: (b["resource"], b["period"] == LIFETIME, b["period"]))
    return out


def check_ledger(session: Session) -> list[str]:
    """Problems in the ledger; empty when every budget row agrees with its reservations.

    For each row: spent == Σ committed reservations' spent, reserved == Σ reserved
    reservations' amounts (ε and δ), nothing negative, and spent + reserved <= cap; for each
    reservation: a known state and spent <= reserved.
    """
    sums: dict[tuple[int, str], tuple[int, int, int, int]] = {}
    for r in session.execute(
            select(_R.c.budget_id, _R.c.state, func.sum(_R.c.epsilon), func.sum(_R.c.delta),
                   func.sum(_R.c.epsilon_spent), func.sum(_R.c.delta_spent))
            .group_by(_R.c.budget_id, _R.c.state)).all():
        sums[(r[0], r[1])] = tuple(int(v or 0) for v in r[2:])  # type: ignore[assignment]
    problems: list[str] = []
    for b in session.execute(select(_B).order_by(_B.c.id)).all():
        label = f"budget {b.id} (org {b.org_id}, {b.resource_code}, {b.period})"
        res_e, res_d, _, _ = sums.get((b.id, RESERVED), (0, 0, 0, 0))
        _, _, sp_e, sp_d = sums.get((b.id, COMMITTED), (0, 0, 0, 0))
        checks = [("epsilon_spent", b.epsilon_spent, sp_e, "committed reservations spent"),
                  ("delta_spent", b.delta_spent, sp_d, "committed reservations spent"),
                  ("epsilon_reserved", b.epsilon_reserved, res_e, "open reservations hold"),
                  ("delta_reserved", b.delta_reserved, res_d, "open reservations hold")]
        for column, have, want, words in checks:
            if have != want:
                problems.append(f"{label}: {column} is {have} but its {words} {want}")
        for column in ("epsilon_cap", "epsilon_spent", "epsilon_reserved", "delta_cap", "delta_spent",
                       "delta_reserved"):
            if getattr(b, column) < 0:
                problems.append(f"{label}: {column} is negative ({getattr(b, column)})")
        if b.epsilon_spent + b.epsilon_reserved > b.epsilon_cap:
            problems.append(f"{label}: ε spent + reserved {b.epsilon_spent + b.epsilon_reserved} "
                            f"exceeds the cap {b.epsilon_cap}")
        if b.delta_spent + b.delta_reserved > b.delta_cap:
            problems.append(f"{label}: δ spent + reserved {b.delta_spent + b.delta_reserved} "
                            f"exceeds the cap {b.delta_cap}")
    for r in session.execute(select(_R).where(and_(
            _R.c.state.not_in([RESERVED, COMMITTED, RETURNED])
            | (_R.c.epsilon_spent > _R.c.epsilon) | (_R.c.delta_spent > _R.c.delta)
            | (_R.c.epsilon < 0) | (_R.c.delta < 0))).order_by(_R.c.id)).all():
        problems.append(f"reservation {r.id} (job {r.job_id}, budget {r.budget_id}): state {r.state!r}, "
                        f"ε {r.epsilon_spent} spent of {r.epsilon} reserved, δ {r.delta_spent} of {r.delta}")
    return problems
