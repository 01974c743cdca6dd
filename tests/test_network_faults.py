"""Network faults (issue 4, items 5 and 6): the real command against misbehaving
loopback servers (tests/faultservers/), the other side served by the lab.

Every case asserts the exit code, the whole first line (the failed step and the
server's or system's words), that the run ended inside its -t budget, and that
the state stays consistent: the next normal run against the lab works.

IMAP faults: the SMTP side is the lab, so the probe goes out; the next normal
run collects it (a round trip).  SMTP faults: the IMAP side is the lab
(imaps), the SMTP side a fault server on 127.0.0.1.  A probe the server refused
(4xx/5xx) or that never got to the server is not pending; one whose
connection was lost after DATA may still arrive and stays pending.

All runs of one test share one profile (--name), so one state file.
"""

import base64
import glob
import json
import os
import re

import pytest

from tests import faultservers as fs
from tests.checkrun import Checker

HOST = "127.0.0.1"
NAME = "netfaults"
# the mailbox was read: junk (own probes found in the Junk folder) is reported
PERF_SENT = r"junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"
PERF_UNSENT = r"junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=0;;;0"
# the mailbox could not be read: no junk figure (nothing was looked at)
PERF_SENT_UNREAD = r"lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"
# smtplib turns a socket error while reading a reply into SMTPServerDisconnected
# "Connection unexpectedly closed: <error>"; the check passes that on (see
# test_bug_smtp_socket_errors_are_told_as_connection_closed).  Optional here so
# these tests keep passing once the words are fixed.
CLOSED = r"(?:Connection unexpectedly closed: )?"


# -- helpers ------------------------------------------------------------------------

def checker(lab, tmp_path):
    check = Checker(lab, tmp_path)
    check.args += ["--name", NAME]
    return check


def imap_at(port, tls="tls", host=HOST):
    return ["--imap-host", host, "--imap-port", str(port), "--imap-tls", tls]


def smtp_at(port, tls="none", host=HOST):
    return ["--smtp-host", host, "--smtp-port", str(port), "--smtp-tls", tls]


def state_of(check):
    """The profile's state file (there is exactly one, nothing set aside)."""
    files = glob.glob(os.path.join(check.state_dir, "*.json"))
    assert len(files) == 1, files
    assert not glob.glob(os.path.join(check.state_dir, "*.damaged-*")), os.listdir(check.state_dir)
    with open(files[0]) as f:
        return json.load(f)


def assert_line(r, pattern, rc=2, budget=None):
    assert r.rc == rc, r
    assert re.fullmatch(pattern, r.line), "%s\n  pattern: %s" % (r, pattern)
    assert "Traceback" not in r.stdout + r.stderr, r
    if budget is not None:
        assert r.seconds < budget, "run took %.2fs with -t %s: %s" % (r.seconds, budget, r)


def imap_failure(step_and_words, state="CRITICAL"):
    """The line of a first run whose IMAP side failed and whose probe went out."""
    return r"MAIL_ROUNDTRIP %s - %s, probe sent, 1 in flight \| %s" % (
        state, step_and_words, PERF_SENT_UNREAD)


def smtp_failure(step_and_words, state="CRITICAL", pending=0):
    perf = PERF_UNSENT if pending == 0 else PERF_SENT
    # a probe whose hand-over was cut short after DATA stays pending: it may be out
    rest = ("no probe out yet" if pending == 0 else "first probe may be out") + ", %d in flight" % pending
    return r"MAIL_ROUNDTRIP %s - %s, %s \| %s" % (state, step_and_words, rest, perf)


def sent_mail_from(srv):
    """Did the client get as far as MAIL FROM?"""
    return any(x.upper().startswith("MAIL FROM") for x in srv.received)


def next_run_collects(lab, check):
    """After an IMAP fault: the probe that went out comes back, a normal round trip."""
    lab.wait_for("monitor@lab.test", 1)
    r = check()
    assert_line(
        r, r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago "
           r"\| junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0 rtt=\1s;120;600;0 "
           r"since_last_success=\d+\.\d+s;;;0", rc=0)
    st = state_of(check)
    assert len(st["pending"]) == 1 and len(st["counted"]) == 1, st
    assert st["totals"]["sent"] == 2 and st["totals"]["returned"] == 1, st
    return r


