"""Tests for the ledger (lib/check_mail_roundtrip/ledger.py); its docstring is
the specification.  Pure logic: no I/O, no clock, no lab fixture."""

import itertools

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from check_mail_roundtrip import ledger
from check_mail_roundtrip.ledger import (
    LOST_MEMORY,
    MAX_REMEMBERED,
    Arrival,
    arrival_time,
    confirm_sent,
    forget_unsent,
    oldest_pending,
    prune,
    reconcile,
    record_sent,
)
from check_mail_roundtrip.probe import Probe
from check_mail_roundtrip.state import State

T0 = 1_700_000_000.0


LOST_AFTER = 3600.0
_ids = itertools.count(1)


def probe(sent, pid=None):
    return Probe("p", pid or "%016x" % next(_ids), int(round(sent * 1000)))


def arrive(p, idate=None, ref=None):
    return Arrival(p, idate, ref if ref is not None else p.probe_id)


def sent_and_confirmed(state, probe):
    """A probe recorded and handed over to the SMTP server (as a run does it)."""
    record_sent(state, probe)
    confirm_sent(state, probe)


def sent(state, at):
    p = probe(at)
    sent_and_confirmed(state, p)
    return p


def balanced(state):
    t = state.totals
    return t["sent"] == t["returned"] + len(state.pending) + t["lost"]


# -- the basic cases ----------------------------------------------------------------

def test_first_success():
    st_ = State("p")
    p = sent(st_, T0)
    out = reconcile(st_, [arrive(p, idate=T0 + 4)], T0 + 60, LOST_AFTER)
    assert out.rtts == [(p.probe_id, 5.0)]          # upper bound of INTERNALDATE's second
    assert out.rtt == 5.0
    assert out.cleanup == [p.probe_id]
    assert st_.pending == {} and p.probe_id in st_.counted
    assert st_.totals == {"sent": 1, "returned": 1, "lost": 0, "late": 0}
    assert st_.last_success == T0 + 5
    assert st_.newest_returned_ms == p.sent_ms
    assert out.oldest_pending == 0.0


def test_duplicate_in_same_run_and_in_later_run_counted_once():
    st_ = State("p")
    p = sent(st_, T0)
    out = reconcile(st_, [arrive(p, T0 + 1, "uid1"), arrive(p, T0 + 2, "uid2")], T0 + 60, LOST_AFTER)
    assert len(out.rtts) == 1
    assert sorted(out.cleanup) == ["uid1", "uid2"]     # both copies removed
    assert any("duplicate" in n for n in out.notes)
    out2 = reconcile(st_, [arrive(p, T0 + 3, "uid3")], T0 + 120, LOST_AFTER)
    assert out2.rtts == [] and out2.late == [] and out2.cleanup == ["uid3"]
    assert st_.totals == {"sent": 1, "returned": 1, "lost": 0, "late": 0}
    assert balanced(st_)


def test_late_arrival_after_lost():
    st_ = State("p")
    p = sent(st_, T0)
    out = reconcile(st_, [], T0 + LOST_AFTER + 1, LOST_AFTER)
    assert out.lost_now == [p.probe_id]
    assert p.probe_id in st_.lost and not st_.pending
    out = reconcile(st_, [arrive(p, T0 + 100)], T0 + 2 * LOST_AFTER, LOST_AFTER)
    assert out.rtts == []                                # not a fresh success
    assert out.late == [(p.probe_id, 2 * LOST_AFTER)]
    assert out.cleanup == [p.probe_id]
    assert p.probe_id in st_.counted and p.probe_id not in st_.lost
    assert st_.totals == {"sent": 1, "returned": 0, "lost": 1, "late": 1}
    assert balanced(st_)
    # and a further copy is a duplicate
    out = reconcile(st_, [arrive(p)], T0 + 2 * LOST_AFTER + 5, LOST_AFTER)
    assert out.late == [] and out.rtts == []


def test_probe_without_pending_record_within_lost_after_is_counted():
    st_ = State("p")
    p = probe(T0)
    out = reconcile(st_, [arrive(p, T0 + 9)], T0 + LOST_AFTER, LOST_AFTER)
    assert out.rtts == [(p.probe_id, 10.0)]
    assert any("no pending record" in n for n in out.notes)
    assert st_.totals == {"sent": 1, "returned": 1, "lost": 0, "late": 0}
    assert balanced(st_)


