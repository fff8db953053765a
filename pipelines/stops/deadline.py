"""`compute.deadline`: when a run must be done by, as a UTC time of day or a duration.

A nightly run that must be out of the way before the day's jobs says `"06:00"`: the next
06:00 UTC after the run starts (a run started at 23:00 ends by 06:00 the next morning). An
ad-hoc run says how long it may take: `"3h"`, `"90m"`, `"1h30m"`, `"45s"`, counted from when it
starts (a resume gets the whole duration again).
"""

from __future__ import annotations

import datetime as dt
import re

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def check_deadline(text: str) -> str:
    """The deadline as written, or ValueError naming what is wrong.

    >>> check_deadline("06:00"), check_deadline("1h30m")
    ('06:00', '1h30m')
    >>> check_deadline("6am")
    Traceback (most recent call last):
    ...
    ValueError: deadline '6am' is neither a UTC time of day like "06:00" nor a duration like "3h", "90m" or "1h30m"
    """
    text = text.strip()
    if _CLOCK.match(text) or (text and _DURATION.match(text)):
        return text
    raise ValueError(f"deadline {text!r} is neither a UTC time of day like \"06:00\" nor a duration like "
                     f"\"3h\", \"90m\" or \"1h30m\"")


def deadline_at(text: str, started: float) -> float:
    """The deadline as a Unix time, for a run started at `started` (a Unix time).

    >>> start = dt.datetime(2026, 11, 28, 23, 0, tzinfo=dt.timezone.utc).timestamp()
    >>> dt.datetime.fromtimestamp(deadline_at("06:00", start), dt.timezone.utc).isoformat()
    '2026-11-29T06:00:00+00:00'
    >>> deadline_at("1h30m", start) - start
    5400.0
    """
    text = check_deadline(text)
    clock = _CLOCK.match(text)
    if clock:
        now = dt.datetime.fromtimestamp(started, dt.UTC)
        at = now.replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0)
        if at <= now:
            at += dt.timedelta(days=1)
        return at.timestamp()
    hours, minutes, seconds = (int(g or 0) for g in _DURATION.match(text).groups())
    return started + hours * 3600 + minutes * 60 + seconds
