"""Hop by hop and the authentication verdicts, in memory: which probes' Received and
Authentication-Results fields a run reads, the -v lines, the slowest hop in the status line,
--auth-results-state and --auth-results-host; whole lines and exit codes.

The mail system in memory passes a mail through its relays (each stamps a Received field
``delay`` seconds after the hop before) to the mail server, which stamps its own field
``MailSystem.delay`` seconds after the last relay and puts its verdicts just below it.
The fake clock starts at a whole second: a probe delivered d seconds after it was sent has
the INTERNALDATE t + d, its round trip is d + 1.
"""

import pytest

from tests.memlab import MailSystem, MemCheck, Relay, sent_id

P = "MAIL_ROUNDTRIP "
SERVER = "mx.memory.test"
PERF = "| junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;30;60;0 pending=1;;;0 rtt=%.1fs;30;60;0 since_last_success=%.1fs;;;0"
HEADING = "probe %s, round trip %.3fs: its hops, oldest first (Received dates have whole seconds)"
FAIL = 'mx.memory.test; spf=pass smtp.mailfrom=memory.test; dkim=fail reason="signature verification failed"'


def relayed(tmp_path, *options, relays=None, verdicts=()):
    """A mail system whose mail passes *relays* (default: mx1.memory.test), and the check (-w 30
    -c 60) for its mailbox."""
    mail = MailSystem()
    mail.relays = list(relays) if relays is not None else [Relay("mx1.memory.test")]
    mail.verdicts = list(verdicts)
    return mail, MemCheck(mail, tmp_path, "-w", "30", "-c", "60", "--lost-after", "600", *options)


def held_at_mx1(mail, check, seconds, *extra):
    """A first run whose probe mx1 holds for *seconds*; the id of that probe and the next run (with *extra*)."""
    mail.delay = seconds
    pid = sent_id(check("-v"))
    mail.delay = 0
    mail.clock.advance(60)
    return pid, check(*extra)


def after_heading(r, pid, rtt, count=3):
    """The *count* -v lines after the heading of probe *pid*'s hops."""
    lines = r.stdout.splitlines()
    at = lines.index(HEADING % (pid, rtt))
    return lines[at + 1:at + 1 + count]


def next_run(mail, check):
    """A first run, and the next one (with -v) a minute later, which collects its probe."""
    check()
    mail.clock.advance(60)
    return check("-v")


def test_a_steady_run_within_the_thresholds_reads_no_received_field_a_slow_one_reads_those_of_its_probe(tmp_path):
    mail, check = relayed(tmp_path, verdicts=[FAIL])
    check()
    for _ in range(3):
        mail.clock.advance(60)
        r = check()
        assert r.full_line == P + "OK - round trip 1.0s, 1 in flight, last success 59s ago " + PERF % (1.0, 59.0), r
    assert mail.traced == []
    mail.delay = 40       # the next probe comes late
    mail.clock.advance(60)
    check()
    mail.delay = 0
    mail.clock.advance(60)
    r = check()
    assert r.full_line == P + "WARNING - round trip 41.0s > 30s (slowest hop: 40s at mx1.memory.test), 1 in flight, " \
                              "last success 19s ago " + PERF % (41.0, 19.0), r
    assert len(mail.traced) == 1


def test_a_probe_held_at_a_relay_names_it_in_the_status_line_and_v_shows_each_hop(tmp_path):
    mail, check = relayed(tmp_path)
    pid, r = held_at_mx1(mail, check, 45, "-v")
    assert (r.rc, r.line) == (1, P + "WARNING - round trip 46.0s > 30s (slowest hop: 45s at mx1.memory.test), "
                                   "1 in flight, last success 14s ago"), r
    assert after_heading(r, pid, 46.0) == [
        "hop 1: monitor -> mx1.memory.test (with ESMTPS, TLS yes) +0.0s",
        "hop 2: mx1.memory.test -> mx.memory.test (with ESMTP, TLS no) +45.0s",
        "auth: no Authentication-Results by mx.memory.test",
    ], r
    assert len(mail.traced) == 1


