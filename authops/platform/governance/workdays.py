"""Working days by the Chinese calendar: statutory holidays are off, make-up working days
(调休, weekend days worked in exchange) are on. Dates are Asia/Shanghai dates.

The `chinese-calendar` package carries the State Council's schedule year by year. For a year it
does not know yet (the schedule is published each November or December), the fixed-date
holidays (New Year's Day, Labour Day 1 May, National Day 1-3 October) and weekends are used and
the answer says it is an estimate, so a deadline never silently pretends to be exact.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import chinese_calendar

from authops.core.clock import SHANGHAI, as_utc

_FIXED = {(1, 1), (5, 1), (10, 1), (10, 2), (10, 3)}


def known(day: date) -> bool:
    """Does the calendar know this date's year (an exact answer, not an estimate)?"""
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return False
    return True


def estimate_note(at_utc: datetime | None) -> str | None:
    """For a deadline (naive UTC) whose Shanghai date lies in a year the calendar does not know yet: the
    note saying it is an estimate; None for an exact deadline (or none)."""
    if at_utc is None:
        return None
    day = as_utc(at_utc).astimezone(SHANGHAI).date()
    if known(day):
        return None
    return f"estimated: the State Council's holiday schedule for {day.year} is not yet in the calendar"


def is_working_day(day: date) -> bool:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5 and (day.month, day.day) not in _FIXED


def add_working_days(start: date, n: int) -> date:
    """The n-th working day after `start` (start itself is not counted). n >= 0; n == 0 gives
    start if it is a working day, else the next working day."""
    if n < 0:
        raise ValueError("n must be >= 0")
    day = start
    if n == 0:
        while not is_working_day(day):
            day += timedelta(days=1)
        return day
    while n:
        day += timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def working_days_between(start: date, end: date) -> int:
    """Working days in (start, end]: how many have passed from start to end."""
    if end <= start:
        return 0
    return sum(1 for i in range(1, (end - start).days + 1) if is_working_day(start + timedelta(days=i)))


def shanghai_date(at: datetime) -> date:
    return as_utc(at).astimezone(SHANGHAI).date()


def end_of_day_utc(day: date) -> datetime:
    """The last second of a Shanghai date, as naive UTC (how times are stored)."""
    local = datetime.combine(day, time(23, 59, 59), tzinfo=SHANGHAI)
    return local.astimezone(timezone.utc).replace(tzinfo=None)


def deadline(at: datetime, working_days: int) -> datetime:
    """A deadline `working_days` working days after the (UTC) moment `at`, at the end of that
    Shanghai day, as naive UTC."""
    return end_of_day_utc(add_working_days(shanghai_date(at), working_days))


def add_months(day: date, months: int) -> date:
    """Calendar months (clamped to the month's last day): 3-year terms, 6-month windows."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    for d in (day.day, 30, 29, 28):
        try:
            return date(year, month, d)
        except ValueError:
            continue
    raise ValueError(day)  # unreachable
