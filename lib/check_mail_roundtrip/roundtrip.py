"""One invocation, in order: lock, collect, reconcile, clean up, send, save;
with --wait, then wait for the probe just sent and book it too.

- The state is saved before any probe is removed from the mailbox (a crash
  in between leaves a probe that the next run recognises as counted), and
  the next probe is recorded as pending before the SMTP dialogue starts
  (a probe that went out is never forgotten).
- A failure while collecting does not stop sending, nor the other way round:
  each becomes a StepFailure in the report.
- Once a day (and on a profile's first run) the run also clears up after
  *abandoned* profiles: probes signed with this check's secret for another
  profile that are older than :func:`abandon_after` are removed from the
  folder, and state files of other profiles untouched that long from the
  state directory.  This housekeeping never fails a run; ``-v`` tells.
- With --wait, a second session after sending watches the collection folder
  (IDLE, a poll, a new POP3 session) until the probe is back or the wait is
  over; it books what came like the first.  Its failures end it quietly.
- The probes a collection settled are appended to the profile's history
  file once the state that settled them is saved (:mod:`history`); once a
  day, at the end of the run, lines older than --history-days go.  The run
  records its round-trip thresholds in the state for the report.  A history
  file that cannot be written is a WARNING, never a failed run.
- Of the probes back that are slow (beyond -w/-c), in Junk, or (with -v or
  --auth-results-state) the slowest, the trace fields (Received,
  Authentication-Results) are read before they are removed: their hops and
  verdicts go into the report (:mod:`route`); other runs read nothing more.
- Returns a :class:`Report`; printing and states are the check module's job.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any, Callable, Optional

from . import history, ledger, state as state_files
from .budget import RESERVE, Budget, Deadline
from .failure import StepFailure
from .mail import FAILED, UNCERTAIN, Collector, Fetched, SendResult
from .net import fqdn
from .probe import (
    RETURN_HEADER,
    VERSION,
    Probe,
    message_text,
    new_probe,
    node_tag,
    own_token,
    profile_key,
    recognise,
    search_key,
)
from .record import field, record
from .reflection import read_stamp, return_header
from .secret import load_or_create
from .settings import Settings, upper_bound
from .state import State, StateError, StateStore
from .transports import Transports, for_settings

# Share of the remaining budget the lock wait and the collection may use.
LOCK_SHARE = 0.25
COLLECT_SHARE = 0.5
# How often a profile looks for abandoned profiles' probes and state files.
SWEEP_EVERY = 24 * 3600.0
# --wait: seconds kept after the wait for booking and removal; -t must leave
# REST_OF_RUN seconds beyond --wait for the whole rest of the run.
AFTER_WAIT = 2.0
REST_OF_RUN = 10.0
MAX_LOOKS = 100000  # searches during one wait at most (the wait's end comes first)


def abandon_after(lost_after: float) -> float:
    """Age after which another profile's probe or state file is abandoned:
    7 days, or twice --lost-after when that is longer."""
    return max(ledger.LOST_MEMORY, 2 * lost_after)


@record()
class Report:
    """What one run found and did."""

    unknown: Optional[str] = None   # the run could not work at all (lock, state dir)
    state_problem: Optional[str] = None  # damaged state kept aside
    failures: list = field(default_factory=list)   # StepFailure, in order
    outcome: Optional[ledger.Outcome] = None
    pending: int = 0
    since_last_success: Optional[float] = None
    first_probe: bool = False
    collected: bool = False         # the mailbox was read (search and fetch worked)
    sent: Optional[SendResult] = None
    unexpunged: Optional[int] = None  # probes left flagged \Deleted (server without UIDPLUS)
    junk: Optional[int] = None      # own probes found in the Junk folder (None: not looked into)
    traced: dict = field(default_factory=dict)  # probe id -> route.Traced: the probes looked at closer
    history_problem: Optional[str] = None  # the history file could not be written as it should
    notes: list = field(default_factory=list)


def run(settings: Settings, budget: Budget, clock: Callable[[], float] = time.time,
        transports: Optional[Transports] = None) -> Report:
    """Perform one invocation for *settings* within *budget*; a Report.

    *clock* gives epoch seconds; *transports* (default: those *settings*
    name, see :func:`transports.for_settings`) collect and send.
    """
    report = Report()
    store = StateStore(settings.state_dir, settings.profile)
    try:
        store.acquire(max(0.0, budget.remaining() - _kept(settings)) * LOCK_SHARE)
    except StateError as exc:
        report.unknown = str(exc)
        return report
    with store:
        chosen = transports or for_settings(settings)
        try:
            secret = load_or_create(settings.secret_file or os.path.join(settings.state_dir, "secret"))
            state, report.state_problem = store.load()
            Run(settings, budget, clock, store, chosen, report, state, secret).perform()
        except StateError as exc:
            report.unknown = str(exc)
        finally:
            chosen.close()
    return report


def _tag(settings: Settings) -> Optional[str]:
    """This node's probe-id tag, or None when no node name is set."""
    return node_tag(settings.node) if settings.node is not None else None