def next_run_sends_first(check):
    """After an SMTP failure with nothing pending: the next run is a clean first run."""
    r = check()
    assert_line(r, r"MAIL_ROUNDTRIP OK - first probe sent, 1 in flight \| " + PERF_SENT, rc=0)
    st = state_of(check)
    assert len(st["pending"]) == 1, st
    return r


@pytest.fixture(scope="module")
def certs(lab_session):
    """Lab-CA-signed certificates: one for the wrong name, one expired, for 127.0.0.1."""
    return {
        "wrong": lab_session.make_cert("wrong.example", ["DNS:wrong.example"]),
        "expired": lab_session.make_cert("localhost", ["IP:127.0.0.1", "DNS:localhost"],
                                         expired=True),
    }


def tls_ctx(pair):
    return fs.server_context(*pair)


# == item 5: IMAP side =================================================================

def test_imap_connection_refused(lab, tmp_path):
    check = checker(lab, tmp_path)
    port = fs.free_port()
    r = check(*imap_at(port), "-t", "6")
    assert_line(r, imap_failure(r"IMAP connect to 127\.0\.0\.1:%d failed: connection refused" % port), budget=6)
    next_run_collects(lab, check)


def test_imap_connection_reset_on_first_command(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.greet_then_reset("* OK fault server ready")) as srv:
        r = check(*imap_at(srv.port, "none"), "-t", "6")
    assert_line(r, imap_failure("IMAP connect failed: connection reset by peer"), budget=6)
    assert srv.received and srv.received[0].endswith("CAPABILITY"), srv.received
    next_run_collects(lab, check)


def test_imap_connection_closed_on_first_command(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.greet_then_close("* OK fault server ready")) as srv:
        r = check(*imap_at(srv.port, "none"), "-t", "6")
    assert_line(r, imap_failure(r"IMAP connect failed: connection closed by the server \(at CAPABILITY\)"), budget=6)
    next_run_collects(lab, check)


@pytest.mark.parametrize("error_state, state, rc", [("critical", "CRITICAL", 2),
                                                     ("unknown", "UNKNOWN", 3)])
def test_imap_tarpit_times_out_inside_the_budget(lab, tmp_path, error_state, state, rc):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.tarpit) as srv:
        r = check(*imap_at(srv.port), "-t", "6", "--error-state", error_state)
    assert_line(r, imap_failure("IMAP connect failed: timed out", state), rc=rc, budget=6)
    assert srv.accepted == 1
    next_run_collects(lab, check)


def test_imap_tarpit_after_starttls_offer(lab, tmp_path):
    """Greets, then never answers: the first command (CAPABILITY) times out."""
    check = checker(lab, tmp_path)

    def greet_and_hold(conn):
        conn.reply("* OK fault server ready")
        conn.hold()
    with fs.FaultServer(greet_and_hold) as srv:
        r = check(*imap_at(srv.port, "starttls"), "-t", "5")
    assert_line(r, imap_failure("IMAP connect failed: timed out"), budget=5)
    next_run_collects(lab, check)


def test_imap_slow_server_still_works(lab, tmp_path):
    check = checker(lab, tmp_path)
    assert check().rc == 0
    lab.wait_for("monitor@lab.test", 1)
    with fs.FaultServer(fs.DelayProxy(lab.ports["imaps"], 0.1)) as srv:
        r = check(*imap_at(srv.port), "-t", "10")
    assert_line(
        r, r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago "
           r"\| junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0 rtt=\1s;120;600;0 "
           r"since_last_success=\d+\.\d+s;;;0", rc=0, budget=10)
    assert srv.accepted == 1


def test_imap_too_slow_server_times_out_cleanly(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.DelayProxy(lab.ports["imaps"], 2.5)) as srv:
        r = check(*imap_at(srv.port), "-t", "5")
    assert_line(r, imap_failure("IMAP (connect|TLS|login|select) failed: timed out"), budget=5)
    next_run_collects(lab, check)


def test_imap_tls_against_a_plaintext_server(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.plain_greeting("* OK plain IMAP, no TLS here")) as srv:
        r = check(*imap_at(srv.port, "tls"), "-t", "6")
    assert_line(r, imap_failure(r"IMAP TLS failed: TLS error: WRONG_VERSION_NUMBER"), budget=6)
    next_run_collects(lab, check)


