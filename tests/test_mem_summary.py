"""The status line in memory: the legs of a reflected round trip, and properties of every line.

Whatever happens to the mail, a status line is ``MAIL_ROUNDTRIP STATE - text |
perfdata``: its state agrees with the exit code, problems stand first, the
figures in the text agree with the perfdata and the state file, and the books
balance.  The round trip is the server's arrival time (whole seconds, the
upper end of its second, never after the collection) less the send time.
"""

import math
import re

import pytest
from hypothesis import given, settings, strategies as st

from check_mail_roundtrip.check import plain
from tests.memlab import MailSystem, MemCheck

P = "MAIL_ROUNDTRIP "
STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
LABELS = ["junk", "leg_back", "leg_out", "lost", "oldest_pending", "pending", "rtt", "since_last_success",
          "unexpunged"]


def reflected(tmp_path, *options, skew=0.0):
    """A first run whose probe goes out in 2 s to a reflector that sends it back after 0.5 s,
    arriving 4 s later (by its clock *skew* seconds off ours); the next run a minute on."""
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--to", "echo@far.test", *options)
    mail.reflector("echo@far.test", check.secret, pause=0.5, back=4.0, skew=skew)
    mail.delay = 2.0
    check()
    mail.clock.advance(60)
    return check("-v")


def test_a_reflected_round_trip_tells_its_legs(tmp_path):
    r = reflected(tmp_path)
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 7.0s (out 2.0s, back 4.5s), 1 in flight, last success "
                                   "53s ago | junk=0;;;0 leg_back=4.5s;;;0 leg_out=2.0s;;;0 lost=0;;;0 "
                                   "oldest_pending=0.0s;120;600;0 pending=1;;;0 rtt=7.0s;120;600;0 "
                                   "since_last_success=53.0s;;;0"), r


@pytest.mark.parametrize("options, rc, text, fields", [
    (("--leg-warning", "3", "--leg-critical", "10"), 1, "leg back 4.5s > 3s", ";3;10;0"),
    (("--leg-warning", "1", "--leg-critical", "4"), 2, "leg back 4.5s > 4s, leg out 2.0s > 1s", ";1;4;0"),
    (("--leg-warning", "~:1",), 1, "leg out 2.0s outside range ~:1, leg back 4.5s outside range ~:1", ";;;0"),
    (("--leg-critical", "5",), 0, "", ";;5;0"),
])
def test_leg_thresholds(tmp_path, options, rc, text, fields):
    r = reflected(tmp_path, *options)
    assert (r.rc, r.full_line) == (rc, P + "%s - %sround trip 7.0s (out 2.0s, back 4.5s), 1 in flight, last success "
                                   "53s ago | junk=0;;;0 leg_back=4.5s%s leg_out=2.0s%s lost=0;;;0 "
                                   "oldest_pending=0.0s;120;600;0 pending=1;;;0 rtt=7.0s;120;600;0 "
                                   "since_last_success=53.0s;;;0" % (STATES[rc], text + ", " if text else "",
                                                                     fields, fields)), r


def test_legs_are_left_out_when_the_reflectors_clock_disagrees(tmp_path):
    r = reflected(tmp_path, skew=-20.0)
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 7.0s, 1 in flight, last success 53s ago | junk=0;;;0 "
                                   "lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0 rtt=7.0s;120;600;0 "
                                   "since_last_success=53.0s;;;0"), r
    assert ("legs out and back not reported: the reflector's clock and ours disagree (out -18.000s, back 24.500s, "
            "round trip 7.000s)") in r.stdout.splitlines(), r


def test_the_legs_shown_are_those_of_the_slowest_round_trip(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--to", "echo@far.test")
    echo = mail.reflector("echo@far.test", check.secret, pause=0.5, back=40.0)
    mail.delay = 2.0
    check()                  # back at 42.5 s: a round trip of 43 s (2 s out, 40.5 s back)
    mail.clock.advance(30)
    echo.back = 1.0
    check()                  # back at 33.5 s: 4 s (2 s out, 1.5 s back)
    mail.clock.advance(30)
    r = check()
    assert r.text == "2 round trips, slowest 43.0s (out 2.0s, back 40.5s), 1 in flight, last success 17s ago", r
    assert (r.perf["rtt"], r.perf["leg_out"], r.perf["leg_back"]) == (43.0, 2.0, 40.5), r


# -- properties of every status line ------------------------------------------------------------

EVENTS = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 400)),
    st.tuples(st.just("delay"), st.sampled_from([0, 0.5, 3, 30, 200, 1000])),
    st.tuples(st.just("lose"), st.integers(1, 3)),
    st.tuples(st.just("hold"), st.booleans()),
    st.tuples(st.just("junk"), st.booleans()),
    st.tuples(st.just("skew"), st.sampled_from([0, -3, 3, -100])),
    st.tuples(st.just("smtp"), st.sampled_from([None, "fails", "uncertain", "cut"])),
    st.tuples(st.just("imap"), st.sampled_from([None, "IMAP login", "IMAP fetch", "IMAP delete"])),
    st.tuples(st.just("run"), st.sampled_from([(), ("--wait", "20"), ("--keep",), ("--no-junk",)])),
)


