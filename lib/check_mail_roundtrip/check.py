"""Evaluation with nagiosplugin: Resource -> Metrics -> Contexts -> Summary.

Each context says its own figure in the status line (its words: the problem
when a range is violated, else the OK phrase, as the result's hint); the
Summary only puts the problems first and the figures in ORDER, and joins them.

Perfdata labels (stable): ``lost``, ``oldest_pending``, ``pending``, ``rtt``,
``since_last_success``, ``junk`` (IMAP or Graph, unless --no-junk: own probes found in
the Junk folder this run); ``unexpunged`` when there are any; ``leg_out`` and
``leg_back`` when the slowest probe back carries a reflector's stamp.  Seconds carry unit ``s`` and are plain decimals; a
threshold field holds a plain number when the range is ``0:N`` and stays
empty otherwise (Icinga's metric writers drop range syntax).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable, Optional

import nagiosplugin
from nagiosplugin.performance import Performance
from nagiosplugin.range import Range
from nagiosplugin.state import Critical, Ok, ServiceState, Unknown, Warn

from .redact import redact
from .roundtrip import Report, run
from .settings import upper_bound as _upper_bound
from .transports import Transports

if TYPE_CHECKING:
    from .budget import Budget
    from .ledger import Outcome
    from .settings import Settings

NAME = "MAIL_ROUNDTRIP"


def plain(value: float, seconds: bool = True) -> str:
    """A number as a plain decimal, never an exponent."""
    if not seconds:
        return str(int(value))
    text = "%.3f" % value
    text = text.rstrip("0")
    return text + "0" if text.endswith(".") else text


def threshold_field(rng: Optional[Range]) -> str:
    """The perfdata field for a Range: a plain number for 0:N, else empty."""
    end = _upper_bound(rng)
    if end is None or end <= 0:
        return ""  # a zero line is no use in a graph either
    return number(end)


def number(value: float) -> str:
    """An integer-valued number without decimals, others as plain decimals."""
    return str(int(value)) if float(value).is_integer() else plain(value)


def violation(rng: Optional[Range], unit: str = "s") -> str:
    """'> 120s' for a 0:N range, else 'outside range X'."""
    end = _upper_bound(rng)
    return "> %s%s" % (number(end), unit) if end is not None else "outside range %s" % (rng,)


def ago(seconds: float) -> str:
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

    def __init__(self, settings: Settings, budget: Budget, transports: Optional[Transports] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.budget = budget
        self.transports = transports
        self.clock = clock
        self.report: Optional[Report] = None

    @property
    def name(self) -> str:
        return NAME

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        report = self.report = run(self.settings, self.budget, self.clock, self.transports)
        if report.unknown:
            yield nagiosplugin.Metric("error", report.unknown, context="unknown")
            return
        if report.state_problem:
            yield nagiosplugin.Metric("state", report.state_problem, context="state")
        if report.history_problem:
            yield nagiosplugin.Metric("history", report.history_problem, context="state")
        for failure in report.failures:
            yield nagiosplugin.Metric(failure.step, failure, context="failure")
        out = _outcome(report)
        if out.rtts:
            yield nagiosplugin.Metric("rtt", out.rtt, "s", min=0, context="rtt")
        else:
            yield nagiosplugin.Metric("no_return", None, context="no_return")
        for name, leg in zip(("leg_out", "leg_back"), out.slowest_legs or ()):
            if leg is not None:
                yield nagiosplugin.Metric(name, leg, "s", min=0, context="leg")
        yield nagiosplugin.Metric("oldest_pending", out.oldest_pending, "s", min=0, context="oldest_pending")
        if report.since_last_success is not None:
            yield nagiosplugin.Metric(
                "since_last_success", max(0.0, report.since_last_success), "s", min=0,
                context="since_last_success",
            )
        else:
            yield nagiosplugin.Metric("no_success", None, context="no_success")
        yield nagiosplugin.Metric("pending", report.pending, min=0, context="pending")
        yield nagiosplugin.Metric("lost", len(out.lost_now), min=0, context="lost")
        if out.late:
            yield nagiosplugin.Metric("late", len(out.late), context="late")
        if report.unexpunged:
            yield nagiosplugin.Metric("unexpunged", report.unexpunged, min=0, context="unexpunged")
        if report.junk is not None:
            yield nagiosplugin.Metric("junk", report.junk, min=0, context="junk")
        bad = auth_words(report) if self.settings.auth_results_state != "ok" else ""
        if bad:
            yield nagiosplugin.Metric("auth", bad, context="auth")


# -- contexts ------------------------------------------------------------------

# What a context says of its metric: words(metric, rng, report), *rng* the range
# the metric violates (None: no problem); "" says nothing.
Words = Callable[[nagiosplugin.Metric, Optional[Range], Report], str]


class Figure(nagiosplugin.ScalarContext):
    """A scalar with thresholds (or none) and plain-decimal perfdata, said in *words*."""

    def __init__(self, name: str, warning: Optional[Range] = None, critical: Optional[Range] = None,
                 seconds: bool = True, evaluated: bool = True, zero_is_ok: bool = False, *, words: Words) -> None:
        super().__init__(name, warning, critical, fmt_metric=None)  # no description: the words say it all
        self.seconds = seconds
        self.evaluated = evaluated
        self.zero_is_ok = zero_is_ok  # 0 means "nothing to judge" (nothing in flight)
        self.words = words

    def evaluate(self, metric: nagiosplugin.Metric, resource: RoundTrip) -> nagiosplugin.Result:
        if not self.evaluated or (self.zero_is_ok and metric.value == 0):
            return self.said(Ok, metric, resource)
        return self.said(super().evaluate(metric, resource).state, metric, resource)

    def said(self, state: ServiceState, metric: nagiosplugin.Metric,
             resource: RoundTrip) -> nagiosplugin.Result:
        """The result in *state*, its hint the figure's words (the problem with the range violated)."""
        rng = None
        if self.evaluated and state in (Warn, Critical):
            rng = self.critical if state == Critical else self.warning
        return self.result_cls(state, self.words(metric, rng, _report(resource)), metric)

    def performance(self, metric: nagiosplugin.Metric, resource: RoundTrip) -> Performance:
        warn = threshold_field(self.warning) if self.evaluated else ""
        crit = threshold_field(self.critical) if self.evaluated else ""
        minimum = "" if metric.min is None else number(metric.min)
        return Performance(metric.name, plain(metric.value, self.seconds), metric.uom or "",
                           warn, crit, minimum, "")


