"""Evaluation with nagiosplugin: Resource -> Metrics -> Contexts -> Summary.

Perfdata labels (stable): ``lost``, ``oldest_pending``, ``pending``, ``rtt``,
``since_last_success``, ``junk`` (IMAP, unless --no-junk: own probes found in
the Junk folder this run); ``unexpunged`` when there are any; ``leg_out`` and
``leg_back`` when the slowest probe back carries a reflector's stamp.  Seconds carry unit ``s`` and are plain decimals; a
threshold field holds a plain number when the range is ``0:N`` and stays
empty otherwise (Icinga's metric writers drop range syntax).
"""

import math
import time
from typing import Callable, Optional

import nagiosplugin
from nagiosplugin.performance import Performance
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from .redact import redact
from .roundtrip import run
from .transports import Transports

NAME = "MAIL_ROUNDTRIP"


def plain(value, seconds=True):
    """A number as a plain decimal, never an exponent."""
    if not seconds:
        return str(int(value))
    text = "%.3f" % value
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


def _upper_bound(rng):
    """N for a plain 0:N range, else None."""
    if rng is None or rng.invert or rng.start != 0 or math.isinf(rng.end):
        return None
    return rng.end


def threshold_field(rng):
    """The perfdata field for a Range: a plain number for 0:N, else empty."""
    end = _upper_bound(rng)
    if end is None or end <= 0:
        return ""  # a zero line is no use in a graph either
    return number(end)


def number(value):
    """An integer-valued number without decimals, others as plain decimals."""
    return str(int(value)) if float(value).is_integer() else plain(value)


def violation(rng, unit="s"):
    """'> 120s' for a 0:N range, else 'outside range X'."""
    end = _upper_bound(rng)
    return "> %s%s" % (number(end), unit) if end is not None else "outside range %s" % (rng,)


