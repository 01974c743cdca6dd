"""Thresholds in memory: round trips, probes in flight, staleness and losses against -w/-c,
--stale-*, --lost-*; whole status lines with their perfdata and exit codes.

The check runs in-process against the mail system in memory (tests/memlab) on a
fake clock that starts at a whole second: a probe sent at t and delivered d
seconds later has the INTERNALDATE t + d (whole seconds), so its arrival is
taken as t + d + 1 (or the collection time, when that is earlier).
"""

import pytest
from hypothesis import given, settings, strategies as st

from tests.memlab import MailSystem, MemCheck

P = "MAIL_ROUNDTRIP "
FIRST = "first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;%s;%s;0 pending=1;;;0"


def first(check, w="120", c="600"):
    r = check()
    assert (r.rc, r.full_line) == (0, P + "OK - " + FIRST % (w, c)), r
    return r


@pytest.mark.parametrize("delay, rc, text", [
    (0, 0, "OK - round trip 1.0s"),
    (3, 0, "OK - round trip 4.0s"),
    (4, 0, "OK - round trip 5.0s"),                 # 5 lies inside -w 5 (0:5)
    (5, 1, "WARNING - round trip 6.0s > 5s (slowest hop: 5s at mx.memory.test)"),
    (9, 1, "WARNING - round trip 10.0s > 5s (slowest hop: 9s at mx.memory.test)"),      # 10 lies inside -c 10
    (10, 2, "CRITICAL - round trip 11.0s > 10s (slowest hop: 10s at mx.memory.test)"),
    (45, 2, "CRITICAL - round trip 46.0s > 10s (slowest hop: 45s at mx.memory.test)"),
])
def test_the_round_trip_against_warning_and_critical(tmp_path, delay, rc, text):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "-w", "5", "-c", "10", "--lost-after", "300")
    mail.delay = delay
    first(check, "5", "10")
    mail.clock.advance(60)
    mail.delay = 0
    r = check()
    assert r.rc == rc, r
    rtt = delay + 1.0
    assert r.full_line == (
        P + text + ", 1 in flight, last success %ds ago | junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;5;10;0 "
        "pending=1;;;0 rtt=%.1fs;5;10;0 since_last_success=%.1fs;;;0" % (60 - rtt, rtt, 60 - rtt))


def test_a_probe_collected_before_its_internaldate_second_is_over_is_measured_to_the_collection(tmp_path):
    """The arrival lies in [INTERNALDATE, +1): never later than the collection."""
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--wait", "5")
    mail.clock.advance(0.25)
    mail.delay = 0.5
    r = check()
    assert r.full_line == (P + "OK - round trip 0.5s, 0 in flight, last success 0s ago | junk=0;;;0 lost=0;;;0 "
                           "oldest_pending=0.0s;120;600;0 pending=0;;;0 rtt=0.5s;120;600;0 "
                           "since_last_success=0.0s;;;0"), r


def test_a_probe_in_flight_warns_then_goes_critical_then_its_round_trip_is_critical(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "-w", "100", "-c", "150", "--lost-after", "400")
    mail.delay = 200   # the first probe only; the others are held back until it is in
    first(check, "100", "150")
    mail.hold()
    lines = []
    for _ in range(4):
        mail.clock.advance(60)
        r = check()
        lines.append((r.rc, r.full_line))
    perf = "junk=0;;;0 lost=0;;;0 oldest_pending=%s;100;150;0 pending=%d;;;0"
    assert lines == [
        (0, P + "OK - no probe back this run, oldest in flight 60.0s, 2 in flight, no success yet | "
         + perf % ("60.0s", 2)),
        (1, P + "WARNING - probe in flight for 120.0s > 100s, no probe back this run, 3 in flight, no success yet | "
         + perf % ("120.0s", 3)),
        (2, P + "CRITICAL - probe in flight for 180.0s > 150s, no probe back this run, 4 in flight, no success yet | "
         + perf % ("180.0s", 4)),
        # the first probe came at 200 s: a critical round trip; the ones held since are in flight for 180 s
        (2, P + "CRITICAL - round trip 201.0s > 150s (slowest hop: 200s at mx.memory.test), probe in flight for "
         "180.0s > 150s, 4 in flight, last success "
         "39s ago | " + perf % ("180.0s", 4) + " rtt=201.0s;100;150;0 since_last_success=39.0s;;;0"),
    ]


def test_a_newer_probe_back_overtakes_the_one_stuck_in_flight(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "-w", "100", "-c", "150", "--lost-after", "1000")
    mail.hold()
    first(check, "100", "150")
    mail.clock.advance(60)
    check()
    mail.holding = False   # the first two stay held; the next ones flow
    for _ in range(3):
        mail.clock.advance(60)
        r = check()
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, 3 in flight, last success 59s ago | junk=0;;;0 "
                                   "lost=0;;;0 oldest_pending=0.0s;100;150;0 pending=3;;;0 rtt=1.0s;100;150;0 "
                                   "since_last_success=59.0s;;;0"), r


# -- since the last success -------------------------------------------------------------------

