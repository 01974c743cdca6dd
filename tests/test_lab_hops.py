"""Hop by hop against real MTAs: the check sends its probe to mx1.lab.test (a second Postfix
that relays over SMTP with STARTTLS to the lab's Postfix, mail.lab.test) and collects it from
the lab's Dovecot over IMAPS.  A probe held in mx1's queue shows as that hop's time, at mx1, in
the status line and in -v; a steady run reads no Received field (every IMAP command recorded by
a relay); a slow run reads those of its probe with one bounded FETCH."""

import re

from tests import faultservers as fs
from tests.checkrun import Checker

HOLD = 5
MONITOR = "monitor@lab.test"
WARN = ("-w", "3", "-c", "60")


def through_mx1(relay_lab, lab, tmp_path):
    """The check for the monitor mailbox, sending to mx1 (STARTTLS) and collecting from the lab."""
    check = Checker(lab, tmp_path)
    check.args += ["--smtp-host", relay_lab.host, "--smtp-port", str(relay_lab.port),
                   "--smtp-helo", "probe.lab.test", *WARN]
    return check


def held_probe(relay_lab, check, *extra):
    """A run whose probe mx1 holds for HOLD seconds; once it is in the mailbox, the run that
    collects it (with *extra*)."""
    relay_lab.hold(HOLD)
    try:
        sent = check()
        assert sent.rc == 0 and "in flight" in sent.line, sent
        relay_lab.headers(MONITOR, timeout=HOLD + 20)
    finally:
        relay_lab.release()
    return check(*extra)


def trace_fetches(lines):
    """The IMAP command lines that fetch the trace fields."""
    return [line for line in lines if "FETCH" in line and "HEADER.FIELDS (RECEIVED AUTHENTICATION-RESULTS)" in line]


def test_a_probe_held_in_mx1s_queue_names_mx1_as_the_slowest_hop_and_v_shows_each_hop(relay_lab, lab, tmp_path):
    check = through_mx1(relay_lab, lab, tmp_path)
    r = held_probe(relay_lab, check, "-v")
    assert r.rc == 1 and re.fullmatch(
        r"MAIL_ROUNDTRIP WARNING - round trip (\d+\.\d+)s > 3s \(slowest hop: (\d+)s at mx1\.lab\.test\), "
        r"1 in flight, last success \d+s ago", r.line), r
    assert HOLD - 1 <= int(re.search(r"slowest hop: (\d+)s", r.line).group(1)) <= HOLD + 3, r
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith("its hops, oldest first (Received dates have "
                                                                 "whole seconds)"))
    hop1, hop2, hop3 = lines[at + 1:at + 4]
    assert re.fullmatch(r"hop 1: probe\.lab\.test \[127\.0\.0\.1\] -> mx1\.lab\.test \(with ESMTPS, TLS yes\) "
                        r"\+[01]\.\ds", hop1), hop1
    assert re.fullmatch(r"hop 2: mx1\.lab\.test \[127\.0\.0\.1\] -> mail\.lab\.test \(with ESMTPS, TLS yes\) "
                        r"\+\d\.0s", hop2), hop2
    assert re.fullmatch(r"hop 3: mail\.lab\.test -> mail\.lab\.test \(with LMTP, TLS no\) \+[01]\.0s", hop3), hop3
    assert lines[at + 4].startswith("auth: "), lines[at + 4]


def test_a_steady_run_fetches_no_trace_field_a_slow_run_one_bounded_fetch(relay_lab, lab, tmp_path):
    """Every IMAP command line the check sends, through a relay that records them (IMAP without TLS)."""
    recorder = fs.CutRelay(lab.ports["imap"], r"^$", times=0)
    with fs.FaultServer(recorder, max_connections=10, lifetime=120) as imap:
        check = through_mx1(relay_lab, lab, tmp_path)
        check.args += ["--name", "hops-cost", "--imap-host", "127.0.0.1", "--imap-port", str(imap.port),
                       "--imap-tls", "none"]
        check()
        relay_lab.headers(MONITOR)
        del imap.received[:]
        steady = check()
        assert steady.rc == 0 and steady.line.startswith("MAIL_ROUNDTRIP OK - round trip"), steady
        assert any(" UID FETCH " in line for line in imap.received), imap.received
        assert trace_fetches(imap.received) == [], imap.received
        relay_lab.headers(MONITOR)  # the probe that run sent, in the mailbox before the next is held
        slow = held_probe(relay_lab, check)
        assert slow.rc == 1 and "(slowest hop: " in slow.line, slow
        [fetch] = trace_fetches(imap.received)
        assert fetch.endswith(" (INTERNALDATE BODY.PEEK[HEADER.FIELDS (RECEIVED AUTHENTICATION-RESULTS)]<0.65536>)"), fetch


def test_the_verdicts_of_mail_lab_test_and_a_broken_dkim_signature_critical(relay_lab, lab, tmp_path):
    check = through_mx1(relay_lab, lab, tmp_path)
    check.args += ["--auth-results-state", "critical"]
    check()
    relay_lab.headers(MONITOR)
    relay_lab.break_dkim()
    try:
        r = check("-v")
        assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip"), r
        assert "auth: spf=pass dkim=pass dmarc=pass (by mail.lab.test)" in r.stdout.splitlines(), r
        relay_lab.headers(MONITOR)  # the probe signed while the verifier has the wrong key
        r = check("-v")
    finally:
        relay_lab.fix_dkim()
    assert r.rc == 2 and re.fullmatch(
        r"MAIL_ROUNDTRIP CRITICAL - dkim=fail at mail\.lab\.test, round trip \d+\.\d+s, 1 in flight, "
        r"last success \d+s ago", r.line), r
    assert "auth: spf=pass dkim=fail (signature verification failed) dmarc=pass (by mail.lab.test)" \
        in r.stdout.splitlines(), r


def test_pop3_reads_the_hops_from_the_header_top_read_already(relay_lab, lab, tmp_path):
    check = through_mx1(relay_lab, lab, tmp_path)
    check.args += ["--collect", "pop3", "--pop3-port", str(lab.ports["pop3s"]), "--pop3-tls", "tls"]
    check.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD")
    check.env["CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD"] = lab.users[MONITOR]
    r = held_probe(relay_lab, check, "-vvv")
    assert r.rc == 1 and re.search(r"round trip \d+\.\d+s > 3s \(slowest hop: \d+s at mx1\.lab\.test\)", r.line), r
    assert re.search(r"^hop 2: mx1\.lab\.test \[127\.0\.0\.1\] -> mail\.lab\.test \(with ESMTPS, TLS yes\) \+\d\.0s$",
                     r.stdout, re.M), r
    commands = re.findall(r"^POP3 C: (\S+)", r.stdout, re.M)
    assert "RETR" not in commands and commands.count("TOP") == 1, commands  # the probe's header, nothing more