def ago(seconds):
    """A short human duration: 45s, 5m, 3h, 2d."""
    seconds = max(0, seconds)
    for limit, div, unit in ((90, 1, "s"), (90 * 60, 60, "m"), (48 * 3600, 3600, "h")):
        if seconds < limit:
            return "%d%s" % (seconds // div, unit)
    return "%dd" % (seconds // 86400)


# -- the resource ------------------------------------------------------------

class RoundTrip(nagiosplugin.Resource):
    """Runs one invocation and yields its figures as Metrics.

    *transports* (default: those the settings name) and *clock* (epoch
    seconds) are handed to :func:`roundtrip.run`.
    """

    def __init__(self, settings, budget, transports: Optional[Transports] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.budget = budget
        self.transports = transports
        self.clock = clock
        self.report = None

    @property
    def name(self):
        return NAME

    def probe(self):
        report = self.report = run(self.settings, self.budget, self.clock, self.transports)
        if report.unknown:
            yield nagiosplugin.Metric("error", report.unknown, context="unknown")
            return
        if report.state_problem:
            yield nagiosplugin.Metric("state", report.state_problem, context="state")
        for failure in report.failures:
            yield nagiosplugin.Metric(failure.step, failure, context="failure")
        out = report.outcome
        if out.rtts:
            yield nagiosplugin.Metric("rtt", out.rtt, "s", min=0, context="rtt")
        for name, leg in zip(("leg_out", "leg_back"), out.slowest_legs or ()):
            if leg is not None:
                yield nagiosplugin.Metric(name, leg, "s", min=0, context="leg")
        yield nagiosplugin.Metric("oldest_pending", out.oldest_pending, "s", min=0, context="oldest_pending")
        if report.since_last_success is not None:
            yield nagiosplugin.Metric(
                "since_last_success", max(0.0, report.since_last_success), "s", min=0,
                context="since_last_success",
            )
        yield nagiosplugin.Metric("pending", report.pending, min=0, context="pending")
        yield nagiosplugin.Metric("lost", len(out.lost_now), min=0, context="lost")
        if out.late:
            yield nagiosplugin.Metric("late", len(out.late), context="late")
        if report.unexpunged:
            yield nagiosplugin.Metric("unexpunged", report.unexpunged, min=0, context="unexpunged")
        if report.junk is not None:
            yield nagiosplugin.Metric("junk", report.junk, min=0, context="junk")


# -- contexts ------------------------------------------------------------------

class Figure(nagiosplugin.ScalarContext):
    """A scalar with thresholds (or none) and plain-decimal perfdata."""

    def __init__(self, name, warning=None, critical=None, seconds=True, evaluated=True, zero_is_ok=False):
        super().__init__(name, warning, critical)
        self.seconds = seconds
        self.evaluated = evaluated
        self.zero_is_ok = zero_is_ok  # 0 means "nothing to judge" (nothing in flight)

    def evaluate(self, metric, resource):
        if not self.evaluated or (self.zero_is_ok and metric.value == 0):
            return self.result_cls(Ok, None, metric)
        return super().evaluate(metric, resource)

    def performance(self, metric, resource):
        warn = threshold_field(self.warning) if self.evaluated else ""
        crit = threshold_field(self.critical) if self.evaluated else ""
        minimum = "" if metric.min is None else number(metric.min)
        return Performance(metric.name, plain(metric.value, self.seconds), metric.uom or "",
                           warn, crit, minimum, "")


class Junk(Figure):
    """Own probes found in the Junk folder: the --junk-state when there are any."""

    STATES = {"ok": Ok, "warning": Warn, "critical": Critical}

    def __init__(self, junk_state):
        super().__init__("junk", seconds=False, evaluated=False)
        self.state = self.STATES[junk_state]

    def evaluate(self, metric, resource):
        return self.result_cls(self.state if metric.value else Ok, None, metric)


class Failure(nagiosplugin.Context):
    """A step that failed talking to a server: CRITICAL (or UNKNOWN by --error-state)."""

    def __init__(self, error_state):
        super().__init__("failure")
        self.state = Unknown if error_state == "unknown" else Critical

    def evaluate(self, metric, resource):
        f = metric.value
        return self.result_cls(self.state, "%s failed: %s" % (f.step, f.detail), metric)


class Note(nagiosplugin.Context):
    """A message with a fixed state (damaged state kept aside, lock busy, ...)."""

    def __init__(self, name, state):
        super().__init__(name)
        self.state = state

    def evaluate(self, metric, resource):
        return self.result_cls(self.state, " ".join(redact(str(metric.value)).replace("|", "/").split()), metric)


def contexts(settings):
    w, c = settings.warning, settings.critical
    stale = settings.stale_warning is not None or settings.stale_critical is not None
    return [
        Figure("rtt", w, c),
        Figure("oldest_pending", w, c, zero_is_ok=True),
        Figure("since_last_success", settings.stale_warning, settings.stale_critical, evaluated=stale),
        Figure("pending", seconds=False, evaluated=False),
        Figure("lost", settings.lost_warning, settings.lost_critical, seconds=False),
        Figure("unexpunged", seconds=False, evaluated=False),
        Figure("leg", settings.leg_warning, settings.leg_critical,
               evaluated=settings.leg_warning is not None or settings.leg_critical is not None),
        Junk(settings.junk_state),
        Note("late", Ok),
        Note("state", Warn),
        Note("unknown", Unknown),
        Failure(settings.error_state),
    ]


# -- summary -------------------------------------------------------------------

class Summary(nagiosplugin.Summary):
    """Status line: problems first (worst first), then the run's figures; the
    status line and the -v lines redacted last (no secret of the run in them)."""

    def ok(self, results):
        return redact(self._line(results))

    def problem(self, results):
        return redact(self._line(results))

    def verbose(self, results):
        lines = []
        resource = _resource(results)
        if resource is not None and resource.report is not None:
            lines.extend(redact(str(note)) for note in resource.report.notes)
        return lines

    def _line(self, results):
        by_name = {r.metric.name: r for r in results if r.metric is not None}
        resource = _resource(results)
        report = resource.report if resource is not None else None
        problems = sorted((r for r in results if r.state != Ok), key=lambda r: -int(r.state))
        parts = [self._phrase(r, problem=True, report=report) for r in problems]
        shown = {id(r) for r in problems}
        if report is None or report.unknown:
            return ", ".join(parts)
        for name in ("rtt", "oldest_pending", "lost", "late", "junk", "pending", "since_last_success", "unexpunged"):
            r = by_name.get(name)
            if r is not None and id(r) not in shown:
                phrase = self._phrase(r, problem=False, report=report)
                if phrase:
                    parts.append(phrase)
            elif r is None and name == "rtt":
                parts.append(self._no_return(report))
            elif r is None and name == "since_last_success" and not report.first_probe:
                parts.append("no success yet")
        return ", ".join(p for p in parts if p)

    @staticmethod
    def _no_return(report):
        if report.first_probe and report.sent is not None and report.sent.status == "sent":
            # beside a failure, "first probe sent" would read like good news
            return "probe sent" if report.failures else "first probe sent"
        if report.first_probe and report.sent is not None and report.sent.status == "uncertain":
            return "first probe may be out"
        if report.first_probe:
            return "no probe out yet"
        if not report.collected:
            return ""  # the mailbox could not be read: the failure says so
        return "no probe back this run"

    @staticmethod
    def _phrase(result, problem, report=None):
        m = result.metric
        name = m.name
        ctx = m.contextobj
        rng = None
        if problem and result.state in (Warn, Critical) and isinstance(ctx, Figure):
            rng = ctx.critical if result.state == Critical else ctx.warning
        if name == "rtt":
            n = len(report.outcome.rtts) if report else 1
            text = "round trip %ss" % plain(m.value) if n <= 1 else "%d round trips, slowest %ss" % (n, plain(m.value))
            legs = report.outcome.slowest_legs if report else None
            if legs and any(leg is not None for leg in legs):
                text += " (%s)" % ", ".join("%s %ss" % (way, plain(leg)) for way, leg in zip(("out", "back"), legs)
                                           if leg is not None)
            return text + (" " + violation(rng) if rng else "")
        if name in ("leg_out", "leg_back"):
            way = "out" if name == "leg_out" else "back"
            return "leg %s %ss %s" % (way, plain(m.value), violation(rng)) if rng else ""
        if name == "oldest_pending":
            if rng:
                return "probe in flight for %ss %s" % (plain(m.value), violation(rng))
            return "oldest in flight %ss" % plain(m.value) if m.value > 0 and report and not report.outcome.rtts else ""
        if name == "lost":
            if not m.value and not problem:
                return ""
            text = "%d probe%s lost" % (m.value, "" if m.value == 1 else "s")
            return text + (" " + violation(rng, "") if rng and problem else "")
        if name == "junk":
            n = int(m.value)
            return "" if not n else "probe delivered to Junk" if n == 1 else "%d probes delivered to Junk" % n
        if name == "late":
            return "%d lost probe%s came back late" % (m.value, "" if m.value == 1 else "s")
        if name == "pending":
            return "%d in flight" % m.value
        if name == "unexpunged":
            return ("%d removed probe%s flagged \\Deleted wait for an EXPUNGE (server without UIDPLUS, "
                    "see --dedicated-mailbox)" % (m.value, "" if m.value == 1 else "s"))
        if name == "since_last_success":
            if rng:
                return "no success for %ss %s" % (plain(m.value), violation(rng))
            return "last success %s ago" % ago(m.value)
        return str(result)


def _resource(results):
    for r in results:
        if r.resource is not None:
            return r.resource
    return None


def build(settings, budget, transports: Optional[Transports] = None,
          clock: Callable[[], float] = time.time) -> nagiosplugin.Check:
    """The nagiosplugin Check for one run (*transports* and *clock*: see RoundTrip)."""
    return nagiosplugin.Check(RoundTrip(settings, budget, transports, clock), *contexts(settings), Summary(),
                              name=NAME)
