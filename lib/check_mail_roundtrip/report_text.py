"""How the report's figures read, on the page and on the badge: seconds, shares, UTC times."""

from __future__ import annotations

import math
import time
from typing import Optional

DASH = "\u2013"


def seconds(value: Optional[float]) -> str:
    """A round trip as people read it: 0.42 s, 2.1 s, 612 s, 1.5 h; a dash for none."""
    if value is None or value != value:
        return DASH
    if value < 1:
        return "%.2f s" % value
    if value < 99.95:
        return "%.1f s" % value
    if value < 3600:
        return "%.0f s" % value
    return "%.1f h" % (value / 3600)


def threshold(value: float) -> str:
    """A threshold as given: 120 s, 0.5 s, 4000 s."""
    return "%g s" % value


def percent(count: int, total: int, digits: int = 2) -> str:
    """*count* of *total* as a percentage with *digits* decimals; never 0 or 100 unless it is.

    A share that would round to 0 or to 100 without being so reads "<0.01 %" or ">99.99 %"."""
    if total <= 0:
        return DASH
    value, step = 100.0 * count / total, 10.0 ** -digits
    if 0 < value < step / 2:
        return "<%.*f %%" % (digits, step)
    if 100 - step / 2 <= value < 100:
        return ">%.*f %%" % (digits, 100 - step)
    return "%.*f %%" % (digits, value)


def utc(sent: Optional[str]) -> str:
    """A send time of the history (2026-12-06T23:04:22.123Z) as 2026-12-06 23:04:22."""
    return sent[:10] + " " + sent[11:19] if sent else DASH


def utc_time(seconds_: float, form: str = "%Y-%m-%d %H:%M") -> str:
    """Epoch seconds in UTC, by the strftime *form*."""
    return time.strftime(form, time.gmtime(math.floor(seconds_)))


def count(value: int) -> str:
    """A count with thousands separated: 576,000."""
    return f"{value:,}"
