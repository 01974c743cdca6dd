"""The report's three charts as inline SVG: the day, the week and the month of one profile.

- day: every probe of the last 24 hours a point at its send time and round
  trip; probes filed as Junk are amber diamonds, lost ones red marks in the
  strip along the top;
- week: the last 7 days hour by hour, the band from p50 to p95 with p50 as a
  line (each held across its hour), hours with lost or Junk probes marked in the top strip;
- month: the last 30 days day by day, a box from p50 to p95 and a whisker up
  to the slowest, the number of lost probes of each day in the top strip.

The round-trip axis is logarithmic (mail takes a second on a good day and an
hour on a bad one), with the -w and -c thresholds drawn across.  A chart is a
handful of SVG elements whatever the number of probes: the day's points are
one path of dots.  A chart of a history younger than its span starts at the
first probe (the day's at least an hour back, the week's a day, the month's
a week), so a new profile's probes are not crowded at its right edge.
Times are UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable, Optional

from .history_read import JUNK, LOST
from .report_stats import DAY, HOUR, Bucket, Thresholds
from .report_text import threshold, utc_time

WIDTH, HEIGHT = 960, 250
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 30, 26  # the plot area's margins; the lost row is the strip above it
STRIP = 20
BLUE, BAND, AMBER, RED, GRID, INK = "#1f5fa8", "#b9d0ea", "#d98c00", "#c62828", "#d9d9d9", "#333"


class Plot:
    """Where a time and a round trip land in a chart spanning *start* to *end* (epoch seconds)."""

    def __init__(self, start: float, end: float, rtts: Sequence[float], limits: Thresholds) -> None:
        self.start, self.end = start, end
        shown = [x for x in rtts if x == x and x > 0] + [limits.warning, limits.critical]
        self.lo = 10.0 ** math.floor(math.log10(max(0.01, min(shown))))
        self.hi = 10.0 ** math.ceil(math.log10(max(shown) * 1.0001))
        self.limits = limits

    def x(self, t: float) -> float:
        span = self.end - self.start
        return LEFT + (WIDTH - LEFT - RIGHT) * min(1.0, max(0.0, (t - self.start) / span))

    def y(self, rtt: float) -> float:
        share = (math.log10(max(rtt, self.lo)) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * min(1.0, share)

    def frame(self, ticks: Sequence[float], tick_form: str) -> list[str]:
        """The axes, grid, threshold lines and the lost strip's label."""
        out = ['<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="%s"/>'
               % (LEFT, TOP, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM, GRID)]
        decade = self.lo
        while decade <= self.hi * 1.0001:
            y = self.y(decade)
            out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>' % (LEFT, WIDTH - RIGHT, y, y, GRID))
            out.append('<text x="%d" y="%.1f" text-anchor="end" class="ax">%s</text>'
                       % (LEFT - 6, y + 4, "%g s" % decade))
            decade *= 10
        for t in ticks:
            x = self.x(t)
            out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s"/>' % (x, x, TOP, HEIGHT - BOTTOM, GRID))
            out.append('<text x="%.1f" y="%d" text-anchor="middle" class="ax">%s</text>'
                       % (x, HEIGHT - BOTTOM + 16, utc_time(t, tick_form)))
        for value, colour in ((self.limits.warning, AMBER), (self.limits.critical, RED)):
            y = self.y(value)
            out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>'
                       % (LEFT, WIDTH - RIGHT, y, y, colour))
        out.append('<text x="%d" y="%d" text-anchor="end" class="ax">lost</text>' % (LEFT - 6, TOP - STRIP / 2 + 2))
        return out

    def labels(self) -> list[str]:
        """The thresholds' names, drawn over the data: -c above its line, -w below its own."""
        return ['<text x="%d" y="%.1f" text-anchor="end" class="th" fill="%s">%s %s</text>'
                % (WIDTH - RIGHT - 4, self.y(value) + shift, colour, name, threshold(value))
                for value, colour, name, shift in ((self.limits.warning, AMBER, "-w", 13),
                                                   (self.limits.critical, RED, "-c", -4))]


def _svg(name: str, plot: Plot, body: list[str]) -> str:
    return ('<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">'
            '%s</svg>' % (WIDTH, HEIGHT, name, "".join(body + plot.labels())))