class Junk(Figure):
    """Own probes found in the Junk folder: the --junk-state when there are any."""

    STATES = {"ok": Ok, "warning": Warn, "critical": Critical}

    def __init__(self, junk_state: str) -> None:
        super().__init__("junk", seconds=False, evaluated=False, words=junk_words)
        self.state = self.STATES[junk_state]

    def evaluate(self, metric: nagiosplugin.Metric, resource: RoundTrip) -> nagiosplugin.Result:
        return self.said(self.state if metric.value else Ok, metric, resource)


class Failure(nagiosplugin.Context):
    """A step that failed talking to a server: CRITICAL (or UNKNOWN by --error-state)."""

    def __init__(self, error_state: str) -> None:
        super().__init__("failure")
        self.state = Unknown if error_state == "unknown" else Critical

    def evaluate(self, metric: nagiosplugin.Metric, resource: RoundTrip) -> nagiosplugin.Result:
        f = metric.value
        return self.result_cls(self.state, "%s failed: %s" % (f.step, f.detail), metric)


class Note(nagiosplugin.Context):
    """A message with a fixed state (damaged state kept aside, lock busy, ...), said in
    *words* (default: the message itself, on one line)."""

    def __init__(self, name: str, state: ServiceState, words: Optional[Words] = None) -> None:
        super().__init__(name)
        self.state = state
        self.words = words or message_words

    def evaluate(self, metric: nagiosplugin.Metric, resource: RoundTrip) -> nagiosplugin.Result:
        return self.result_cls(self.state, self.words(metric, None, _report(resource)), metric)


def _report(resource: RoundTrip) -> Report:
    """The report of *resource*'s run: its contexts are evaluated after it ran."""
    assert resource.report is not None
    return resource.report


def _outcome(report: Report) -> Outcome:
    """The outcome of a run that was not UNKNOWN (only those have figures to tell)."""
    assert report.outcome is not None
    return report.outcome


def contexts(settings: Settings) -> list[nagiosplugin.Context]:
    w, c = settings.warning, settings.critical
    stale = settings.stale_warning is not None or settings.stale_critical is not None
    return [
        Figure("rtt", w, c, words=rtt_words),
        Figure("oldest_pending", w, c, zero_is_ok=True, words=oldest_pending_words),
        Figure("since_last_success", settings.stale_warning, settings.stale_critical, evaluated=stale,
               words=since_last_success_words),
        Figure("pending", seconds=False, evaluated=False, words=pending_words),
        Figure("lost", settings.lost_warning, settings.lost_critical, seconds=False, words=lost_words),
        Figure("unexpunged", seconds=False, evaluated=False, words=unexpunged_words),
        Figure("leg", settings.leg_warning, settings.leg_critical,
               evaluated=settings.leg_warning is not None or settings.leg_critical is not None, words=leg_words),
        Junk(settings.junk_state),
        Note("auth", Junk.STATES[settings.auth_results_state]),
        Note("late", Ok, late_words),
        Note("no_return", Ok, no_return_words),
        Note("no_success", Ok, no_success_words),
        Note("state", Warn),
        Note("unknown", Unknown),
        Failure(settings.error_state),
    ]


# -- words ---------------------------------------------------------------------