def apply(mail, event):
    kind, value = event
    if kind == "advance":
        mail.clock.advance(value)
    elif kind == "delay":
        mail.delay = value
    elif kind == "lose":
        mail.lose(value)
    elif kind == "hold":
        mail.hold() if value else mail.release()
    elif kind == "junk":
        mail.junk_filter = value
    elif kind == "skew":
        mail.skew = value
    elif kind == "smtp":
        if value == "fails":
            mail.smtp_fails("SMTP send", "temporary rejection at RCPT: 450 4.2.0 try later")
        elif value == "uncertain":
            mail.smtp_uncertain()
        elif value == "cut":
            mail.smtp_uncertain(delivered=False)
        else:
            mail.smtp_fails(None)
    elif kind == "imap":
        for step in ("IMAP login", "IMAP fetch", "IMAP delete"):
            mail.fail(step, "connection reset by peer" if step == value else None)


def assert_well_formed(r, check):
    """The line's grammar, its state, and its figures against the perfdata and the state file."""
    m = re.fullmatch(r"MAIL_ROUNDTRIP (OK|WARNING|CRITICAL|UNKNOWN) - (.+) \| (.+)", r.full_line)
    assert m and m.group(1) == STATES[r.rc], r
    text, perf = m.group(2), m.group(3)
    labels = [field.split("=")[0] for field in perf.split(" ")]
    assert labels == sorted(labels) and set(labels) <= set(LABELS) and len(labels) == len(set(labels)), r
    assert "Traceback" not in r.stdout and "e+" not in perf and "e-" not in perf, r
    sent, returned, lost, pending, late = check.books()
    assert r.perf["pending"] == pending and re.search(r"(^|, )%d in flight(,|$)" % pending, text), r
    if "rtt" in r.perf:
        assert re.search(r"(^|, )(round trip|\d+ round trips, slowest) %ss" % re.escape(plain(r.perf["rtt"])), text), r
    if r.perf["lost"]:
        assert "%d probe%s lost" % (r.perf["lost"], "" if r.perf["lost"] == 1 else "s") in text, r
    # one phrase each, "N round trips, slowest Xs" being one of them
    phrases = re.sub(r"(\d+ round trips), (slowest)", r"\1 \2", text).split(", ")
    if r.rc == 0:
        assert not [p for p in phrases if " > " in p or "failed:" in p], r
    else:   # the first phrase says what is wrong
        assert re.search(r" > | outside range |failed: |delivered to Junk|state file", phrases[0]), r


@settings(max_examples=60, deadline=None)
@given(events=st.lists(EVENTS, min_size=1, max_size=25),
       thresholds=st.sampled_from([("-w", "5", "-c", "60", "--lost-after", "300"),
                                   ("-w", "120", "-c", "600", "--lost-after", "700", "--lost-warning", "2"),
                                   ("-w", "30", "-c", "30", "--lost-after", "31", "--stale-warning", "100")]))
def test_every_status_line_is_well_formed_and_agrees_with_the_state(tmp_path_factory, events, thresholds):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path_factory.mktemp("s"), *thresholds)
    ran = False
    for event in events + [("run", ())]:
        if event[0] == "run":
            assert_well_formed(check(*event[1]), check)
            ran = True
        else:
            apply(mail, event)
    assert ran


@settings(max_examples=60, deadline=None)
@given(start=st.floats(0, 0.999), delay=st.floats(0, 100), collect_after=st.floats(0, 100))
def test_the_round_trip_is_the_arrival_second_upper_end_or_the_collection_less_the_send_time(
        tmp_path_factory, start, delay, collect_after):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path_factory.mktemp("r"))
    mail.clock.advance(start)
    mail.delay = delay
    check()
    sent = round(mail.clock.now * 1000) / 1000.0
    mail.clock.advance(delay + collect_after)
    collected = mail.clock.now
    r = check()
    rtt = max(0.0, min(math.floor(sent + delay) + 1.0, collected) - sent)
    assert r.perf["rtt"] == pytest.approx(rtt, abs=0.0006), (r, rtt)
