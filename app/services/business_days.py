"""US federal business days, which DMCA 512(g)(2)(C)'s restore window is counted in: not a
Saturday, a Sunday or one of the eleven legal public holidays of 5 U.S.C. 6103(a), each as
observed (a Saturday's on the Friday before, a Sunday's on the Monday after: Executive Order
11582). Days are those of the designated agent's zone (LETHE_BUSINESS_TIMEZONE): a notice
received on a Friday evening in New York is a Friday's, though it is Saturday in UTC.
Inauguration Day, a holiday only around Washington, is not one."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

MONDAY, THURSDAY = 0, 3


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The `n`th `weekday` of the month; n = -1 is the last."""
    days = [d for d in calendar.Calendar().itermonthdates(year, month)
            if d.month == month and d.weekday() == weekday]
    return days[n - 1] if n > 0 else days[n]


def _legal_holidays(year: int) -> list[date]:
    return [
        date(year, 1, 1),                          # New Year's Day
        _nth_weekday(year, 1, MONDAY, 3),          # Birthday of Martin Luther King, Jr.
        _nth_weekday(year, 2, MONDAY, 3),          # Washington's Birthday
        _nth_weekday(year, 5, MONDAY, -1),         # Memorial Day
        *([date(year, 6, 19)] if year >= 2021 else []),  # Juneteenth National Independence Day
        date(year, 7, 4),                          # Independence Day
        _nth_weekday(year, 9, MONDAY, 1),          # Labor Day
        _nth_weekday(year, 10, MONDAY, 2),         # Columbus Day
        date(year, 11, 11),                        # Veterans Day
        _nth_weekday(year, 11, THURSDAY, 4),       # Thanksgiving Day
        date(year, 12, 25),                        # Christmas Day
    ]


def _observed(holiday: date) -> date:
    if holiday.weekday() == 5:
        return holiday - timedelta(days=1)
    if holiday.weekday() == 6:
        return holiday + timedelta(days=1)
    return holiday


@cache
def federal_holidays(year: int) -> frozenset[date]:
    """The days of `year` federal offices close for a holiday. New Year's Day on a Saturday
    is observed on the year before's 31 December."""
    return frozenset(day for y in (year, year + 1) for holiday in _legal_holidays(y)
                     if (day := _observed(holiday)).year == year)


def is_business_day(day: date) -> bool:
    return day.weekday() < 5 and day not in federal_holidays(day.year)


def business_days_after(start: datetime, days: int, zone: str) -> datetime:
    """`start` moved on by `days` business days of `zone`, its wall-clock time there kept,
    in UTC: received on a Friday, one business day after is the Monday at the same time (or
    the Tuesday, when Monday is a holiday)."""
    local, left = start.astimezone(ZoneInfo(zone)), days
    day = local.date()
    while left:
        day += timedelta(days=1)
        if is_business_day(day):
            left -= 1
    return datetime.combine(day, local.time(), local.tzinfo).astimezone(UTC)