@pytest.mark.parametrize("age", [LOST_AFTER + 0.01, 10 * LOST_AFTER, -ledger.SKEW - 0.01, -3600.0])
def test_probe_without_pending_record_outside_window_is_ignored(age):
    st_ = State("p")
    p = probe(T0)
    out = reconcile(st_, [arrive(p, T0)], T0 + age, LOST_AFTER)
    assert out.rtts == [] and out.late == []
    assert out.cleanup == [p.probe_id]
    assert p.probe_id not in st_.counted
    assert st_.totals == {"sent": 0, "returned": 0, "lost": 0, "late": 0}


def test_pending_declared_lost_only_after_lost_after_and_only_when_collection_ok():
    st_ = State("p")
    p = sent(st_, T0)
    assert reconcile(st_, [], T0 + LOST_AFTER, LOST_AFTER).lost_now == []          # not yet
    assert reconcile(st_, [], T0 + LOST_AFTER + 1, LOST_AFTER, collection_ok=False).lost_now == []
    assert p.probe_id in st_.pending
    out = reconcile(st_, [], T0 + LOST_AFTER + 1, LOST_AFTER, collection_ok=True)
    assert out.lost_now == [p.probe_id]
    assert st_.totals["lost"] == 1 and balanced(st_)


def test_pending_probe_returning_after_lost_after_but_before_declared_lost_is_a_success():
    # Arrivals are taken before the sweep: it was never declared lost.
    st_ = State("p")
    p = sent(st_, T0)
    out = reconcile(st_, [arrive(p, T0 + LOST_AFTER + 50)], T0 + LOST_AFTER + 60, LOST_AFTER)
    assert out.rtts == [(p.probe_id, LOST_AFTER + 51)] and out.lost_now == []


def test_oldest_pending_ignores_overtaken_probes_and_is_zero_when_nothing_in_flight():
    st_ = State("p")
    assert oldest_pending(st_, T0) == 0.0
    a, b, c = sent(st_, T0), sent(st_, T0 + 300), sent(st_, T0 + 600)
    assert oldest_pending(st_, T0 + 700) == 700
    out = reconcile(st_, [arrive(b, T0 + 310)], T0 + 700, LOST_AFTER)
    # a was overtaken by b: only c counts
    assert out.oldest_pending == 100
    assert a.probe_id in st_.pending
    out = reconcile(st_, [arrive(c, T0 + 650)], T0 + 800, LOST_AFTER)
    assert out.oldest_pending == 0.0
    # a pending probe in the future (clock stepped back) is no negative age
    st2 = State("p")
    sent(st2, T0 + 100)
    assert oldest_pending(st2, T0) == 0.0


# -- arrival_time ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "sent_at, idate, collected, expected, noted",
    [
        (100.5, 100.0, 200.0, 101.0, None),          # same second as the send: plausible, rtt 0.5
        (100.0, 150.0, 200.0, 151.0, None),
        (100.0, 199.5, 200.0, 200.0, None),          # bound by the collection time
        (100.0, 200.0, 200.0, 200.0, None),
        (100.0, 99.0, 200.0, 100.0, "behind"),       # before the send, within SKEW: rtt clamps to 0
        (100.0, 90.0, 200.0, 200.0, "implausible"),  # clearly before the send
        (100.0, 50.0, 200.0, 200.0, "implausible"),
        (100.0, 200.5, 200.0, 200.0, "ahead"),       # after the collection, within SKEW
        (100.0, 210.0, 200.0, 200.0, "implausible"), # clearly after the collection
        (100.0, None, 200.0, 200.0, "no INTERNALDATE"),
    ],
)
def test_arrival_time(sent_at, idate, collected, expected, noted):
    arrival, note = arrival_time(sent_at, idate, collected)
    assert arrival == expected
    if noted is None:
        assert note is None
    else:
        assert noted in note


@settings(max_examples=500, deadline=None)
@given(st.floats(0, 1e6), st.one_of(st.none(), st.integers(0, 10**6).map(float)), st.floats(0, 1e6))
def test_arrival_time_bounds(sent_at, idate, collected):
    arrival, note = arrival_time(sent_at, idate, collected)
    assert arrival <= collected
    if idate is None or "implausible" in (note or ""):
        assert arrival == collected and note
    else:
        assert arrival == min(idate + 1, collected)
        assert sent_at - ledger.SKEW - 1 < idate <= collected + ledger.SKEW
        assert (note is None) == (sent_at < idate + 1 and idate <= collected)


