"""Working days by the Chinese calendar across the 2026 National Day and Spring Festival holidays.

The facts asserted here are the State Council's 2026 schedule as the chinese-calendar package
carries it (checked against the package, not assumed):
  * Mid-Autumn Festival: Fri 25 - Sun 27 September off.
  * National Day: Thu 1 - Wed 7 October off; Sun 20 September and Sat 10 October are make-up
    working days.
  * Spring Festival: Sun 15 - Mon 23 February off; Sat 14 February and Sat 28 February are make-up
    working days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import chinese_calendar
import pytest

from authops.core.clock import show
from authops.platform.governance import workdays


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def test_the_package_and_our_calendar_agree_on_national_day_2026():
    for day in _days(date(2026, 10, 1), date(2026, 10, 7)):
        assert not workdays.is_working_day(day), day
        assert chinese_calendar.get_holiday_detail(day) == (True, "National Day")
    # make-up working days (调休): a Sunday and a Saturday that are worked
    assert date(2026, 9, 20).weekday() == 6 and workdays.is_working_day(date(2026, 9, 20))
    assert date(2026, 10, 10).weekday() == 5 and workdays.is_working_day(date(2026, 10, 10))
    # an ordinary weekend around it stays off; the Mid-Autumn Festival is off too (Friday included)
    assert not workdays.is_working_day(date(2026, 10, 11))
    assert not workdays.is_working_day(date(2026, 9, 19))
    assert [workdays.is_working_day(d) for d in _days(date(2026, 9, 25), date(2026, 9, 27))] == [False] * 3
    assert workdays.is_working_day(date(2026, 9, 30)) and workdays.is_working_day(date(2026, 10, 8))


def test_the_package_and_our_calendar_agree_on_spring_festival_2026():
    for day in _days(date(2026, 2, 15), date(2026, 2, 23)):
        assert not workdays.is_working_day(day), day
        assert chinese_calendar.get_holiday_detail(day) == (True, "Spring Festival")
    assert date(2026, 2, 14).weekday() == 5 and workdays.is_working_day(date(2026, 2, 14))
    assert date(2026, 2, 28).weekday() == 5 and workdays.is_working_day(date(2026, 2, 28))
    assert workdays.is_working_day(date(2026, 2, 24))  # back to work on Tuesday
    assert not workdays.is_working_day(date(2026, 3, 1))  # an ordinary Sunday


def test_a_seven_working_day_publicity_across_national_day():
    # Published Wednesday 30 September: 8, 9, 10 (Saturday, make-up), 12, 13, 14, 15 October.
    assert workdays.add_working_days(date(2026, 9, 30), 7) == date(2026, 10, 15)
    # the working days themselves, counted
    assert workdays.working_days_between(date(2026, 9, 30), date(2026, 10, 15)) == 7
    assert workdays.working_days_between(date(2026, 9, 30), date(2026, 10, 7)) == 0
    # A naive count of weekdays would end on 9 October and ignore the holiday entirely.
    assert workdays.add_working_days(date(2026, 9, 30), 7) != date(2026, 10, 9)
    # Published on the make-up Sunday 20 September: 21, 22, 23, 24, 28, 29, 30 (Mid-Autumn skipped).
    assert workdays.add_working_days(date(2026, 9, 20), 7) == date(2026, 9, 30)


def test_a_seven_working_day_publicity_across_spring_festival():
    # Published Friday 13 February: 14 (Saturday, make-up), 24, 25, 26, 27, 28 (make-up), 2 March.
    assert workdays.add_working_days(date(2026, 2, 13), 7) == date(2026, 3, 2)
    # Published on the make-up Saturday 14 February: 24, 25, 26, 27, 28, 2 and 3 March.
    assert workdays.add_working_days(date(2026, 2, 14), 7) == date(2026, 3, 3)


def test_deadline_is_the_end_of_the_shanghai_day_stored_as_utc():
    # 10:00 Shanghai on 30 September is 02:00 UTC; the period ends 15 October 23:59:59 Shanghai.
    end = workdays.deadline(datetime(2026, 9, 30, 2, 0), 7)
    assert end == datetime(2026, 10, 15, 15, 59, 59)
    assert show(end) == "2026-10-15 23:59"
    # 20:00 UTC on 29 September is already 04:00 on 30 September in Shanghai: same answer.
    assert workdays.deadline(datetime(2026, 9, 29, 20, 0), 7) == end
    # Before the holiday, from Friday 13 February 09:00 Shanghai:
    assert show(workdays.deadline(datetime(2026, 2, 13, 1, 0), 7)) == "2026-03-02 23:59"


def test_years_the_package_does_not_know_are_estimated_from_fixed_holidays():
    assert workdays.known(date(2026, 12, 31))
    assert not workdays.known(date(2027, 1, 4))
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2027, 1, 4))
    # The estimate: weekends and the fixed-date holidays are off.
    assert not workdays.is_working_day(date(2027, 1, 1))  # New Year's Day (a Friday)
    assert not workdays.is_working_day(date(2027, 5, 1))
    assert [workdays.is_working_day(d) for d in _days(date(2027, 10, 1), date(2027, 10, 3))] == [False] * 3
    assert workdays.is_working_day(date(2027, 10, 4))  # Monday 4 October: not a fixed date, so a working day
    # Published Thursday 30 September 2027: 4, 5, 6, 7, 8, 11, 12 October (estimate).
    assert workdays.add_working_days(date(2027, 9, 30), 7) == date(2027, 10, 12)
    # Across the year boundary: 31 December 2026 (known) into 2027 (estimated).
    assert workdays.add_working_days(date(2026, 12, 31), 2) == date(2027, 1, 5)


def test_months_clamp_to_the_end_of_the_month():
    assert workdays.add_months(date(2026, 10, 16), 36) == date(2029, 10, 16)
    assert workdays.add_months(date(2028, 2, 29), 12) == date(2029, 2, 28)
    assert workdays.add_months(date(2029, 8, 31), -6) == date(2029, 2, 28)
