"""The report's figures from one profile's probes: pure functions, no files, no clock.

Every probe counts once, by its send time, in one of five shares: back
within ``-w`` (round trip <= warning), within ``-c`` (<= critical), later,
filed as Junk (whatever its round trip), lost.  A probe declared lost that
arrived afterwards (its ``late`` line names the same probe id) counts by its
round trip, like one that came back in time, and not as lost.  The round
trip percentiles are over every probe that came back (Junk too), by nearest
rank: p95 is the smallest round trip that at least 95 % of them did not
exceed.  Windows end at the report's time and reach back 24 hours, 7 days,
30 days, or the whole history (from ``--since`` when given).
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Optional

from .history_read import JUNK, LATE, LOST, History, day_start, epoch, sent_text
from .record import record

HOUR, DAY = 3600.0, 86400.0
WINDOWS = (("24 h", DAY), ("7 d", 7 * DAY), ("30 d", 30 * DAY), ("all", math.inf))
SLOWEST = 10   # rows of the table of the slowest probes
OUTAGES = 20   # rows of the table of losses
GREEN_SHARE, RED_SHARE = 0.99, 0.95  # the verdict's bounds of the share back within -c


@record(frozen=True)
class Thresholds:
    """Round-trip thresholds in seconds, and where they came from (for the page)."""

    warning: float
    critical: float
    source: str = "default"


@record(frozen=True)
class Window:
    """The shares and round trips of the probes sent in one window."""

    name: str
    start: Optional[str]  # the earliest send time counted (fixed form), None: the whole history
    probes: int
    within_w: int
    within_c: int
    later: int
    junk: int
    lost: int
    rtts: tuple[float, ...] = ()  # p50, p95, p99, max; empty when nothing came back

    def share(self, count: int) -> Optional[float]:
        """*count* as a share of the window's probes (None without probes)."""
        return count / self.probes if self.probes else None


@record(frozen=True)
class Bucket:
    """The probes of one hour or day: how many, round trip p50/p95/max of those back, lost, in Junk."""

    start: float
    probes: int
    p50: Optional[float]
    p95: Optional[float]
    max: Optional[float]
    lost: int
    junk: int


@record(frozen=True)
class Slow:
    """One probe of the table of the slowest: sent, round trip, where found, by which node, the legs."""

    sent: str
    rtt: float
    outcome: int
    folder: str
    node: str
    probe_id: str
    leg_out: float
    leg_back: float


@record(frozen=True)
class Outage:
    """A run of lost probes with no probe back between them: first and last send time, how many."""

    first: str
    last: str
    probes: int


@record()
class Summary:
    """Everything the page shows of one profile."""

    windows: list[Window]
    points: list[tuple[float, float, int]]  # the last 24 h: (send time, round trip or NaN, outcome)
    hours: list[Bucket]                      # the last 7 days, hour by hour (hours without probes left out)
    days: list[Bucket]                       # the last 30 days, day by day
    slowest: list[Slow]
    outages: list[Outage]
    more_outages: int                        # outages in the last 30 days beyond those listed
    first: Optional[str]                     # the earliest and latest send time counted
    last: Optional[str]


def nearest_rank(ordered: Sequence[float], share: float) -> float:
    """The nearest-rank percentile *share* (0 < share <= 1) of the sorted, non-empty *ordered*."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def percentiles(ordered: Sequence[float]) -> tuple[float, ...]:
    """p50, p95, p99 and max of sorted round trips; () when there are none."""
    if not ordered:
        return ()
    return (nearest_rank(ordered, 0.5), nearest_rank(ordered, 0.95), nearest_rank(ordered, 0.99), ordered[-1])


class Probes:
    """A profile's probes sorted by send time, from *since* to before *until*, the superseded lost left out."""

    def __init__(self, history: History, since: Optional[str], until: Optional[str]) -> None:
        sent = history.sent
        superseded = set()
        if LATE in history.outcome:
            outcome = bytes(history.outcome)
            late = {history.probe_id[i] for i in _positions(outcome, LATE)}
            superseded = {i for i in _positions(outcome, LOST) if history.probe_id[i] in late}
        order: Optional[list[int]] = None
        if superseded or not all(map(str.__le__, sent[:-1], sent[1:])):
            order = sorted((i for i in range(len(sent)) if i not in superseded), key=sent.__getitem__)
        if order is None:
            self.index: Sequence[int] = range(len(sent))
            self.sent, self.rtt, self.outcome = sent, history.rtt, bytes(history.outcome)
        else:
            self.index = order
            self.sent = [sent[i] for i in order]
            self.rtt = array("d", [history.rtt[i] for i in order])
            self.outcome = bytes([history.outcome[i] for i in order])
        self.lo = bisect_left(self.sent, since) if since else 0
        self.hi = bisect_left(self.sent, until) if until else len(self.sent)

    def start(self, cut: Optional[str]) -> int:
        """The position of the first probe sent at or after *cut* (fixed form), no earlier than *since*."""
        return max(self.lo, bisect_left(self.sent, cut, self.lo, self.hi)) if cut else self.lo