def test_rtt_never_negative_with_skewed_clock():
    st_ = State("p")
    p = sent(st_, T0 + 30)            # monitor clock ahead of the collection time
    out = reconcile(st_, [arrive(p, T0)], T0 + 10, LOST_AFTER)
    assert out.rtts == [(p.probe_id, 0.0)]


# -- prune --------------------------------------------------------------------------------

def test_prune_keeps_counted_ids_at_least_lost_after():
    st_ = State("p")
    now = T0 + 10 * LOST_AFTER
    st_.counted = {"recent": int((now - LOST_AFTER - 1) * 1000), "edge": int((now - 2 * LOST_AFTER + 1) * 1000),
                   "old": int((now - 2 * LOST_AFTER - 1) * 1000)}
    st_.lost = {"lost-recent": int((now - LOST_MEMORY + 10) * 1000), "lost-old": int((now - LOST_MEMORY - 10) * 1000)}
    prune(st_, now, LOST_AFTER)
    assert set(st_.counted) == {"recent", "edge"}
    assert set(st_.lost) == {"lost-recent"}
    # with a long lost_after (6 d), lost ids are kept 2 * lost_after (12 d)
    day = 86400.0
    st_.lost = {"8d": int((now - 8 * day) * 1000), "12d-": int((now - 12 * day + 10) * 1000),
                "12d+": int((now - 12 * day - 10) * 1000)}
    prune(st_, now, 6 * day)
    assert set(st_.lost) == {"8d", "12d-"}


def test_prune_bounds_table_sizes_keeping_the_newest():
    st_ = State("p")
    n = MAX_REMEMBERED + 700
    st_.counted = {"c%05d" % i: int((T0 + i) * 1000) for i in range(n)}
    st_.lost = {"l%05d" % i: int((T0 + i) * 1000) for i in range(n)}
    prune(st_, T0 + n, LOST_AFTER * 100)
    assert len(st_.counted) == MAX_REMEMBERED and len(st_.lost) == MAX_REMEMBERED
    assert "c%05d" % (n - 1) in st_.counted and "c00000" not in st_.counted
    assert min(st_.counted.values()) == int((T0 + 700) * 1000)


def test_duplicate_after_prune_is_not_counted_again():
    st_ = State("p")
    p = sent(st_, T0)
    reconcile(st_, [arrive(p, T0 + 5)], T0 + 10, LOST_AFTER)
    reconcile(st_, [], T0 + 3 * LOST_AFTER, LOST_AFTER)          # counted id pruned
    assert p.probe_id not in st_.counted
    out = reconcile(st_, [arrive(p, T0 + 5)], T0 + 3 * LOST_AFTER + 1, LOST_AFTER)
    assert out.rtts == [] and out.late == []
    assert st_.totals["returned"] == 1


# -- record_sent / forget_unsent --------------------------------------------------------

def test_record_sent_and_forget_unsent_keep_totals_consistent():
    st_ = State("p")
    a, b = sent(st_, T0), sent(st_, T0 + 1)
    assert st_.totals["sent"] == 2 and len(st_.pending) == 2
    forget_unsent(st_, a)
    assert st_.totals["sent"] == 1 and set(st_.pending) == {b.probe_id}
    forget_unsent(st_, a)                                      # twice: no change
    forget_unsent(st_, probe(T0 + 2))                          # never recorded: no change
    assert st_.totals["sent"] == 1 and balanced(st_)
    reconcile(st_, [arrive(b, T0 + 3)], T0 + 5, LOST_AFTER)
    forget_unsent(st_, b)                                      # already back: no change
    assert st_.totals == {"sent": 1, "returned": 1, "lost": 0, "late": 0}


# -- property: any sequence of operations ---------------------------------------------