@pytest.mark.parametrize("host, words", [
    ("localhost", r"Hostname mismatch, certificate is not valid for 'localhost' "
                  r"\(the certificate is for wrong\.example\)"),
    ("127.0.0.1", r"IP address mismatch, certificate is not valid for '127\.0\.0\.1' "
                  r"\(the certificate is for wrong\.example\)"),
])
def test_imap_certificate_for_the_wrong_name(lab, tmp_path, certs, host, words):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.IMAPScript(), tls=tls_ctx(certs["wrong"])) as srv:
        r = check(*imap_at(srv.port, "tls", host), "-t", "6")
    assert_line(r, imap_failure("IMAP TLS failed: certificate verify failed: " + words), budget=6)
    next_run_collects(lab, check)


def test_imap_expired_certificate(lab, tmp_path, certs):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.IMAPScript(), tls=tls_ctx(certs["expired"])) as srv:
        r = check(*imap_at(srv.port, "tls"), "-t", "6")
    assert_line(r, imap_failure("IMAP TLS failed: certificate verify failed: certificate has expired"),
                budget=6)
    next_run_collects(lab, check)


def test_imap_starttls_certificate_for_the_wrong_name(lab, tmp_path, certs):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.IMAPScript(starttls=tls_ctx(certs["wrong"]))) as srv:
        r = check(*imap_at(srv.port, "starttls", "localhost"), "-t", "6")
    assert_line(r, imap_failure(
        r"IMAP TLS failed: certificate verify failed: Hostname mismatch, certificate is not "
        r"valid for 'localhost' \(the certificate is for wrong\.example\)"), budget=6)
    next_run_collects(lab, check)


def test_imap_starttls_not_offered(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.IMAPScript()) as srv:
        r = check(*imap_at(srv.port, "starttls"), "-t", "6")
    assert_line(r, imap_failure("IMAP TLS failed: server does not offer STARTTLS"), budget=6)
    next_run_collects(lab, check)


# == items 5 and 6: SMTP side ============================================================

def test_smtp_connection_refused(lab, tmp_path):
    check = checker(lab, tmp_path)
    port = fs.free_port()
    r = check(*smtp_at(port), "-t", "6")
    assert_line(r, smtp_failure(r"SMTP connect to 127\.0\.0\.1:%d failed: connection refused" % port), budget=6)
    assert state_of(check)["pending"] == {}
    next_run_sends_first(check)


def test_smtp_connection_reset_on_first_command(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.greet_then_reset("220 fault.test ESMTP")) as srv:
        r = check(*smtp_at(srv.port), "-t", "6")
    assert_line(r, smtp_failure(
        r"SMTP connect failed: " + CLOSED + r"(?:\[Errno 104\] )?[Cc]onnection reset by peer"),
        budget=6)
    assert srv.received[0].upper().startswith("EHLO"), srv.received
    next_run_sends_first(check)


@pytest.mark.parametrize("error_state, state, rc", [("critical", "CRITICAL", 2),
                                                     ("unknown", "UNKNOWN", 3)])
def test_smtp_tarpit_times_out_inside_the_budget(lab, tmp_path, error_state, state, rc):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.tarpit) as srv:
        r = check(*smtp_at(srv.port), "-t", "5", "--error-state", error_state)
    assert_line(r, smtp_failure("SMTP connect failed: " + CLOSED + "timed out", state), rc=rc, budget=5)
    next_run_sends_first(check)


def test_smtp_tarpit_at_rcpt(lab, tmp_path):
    check = checker(lab, tmp_path)
    script = fs.SMTPScript({"RCPT": fs.SMTPScript.SILENT})
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port), "-t", "5")
    assert_line(r, smtp_failure("SMTP send failed: " + CLOSED + "timed out"), budget=5)
    next_run_sends_first(check)


def test_smtp_slow_server_still_works(lab, tmp_path):
    check = checker(lab, tmp_path)
    script = fs.SMTPScript(delay=0.3)
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port), "-t", "8")
    assert_line(r, r"MAIL_ROUNDTRIP OK - first probe sent, 1 in flight \| " + PERF_SENT, rc=0, budget=8)
    assert len(script.messages) == 1
    assert len(state_of(check)["pending"]) == 1


def test_smtp_too_slow_server_times_out_cleanly(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.SMTPScript(delay=2.0)) as srv:
        r = check(*smtp_at(srv.port), "-t", "5")
    assert_line(r, smtp_failure("SMTP connect failed: " + CLOSED + "timed out"), budget=5)
    next_run_sends_first(check)


def test_smtp_implicit_tls_against_a_plaintext_server(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.plain_greeting("220 fault.test ESMTP plain")) as srv:
        r = check(*smtp_at(srv.port, "tls"), "-t", "6")
    assert_line(r, smtp_failure("SMTP TLS failed: TLS error: WRONG_VERSION_NUMBER"), budget=6)
    next_run_sends_first(check)