def test_without_v_a_slow_probe_is_read_but_its_hops_are_not_printed(tmp_path):
    mail, check = relayed(tmp_path, relays=[Relay("mx1.memory.test", delay=50), Relay("mx2.memory.test", delay=5)])
    _pid, r = held_at_mx1(mail, check, 2)
    assert (r.rc, r.full_line) == (1, P + "WARNING - round trip 58.0s > 30s (slowest hop: 50s at mx1.memory.test), "
                                         "1 in flight, last success 2s ago " + PERF % (58.0, 2.0)), r
    assert "hop 1" not in r.stdout and len(mail.traced) == 1


def test_with_v_the_slowest_probe_of_a_run_within_the_thresholds_shows_its_hops(tmp_path):
    mail, check = relayed(tmp_path, verdicts=["mx.memory.test; spf=pass; dkim=pass; dmarc=pass"])
    mail.delay = 3
    pid = sent_id(check("-v"))
    mail.clock.advance(60)
    r = check("-v")
    assert r.line == P + "OK - round trip 4.0s, 1 in flight, last success 56s ago", r
    assert after_heading(r, pid, 4.0) == [
        "hop 1: monitor -> mx1.memory.test (with ESMTPS, TLS yes) +0.0s",
        "hop 2: mx1.memory.test -> mx.memory.test (with ESMTP, TLS no) +3.0s",
        "auth: spf=pass dkim=pass dmarc=pass (by mx.memory.test)",
    ], r


def test_a_probe_in_junk_is_read_closer_even_when_fast(tmp_path):
    mail, check = relayed(tmp_path)
    mail.junk_filter = True
    check()
    mail.junk_filter = False
    mail.clock.advance(60)
    r = check()
    assert r.rc == 1 and r.line.startswith(P + "WARNING - probe delivered to Junk, round trip 1.0s, "), r
    assert len(mail.traced) == 1


def test_a_relay_whose_clock_disagrees_is_no_slow_hop(tmp_path):
    mail, check = relayed(tmp_path, relays=[Relay("mx1.memory.test", skew=-3600)])
    pid, r = held_at_mx1(mail, check, 40, "-v")
    # the 40s since sending cover both hops; the mail spent them at mx1 or before it
    assert r.line == P + "WARNING - round trip 41.0s > 30s (slowest hop: 40s at mx1.memory.test), 1 in flight, " \
                         "last success 19s ago", r
    assert after_heading(r, pid, 41.0, 2) == [
        "hop 1: monitor -> mx1.memory.test (with ESMTPS, TLS yes) clock? (dated 3600s before the probe was sent)",
        "hop 2: mx1.memory.test -> mx.memory.test (with ESMTP, TLS no) +40.0s",
    ], r


@pytest.mark.parametrize("state, rc, word", [("warning", 1, "WARNING"), ("critical", 2, "CRITICAL")])
def test_a_failing_verdict_sets_the_auth_results_state_naming_it_and_its_host(tmp_path, state, rc, word):
    mail, check = relayed(tmp_path, "--auth-results-state", state, verdicts=[FAIL])
    r = next_run(mail, check)
    assert (r.rc, r.line) == (rc, P + word + " - dkim=fail at mx.memory.test, round trip 1.0s, 1 in flight, "
                                         "last success 59s ago"), r
    assert "auth: spf=pass dkim=fail (signature verification failed) (by mx.memory.test)" in r.stdout.splitlines()


def test_by_default_a_failing_verdict_is_told_by_v_only(tmp_path):
    mail, check = relayed(tmp_path, verdicts=[FAIL])
    r = next_run(mail, check)
    assert (r.rc, r.line) == (0, P + "OK - round trip 1.0s, 1 in flight, last success 59s ago"), r
    assert "auth: spf=pass dkim=fail (signature verification failed) (by mx.memory.test)" in r.stdout.splitlines()