def _ticks(start: float, end: float, step: float) -> list[float]:
    """Tick times from the first multiple of *step* after *start* up to *end*."""
    first = math.ceil(start / step) * step
    return [first + k * step for k in range(int((end - first) // step) + 1)]


TICK_STEPS = (300.0, 600.0, 900.0, 1800.0, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 5 * DAY)


def span(now: float, longest: float, shortest: float, first: Optional[float]) -> tuple[float, list[float], str]:
    """(start, ticks, tick label form) of a chart ending at *now*: it reaches back *longest* seconds, or
    only to the first probe (at least *shortest*) when the history is younger."""
    start = now - longest
    if first is not None and first > start:
        start = max(start, min(now - shortest, first - first % 300.0))
    step = next((s for s in TICK_STEPS if (now - start) / s <= 8), TICK_STEPS[-1])
    form = "%H:%M" if step < DAY else ("%a %d" if step == DAY else "%m-%d")
    return start, _ticks(start, now, step), form


def _empty(plot: Plot, body: list[str], what: str) -> None:
    body.append('<text x="%d" y="%d" text-anchor="middle" class="none">no probes in %s</text>'
                % ((LEFT + WIDTH - RIGHT) / 2, (TOP + HEIGHT - BOTTOM) / 2, what))


def _strip(x0: float, x1: float, colour: str) -> str:
    """A mark in the lost strip from *x0* to *x1* (at least 2 wide)."""
    return '<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>' % (
        x0, TOP - STRIP, max(2.0, x1 - x0), STRIP - 3, colour)


def day_chart(points: Sequence[tuple[float, float, int]], now: float, limits: Thresholds,
              first: Optional[float] = None) -> str:
    """Every probe of the 24 hours up to *now*: (send time, round trip or NaN, outcome); from the *first*
    probe on when the history is younger (at least an hour)."""
    start, ticks, form = span(now, DAY, HOUR, first)
    plot = Plot(start, now, [p[1] for p in points], limits)
    body = plot.frame(ticks, form)
    back = "".join("M%.1f %.1fh0" % (plot.x(t), plot.y(r)) for t, r, o in points if o != JUNK and o != LOST)
    junk = "".join("M%.1f %.1fl4 4-4 4-4-4z" % (plot.x(t), plot.y(r) - 4) for t, r, o in points if o == JUNK)
    lost = "".join("M%.1f %dv%d" % (plot.x(t), TOP - STRIP, STRIP - 3) for t, _r, o in points if o == LOST)
    if back:
        body.append('<path d="%s" stroke="%s" stroke-width="3.2" stroke-linecap="round" fill="none"/>' % (back, BLUE))
    if junk:
        body.append('<path d="%s" fill="%s" stroke="#7a4f00" stroke-width="0.6"/>' % (junk, AMBER))
    if lost:
        body.append('<path d="%s" stroke="%s" stroke-width="2"/>' % (lost, RED))
    if not points:
        _empty(plot, body, "the last 24 hours")
    return _svg("round trip of every probe of the last 24 hours", plot, body)


def _runs(buckets: Sequence[Bucket], width: float) -> list[list[Bucket]]:
    """*buckets* (sorted, those with round trips) split where a bucket of *width* seconds is missing."""
    runs: list[list[Bucket]] = []
    for b in buckets:
        if b.p50 is None:
            continue
        if runs and b.start - runs[-1][-1].start <= width * 1.5:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


def _steps(plot: Plot, run: Sequence[Bucket], value: Callable[[Bucket], Optional[float]], width: float) -> list[str]:
    """The points of a line that holds each bucket's *value* across the bucket's *width* seconds."""
    return ["%.1f %.1f" % (plot.x(b.start + edge), plot.y(value(b) or 0.0)) for b in run for edge in (0.0, width)]


def week_chart(hours: Sequence[Bucket], now: float, limits: Thresholds, first: Optional[float] = None) -> str:
    """The 7 days up to *now* hour by hour: the p50 to p95 band, p50 as a line, lost and Junk in the strip;
    from the *first* probe on when the history is younger (at least a day)."""
    start, ticks, form = span(now, 7 * DAY, DAY, first)
    hours = sorted(hours, key=lambda b: b.start)
    plot = Plot(start, now, [v for b in hours for v in (b.p50, b.p95) if v is not None], limits)
    body = plot.frame(ticks, form)
    for run in _runs(hours, HOUR):
        upper = _steps(plot, run, lambda b: b.p95, HOUR)
        lower = _steps(plot, run, lambda b: b.p50, HOUR)
        body.append('<polygon points="%s" fill="%s" stroke="none"/>' % (" ".join(upper + lower[::-1]), BAND))
        body.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.6"/>' % (" ".join(lower), BLUE))
    for b in hours:
        if b.lost or b.junk:
            body.append(_strip(plot.x(b.start), plot.x(b.start + HOUR), RED if b.lost else AMBER))
    if not hours:
        _empty(plot, body, "the last 7 days")
    return _svg("hourly median and 95th percentile of the round trip, last 7 days", plot, body)


def month_chart(days: Sequence[Bucket], now: float, limits: Thresholds, first: Optional[float] = None) -> str:
    """The 30 days up to *now* day by day: p50 to p95 as a box, a whisker to the slowest, lost counts on top;
    from the *first* probe on when the history is younger (at least a week)."""
    start, ticks, form = span(now, 30 * DAY, 7 * DAY, first)
    days = sorted(days, key=lambda b: b.start)
    plot = Plot(start, now, [v for b in days for v in (b.p50, b.p95, b.max) if v is not None], limits)
    body = plot.frame(ticks, form)
    for b in days:
        x0, x1 = plot.x(b.start + DAY * 0.15), plot.x(b.start + DAY * 0.85)
        if x1 - x0 < 4:  # a day that began well before the window: its box would not fit
            x0, x1 = plot.x(start), plot.x(start) + 4
        mid = (x0 + x1) / 2
        if b.p50 is not None and b.p95 is not None and b.max is not None:
            body.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#777"/>'
                        % (mid, mid, plot.y(b.max), plot.y(b.p95)))
            body.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#777"/>'
                        % (mid - 3, mid + 3, plot.y(b.max), plot.y(b.max)))
            top, bottom = plot.y(b.p95), plot.y(b.p50)
            body.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                        % (x0, top, x1 - x0, max(1.0, bottom - top), BAND))
            body.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>'
                        % (x0, x1, bottom, bottom, BLUE))
        if b.lost:
            body.append(_strip(x0, x1, RED))
            body.append('<text x="%.1f" y="%d" text-anchor="middle" class="cnt">%d</text>'
                        % (mid, TOP - STRIP / 2 + 2, b.lost))
    if not days:
        _empty(plot, body, "the last 30 days")
    return _svg("daily median, 95th percentile and slowest round trip, last 30 days", plot, body)