def test_smtp_starttls_not_offered(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.SMTPScript()) as srv:
        r = check(*smtp_at(srv.port, "starttls"), "-t", "6")
    assert_line(r, smtp_failure("SMTP TLS failed: server does not offer STARTTLS"), budget=6)
    assert not sent_mail_from(srv), srv.received
    next_run_sends_first(check)


def test_smtp_starttls_refused(lab, tmp_path):
    check = checker(lab, tmp_path)
    script = fs.SMTPScript({"STARTTLS": "454 4.7.0 TLS not available due to local problem"},
                           starttls=tls_ctx((lab.cert_file, lab.key_file)))
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port, "starttls"), "-t", "6")
    assert_line(r, smtp_failure("SMTP TLS failed: server refused STARTTLS: "
                                "454 4.7.0 TLS not available due to local problem"), budget=6)
    assert not sent_mail_from(srv), srv.received
    next_run_sends_first(check)


def test_smtp_starttls_handshake_with_a_plaintext_answer(lab, tmp_path):
    """The server says 220 to STARTTLS, then keeps talking plain text."""
    check = checker(lab, tmp_path)

    def fake_starttls(conn):
        conn.reply("220 fault.test ESMTP")
        conn.readline()
        conn.reply("250-fault.test\n250 STARTTLS")
        conn.readline()
        conn.reply("220 2.0.0 Ready to start TLS")
        conn.reply("250 but no TLS here")
        conn.drain()
    with fs.FaultServer(fake_starttls) as srv:
        r = check(*smtp_at(srv.port, "starttls"), "-t", "6")
    assert_line(r, smtp_failure("SMTP TLS failed: TLS error: WRONG_VERSION_NUMBER"), budget=6)
    next_run_sends_first(check)


@pytest.mark.parametrize("host, words", [
    ("localhost", r"Hostname mismatch, certificate is not valid for 'localhost' "
                  r"\(the certificate is for wrong\.example\)"),
    ("127.0.0.1", r"IP address mismatch, certificate is not valid for '127\.0\.0\.1' "
                  r"\(the certificate is for wrong\.example\)"),
])
def test_smtp_starttls_certificate_for_the_wrong_name(lab, tmp_path, certs, host, words):
    check = checker(lab, tmp_path)
    script = fs.SMTPScript(starttls=tls_ctx(certs["wrong"]))
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port, "starttls", host), "-t", "6")
    assert_line(r, smtp_failure("SMTP TLS failed: certificate verify failed: " + words), budget=6)
    assert not sent_mail_from(srv), srv.received
    next_run_sends_first(check)


def test_smtp_implicit_tls_certificate_for_the_wrong_name(lab, tmp_path, certs):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.SMTPScript(), tls=tls_ctx(certs["wrong"])) as srv:
        r = check(*smtp_at(srv.port, "tls", "localhost"), "-t", "6")
    assert_line(r, smtp_failure(
        r"SMTP TLS failed: certificate verify failed: Hostname mismatch, certificate is not "
        r"valid for 'localhost' \(the certificate is for wrong\.example\)"), budget=6)
    next_run_sends_first(check)


@pytest.mark.parametrize("tls", ["tls", "starttls"])
def test_smtp_expired_certificate(lab, tmp_path, certs, tls):
    check = checker(lab, tmp_path)
    ctx = tls_ctx(certs["expired"])
    if tls == "tls":
        srv = fs.FaultServer(fs.SMTPScript(), tls=ctx)
    else:
        srv = fs.FaultServer(fs.SMTPScript(starttls=ctx))
    with srv:
        r = check(*smtp_at(srv.port, tls), "-t", "6")
    assert_line(r, smtp_failure("SMTP TLS failed: certificate verify failed: certificate has expired"),
                budget=6)
    next_run_sends_first(check)


def test_smtp_starttls_with_a_good_certificate_works(lab, tmp_path):
    """Control case for the TLS tests: the fault server with the lab's own certificate."""
    check = checker(lab, tmp_path)
    script = fs.SMTPScript(starttls=tls_ctx((lab.cert_file, lab.key_file)))
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port, "starttls"), "-t", "6")
    assert_line(r, r"MAIL_ROUNDTRIP OK - first probe sent, 1 in flight \| " + PERF_SENT, rc=0, budget=6)
    assert len(script.messages) == 1


