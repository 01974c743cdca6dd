"""Ledger: match returned probes against the state and derive the figures.

Pure logic, no I/O and no clock: the caller passes the collection time.

- A probe is counted at most once (``counted`` remembers ids for at least
  ``lost_after``).  A second copy is a duplicate: not counted, cleaned up.
- A pending probe older than ``lost_after`` is declared lost; if it turns up
  later it is reported as late, not as a fresh success.  Unless its run ended
  before the SMTP server confirmed it (``unconfirmed``: killed, crashed): it
  most likely never went out, and is forgotten instead, not counted as sent.
- A probe without a pending record (crash, state reset) is measured from its
  signed send time when it is younger than ``lost_after``; an older one is
  never counted.
- With a *node* (several monitoring nodes share the mailbox, the profile and
  the secret), a node counts only the probes it sent (their ids start with
  its node tag): another node's probe is left in the mailbox for its sender,
  so no probe is counted twice and none is declared lost by its sender
  because another node took it away.  Its arrival still shows that the
  mail flows: it moves ``last_success`` on (not a round trip of this node),
  so a node taking over from another is not stale.
- ``oldest_pending`` is the age of the oldest pending probe sent after the
  newest probe that came back (older ones were overtaken).
- A probe that carries a reflector's stamp also gets its two legs (out to
  the reflector, back from it; see reflection.legs).
- Each probe whose fate a collection settles (returned, filed as Junk,
  declared lost, back late after that) is listed in ``settled``, for the
  history file (see history.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from .record import field, record
from .reflection import legs

if TYPE_CHECKING:
    from .probe import Probe
    from .state import State

# How long ids are remembered, beyond lost_after, and how many at most.
LOST_MEMORY = 7 * 24 * 3600.0
MAX_REMEMBERED = 5000
# Clock difference between the monitor and the mail server (or a monitor
# clock stepped back) tolerated before a time is taken as implausible.
SKEW = 5.0


# Where a server's arrival time comes from, and how -v names it:
# (its name, the words when there is none, the words when it is used).
SOURCES = {
    "INTERNALDATE": ("INTERNALDATE", "no INTERNALDATE", None),  # IMAP: the time needs no word
    "Received": ("Received date", "no usable Received date", "arrival from the Received header"),  # POP3
    "receivedDateTime": ("receivedDateTime", "no usable receivedDateTime", None),  # Graph: the arrival time
}


@record()
class Arrival:
    """A verified probe found in the mailbox."""

    probe: Probe
    internaldate: Optional[float]  # server arrival time, epoch seconds (whole second) or None
    ref: Any = None        # transport reference for clean-up (e.g. IMAP UID)
    source: str = "INTERNALDATE"  # where internaldate comes from (a key of SOURCES)
    stamp: Optional[tuple[int, int]] = None  # a reflector's (received ms, sent ms), verified, or None
    folder: str = "INBOX"  # the folder it was found in, as the collector names it
    junk: bool = False     # that folder is the Junk folder


# What became of a settled probe (the history file's outcome column).
RETURNED, JUNK, LOST, LATE = "returned", "junk", "lost", "late"


@record()
class Settled:
    """A probe whose fate one collection settled: RETURNED, JUNK, LOST or LATE."""

    probe_id: str
    sent_ms: int                   # its send time, as in its token
    outcome: str
    arrived: Optional[float] = None  # the arrival time taken for its round trip (epoch seconds); None when lost
    rtt: Optional[float] = None      # seconds; None when lost
    folder: str = ""                 # where it was found; "" when lost
    legs: tuple[Optional[float], Optional[float]] = (None, None)  # (out, back) where a reflector stamped it


@record()
class Outcome:
    """What one collection amounted to."""

    rtts: list[tuple[str, float]] = field(default_factory=list)  # (probe id, rtt seconds)
    late: list[tuple[str, float]] = field(default_factory=list)  # (probe id, seconds since sent)
    lost_now: list[str] = field(default_factory=list)  # probe ids declared lost now
    cleanup: list[Any] = field(default_factory=list)   # refs of processed probes
    notes: list[str] = field(default_factory=list)     # lines for -v
    oldest_pending: float = 0.0
    legs: dict[str, tuple[Optional[float], Optional[float]]] = field(
        default_factory=dict)                          # probe id -> (out s or None, back s or None)
    settled: list[Settled] = field(default_factory=list)  # the probes settled, in order

    @property
    def rtt(self) -> Optional[float]:
        """Slowest round trip completed in this run, or None."""
        return max((r for _i, r in self.rtts), default=None)

    @property
    def slowest_legs(self) -> Optional[tuple[Optional[float], Optional[float]]]:
        """(out, back) of the slowest round trip, when a reflector stamped it; else None."""
        if not self.rtts:
            return None
        pid, _rtt = max(self.rtts, key=lambda r: r[1])
        return self.legs.get(pid)

    def then(self, later: Outcome) -> Outcome:
        """This outcome followed by *later* (a second collection in the same
        run): the lists joined, oldest_pending as *later* found it."""
        return Outcome(
            rtts=self.rtts + later.rtts, late=self.late + later.late,
            lost_now=self.lost_now + later.lost_now, cleanup=self.cleanup + later.cleanup,
            notes=self.notes + later.notes, oldest_pending=later.oldest_pending,
            legs={**self.legs, **later.legs}, settled=self.settled + later.settled,
        )


def arrival_time(sent: float, internaldate: Optional[float], collected: float,
                 source: str = "INTERNALDATE") -> tuple[float, Optional[str]]:
    """Best upper bound for when a probe arrived: (epoch seconds, note or None).

    INTERNALDATE (like a Received date) has whole seconds: the arrival lies
    in [idate, idate + 1).  It is plausible unless that second lies clearly
    (more than SKEW) before the send time or after the collection time; then
    the collection time is the upper bound.  Within SKEW the rtt is clamped
    at 0 by the caller.  *source* (a key of SOURCES) names the time in the note.
    """
    name, missing, used = SOURCES[source]
    if internaldate is None:
        return collected, "%s; collection time used as arrival time" % missing
    if not _plausible(sent, internaldate, collected):
        return collected, (
            "%s %.0f implausible for send time %.3f (clock skew?); "
            "collection time used as arrival time" % (name, internaldate, sent)
        )
    note = used
    if internaldate + 1 <= sent:
        note = "%s %.0f before the send time %.3f: the mail server's clock is behind" % (
            name, internaldate, sent)
    elif internaldate > collected:
        note = "%s %.0f after the collection time %.3f: the mail server's clock is ahead" % (
            name, internaldate, collected)
    return min(internaldate + 1.0, collected), note


def _plausible(sent: float, internaldate: float, collected: float) -> bool:
    """Does the server's arrival time (not None) lie plausibly between sending and collecting?"""
    return not (internaldate + 1 <= sent - SKEW or internaldate > collected + SKEW)