def window(probes: Probes, name: str, cut: Optional[str], limits: Thresholds) -> Window:
    """The shares and round trips of the probes sent from *cut* on (None: all)."""
    lo, hi = probes.start(cut), probes.hi
    outcome, rtt = probes.outcome[lo:hi], probes.rtt[lo:hi]
    back = sorted([x for x in rtt if x == x])
    junk = [rtt[i] for i in _positions(outcome, JUNK)]
    w = bisect_right(back, limits.warning) - sum(1 for x in junk if x <= limits.warning)
    c = bisect_right(back, limits.critical) - sum(1 for x in junk if x <= limits.critical) - w
    lost = outcome.count(LOST)
    return Window(name, cut, hi - lo, w, c, len(back) - len(junk) - w - c, len(junk), lost, percentiles(back))


def _positions(outcome: bytes, code: int) -> list[int]:
    """Where *code* stands in *outcome*."""
    found, at = [], outcome.find(code)
    while at >= 0:
        found.append(at)
        at = outcome.find(code, at + 1)
    return found


def buckets(probes: Probes, lo: int, width: int) -> list[Bucket]:
    """The probes from position *lo* on, grouped by the first *width* characters of their send time
    (13: hours, 10: days)."""
    groups: dict[str, list[int]] = {}
    for i in range(lo, probes.hi):
        groups.setdefault(probes.sent[i][:width], []).append(i)
    out = []
    for key, members in groups.items():
        back = sorted(x for x in (probes.rtt[i] for i in members) if x == x)
        start = day_start(key[:10]) + (int(key[11:13]) * HOUR if width > 10 else 0.0)
        codes = bytes(probes.outcome[i] for i in members)
        out.append(Bucket(start, len(members), nearest_rank(back, 0.5) if back else None,
                          nearest_rank(back, 0.95) if back else None, back[-1] if back else None,
                          codes.count(LOST), codes.count(JUNK)))
    return out


def slowest(history: History, probes: Probes, lo: int, count: int = SLOWEST) -> list[Slow]:
    """The *count* slowest probes that came back, from position *lo* on, slowest first."""
    rtt = probes.rtt
    picked = heapq.nlargest(count, (i for i in range(lo, probes.hi) if rtt[i] == rtt[i]), key=rtt.__getitem__)
    rows = []
    for i in picked:
        j = probes.index[i]
        rows.append(Slow(probes.sent[i], rtt[i], probes.outcome[i], history.folder[j], history.node[j],
                         history.probe_id[j], history.leg_out[j], history.leg_back[j]))
    return rows


def outages(probes: Probes, lo: int) -> list[Outage]:
    """The runs of lost probes from position *lo* on, newest first."""
    runs: list[Outage] = []
    previous = -2
    for i in _positions(probes.outcome[lo:probes.hi], LOST):
        at = lo + i
        if at == previous + 1:
            runs[-1] = Outage(runs[-1].first, probes.sent[at], runs[-1].probes + 1)
        else:
            runs.append(Outage(probes.sent[at], probes.sent[at], 1))
        previous = at
    return runs[::-1]


def summarise(history: History, now: float, limits: Thresholds, since: Optional[float] = None,
              until: bool = False) -> Summary:
    """The figures of one profile's *history* as of *now* (epoch seconds).

    *since*: probes sent earlier are left out; *until*: so are those sent at or after *now*."""
    probes = Probes(history, sent_text(since) if since is not None else None, sent_text(now) if until else None)
    cuts = {name: (sent_text(now - span) if span != math.inf else None) for name, span in WINDOWS}
    windows = [window(probes, name, cuts[name], limits) for name, _span in WINDOWS]
    day, week, month = probes.start(cuts["24 h"]), probes.start(cuts["7 d"]), probes.start(cuts["30 d"])
    points = [(epoch(probes.sent[i]), probes.rtt[i], probes.outcome[i]) for i in range(day, probes.hi)]
    runs = outages(probes, month)
    return Summary(
        windows=windows, points=points, hours=buckets(probes, week, 13), days=buckets(probes, month, 10),
        slowest=slowest(history, probes, month), outages=runs[:OUTAGES], more_outages=max(0, len(runs) - OUTAGES),
        first=probes.sent[probes.lo] if probes.hi > probes.lo else None,
        last=probes.sent[probes.hi - 1] if probes.hi > probes.lo else None)


def verdict(last_day: Window, limits: Thresholds) -> str:
    """green, amber or red for the last 24 hours; grey without probes.

    green: at least 99 % back within -c (not in Junk) and p95 within -w; red: under 95 % back within -c,
    or p50 beyond -c; amber: anything between."""
    if not last_day.probes:
        return "grey"
    good = (last_day.within_w + last_day.within_c) / last_day.probes
    p50, p95 = (last_day.rtts[0], last_day.rtts[1]) if last_day.rtts else (math.inf, math.inf)
    if good < RED_SHARE or p50 > limits.critical:
        return "red"
    if good >= GREEN_SHARE and p95 <= limits.warning:
        return "green"
    return "amber"