def test_smtp_auth_rejected(lab, tmp_path):
    check = checker(lab, tmp_path)
    password = "s3cret-Pa55word"
    script = fs.SMTPScript({"AUTH": "535 5.7.8 Error: authentication failed: bad credentials"},
                           auth="PLAIN")
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port), "--smtp-user", "monitor@lab.test", "-t", "6", "-vvv",
                  env={"CHECK_MAIL_ROUNDTRIP_SMTP_PASSWORD": password})
    # with -vvv the trace follows the first line and the perfdata comes last
    head, perf = smtp_failure(
        "SMTP auth failed: 535 5.7.8 Error: authentication failed: bad credentials").split(r" \| ")
    assert_line(r, head, budget=6)
    assert re.search(r"\| " + perf + r"\n$", r.stdout), r
    assert any(x.upper().startswith("AUTH PLAIN") for x in srv.received), srv.received
    blob = base64.b64encode(b"\0monitor@lab.test\0" + password.encode()).decode()
    for secret in (password, blob, base64.b64encode(password.encode()).decode()):
        assert secret not in r.stdout + r.stderr
    assert not sent_mail_from(srv), srv.received
    next_run_sends_first(check)


def test_smtp_auth_not_offered(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.SMTPScript()) as srv:
        r = check(*smtp_at(srv.port), "--smtp-user", "monitor@lab.test", "-t", "6",
                  env={"CHECK_MAIL_ROUNDTRIP_SMTP_PASSWORD": "pw"})
    assert_line(r, smtp_failure("SMTP auth failed: server offers no AUTH \\(after none\\)"), budget=6)
    next_run_sends_first(check)


@pytest.mark.parametrize("verb, reply, words", [
    ("RCPT", "450 4.7.1 <monitor@lab.test>: Recipient address rejected: rate limited",
     "temporary rejection at RCPT: 450 4.7.1 <monitor@lab.test>: Recipient address rejected: "
     "rate limited"),
    ("MAIL", "451 4.3.0 Error: queue file write error",
     "temporary rejection at MAIL: 451 4.3.0 Error: queue file write error"),
    ("DOT", "452 4.3.1 Insufficient system storage",
     "temporary rejection at end of DATA: 452 4.3.1 Insufficient system storage"),
    ("MAIL", "550 5.7.1 <monitor@lab.test>: Sender address rejected: Access denied",
     "permanent rejection at MAIL: 550 5.7.1 <monitor@lab.test>: Sender address rejected: "
     "Access denied"),
    ("RCPT", "550 5.1.1 <monitor@lab.test>: Recipient address rejected: User unknown",
     "permanent rejection at RCPT: 550 5.1.1 <monitor@lab.test>: Recipient address rejected: "
     "User unknown"),
    ("DATA", "554 5.5.1 Error: no valid recipients",
     "permanent rejection at DATA: 554 5.5.1 Error: no valid recipients"),
    ("DOT", "554 5.7.1 Message rejected as spam",
     "permanent rejection at end of DATA: 554 5.7.1 Message rejected as spam"),
])
def test_smtp_rejection_is_not_pending(lab, tmp_path, verb, reply, words):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.SMTPScript({verb: reply})) as srv:
        r = check(*smtp_at(srv.port), "-t", "6")
    assert_line(r, smtp_failure("SMTP send failed: " + re.escape(words)), budget=6)
    st = state_of(check)
    assert st["pending"] == {}, st
    next_run_sends_first(check)


@pytest.mark.parametrize("after_data, words", [
    (fs.SMTPScript.CLOSE, "Connection unexpectedly closed"),
    (fs.SMTPScript.RESET, CLOSED + r"(?:\[Errno 104\] )?[Cc]onnection reset by peer"),
    (fs.SMTPScript.SILENT, CLOSED + "timed out"),
])
def test_smtp_connection_lost_after_data_keeps_the_probe_pending(lab, tmp_path, after_data, words):
    check = checker(lab, tmp_path)
    script = fs.SMTPScript({"DOT": after_data})
    with fs.FaultServer(script) as srv:
        r = check(*smtp_at(srv.port), "-t", "5")
    assert_line(r, smtp_failure(
        "SMTP send failed: connection lost after DATA, outcome unknown: " + words, pending=1),
        budget=5)
    assert r.perf["pending"] == 1
    # the whole message reached the server: the probe it carries is the pending one
    assert len(script.messages) == 1
    st = state_of(check)
    assert len(st["pending"]) == 1, st
    (probe_id,) = st["pending"]
    assert probe_id.encode() in script.messages[0]
    # next normal run: the uncertain probe is still in flight, a new one joins it
    r = check()
    assert_line(r, r"MAIL_ROUNDTRIP OK - no probe back this run, oldest in flight \d+\.\d+s, "
                   r"2 in flight, no success yet \| junk=0;;;0 lost=0;;;0 oldest_pending=\d+\.\d+s;120;600;0 "
                   r"pending=2;;;0", rc=0)
    st = state_of(check)
    assert probe_id in st["pending"] and len(st["pending"]) == 2, st