def reconcile(state: State, arrivals: Iterable[Arrival], collected: float, lost_after: float,
              collection_ok: bool = True, node: Optional[str] = None) -> Outcome:
    """Update *state* with *arrivals* found at time *collected*; an Outcome.

    When the collection failed (*collection_ok* false) nothing is declared
    lost: the probes may be waiting in a mailbox that could not be read.
    *node*: this node's tag (probe.node_tag), or None when every probe of
    the profile is this node's.
    """
    out = Outcome()
    for arr in sorted(arrivals, key=lambda a: (a.probe.sent_ms, a.probe.probe_id)):
        _take(state, arr, collected, lost_after, out, node)
    if collection_ok:
        for pid, sent_ms in sorted(state.pending.items(), key=lambda kv: kv[1]):
            if collected - sent_ms / 1000.0 > lost_after and pid in state.unconfirmed:
                del state.pending[pid]
                state.unconfirmed.remove(pid)
                state.totals["sent"] -= 1
                out.notes.append("probe %s forgotten, not counted as lost: its run ended before the server "
                                 "confirmed it, and it is not back after %.0fs (it most likely never went out)"
                                 % (pid, collected - sent_ms / 1000.0))
            elif collected - sent_ms / 1000.0 > lost_after:
                del state.pending[pid]
                state.lost[pid] = sent_ms
                state.totals["lost"] += 1
                out.lost_now.append(pid)
                out.settled.append(Settled(pid, sent_ms, LOST))
                out.notes.append("probe %s declared lost (sent %.0fs ago)" % (pid, collected - sent_ms / 1000.0))
    out.oldest_pending = oldest_pending(state, collected)
    prune(state, collected, lost_after)
    return out


def _take(state: State, arr: Arrival, collected: float, lost_after: float, out: Outcome,
          node: Optional[str] = None) -> None:
    p = arr.probe
    pid, sent = p.probe_id, p.sent
    if node is not None and not pid.startswith(node) and not (
            pid in state.pending or pid in state.counted or pid in state.lost):
        out.notes.append("probe %s was sent by another node (tag %s): left for it" % (pid, pid[:len(node)]))
        _arrived_elsewhere(state, arr, collected, lost_after, out, pid[:len(node)])
        return
    if pid in state.counted:
        out.cleanup.append(arr.ref)
        out.notes.append("probe %s: duplicate of a probe already counted, not counted again" % pid)
        return
    if pid in state.lost:
        del state.lost[pid]
        state.counted[pid] = p.sent_ms
        state.totals["late"] += 1
        out.late.append((pid, collected - sent))
        out.cleanup.append(arr.ref)
        arrival = arrival_time(sent, arr.internaldate, collected, arr.source)[0]
        out.settled.append(Settled(pid, p.sent_ms, LATE, arrival, max(0.0, arrival - sent), arr.folder))
        _returned(state, p)
        out.notes.append("probe %s arrived late, after it was declared lost (sent %.0fs ago)" % (pid, collected - sent))
        return
    floor = state.counted_floor_ms
    if pid in state.unconfirmed:  # it went out after all
        state.unconfirmed.remove(pid)
    if pid in state.pending:
        del state.pending[pid]
    elif -SKEW <= collected - sent <= lost_after and (floor is None or p.sent_ms > floor):
        state.totals["sent"] += 1
        out.notes.append("probe %s had no pending record; measured from its signed send time" % pid)
    else:
        out.cleanup.append(arr.ref)
        out.notes.append(
            "probe %s ignored: sent %.0fs ago, no pending record and outside the %.0fs window "
            "(or older than what is remembered)"
            % (pid, collected - sent, lost_after)
        )
        return
    arrival, note = arrival_time(sent, arr.internaldate, collected, arr.source)
    if note:
        out.notes.append("probe %s: %s" % (pid, note))
    rtt = max(0.0, arrival - sent)
    state.counted[pid] = p.sent_ms
    state.totals["returned"] += 1
    state.last_success = max(state.last_success or 0.0, arrival)
    _returned(state, p)
    out.rtts.append((pid, rtt))
    out.cleanup.append(arr.ref)
    out.notes.append("probe %s returned, round trip %.3fs" % (pid, rtt))
    settled = Settled(pid, p.sent_ms, JUNK if arr.junk else RETURNED, arrival, rtt, arr.folder)
    out.settled.append(settled)
    if arr.stamp is not None:
        leg_out, leg_back, note = legs(sent, arr.stamp[0] / 1000.0, arr.stamp[1] / 1000.0, arrival, rtt)
        out.legs[pid] = settled.legs = (leg_out, leg_back)
        if note:
            out.notes.append(note)
        else:  # no leg left out: both are numbers
            assert leg_out is not None and leg_back is not None
            out.notes.append("probe %s: out %.3fs to the reflector, back %.3fs" % (pid, leg_out, leg_back))


