"""Several monitoring nodes on one mailbox, in memory (docs/explanation/distributed.md).

The nodes share the secret, the profile (--name) and the mailbox and differ
in --node and their state directories.  Each counts only its own probes and
leaves the others' for them; another node's probe that arrived moves the last
success on (a node taking over is not stale), unless its arrival is not
plausible.  The daily housekeeping removes the probes of nodes gone away.
"""

import re

import pytest
from hypothesis import given, settings, strategies as st

from check_mail_roundtrip.probe import node_tag
from tests.memlab import MONITOR, MailSystem, MemCheck

P = "MAIL_ROUNDTRIP "
OPTIONS = ("--name", "ha-zone", "-w", "2", "-c", "3", "--lost-after", "40")
ALPHA, BETA = node_tag("alpha"), node_tag("beta")


def nodes(mail, tmp_path, *names, options=OPTIONS):
    return {name: MemCheck(mail, tmp_path, *options, "--node", name, state=name) for name in names}


def ids_in_mailbox(mail):
    mail.deliver_due()
    return {m.subject.split(".")[2] for m in mail.mailbox(MONITOR).probes()}


def test_a_node_taking_over_continues_the_last_success_of_the_other_nodes_probes(tmp_path):
    """beta runs once; alpha runs every 5 s for 35 s; beta takes over with --stale-warning 4.
    Its own last success is 35 s old, but alpha's last probe arrived a moment ago: OK."""
    mail = MailSystem()
    group = nodes(mail, tmp_path, "alpha", "beta")
    alpha, beta = group["alpha"], group["beta"]
    beta()
    for _ in range(7):
        mail.clock.advance(5)
        r = alpha("-v")
    last_of_alpha = re.search(r"^probe (\w+) sent", r.stdout, re.M).group(1)
    mail.clock.advance(1)
    r = beta("-v", "--stale-warning", "4")
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, 1 in flight, last success 0s ago | junk=0;;;0 "
                                   "lost=0;;;0 oldest_pending=0.0s;2;3;0 pending=1;;;0 rtt=1.0s;2;3;0 "
                                   "since_last_success=0.0s;4;;0"), r
    lines = r.stdout.splitlines()
    assert "probe %s was sent by another node (tag %s): left for it" % (last_of_alpha, ALPHA) in lines, r
    assert ("last success: probe %s of node %s arrived 0.0s ago, round trip 1.000s (its sender counts it)"
            % (last_of_alpha, ALPHA)) in lines, r
    assert last_of_alpha in ids_in_mailbox(mail) and last_of_alpha not in beta.state()["counted"]
    mail.clock.advance(1)
    r = alpha("-v")   # alpha comes back: its probe waited for it
    assert r.rc == 0 and "probe %s returned, round trip 1.000s" % last_of_alpha in r.stdout.splitlines(), r
    assert alpha.books() == (8, 7, 0, 1, 0) and beta.books() == (2, 1, 0, 1, 0)


@pytest.mark.parametrize("how, since", [
    ("held", 35.0),           # alpha's last probe has not arrived
    ("late", 80.0),           # it arrived 46 s after it was sent: more than --lost-after
    ("clock", 35.0),          # the server's arrival time lies 100 s before its send time
])
def test_another_nodes_probe_moves_the_last_success_only_when_it_plausibly_arrived(tmp_path, how, since):
    mail = MailSystem()
    group = nodes(mail, tmp_path, "alpha", "beta")
    group["beta"]()
    for step in range(7):
        mail.clock.advance(5)
        if step == 6:   # alpha's last probe
            mail.holding, mail.delay, mail.skew = how == "held", 45 if how == "late" else 0, -100 if how == "clock" else 0
        group["alpha"]()
    mail.clock.advance(46 if how == "late" else 1)
    mail.holding, mail.delay, mail.skew = False, 0, 0
    r = group["beta"]("-v", "--stale-warning", "4")
    assert (r.rc, r.full_line) == (1, P + "WARNING - no success for %.1fs > 4s, round trip 1.0s, 1 in flight | "
                                   "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;2;3;0 pending=1;;;0 rtt=1.0s;2;3;0 "
                                   "since_last_success=%.1fs;4;;0" % (since, since)), r
    assert "last success: probe" not in r.stdout, r


def test_a_node_away_for_longer_than_lost_after_finds_its_probe_waiting(tmp_path):
    mail = MailSystem()
    group = nodes(mail, tmp_path, "alpha", "beta", "gamma")
    for name in ("alpha", "beta", "gamma"):
        assert group[name]().rc == 0
    for _ in range(10):   # gamma is away for 50 s; the others go on
        mail.clock.advance(5)
        for name, since in (("alpha", 4), ("beta", 0)):   # beta sees alpha's probe of the same second
            r = group[name]("-v")
            assert (r.rc, r.text) == (0, "round trip 1.0s, 1 in flight, last success %ds ago" % since), r
            assert len(re.findall(r"was sent by another node \(tag \w+\): left for it", r.stdout)) >= 1, r
    mail.clock.advance(1)
    r = group["gamma"]("-v")
    assert (r.rc, r.text) == (0, "round trip 1.0s, 1 in flight, last success 0s ago"), r
    assert "declared lost" not in r.stdout, r
    books = {name: check.books() for name, check in group.items()}
    assert books == {"alpha": (11, 10, 0, 1, 0), "beta": (11, 10, 0, 1, 0), "gamma": (2, 1, 0, 1, 0)}, books


@settings(max_examples=25, deadline=None)
@given(order=st.lists(st.sampled_from(["alpha", "beta"]), max_size=10),
       gaps=st.lists(st.integers(1, 30), min_size=12, max_size=12))
def test_nodes_in_any_order_count_only_their_own_probes_each_once_and_lose_none(tmp_path_factory, order, gaps):
    mail = MailSystem()
    group = nodes(mail, tmp_path_factory.mktemp("n"), "alpha", "beta")
    for name, gap in zip(["alpha", "beta"] + order, gaps):
        mail.clock.advance(gap)
        r = group[name]()
        assert r.rc == 0, r   # every probe arrives at once: a round trip of 1 s at most, nothing lost
    counted, pending = {}, set()
    for name, check in group.items():
        assert check.books()[2] == 0
        state = check.state()
        for pid in state["counted"]:
            assert pid.startswith(node_tag(name)) and pid not in counted, (pid, name, counted)
            counted[pid] = name
        pending |= set(state["pending"])
    assert ids_in_mailbox(mail) <= pending   # what is left is what its node still waits for
