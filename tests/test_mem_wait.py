"""--wait in memory: the probe just sent is measured in the same run, when it comes in time.

The collector in memory waits by moving the fake clock: with IDLE to the next
delivery, polling by a second (POP3: two); the wait ends when the probe is
back or its time is up, and books what came meanwhile.
"""

import pytest

from check_mail_roundtrip import cli
from tests.memlab import START, MailSystem, MemCheck, sent_id

P = "MAIL_ROUNDTRIP "


def back_in(rtt, pending=0, rtts=None, perf_junk="junk=0;;;0 ", since=0.0):
    """The line of a run whose own probe came back during the wait, after *rtt* seconds."""
    text = "round trip %.1fs" % rtt if rtts is None else "%d round trips, slowest %.1fs" % (rtts, rtt)
    return (P + "OK - %s, %d in flight, last success %ds ago | %slost=0;;;0 oldest_pending=0.0s;120;600;0 "
            "pending=%d;;;0 rtt=%.1fs;120;600;0 since_last_success=%.1fs;;;0"
            % (text, pending, since, perf_junk, pending, rtt, since))


def notes(r):
    return r.stdout.splitlines()[1:]


@pytest.fixture
def mail():
    return MailSystem()


@pytest.mark.parametrize("delay, rtt", [(0, 0.0), (0.5, 0.5), (3, 3.0), (11.5, 11.5)])
def test_a_probe_back_within_the_wait_is_measured_in_the_same_run(mail, tmp_path, delay, rtt):
    check = MemCheck(mail, tmp_path)
    mail.delay = delay
    r = check("--wait", "12", "-v")
    assert (r.rc, r.full_line) == (0, back_in(rtt)), r
    probe = sent_id(r)
    how = "back at the first look" if not delay else "IDLE in memory"
    assert "probe %s back after waiting %.1fs (%s)" % (probe, delay, how) in notes(r), r
    assert mail.clock.now == START + delay and mail.sessions == 2   # the wait ends as soon as it is back
    assert mail.mailbox(check.user).probes() == [] and check.books() == (1, 1, 0, 0, 0)


def test_a_probe_later_than_the_wait_is_left_pending_for_the_next_run(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.delay = 6
    r = check("--wait", "2", "-t", "20", "-v")
    assert (r.rc, r.full_line) == (0, P + "OK - first probe sent, oldest in flight 2.0s, 1 in flight | junk=0;;;0 "
                                   "lost=0;;;0 oldest_pending=2.0s;120;600;0 pending=1;;;0"), r
    assert "probe %s not back after waiting 2.0s (IDLE in memory)" % sent_id(r) in notes(r), r
    mail.clock.advance(58)
    r = check()
    assert r.text == "round trip 7.0s, 1 in flight, last success 53s ago", r


@pytest.mark.parametrize("options, waited, since, junk, how", [
    (("--no-idle",), 3.0, 0.0, "junk=0;;;0 ", "a look every 1s in memory"),
    # POP3: no Junk folder; the arrival from the Received date, [2, 3) s, found at the look at 4 s
    (("--collect", "pop3"), 4.0, 1.0, "", "a look every 2s in memory"),
])
def test_polling_looks_every_second_and_pop3_every_two(mail, tmp_path, options, waited, since, junk, how):
    check = MemCheck(mail, tmp_path, *options)
    mail.delay = 2.5
    r = check("--wait", "10", "-v")
    assert r.full_line == back_in(3.0, perf_junk=junk, since=since), r
    assert "probe %s back after waiting %.1fs (%s)" % (sent_id(r), waited, how) in notes(r), r


def test_mail_that_comes_meanwhile_is_booked_too_and_the_wait_goes_on_for_its_probe(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.delay = 26
    check()
    mail.clock.advance(25)
    mail.delay = 5          # the first probe comes at 26 s, the second at 30 s
    r = check("--wait", "12", "-v")
    assert r.full_line == back_in(27.0, rtts=2), r   # the first arrived in [26, 27) s
    assert "probe %s back after waiting 5.0s (IDLE in memory)" % sent_id(r) in notes(r), r
    assert check.books() == (2, 2, 0, 0, 0)


def test_the_wait_ends_with_its_own_probe_and_leaves_a_later_one_in_flight(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.delay = 30
    check()
    mail.clock.advance(25)
    mail.delay = 2
    r = check("--wait", "10")
    assert r.full_line == back_in(2.0, pending=1), r
    assert mail.clock.now == START + 27 and check.books() == (2, 1, 0, 1, 0)


def test_a_failure_while_waiting_ends_the_wait_quietly_and_leaves_the_probe_for_the_next_run(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.delay = 3
    mail.fail("IMAP wait", "connection reset by peer")
    r = check("--wait", "10", "-v")
    assert (r.rc, r.full_line) == (0, P + "OK - first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 "
                                   "oldest_pending=0.0s;120;600;0 pending=1;;;0"), r
    assert ("waiting for probe %s ended after 0.0s: IMAP wait failed: connection reset by peer (left for the next "
            "run)" % sent_id(r)) in notes(r), r
    mail.fail("IMAP wait", None)
    mail.clock.advance(60)
    assert check().text == "round trip 4.0s, 1 in flight, last success 56s ago"


def test_no_wait_when_the_mailbox_could_not_be_read_or_nothing_went_out(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.fail("IMAP connect", "connection refused")
    r = check("--wait", "10", "-v")
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - IMAP connect failed: connection refused, probe sent, "
                                   "1 in flight | lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"), r
    assert "not waiting for probe %s: the mailbox could not be read" % sent_id(r) in notes(r), r
    mail.fail("IMAP connect", None)
    mail.smtp_fails("SMTP connect to mx.memory.test:25", "connection refused")
    sessions = mail.sessions
    mail.clock.advance(60)
    r = check("--wait", "10", "-v")
    assert (r.rc, r.text) == (2, "SMTP connect to mx.memory.test:25 failed: connection refused, round trip 1.0s, "
                                 "0 in flight, last success 59s ago"), r
    assert mail.sessions == sessions + 1 and "waiting" not in r.stdout, r   # no second session


def test_a_probe_whose_sending_is_uncertain_is_waited_for(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.smtp_uncertain()
    mail.delay = 1
    r = check("--wait", "10")
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - SMTP send failed: connection lost after DATA, outcome unknown: "
                                   "connection reset by peer, round trip 1.0s, 0 in flight, last success 0s ago | "
                                   "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=0;;;0 "
                                   "rtt=1.0s;120;600;0 since_last_success=0.0s;;;0"), r


def test_the_wait_stays_inside_the_timeout(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.delay = 100
    r = check("--wait", "25", "-t", "35")   # 35 s less the output margin, the reserve and 2 s for booking
    assert r.text == "first probe sent, oldest in flight 25.0s, 1 in flight", r
    with pytest.raises(cli.UsageError, match=r"^--wait 26s leaves no room in -t 35s for the rest of the run: -t must "
                                             r"be at least --wait \+ 10s \(here 36s\)$"):
        check("--wait", "26", "-t", "35")