def test_with_auth_results_state_every_probe_back_is_judged(tmp_path):
    mail, check = relayed(tmp_path, "--auth-results-state", "warning",
                          verdicts=["mx.memory.test; spf=pass; dkim=pass; dmarc=pass"])
    mail.delay = 20
    check()
    mail.delay = 0
    mail.verdicts = ["mx.memory.test; dmarc=none"]
    mail.clock.advance(10)
    assert check().text.startswith("no probe back this run")
    mail.clock.advance(50)
    r = check()
    assert (r.rc, r.text) == (1, "dmarc=none at mx.memory.test, 2 round trips, slowest 21.0s, 1 in flight, "
                                 "last success 39s ago"), r
    assert len(mail.traced) == 2


def test_forged_verdicts_from_before_the_mail_server_do_not_count(tmp_path):
    forged = ["Authentication-Results: mx.memory.test; spf=pass; dkim=pass; dmarc=pass"]
    mail, check = relayed(tmp_path, "--auth-results-state", "critical",
                          relays=[Relay("evil.memory.test", headers=forged), Relay("mx1.memory.test")],
                          verdicts=["mx.memory.test; dkim=fail"])
    r = next_run(mail, check)
    assert (r.rc, r.line) == (2, P + "CRITICAL - dkim=fail at mx.memory.test, round trip 1.0s, 1 in flight, "
                                     "last success 59s ago"), r
    assert "auth: dkim=fail (by mx.memory.test); 1 Authentication-Results with its name from before it ignored" \
        in r.stdout.splitlines()


def test_the_trusted_host_may_be_named(tmp_path):
    mail, check = relayed(tmp_path, "--auth-results-state", "critical", "--auth-results-host", "mx1.memory.test",
                          relays=[Relay("mx1.memory.test", headers=["Authentication-Results: mx1.memory.test; "
                                                                    "spf=softfail"])],
                          verdicts=["mx.memory.test; spf=pass"])
    r = next_run(mail, check)
    assert (r.rc, r.line) == (2, P + "CRITICAL - spf=softfail at mx1.memory.test, round trip 1.0s, 1 in flight, "
                                     "last success 59s ago"), r
    assert "auth: spf=softfail (by mx1.memory.test)" in r.stdout.splitlines()


def test_pop3_reads_the_hops_from_the_header_it_read_already(tmp_path):
    mail, check = relayed(tmp_path, "--collect", "pop3")
    pid, r = held_at_mx1(mail, check, 45, "-v")
    assert (r.rc, r.line) == (1, P + "WARNING - round trip 46.0s > 30s (slowest hop: 45s at mx1.memory.test), "
                                     "1 in flight, last success 14s ago"), r
    assert "hop 2: mx1.memory.test -> mx.memory.test (with ESMTP, TLS no) +45.0s" in r.stdout.splitlines()


def test_a_failure_to_read_the_fields_is_a_note_not_a_failed_run(tmp_path):
    mail, check = relayed(tmp_path)
    mail.delay = 45
    check()
    mail.delay = 0
    mail.clock.advance(60)
    real = mail.open_collector

    def opened(*args, **kwargs):
        collector = real(*args, **kwargs)

        def trace(refs):
            from check_mail_roundtrip.failure import StepFailure
            raise StepFailure("IMAP fetch", "connection reset by peer")
        collector.trace = trace
        return collector

    mail.transports = type(mail.transports)(opened, mail.send)
    r = check("-v")
    assert (r.rc, r.line) == (1, P + "WARNING - round trip 46.0s > 30s, 1 in flight, last success 14s ago"), r
    assert "the Received fields of 1 probe(s) not read: IMAP fetch failed: connection reset by peer" \
        in r.stdout.splitlines()