def _kept(settings: Settings) -> float:
    """Seconds of the budget the steps before the wait leave for it (and what follows it)."""
    return RESERVE + (settings.wait + AFTER_WAIT if settings.wait else 0.0)


def _junk(settings: Settings) -> object:
    """The Junk folder wanted (IMAP and Graph): True to find it, a name, or None."""
    return settings.junk if settings.collect_by in ("imap", "graph") else None


@record()
class Run:
    """One invocation with its state locked: what it was told (settings, the
    budget, the clock, the transports), what it holds (the state store, the
    state loaded from it, the secret) and what it found (the report)."""

    settings: Settings
    budget: Budget
    clock: Callable[[], float]      # epoch seconds
    store: StateStore
    transports: Transports
    report: Report
    state: State
    secret: bytes = field(repr=False)

    def perform(self) -> None:
        """Collect, clean up, send, wait (--wait), and sum up in the report."""
        settings, report, state = self.settings, self.report, self.state
        report.first_probe = not (state.pending or state.counted or state.lost or state.last_success)
        report.notes.append("state file %s" % self.store.path)
        state.thresholds = {"warning": upper_bound(settings.warning), "critical": upper_bound(settings.critical)}

        sweep = state.swept is None or not 0 <= self.clock() - state.swept < SWEEP_EVERY
        collected_at = self.collect(sweep)
        if sweep:
            self.sweep_state_files(collected_at)
        probe = self.send()
        if settings.wait and probe is not None:
            if report.collected:
                collected_at = self.await_probe(probe) or collected_at
            else:
                report.notes.append("not waiting for probe %s: the mailbox could not be read" % probe.probe_id)
        report.since_last_success = (
            collected_at - state.last_success if state.last_success is not None else None
        )
        report.pending = len(state.pending)
        tokens: Any = settings.collect.oauth2 or settings.sending.oauth2
        if tokens is not None:
            report.notes.extend(tokens.notes)
        self.prune_history()

    def open_collector(self, deadline: Deadline, **options: Any) -> Collector:
        """The run's collector (not yet entered), with what every session of it shares."""
        settings = self.settings
        return self.transports.open_collector(
            settings.collect, settings.folder, deadline, readonly=settings.keep, memory=self.state.collector,
            dedicated=settings.dedicated, since=ledger.oldest_sent(self.state), **options)

    def collect(self, sweep: bool = False) -> float:
        """Collect and reconcile; the state is saved before anything is removed.
        The collection time (epoch seconds)."""
        settings, report, state = self.settings, self.report, self.state
        try:
            with self.open_collector(self.budget.share(COLLECT_SHARE, _kept(settings)),
                                     junk=_junk(settings), daily=sweep, now=self.clock()) as collector:
                fetched = collector.fetch(collector.find(search_key(settings.profile), wanted=ledger.awaited(state)))
                collected_at = self.clock()
                arrivals = self.recognise(collector, fetched)
                report.collected = True
                if _junk(settings) is not None:
                    report.junk = report.junk or 0
                self.book(collector, fetched, arrivals, collected_at)
                if sweep and not settings.keep:
                    self.sweep_folder(collector, collected_at)
                report.notes.extend(collector.notes)
                return collected_at
        except StepFailure as failure:
            report.failures.append(failure)
        if report.outcome is None:  # nothing read: nothing may be declared lost
            collected_at = self.clock()
            report.outcome = ledger.reconcile(state, [], collected_at, settings.lost_after, collection_ok=False)
            report.notes.extend(report.outcome.notes)
            return collected_at
        return self.clock()

    def recognise(self, collector: Collector, fetched: list[Fetched]) -> list[ledger.Arrival]:
        """The verified probes among *fetched*, as Arrivals; the others noted for -v."""
        report, secret = self.report, self.secret
        arrivals = []
        for item in fetched:
            probe, reason = recognise(item.headers, secret, self.settings.profile)
            if probe is None:
                report.notes.append("message %s ignored: %s" % (collector.name(item.ref), reason))
                continue
            stamp = read_stamp(item.headers, probe.token(secret), secret)
            arrivals.append(ledger.Arrival(probe, item.internaldate, item.ref, item.source, stamp, item.folder,
                                           item.junk))
            if item.junk:
                report.junk = (report.junk or 0) + 1
                report.notes.append("probe %s found in the Junk folder (%s)"
                                    % (probe.probe_id, collector.name(item.ref)))
        return arrivals

    def book(self, collector: Collector, fetched: list[Fetched], arrivals: list[ledger.Arrival],
             collected_at: float) -> None:
        """Reconcile *arrivals*, save the state, then remove what was processed."""
        settings, report, state = self.settings, self.report, self.state
        outcome = ledger.reconcile(state, arrivals, collected_at, settings.lost_after, node=_tag(settings))
        report.outcome = outcome if report.outcome is None else report.outcome.then(outcome)
        report.notes.extend(outcome.notes)
        # what was read need not be read again, but what is to be removed is looked at
        # again until it is gone (the state is saved before the removal)
        collector.settle([item.ref for item in fetched], outcome.cleanup)
        if fetched or outcome.lost_now:
            self.store.save(state)
            self.write_history(outcome.settled)
        self.trace(collector, arrivals, outcome, collected_at)
        if not settings.keep:
            collector.remove(outcome.cleanup)
            if collector.unexpunged is not None:
                report.unexpunged = collector.unexpunged

    def trace(self, collector: Collector, arrivals: list[ledger.Arrival], outcome: ledger.Outcome,
              collected_at: float) -> None:
        """Read the trace fields of the probes *outcome* brought back that are to be looked at
        closer (slow, in Junk, -v, --auth-results-state: see route.py), before they are removed."""
        if not outcome.rtts:
            return
        from . import route  # only a run with a probe back loads it

        settings = self.settings
        junk = [a.probe.probe_id for a in arrivals if a.junk]
        wanted = route.chosen(outcome.rtts, junk, settings.warning, settings.critical, settings.verbose > 0,
                              settings.auth_results_state != "ok")
        if wanted:
            self.report.traced.update(route.read(collector, arrivals, wanted, dict(outcome.rtts), collected_at,
                                                 settings.auth_results_host, self.report.notes))

    def write_history(self, settled: list[ledger.Settled]) -> None:
        """Append *settled* to the history file (not with --history-days 0); a problem
        with the file goes into the report."""
        if not self.settings.history_days or not settled:
            return
        try:
            problem = history.append(self.store.history_path, settled, self.settings.node or "", self.report.notes)
        except StateError as exc:
            problem = str(exc)
        self.report.history_problem = self.report.history_problem or problem

    def prune_history(self) -> None:
        """Once a day: drop the history lines older than --history-days, within the run's budget."""
        settings, state = self.settings, self.state
        now = self.clock()
        if not settings.history_days or not history.due(state.history_pruned, now):
            return
        try:
            history.prune(self.store.history_path, now - settings.history_days * 86400.0,
                          lambda: self.budget.remaining() <= RESERVE, self.report.notes)
        except history.OutOfTime:
            self.report.notes.append("pruning the history file stopped: no time left in this run; the next "
                                     "run tries again")
            return
        except StateError as exc:
            self.report.history_problem = self.report.history_problem or str(exc)
            return
        state.history_pruned = now
        self.store.save(state)

    def await_probe(self, probe: Probe) -> Optional[float]:
        """--wait: watch the collection folder for *probe* (just sent) for up to
        settings.wait seconds, then book what came; the collection time, or None.

        A second session, after the SMTP dialogue: IDLE (or a poll), a search
        for new candidates after each sign of new mail, ending as soon as the
        probe is among them.  The Junk folder is not watched (the next run looks
        there).  A failure ends the wait quietly (-v says why): what was found
        before is left for the next run, exactly as without --wait.
        """
        settings, report, state = self.settings, self.report, self.state
        deadline = self.budget.share(1.0)
        until = Deadline(min(deadline.clock() + settings.wait, deadline.at - AFTER_WAIT), deadline.clock)
        fetched, arrivals, back = [], [], False
        started = self.budget.clock()
        try:
            with self.open_collector(deadline, idle=settings.idle) as collector:
                looked = set()
                for _ in range(MAX_LOOKS):
                    refs = collector.find(search_key(settings.profile), wanted=ledger.awaited(state))
                    refs = [r for r in refs if r not in looked]
                    looked.update(refs)
                    items = collector.fetch(refs)
                    fetched += items
                    found = self.recognise(collector, items)
                    arrivals += found
                    back = any(a.probe.probe_id == probe.probe_id for a in found)
                    if back or not collector.wait(until):
                        break
                report.notes.append(
                    "probe %s %s after waiting %.1fs (%s)"
                    % (probe.probe_id, "back" if back else "not back", self.budget.clock() - started,
                       collector.watching or "back at the first look"))
                collected_at = self.clock()
                self.book(collector, fetched, arrivals, collected_at)
                report.notes.extend(collector.notes)
            if fetched:
                self.store.save(state)  # what the removal settled, as the send step's save does without --wait
            return collected_at
        except StepFailure as failure:
            report.notes.append("waiting for probe %s ended after %.1fs: %s (left for the next run)"
                                % (probe.probe_id, self.budget.clock() - started, failure))
        return None

    def sweep_folder(self, collector: Collector, now: float) -> None:
        """Remove probes of abandoned profiles, and of nodes gone away (signed with our
        secret, for our profile, by another node), from the folder."""
        settings, report = self.settings, self.report
        horizon = abandon_after(settings.lost_after)
        day = datetime.datetime.fromtimestamp(now - horizon, datetime.timezone.utc).date()
        ours, tag = profile_key(settings.profile), _tag(settings)
        try:
            old = []
            for item in collector.fetch(collector.find(VERSION + ".", before=day)):
                token = own_token(item.headers, self.secret)
                if token is None or now - token.sent_ms / 1000.0 <= horizon:
                    continue
                if token.key != ours or (tag is not None and not token.probe_id.startswith(tag)):
                    old.append(item.ref)
            collector.remove(old)
        except StepFailure as failure:
            report.notes.append("looking for abandoned probes: %s" % failure)
            return
        if old:
            report.notes.append("removed %d probe(s) of abandoned profiles or nodes (signed with this check's "
                                "secret, sent more than %s ago)" % (len(old), _days(horizon)))

    def sweep_state_files(self, now: float) -> None:
        """Remove other profiles' state files that no run has touched for a long time."""
        settings = self.settings
        horizon = abandon_after(settings.lost_after)
        for profile, path in state_files.abandoned(settings.state_dir, settings.profile, now, horizon):
            if state_files.remove_abandoned(path):
                self.report.notes.append("removed the state file of abandoned profile %r (no run for more "
                                         "than %s): %s" % (profile, _days(horizon), os.path.basename(path)))
        self.state.swept = now

    def send(self) -> Optional[Probe]:
        """Record the next probe as pending, send it, forget it only if refused;
        the probe when it may be on its way, else None."""
        settings, report, state, secret = self.settings, self.report, self.state, self.secret
        now = self.clock()
        probe = new_probe(settings.profile, now, settings.node)
        ledger.record_sent(state, probe)
        self.store.save(state)
        text = message_text(probe, secret, settings.mail_from, settings.rcpt_to, settings.hostname, now,
                            [(RETURN_HEADER, return_header(probe.token(secret), settings.mail_from, secret))])
        deadline = self.budget.share(1.0, _kept(settings))
        result = self.transports.send(
            text, settings.mail_from, settings.rcpt_to, settings.sending,
            deadline, local_hostname=settings.helo or fqdn(deadline),
        )
        report.sent = result
        if result.status == FAILED:
            ledger.forget_unsent(state, probe)
            self.store.save(state)
            if result.failure not in report.failures:  # e.g. the OAuth2 token both sides needed
                report.failures.append(result.failure)
            return None
        ledger.confirm_sent(state, probe)
        self.store.save(state)  # a run that dies before this leaves the probe unconfirmed
        if result.status == UNCERTAIN:
            report.failures.append(result.failure)
            report.notes.append("probe %s kept as pending: it may still arrive" % probe.probe_id)
        else:
            report.notes.append("probe %s sent: %s" % (probe.probe_id, result.reply))
        return probe


def _days(seconds: float) -> str:
    return "%gd" % round(seconds / 86400.0, 1)