def _arrived_elsewhere(state: State, arr: Arrival, collected: float, lost_after: float, out: Outcome, tag: str) -> None:
    """Another node's verified probe arrived: the mail flows as well as for one of ours.

    Its arrival (the server's time, when plausible, within *lost_after* of
    its signed send time) moves ``last_success`` on, so a node taking over
    does not look stale; it is no round trip of this node and is not counted.
    """
    p = arr.probe
    if arr.internaldate is None or not _plausible(p.sent, arr.internaldate, collected):
        return
    arrival, _note = arrival_time(p.sent, arr.internaldate, collected, arr.source)
    if arrival - p.sent > lost_after or (state.last_success is not None and arrival <= state.last_success):
        return
    state.last_success = arrival
    out.notes.append("last success: probe %s of node %s arrived %.1fs ago, round trip %.3fs (its sender counts it)"
                     % (p.probe_id, tag, collected - arrival, max(0.0, arrival - p.sent)))


def awaited(state: State) -> list[str]:
    """Ids of the probes still waited for: pending, then declared lost; the newest first in each."""
    return [pid for table in (state.pending, state.lost)
            for pid, _ms in sorted(table.items(), key=lambda kv: -kv[1])]


def oldest_sent(state: State) -> Optional[float]:
    """When the oldest probe in flight was sent (epoch seconds), or None when none is."""
    return min(state.pending.values()) / 1000.0 if state.pending else None


def _returned(state: State, p: Probe) -> None:
    if state.newest_returned_ms is None or p.sent_ms > state.newest_returned_ms:
        state.newest_returned_ms = p.sent_ms


def oldest_pending(state: State, now: float) -> float:
    """Age of the oldest probe in flight that no newer returned probe overtook."""
    floor = state.newest_returned_ms if state.newest_returned_ms is not None else -1
    ages = [now - ms / 1000.0 for ms in state.pending.values() if ms > floor]
    return max([0.0] + ages)


def prune(state: State, now: float, lost_after: float) -> None:
    """Forget counted and lost ids once they can no longer matter."""
    keep_counted = now - 2 * lost_after
    keep_lost = now - max(2 * lost_after, LOST_MEMORY)
    for table, horizon in ((state.counted, keep_counted), (state.lost, keep_lost)):
        for pid in [k for k, ms in table.items() if ms / 1000.0 < horizon]:
            del table[pid]
        if len(table) > MAX_REMEMBERED:
            for pid, ms in sorted(table.items(), key=lambda kv: kv[1])[: len(table) - MAX_REMEMBERED]:
                del table[pid]
                if table is state.counted:  # never count a probe this old again
                    state.counted_floor_ms = max(ms, state.counted_floor_ms or 0)


def record_sent(state: State, probe: Probe) -> None:
    """Remember a probe about to be sent (written ahead of the SMTP dialogue), as not
    yet confirmed by the server."""
    state.pending[probe.probe_id] = probe.sent_ms
    state.unconfirmed.append(probe.probe_id)
    state.totals["sent"] += 1


def confirm_sent(state: State, probe: Probe) -> None:
    """The SMTP dialogue of *probe* ended (accepted, or with an unknown outcome after DATA)."""
    if probe.probe_id in state.unconfirmed:
        state.unconfirmed.remove(probe.probe_id)


def forget_unsent(state: State, probe: Probe) -> None:
    """Undo record_sent for a probe that was definitely not accepted."""
    confirm_sent(state, probe)
    if state.pending.pop(probe.probe_id, None) is not None:
        state.totals["sent"] -= 1