class LedgerMachine(RuleBasedStateMachine):
    """Sends, refusals, time steps and collections in any order.

    Invariant derived from the code (every branch that touches a counter):
      record_sent           sent+1, pending+1
      forget_unsent         sent-1, pending-1     (only if still pending)
      _take, pending        pending-1, returned+1
      _take, no record      sent+1, returned+1    (within lost_after only)
      _take, was lost       late+1                (lost stays counted: a late
                                                   probe is one of the lost)
      sweep                 pending-1, lost+1
    hence   totals["sent"] == totals["returned"] + len(pending) + totals["lost"]
    and     totals["late"] <= totals["lost"].
    """

    def __init__(self):
        super().__init__()
        self.state = State("p")
        self.now = T0
        self.lost_after = LOST_AFTER
        self.probes = []          # every probe that exists as a mail (sent or foreign)
        self.refused = []
        self.counted_ids = []     # ids reported in rtts or late, over all runs

    @initialize(lost_after=st.sampled_from([60.0, 600.0, 3600.0]))
    def setup(self, lost_after):
        self.lost_after = lost_after

    @rule()
    def send(self):
        p = probe(self.now)
        record_sent(self.state, p)
        self.probes.append(p)

    @precondition(lambda self: self.state.pending)
    @rule(data=st.data())
    def refuse(self, data):
        pid = data.draw(st.sampled_from(sorted(self.state.pending)))
        p = next(p for p in self.probes if p.probe_id == pid)
        forget_unsent(self.state, p)
        self.refused.append(p)      # may still show up (a lying server): allowed

    @rule(back=st.floats(0, 5000))
    def foreign_probe(self, back):
        # A probe of this profile the state knows nothing of (crash, reset).
        self.probes.append(probe(self.now - back))

    @rule(step=st.one_of(st.floats(0, 100), st.floats(0, 10000)))
    def advance(self, step):
        self.now += step

    @rule(data=st.data(), ok=st.booleans())
    def collect(self, data, ok):
        arrivals = []
        if self.probes:
            chosen = data.draw(st.lists(st.sampled_from(self.probes), max_size=6))   # duplicates, any order
            for p in chosen:
                idate = data.draw(st.one_of(st.none(), st.floats(-100, 20000).map(lambda d: float(int(p.sent + d)))))  # noqa: B023 (drawn at once)
                arrivals.append(Arrival(p, idate, object()))
        before = dict(self.state.totals)
        out = reconcile(self.state, arrivals, self.now, self.lost_after, collection_ok=ok)
        for pid, rtt in out.rtts:
            assert rtt >= 0, (pid, rtt)
        for pid, _age in out.late:
            assert pid not in [q for q, _ in out.rtts]
        new = [pid for pid, _ in out.rtts] + [pid for pid, _ in out.late]
        for pid in new:
            assert pid not in self.counted_ids, "probe %s counted twice" % pid
        self.counted_ids.extend(new)
        assert len(out.cleanup) == len(arrivals)        # every copy is dealt with
        assert out.oldest_pending >= 0
        if not ok:
            assert out.lost_now == [] and self.state.totals["lost"] == before["lost"]
        assert self.state.totals["returned"] - before["returned"] == len(out.rtts)
        assert self.state.totals["late"] - before["late"] == len(out.late)

    @invariant()
    def books_balance(self):
        t = self.state.totals
        assert t["sent"] == t["returned"] + len(self.state.pending) + t["lost"], t
        assert 0 <= t["late"] <= t["lost"]
        assert min(t.values()) >= 0

    @invariant()
    def tables_disjoint(self):
        p, c, lo = set(self.state.pending), set(self.state.counted), set(self.state.lost)
        assert not (p & c) and not (p & lo) and not (c & lo)


LedgerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_ledger_any_sequence = LedgerMachine.TestCase


def test_a_second_collection_in_the_same_run_adds_to_the_first():
    first = ledger.Outcome(rtts=[("a", 1.0)], lost_now=["x"], cleanup=[1], notes=["one"], oldest_pending=5.0)
    second = ledger.Outcome(rtts=[("b", 3.0)], late=[("y", 9.0)], cleanup=[2], notes=["two"], oldest_pending=0.0)
    both = first.then(second)
    assert both.rtts == [("a", 1.0), ("b", 3.0)] and both.rtt == 3.0
    assert both.late == [("y", 9.0)] and both.lost_now == ["x"] and both.cleanup == [1, 2]
    assert both.notes == ["one", "two"]
    assert both.oldest_pending == 0.0  # as the later collection found it


# -- several nodes on one mailbox (docs/explanation/distributed.md) -------------

def _node_probe(node, sent):
    from check_mail_roundtrip.probe import new_probe
    return new_probe("shared", sent, node)