def rtt_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """The slowest round trip of the run (with its legs where a reflector stamped it)."""
    n = len(_outcome(report).rtts)
    text = "round trip %ss" % plain(m.value) if n <= 1 else "%d round trips, slowest %ss" % (n, plain(m.value))
    legs = _outcome(report).slowest_legs
    if legs and any(leg is not None for leg in legs):
        text += " (%s)" % ", ".join("%s %ss" % (way, plain(leg)) for way, leg in zip(("out", "back"), legs)
                                   if leg is not None)
    if not rng:
        return text
    traced = report.traced.get(max(_outcome(report).rtts, key=lambda r: r[1])[0])
    hop = traced.slowest_words() if traced is not None else ""
    return text + " " + violation(rng) + (" (%s)" % hop if hop else "")


def auth_words(report: Report) -> str:
    """The bad verdicts of the probes looked at closer (``dkim=fail at mail.lab.test``), each said once."""
    said: list[str] = []
    for traced in report.traced.values():
        words = traced.bad_words()
        if words and words not in said:
            said.append(words)
    return ", ".join(said)


def leg_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """A leg of the slowest round trip: only when too slow (else the round trip names it)."""
    way = "out" if m.name == "leg_out" else "back"
    return "leg %s %ss %s" % (way, plain(m.value), violation(rng)) if rng else ""


def oldest_pending_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """The probe longest in flight: told when nothing came back this run."""
    if rng:
        return "probe in flight for %ss %s" % (plain(m.value), violation(rng))
    return "oldest in flight %ss" % plain(m.value) if m.value > 0 and not _outcome(report).rtts else ""


def lost_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """The probes given up as lost: told when there are any."""
    if not m.value and not rng:
        return ""
    text = "%d probe%s lost" % (m.value, "" if m.value == 1 else "s")
    return text + (" " + violation(rng, "") if rng else "")


def junk_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """Own probes found in the Junk folder: told when there are any."""
    n = int(m.value)
    return "" if not n else "probe delivered to Junk" if n == 1 else "%d probes delivered to Junk" % n


def late_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """Probes counted lost before that came back after all."""
    return "%d lost probe%s came back late" % (m.value, "" if m.value == 1 else "s")


def pending_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """The probes in flight."""
    return "%d in flight" % m.value


def unexpunged_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """Removed probes the server keeps until an EXPUNGE."""
    return ("%d removed probe%s flagged \\Deleted wait for an EXPUNGE (server without UIDPLUS, "
            "see --dedicated-mailbox)" % (m.value, "" if m.value == 1 else "s"))


def since_last_success_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """The time since the last round trip, of any node."""
    if rng:
        return "no success for %ss %s" % (plain(m.value), violation(rng))
    return "last success %s ago" % ago(m.value)


def no_return_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """In place of the round trip when none came back: what there is to wait for."""
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


def no_success_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """In place of the time since the last success when there was none (nothing to say at first)."""
    return "" if report.first_probe else "no success yet"


def message_words(m: nagiosplugin.Metric, rng: Optional[Range], report: Report) -> str:
    """A message as it is, on one line, no secret in it, no '|' (which would start perfdata)."""
    return " ".join(redact(str(m.value)).replace("|", "/").split())


# -- summary -------------------------------------------------------------------

# The figures told after the problems, in this order (those of them the run has).
ORDER = ("rtt", "no_return", "oldest_pending", "lost", "late", "junk", "pending", "since_last_success",
         "no_success", "unexpunged")


class Summary(nagiosplugin.Summary):
    """Status line: problems first (worst first), then the run's figures in ORDER,
    each in its context's words; the status line and the -v lines redacted last
    (no secret of the run in them)."""

    def ok(self, results: nagiosplugin.Results) -> str:
        return redact(self._line(results))

    def problem(self, results: nagiosplugin.Results) -> str:
        return redact(self._line(results))

    def verbose(self, results: nagiosplugin.Results) -> list[str]:
        lines: list[str] = []
        resource = _resource(results)
        if resource is not None and resource.report is not None:
            lines.extend(redact(str(note)) for note in resource.report.notes)
        return lines

    @staticmethod
    def _line(results: nagiosplugin.Results) -> str:
        problems = sorted((r for r in results if r.state != Ok), key=lambda r: -int(r.state))
        fine = {r.metric.name: r for r in results if r.state == Ok and r.metric is not None}
        parts = [str(r) for r in problems] + [str(fine[name]) for name in ORDER if name in fine]
        return ", ".join(p for p in parts if p)


def _resource(results: nagiosplugin.Results) -> Optional[RoundTrip]:
    for r in results:
        if r.resource is not None:
            return r.resource
    return None


def build(settings: Settings, budget: Budget, transports: Optional[Transports] = None,
          clock: Callable[[], float] = time.time) -> nagiosplugin.Check:
    """The nagiosplugin Check for one run (*transports* and *clock*: see RoundTrip)."""
    return nagiosplugin.Check(RoundTrip(settings, budget, transports, clock), *contexts(settings), Summary(),
                              name=NAME)