# == fixed bugs, kept as regression tests ==========================================================================

# Was a bug: smtplib reports a socket error while reading a reply as
# SMTPServerDisconnected("Connection unexpectedly closed: <error>"), and
# failure.describe() passes that text on.  A silent server (tarpit) thus reads
# "SMTP connect failed: Connection unexpectedly closed: timed out" although
# nothing was closed, a reset reads "... closed: [Errno 104] Connection reset by
# peer", and StepFailure.timeout stays False for a timeout.  The IMAP side says
# "timed out" / "connection reset by peer"; SMTP should use the same words.
@pytest.mark.parametrize("handler, words", [
    (fs.tarpit, "timed out"),
    (fs.greet_then_reset("220 fault.test ESMTP"), "connection reset by peer"),
])
def test_bug_smtp_socket_errors_are_told_as_connection_closed(lab, tmp_path, handler, words):
    check = checker(lab, tmp_path)
    with fs.FaultServer(handler) as srv:
        r = check(*smtp_at(srv.port), "-t", "4")
    assert_line(r, smtp_failure("SMTP connect failed: " + words), budget=4)


def test_both_sides_tarpitted_still_end_inside_the_budget(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.tarpit) as imap_srv, fs.FaultServer(fs.tarpit) as smtp_srv:
        r = check(*imap_at(imap_srv.port), *smtp_at(smtp_srv.port), "-t", "6")
    assert_line(r, r"MAIL_ROUNDTRIP CRITICAL - IMAP connect failed: timed out, SMTP connect failed: "
                   + CLOSED + r"timed out, no probe out yet, 0 in flight \| " + PERF_UNSENT.replace("junk=0;;;0 ", ""),
                budget=6)
    next_run_sends_first(check)


# Was a bug: the per-step deadline only sets each socket operation's timeout; a
# server that drip-feeds one byte of a never-ending reply every 0.3 s satisfies
# every read, so the step never times out by itself.  The run is stopped by
# nagiosplugin's SIGALRM at ceil(-t) instead, which (a) step() catches as an
# ordinary exception and reports as "SMTP connect failed: 5s" (the Timeout's
# text), (b) is already past -t, and (c) on the IMAP side leaves no budget
# for sending, so the SMTP set-up's deadline.left() (outside any step) raises
# BudgetExhausted: the run crashes with "UNKNOWN: ...BudgetExhausted" and
# leaves a probe "pending" in the state that was never sent (a false loss
# later).
def test_bug_drip_fed_imap_reply_overruns_the_budget(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.drip(b"* OK ")) as srv:
        r = check(*imap_at(srv.port, "none"), "-t", "5")
    assert_line(r, imap_failure("IMAP connect failed: timed out"), budget=5)
    next_run_collects(lab, check)


# Was a bug: see test_bug_drip_fed_imap_reply_overruns_the_budget.
def test_bug_drip_fed_smtp_reply_overruns_the_budget(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.drip(b"220 ")) as srv:
        r = check(*smtp_at(srv.port), "-t", "5")
    assert_line(r, smtp_failure("SMTP connect failed: timed out"), budget=5)
    next_run_sends_first(check)


# Was a bug: after a connection lost after DATA the probe is kept pending (right),
# but a first run then says "no probe out yet, 1 in flight": the probe may
# well be out.  The words for no round trip only knew "sent" and not "uncertain".
def test_bug_uncertain_first_probe_is_not_called_unsent(lab, tmp_path):
    check = checker(lab, tmp_path)
    with fs.FaultServer(fs.SMTPScript({"DOT": fs.SMTPScript.CLOSE})) as srv:
        r = check(*smtp_at(srv.port), "-t", "5")
    assert r.rc == 2 and r.perf["pending"] == 1, r
    assert "no probe out yet" not in r.line, r
