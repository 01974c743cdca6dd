"""A step that fails, in memory: the status line names it, and the rest of the run goes on.

A send that fails does not stop the collection, nor the other way round; a
refused probe is not in flight, one whose hand-over was cut after DATA is;
nothing is declared lost while the mailbox cannot be read; a probe counted
in a run whose removal failed is a duplicate the next run removes.  The
servers' own words are the transports' business (the lab and fault-server
tests): here the step and the words are given by the mail system in memory.
"""

import pytest

from tests.memlab import MONITOR, MailSystem, MemCheck, sent_id

P = "MAIL_ROUNDTRIP "
REFUSED = "permanent rejection at RCPT: 550 5.1.1 <monitor@memory.test>: Recipient address rejected: User unknown"
UNSENT = "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=0;;;0"
BACK = "round trip 1.0s, %d in flight, last success 59s ago | junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 " \
       "pending=%d;;;0 rtt=1.0s;120;600;0 since_last_success=59.0s;;;0"


@pytest.fixture
def mail():
    return MailSystem()


@pytest.mark.parametrize("error_state, rc, state", [(None, 2, "CRITICAL"), ("critical", 2, "CRITICAL"),
                                                    ("unknown", 3, "UNKNOWN")])
def test_a_refused_probe_is_not_in_flight(mail, tmp_path, error_state, rc, state):
    check = MemCheck(mail, tmp_path, *(("--error-state", error_state) if error_state else ()))
    mail.smtp_fails("SMTP send", REFUSED)
    r = check()
    assert (r.rc, r.full_line) == (rc, P + "%s - SMTP send failed: %s, no probe out yet, 0 in flight | %s"
                                   % (state, REFUSED, UNSENT)), r
    assert check.books() == (0, 0, 0, 0, 0) and mail.mailbox(MONITOR).probes() == []


@pytest.mark.parametrize("step, words", [
    ("SMTP connect to mx.memory.test:25", "connection refused"),
    ("SMTP send", "temporary rejection at MAIL: 451 4.3.0 Try again later"),
    ("SMTP auth", "535 5.7.8 Error: authentication failed"),
])
def test_a_failed_send_does_not_stop_the_collection(mail, tmp_path, step, words):
    check = MemCheck(mail, tmp_path)
    check()
    mail.smtp_fails(step, words)
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - %s failed: %s, %s" % (step, words, BACK % (0, 0))), r
    assert mail.mailbox(MONITOR).probes() == [] and check.books() == (1, 1, 0, 0, 0)
    mail.smtp_fails(None)
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.text) == (0, "no probe back this run, 1 in flight, last success 1m ago"), r   # 119 s


def test_a_probe_cut_after_data_is_in_flight_and_counted_when_it_comes(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.smtp_uncertain()
    r = check("-v")
    uncertain = "SMTP send failed: connection lost after DATA, outcome unknown: connection reset by peer"
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - %s, first probe may be out, 1 in flight | junk=0;;;0 "
                                   "lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0" % uncertain), r
    assert "probe %s kept as pending: it may still arrive" % sent_id(r) in r.stdout.splitlines(), r
    mail.clock.advance(60)
    r = check()   # it went on after all; this run's probe too
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - %s, %s" % (uncertain, BACK % (1, 1))), r
    mail.smtp_fails(None)
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (0, P + "OK - " + BACK % (1, 1)), r
    assert check.books() == (3, 2, 0, 1, 0)


def test_a_probe_cut_after_data_that_never_comes_is_lost_in_time(mail, tmp_path):
    check = MemCheck(mail, tmp_path, "--lost-after", "700")
    mail.smtp_uncertain(delivered=False)
    check()
    mail.smtp_fails(None)
    mail.clock.advance(701)
    r = check()
    assert (r.rc, r.full_line) == (1, P + "WARNING - 1 probe lost > 0, no probe back this run, 1 in flight, "
                                   "no success yet | junk=0;;;0 lost=1;;;0 oldest_pending=0.0s;120;600;0 "
                                   "pending=1;;;0"), r