def test_another_nodes_probe_is_left_for_it_not_counted_and_not_removed():
    from check_mail_roundtrip.probe import node_tag
    mine, theirs = State("shared"), State("shared")
    p = _node_probe("beta", T0)
    sent_and_confirmed(theirs, p)
    out = reconcile(mine, [Arrival(p, T0 + 1, ref=7)], T0 + 2, LOST_AFTER, node=node_tag("alpha"))
    assert out.rtts == [] and out.cleanup == [] and mine.totals["sent"] == 0
    assert out.notes[0] == "probe %s was sent by another node (tag %s): left for it" % (p.probe_id, p.probe_id[:4])
    out = reconcile(theirs, [Arrival(p, T0 + 1, ref=7)], T0 + 2, LOST_AFTER, node=node_tag("beta"))
    assert [pid for pid, _ in out.rtts] == [p.probe_id] and out.cleanup == [7]


def test_another_nodes_probe_that_arrived_is_the_last_success_but_no_round_trip_of_ours():
    """Node beta takes over from alpha: its own last success is old, alpha's last probe arrived
    just now. That arrival is beta's last success (since_last_success continues), -v says whose
    it was; beta's round trips, books and clean-up stay its own."""
    from check_mail_roundtrip.probe import node_tag
    beta = State("shared")
    own = _node_probe("beta", T0)
    sent_and_confirmed(beta, own)
    reconcile(beta, [Arrival(own, T0, ref=1)], T0 + 1, LOST_AFTER, node=node_tag("beta"))
    assert beta.last_success == T0 + 1
    theirs = _node_probe("alpha", T0 + 35)
    totals, counted = dict(beta.totals), dict(beta.counted)
    out = reconcile(beta, [Arrival(theirs, T0 + 35, ref=2)], T0 + 38.4, LOST_AFTER, node=node_tag("beta"))
    assert beta.last_success == T0 + 36  # INTERNALDATE has whole seconds: the arrival lies before T0 + 36
    assert out.rtts == [] and out.cleanup == [] and beta.totals == totals and beta.counted == counted
    assert out.notes[1] == ("last success: probe %s of node %s arrived 2.4s ago, round trip 1.000s (its sender "
                            "counts it)" % (theirs.probe_id, node_tag("alpha")))


@pytest.mark.parametrize("idate, collected, why", [
    (None, T0 + 2, "no arrival time: when it came is not known"),
    (T0 - 60, T0 + 2, "an arrival time before it was sent"),
    (T0 + 600, T0 + 2, "an arrival time after it was collected"),
    (T0 + LOST_AFTER + 10, T0 + LOST_AFTER + 20, "on its way for longer than --lost-after"),
])
def test_another_nodes_probe_is_no_success_when_its_arrival_is_unknown_or_too_late(idate, collected, why):
    """Of two probes of alpha, the one that arrived in time is beta's last success; the other
    (sent later) is not."""
    from check_mail_roundtrip.probe import node_tag
    state = State("shared")
    state.last_success = T0 - 100
    good, late = _node_probe("alpha", T0 - 10), _node_probe("alpha", T0)
    out = reconcile(state, [Arrival(good, T0 - 10, ref=1), Arrival(late, idate, ref=2)], collected, LOST_AFTER,
                    node=node_tag("beta"))
    assert state.last_success == T0 - 9 and sum(n.startswith("last success") for n in out.notes) == 1, why


def test_an_older_arrival_of_another_node_never_moves_the_last_success_back():
    from check_mail_roundtrip.probe import node_tag
    state = State("shared")
    state.last_success = T0 + 20
    newer, older = _node_probe("alpha", T0 + 40), _node_probe("gamma", T0 + 10)
    out = reconcile(state, [Arrival(newer, T0 + 40, ref=1), Arrival(older, T0 + 10, ref=2)], T0 + 60, LOST_AFTER,
                    node=node_tag("beta"))
    assert state.last_success == T0 + 41 and sum(n.startswith("last success") for n in out.notes) == 1


def test_a_nodes_own_probe_without_a_pending_record_is_still_measured():
    from check_mail_roundtrip.probe import node_tag
    state = State("shared")
    p = _node_probe("alpha", T0)
    out = reconcile(state, [Arrival(p, T0 + 1, ref=1)], T0 + 2, LOST_AFTER, node=node_tag("alpha"))
    assert [pid for pid, _ in out.rtts] == [p.probe_id] and state.totals == {**state.totals, "sent": 1, "returned": 1}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(1, 80)), min_size=1, max_size=40))