def test_staleness_is_not_judged_unless_asked_and_tells_the_time_since_the_last_success(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--lost-after", "7200")
    first(check)
    mail.clock.advance(60)
    mail.lose(100)               # from the second probe on, every probe is lost
    r = check()                  # the first probe back at +1 s
    lines = [(r.status, r.text)]
    for seconds in (60, 60, 3600, 86400):   # 1m, 2m, 62m, 25h: ago() stays short
        mail.clock.advance(seconds)
        r = check()
        lines.append((r.status, r.text))
    assert lines == [
        ("OK", "round trip 1.0s, 1 in flight, last success 59s ago"),
        ("OK", "no probe back this run, oldest in flight 60.0s, 2 in flight, last success 1m ago"),
        ("OK", "no probe back this run, oldest in flight 120.0s, 3 in flight, last success 2m ago"),
        ("CRITICAL", "probe in flight for 3720.0s > 600s, no probe back this run, 4 in flight, last success 62m ago"),
        ("WARNING", "4 probes lost > 0, no probe back this run, 1 in flight, last success 25h ago"),
    ]


@pytest.mark.parametrize("options, rc, text, field", [
    ((), 0, "no probe back this run, oldest in flight 120.0s, 3 in flight, last success 2m ago", "179.0s;;;0"),
    (("--stale-warning", "200"), 0, "no probe back this run, oldest in flight 120.0s, 3 in flight, "
                                    "last success 2m ago", "179.0s;200;;0"),
    (("--stale-warning", "150"), 1, "no success for 179.0s > 150s, no probe back this run, oldest in flight 120.0s, "
                                    "3 in flight", "179.0s;150;;0"),
    (("--stale-warning", "100", "--stale-critical", "170"), 2,
     "no success for 179.0s > 170s, no probe back this run, oldest in flight 120.0s, 3 in flight", "179.0s;100;170;0"),
    (("--stale-critical", "180"), 0, "no probe back this run, oldest in flight 120.0s, 3 in flight, "
                                     "last success 2m ago", "179.0s;;180;0"),
])
def test_stale_thresholds(tmp_path, options, rc, text, field):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, *options)
    check()
    mail.clock.advance(60)
    mail.lose(10)                # from the second probe on, every probe is lost
    check()                      # the first probe back at +1 s
    for _ in range(2):
        mail.clock.advance(60)
        r = check()
    assert r.rc == rc, r
    assert r.full_line == (P + "%s - %s | junk=0;;;0 lost=0;;;0 oldest_pending=120.0s;120;600;0 pending=3;;;0 "
                           "since_last_success=%s" % (r.status, text, field)), r


def test_no_success_yet_after_the_first_run_and_none_on_the_first(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--stale-warning", "10")
    mail.lose(1)
    r = check()
    assert r.full_line == P + "OK - first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 " \
                              "oldest_pending=0.0s;120;600;0 pending=1;;;0", r
    mail.clock.advance(60)
    r = check()   # nothing to judge staleness by: no success yet, not a stale one
    assert (r.rc, r.text) == (0, "no probe back this run, oldest in flight 60.0s, 2 in flight, no success yet"), r


# -- lost probes -------------------------------------------------------------------------------

@pytest.mark.parametrize("options, rc, text, field", [
    ((), 1, "2 probes lost > 0", "2;;;0"),
    (("--lost-warning", "1"), 1, "2 probes lost > 1", "2;1;;0"),
    (("--lost-warning", "2"), 0, "2 probes lost", "2;2;;0"),
    (("--lost-warning", "1", "--lost-critical", "1"), 2, "2 probes lost > 1", "2;1;1;0"),
    (("--lost-critical", "0"), 2, "2 probes lost > 0", "2;;;0"),    # any loss is critical
    (("--lost-warning", "~:5"), 0, "2 probes lost", "2;;;0"),
    (("--lost-warning", "@1:3"), 1, "2 probes lost outside range @1:3", "2;;;0"),
])
def test_lost_thresholds(tmp_path, options, rc, text, field):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "-w", "60", "-c", "90", "--lost-after", "100", *options)
    mail.lose(2)
    check()
    mail.clock.advance(10)
    check()
    mail.clock.advance(101)   # both are older than 100 s now
    r = check()
    assert r.rc == rc, r
    # a count within its thresholds stands where the figures stand, a violation first
    text = text + ", no probe back this run" if rc else "no probe back this run, " + text
    assert r.full_line == P + "%s - %s, 1 in flight, no success yet | junk=0;;;0 lost=%s " \
        "oldest_pending=0.0s;60;90;0 pending=1;;;0" % (r.status, text, field), r


# -- a property ----------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(delay=st.integers(0, 400), warning=st.integers(1, 200), above=st.integers(0, 200))
def test_the_state_of_a_round_trip_follows_the_thresholds(tmp_path_factory, delay, warning, above):
    critical = warning + above
    mail = MailSystem()
    check = MemCheck(mail, tmp_path_factory.mktemp("t"), "-w", str(warning), "-c", str(critical),
                     "--lost-after", str(critical + 1000))
    mail.delay = delay
    check()
    mail.delay = 0
    mail.clock.advance(delay + 5)
    r = check()
    rtt = delay + 1
    rc = 2 if rtt > critical else 1 if rtt > warning else 0
    assert r.rc == rc, r
    assert r.text.startswith("round trip %.1fs%s, 1 in flight, last success 4s ago" % (
        rtt, "" if not rc else " > %ds (slowest hop: %ds at mx.memory.test)" % (
            critical if rc == 2 else warning, delay))), r
    assert r.perf["rtt"] == rtt and r.perf["since_last_success"] == 4.0, r
