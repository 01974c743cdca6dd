"""One invocation, in order: lock, collect, reconcile, clean up, send, save.

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
- Returns a :class:`Report`; printing and states are the check module's job.
"""

import datetime
import email.policy
import os
import time
from dataclasses import dataclass, field

from . import ledger, smtp
from . import state as state_files
from .failure import StepFailure
from .collect import open_collector
from .net import fqdn
from .probe import VERSION, build_message, new_probe, own_token, profile_key, recognise, search_key
from .secret import load_or_create
from .state import StateError, StateStore

# Long lines are not folded: the token must stay readable as plain text in
# the Subject (no RFC 2047 encoding) for servers and filters that match on it.
_WIRE = email.policy.SMTP.clone(max_line_length=998)

# Share of the remaining budget the lock wait and the collection may use.
LOCK_SHARE = 0.25
COLLECT_SHARE = 0.5
# How often a profile looks for abandoned profiles' probes and state files.
SWEEP_EVERY = 24 * 3600.0


def abandon_after(lost_after):
    """Age after which another profile's probe or state file is abandoned:
    7 days, or twice --lost-after when that is longer."""
    return max(ledger.LOST_MEMORY, 2 * lost_after)


@dataclass
class Report:
    """What one run found and did."""

    unknown: str = None             # the run could not work at all (lock, state dir)
    state_problem: str = None       # damaged state kept aside
    failures: list = field(default_factory=list)   # StepFailure, in order
    outcome: ledger.Outcome = None
    pending: int = 0
    since_last_success: float = None
    first_probe: bool = False
    collected: bool = False         # the mailbox was read (search and fetch worked)
    sent: smtp.SendResult = None
    unexpunged: int = None          # probes left flagged \Deleted (server without UIDPLUS)
    notes: list = field(default_factory=list)


def run(settings, budget, clock=time.time):
    """Perform one invocation for *settings* within *budget*; a Report."""
    report = Report()
    store = StateStore(settings.state_dir, settings.profile)
    try:
        store.acquire(budget.remaining() * LOCK_SHARE)
    except StateError as exc:
        report.unknown = str(exc)
        return report
    with store:
        try:
            _locked_run(settings, budget, clock, store, report)
        except StateError as exc:
            report.unknown = str(exc)
    return report


def _locked_run(settings, budget, clock, store, report):
    secret = load_or_create(settings.secret_file or os.path.join(settings.state_dir, "secret"))
    state, report.state_problem = store.load()
    report.first_probe = not (state.pending or state.counted or state.lost or state.last_success)
    report.notes.append("state file %s" % store.path)

    sweep = state.swept is None or not 0 <= clock() - state.swept < SWEEP_EVERY
    collected_at = _collect(settings, budget, clock, store, state, secret, report, sweep)
    if sweep:
        _sweep_state_files(settings, state, collected_at, report)
    report.since_last_success = (
        collected_at - state.last_success if state.last_success is not None else None
    )
    _send(settings, budget, clock, store, state, secret, report)
    report.pending = len(state.pending)
    tokens = settings.collect.oauth2 or settings.smtp.oauth2
    if tokens is not None:
        report.notes.extend(tokens.notes)


def _collect(settings, budget, clock, store, state, secret, report, sweep=False):
    """Collect and reconcile; the state is saved before anything is removed."""
    profile = settings.profile
    try:
        with open_collector(
            settings.collect, settings.folder, budget.share(COLLECT_SHARE), readonly=settings.keep,
            memory=state.collector, dedicated=settings.dedicated,
        ) as collector:
            fetched = collector.fetch(collector.find(search_key(profile)))
            collected_at = clock()
            arrivals = []
            for item in fetched:
                probe, reason = recognise(item.headers, secret, profile)
                if probe is None:
                    report.notes.append("message %s ignored: %s" % (collector.name(item.ref), reason))
                else:
                    arrivals.append(ledger.Arrival(probe, item.internaldate, item.ref, item.source))
            report.collected = True
            report.outcome = ledger.reconcile(state, arrivals, collected_at, settings.lost_after)
            report.notes.extend(report.outcome.notes)
            # what was read need not be read again, but what is to be removed is looked at
            # again until it is gone (the state is saved before the removal)
            collector.settle([item.ref for item in fetched], report.outcome.cleanup)
            if fetched or report.outcome.lost_now:
                store.save(state)
            if not settings.keep:
                collector.remove(report.outcome.cleanup)
                report.unexpunged = collector.unexpunged
                if sweep:
                    _sweep_folder(settings, collector, secret, collected_at, report)
            report.notes.extend(collector.notes)
            return collected_at
    except StepFailure as failure:
        report.failures.append(failure)
    if report.outcome is None:  # nothing read: nothing may be declared lost
        collected_at = clock()
        report.outcome = ledger.reconcile(state, [], collected_at, settings.lost_after, collection_ok=False)
        report.notes.extend(report.outcome.notes)
        return collected_at
    return clock()


def _sweep_folder(settings, collector, secret, now, report):
    """Remove probes of abandoned profiles (signed with our secret) from the folder."""
    horizon = abandon_after(settings.lost_after)
    day = datetime.datetime.fromtimestamp(now - horizon, datetime.timezone.utc).date()
    ours = profile_key(settings.profile)
    try:
        old = []
        for item in collector.fetch(collector.find(VERSION + ".", before=day)):
            token = own_token(item.headers, secret)
            if token is not None and token.key != ours and now - token.sent_ms / 1000.0 > horizon:
                old.append(item.ref)
        collector.remove(old)
    except StepFailure as failure:
        report.notes.append("looking for abandoned probes: %s" % failure)
        return
    if old:
        report.notes.append("removed %d probe(s) of abandoned profiles (signed with this check's "
                            "secret, sent more than %s ago)" % (len(old), _days(horizon)))


def _sweep_state_files(settings, state, now, report):
    """Remove other profiles' state files that no run has touched for a long time."""
    horizon = abandon_after(settings.lost_after)
    for profile, path in state_files.abandoned(settings.state_dir, settings.profile, now, horizon):
        if state_files.remove_abandoned(path):
            report.notes.append("removed the state file of abandoned profile %r (no run for more "
                                "than %s): %s" % (profile, _days(horizon), os.path.basename(path)))
    state.swept = now


def _days(seconds):
    return "%gd" % round(seconds / 86400.0, 1)


def _send(settings, budget, clock, store, state, secret, report):
    """Record the next probe as pending, send it, forget it only if refused."""
    now = clock()
    probe = new_probe(settings.profile, now)
    ledger.record_sent(state, probe)
    store.save(state)
    message = build_message(probe, secret, settings.mail_from, settings.rcpt_to, settings.hostname, now)
    text = message.as_string(policy=_WIRE)
    deadline = budget.share(1.0)
    result = smtp.send(
        text, settings.mail_from, settings.rcpt_to, settings.smtp,
        deadline, local_hostname=settings.helo or fqdn(deadline),
    )
    report.sent = result
    if result.status == smtp.FAILED:
        ledger.forget_unsent(state, probe)
        store.save(state)
        if result.failure not in report.failures:  # e.g. the OAuth2 token both sides needed
            report.failures.append(result.failure)
    elif result.status == smtp.UNCERTAIN:
        report.failures.append(result.failure)
        report.notes.append("probe %s kept as pending: it may still arrive" % probe.probe_id)
    else:
        report.notes.append("probe %s sent: %s" % (probe.probe_id, result.reply))
