"""date_math: calendar arithmetic on ISO dates (YYYY-MM-DD), proleptic Gregorian calendar."""

from __future__ import annotations

import datetime as dt


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def add_days(date: str, days: int) -> dict:
    """The date `days` after `date` (negative days go back)."""
    return {"date": (_date(date) + dt.timedelta(days=days)).isoformat()}


def days_between(start: str, end: str) -> dict:
    """Days from `start` to `end` (negative when end comes first)."""
    return {"days": (_date(end) - _date(start)).days}


def weekday_of(date: str) -> dict:
    """The day of the week `date` falls on, in English."""
    return {"weekday": _date(date).strftime("%A")}


TOOLS = {"add_days": add_days, "days_between": days_between, "weekday_of": weekday_of}
