"""Where a returned probe's time went, and how it was judged on its way: the probes a run looks at closer.

A run reads the trace fields (Received, Authentication-Results) of a few of
the probes it booked, never of the others (:func:`chosen`):

- every probe whose round trip is beyond -w or -c, and every probe found in
  the Junk folder: the status line names the slowest hop of the slowest one;
- the slowest probe of the booking as well with -v (its hop lines) or with
  --auth-results-state warning or critical (its verdicts are judged), and
  with the latter every probe back (a verdict is judged for each);

at most MAX_TRACED, the slowest first.  A steady-state run within the
thresholds, without -v and without --auth-results-state, reads nothing more
(nor loads the parsers).

:func:`read` asks the collector for those fields (IMAP: one FETCH; POP3 and
Graph: what was read already) and makes a :class:`Traced` of each: its hops
(:mod:`hops`) and the verdicts of the trusted host (:mod:`auth_results`),
with the lines for -v.  A failure to read them is a note, never a failed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from .failure import StepFailure
from .mail import TRACE_HEADERS
from .record import record

if TYPE_CHECKING:
    from nagiosplugin import Range

    from .auth_results import Verdicts
    from .hops import Route
    from .ledger import Arrival
    from .mail import Collector

MAX_TRACED = 10  # probes whose trace fields one booking reads at most


@record()
class Traced:
    """One probe looked at closer: its hops and the trusted host's verdicts."""

    probe_id: str
    rtt: float
    route: Route
    verdicts: Verdicts

    def lines(self) -> list[str]:
        """The lines for -v: a heading, one line per hop (oldest first), the verdicts."""
        return (["probe %s, round trip %.3fs: its hops, oldest first (Received dates have whole seconds)"
                 % (self.probe_id, self.rtt)] + self.route.lines() + [self.verdicts.line()])

    def slowest_words(self) -> str:
        """``slowest hop: 45s at mx2.example.org``, or "" when no hop has a time."""
        hop = self.route.slowest()
        if hop is None or hop.seconds is None:
            return ""
        return "slowest hop: %ss at %s" % (_seconds(hop.seconds), hop.at)

    def bad_words(self) -> str:
        """``dkim=fail at mail.lab.test``: the bad verdicts, or ""."""
        bad = self.verdicts.bad()
        return "%s at %s" % (" ".join("%s=%s" % (r.method, r.result) for r in bad), self.verdicts.host) if bad else ""


def _seconds(value: float) -> str:
    """45 for 45.0, 44.3 for 44.3 (one decimal at most, never an exponent)."""
    return ("%.1f" % value).rstrip("0").rstrip(".")


def beyond(rtt: float, warning: Optional[Range], critical: Optional[Range]) -> bool:
    """Is *rtt* outside -w or -c?"""
    return any(rng is not None and not rng.match(rtt) for rng in (warning, critical))


def chosen(rtts: Sequence[tuple[str, float]], junk: Sequence[str], warning: Optional[Range],
           critical: Optional[Range], verbose: bool, judged: bool) -> list[str]:
    """The ids of the probes whose trace fields to read (see the module doc), the slowest first:
    of *rtts* (probe id, round trip) those beyond -w/-c or in *junk* (ids found in the Junk folder),
    the slowest too when *verbose* or *judged*, all when *judged*."""
    ranked = sorted(rtts, key=lambda r: -r[1])
    picked = [pid for i, (pid, rtt) in enumerate(ranked)
              if judged or pid in junk or beyond(rtt, warning, critical) or (verbose and i == 0)]
    return picked[:MAX_TRACED]


def read(collector: Collector, arrivals: Sequence[Arrival], wanted: Sequence[str], rtts: dict[str, float],
         collected: float, host: Optional[str], notes: list[str]) -> dict[str, Traced]:
    """The Traced of the probes *wanted* (ids) among *arrivals*: their trace fields read through
    *collector*, hops measured up to *collected*, verdicts of *host* (None: the delivering
    server); the -v lines go to *notes*."""
    from .auth_results import verdicts  # the parsers: only a run that looks at a probe closer loads them
    from .hops import hops
    from .probe import header_values

    refs: dict[Any, Arrival] = {}
    seen: set[str] = set()
    for a in arrivals:  # the first copy of each (a duplicate is not looked at)
        if a.probe.probe_id in wanted and a.probe.probe_id not in seen:
            seen.add(a.probe.probe_id)
            refs[a.ref] = a
    try:
        blocks = collector.trace(list(refs))
    except StepFailure as failure:
        notes.append("the Received fields of %d probe(s) not read: %s" % (len(refs), failure))
        return {}
    out: dict[str, Traced] = {}
    for ref, arrival in refs.items():
        pid = arrival.probe.probe_id
        if ref not in blocks:
            notes.append("the Received fields of probe %s not read: the mail is gone" % pid)
            continue
        fields = header_values(blocks[ref], TRACE_HEADERS)
        route = hops([v for name, v in fields if name == "received"], arrival.probe.sent, collected)
        out[pid] = Traced(pid, rtts[pid], route, verdicts(fields, host))
    for pid in wanted:
        if pid in out:
            notes.extend(out[pid].lines())
    return out