def test_any_order_of_runs_on_any_nodes_counts_each_probe_once_and_loses_none(runs):
    """Nodes a, b, c share a mailbox; each run collects what is there, then sends. A node's run
    may see the mailbox before a delivery (delivered False). Every probe is delivered; time
    moves by up to 8 s a run, so lost_after stays far away however long a node stays away."""
    from check_mail_roundtrip.probe import node_tag
    states = {n: State("shared") for n in "abc"}
    mailbox, in_flight, counted = {}, [], {}
    now = T0
    for node, delivered, step in runs:
        now += step / 10.0
        if delivered:  # everything sent so far arrives
            for p in in_flight:
                mailbox[p.probe_id] = Arrival(p, p.sent + 0.5, ref=p.probe_id)
            in_flight = []
        out = reconcile(states[node], list(mailbox.values()), now, LOST_AFTER, node=node_tag(node))
        for pid, _rtt in out.rtts:
            assert pid not in counted, "counted twice"
            counted[pid] = node
        for ref in out.cleanup:
            assert mailbox.pop(ref).probe.probe_id.startswith(node_tag(node))  # only its own removed
        assert out.lost_now == []  # nothing is ever lost here
        p = _node_probe(node, now)
        sent_and_confirmed(states[node], p)
        in_flight.append(p)
    for node, state in states.items():
        t = state.totals
        assert t["sent"] == t["returned"] + len(state.pending) + t["lost"]
        assert all(counted[pid] == node for pid in state.counted)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans(), st.integers(1, 80)), min_size=1, max_size=40))
def test_any_order_of_runs_the_last_success_is_the_latest_arrival_any_node_saw(runs):
    """Whichever node runs, its last success is the latest arrival of any verified probe it saw in
    the mailbox (its own or another node's); its round trips and removals are its own probes only."""
    from check_mail_roundtrip.probe import node_tag
    states = {n: State("shared") for n in "abc"}
    latest = dict.fromkeys("abc")
    mailbox, in_flight = {}, []
    now = T0
    for node, delivered, step in runs:
        now += step / 10.0
        if delivered:
            for p in in_flight:
                mailbox[p.probe_id] = Arrival(p, float(int(p.sent + 0.5)), ref=p.probe_id)
            in_flight = []
        arrivals = list(mailbox.values())
        out = reconcile(states[node], arrivals, now, LOST_AFTER, node=node_tag(node))
        for a in arrivals:
            arrival = arrival_time(a.probe.sent, a.internaldate, now)[0]
            latest[node] = max(latest[node] or arrival, arrival)
        assert states[node].last_success == latest[node]
        assert all(pid.startswith(node_tag(node)) for pid, _rtt in out.rtts)
        for ref in out.cleanup:
            assert mailbox.pop(ref).probe.probe_id.startswith(node_tag(node))
        p = _node_probe(node, now)
        sent_and_confirmed(states[node], p)
        in_flight.append(p)


# -- a run that died before the SMTP server confirmed its probe --------------------------------

def test_an_unconfirmed_probe_not_back_is_forgotten_not_lost():
    state = State("p")
    p = probe(T0)
    record_sent(state, p)  # the run died before the server's answer
    assert state.unconfirmed == [p.probe_id]
    out = reconcile(state, [], T0 + LOST_AFTER + 1, LOST_AFTER)
    assert out.lost_now == [] and state.pending == {} and state.unconfirmed == []
    assert state.totals["sent"] == 0 and state.totals["lost"] == 0
    assert any("forgotten, not counted as lost" in n for n in out.notes)


def test_an_unconfirmed_probe_that_comes_back_went_out_after_all():
    state = State("p")
    p = probe(T0)
    record_sent(state, p)
    out = reconcile(state, [Arrival(p, T0 + 1, ref=1)], T0 + LOST_AFTER + 5, LOST_AFTER)
    assert [pid for pid, _ in out.rtts] == [p.probe_id] and state.unconfirmed == []
    assert state.totals["sent"] == state.totals["returned"] == 1


def test_a_confirmed_probe_not_back_is_lost():
    state = State("p")
    p = probe(T0)
    sent_and_confirmed(state, p)
    out = reconcile(state, [], T0 + LOST_AFTER + 1, LOST_AFTER)
    assert out.lost_now == [p.probe_id] and state.totals["lost"] == 1