def test_nothing_is_declared_lost_while_the_mailbox_cannot_be_read(mail, tmp_path):
    check = MemCheck(mail, tmp_path, "-w", "2", "-c", "3", "--lost-after", "5")
    check()
    mail.fail("IMAP connect", "connection refused")
    mail.clock.advance(10)   # the first probe is older than --lost-after now, unread in the mailbox
    r = check("-v")
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - IMAP connect failed: connection refused, probe in flight for "
                                   "10.0s > 3s, 2 in flight, no success yet | lost=0;;;0 "
                                   "oldest_pending=10.0s;2;3;0 pending=2;;;0"), r
    assert "declared lost" not in r.stdout, r
    mail.fail("IMAP connect", None)
    mail.clock.advance(10)
    r = check("-v")
    assert (r.rc, r.full_line) == (0, P + "OK - 2 round trips, slowest 1.0s, 1 in flight, last success 9s ago | "
                                   "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;2;3;0 pending=1;;;0 rtt=1.0s;2;3;0 "
                                   "since_last_success=9.0s;;;0"), r
    assert check.books() == (3, 2, 0, 1, 0)


@pytest.mark.parametrize("step", ["IMAP login", "IMAP select", "IMAP search", "IMAP fetch"])
def test_a_collection_failing_at_any_step_counts_nothing_and_the_next_run_counts_it(mail, tmp_path, step):
    check = MemCheck(mail, tmp_path)
    check()
    mail.fail(step, "connection reset by peer", times=1)
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - %s failed: connection reset by peer, oldest in flight 60.0s, "
                                   "2 in flight, no success yet | lost=0;;;0 oldest_pending=60.0s;120;600;0 "
                                   "pending=2;;;0" % step), r
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.text) == (0, "2 round trips, slowest 1.0s, 1 in flight, last success 59s ago"), r


def test_a_probe_counted_in_a_run_whose_removal_failed_is_a_duplicate_for_the_next(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    first = sent_id(check("-v"))
    mail.fail("IMAP delete", "connection reset by peer", times=1)
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - IMAP delete failed: connection reset by peer, "
                                   + BACK % (1, 1)), r
    mail.clock.advance(60)
    r = check("-v")
    assert (r.rc, r.full_line) == (0, P + "OK - " + BACK % (1, 1)), r
    assert "probe %s: duplicate of a probe already counted, not counted again" % first in r.stdout.splitlines(), r
    assert mail.mailbox(MONITOR).probes() == [] and check.books() == (3, 2, 0, 1, 0)


def test_both_sides_failing_are_named_collect_first(mail, tmp_path):
    check = MemCheck(mail, tmp_path)
    mail.fail("IMAP login", "[AUTHENTICATIONFAILED] Authentication failed.")
    mail.smtp_fails("SMTP auth", "535 5.7.8 Error: authentication failed: authentication failure")
    r = check()
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - IMAP login failed: [AUTHENTICATIONFAILED] Authentication "
                                   "failed, SMTP auth failed: 535 5.7.8 Error: authentication failed: authentication "
                                   "failure, no probe out yet, 0 in flight | lost=0;;;0 "
                                   "oldest_pending=0.0s;120;600;0 pending=0;;;0"), r


def test_a_collection_failure_beside_a_first_probe_says_probe_sent(mail, tmp_path):
    check = MemCheck(mail, tmp_path, "--collect", "pop3")
    mail.fail("POP3 login", "-ERR [AUTH] Authentication failed.")
    r = check()
    assert (r.rc, r.full_line) == (2, P + "CRITICAL - POP3 login failed: -ERR [AUTH] Authentication failed, "
                                   "probe sent, 1 in flight | lost=0;;;0 oldest_pending=0.0s;120;600;0 "
                                   "pending=1;;;0"), r
