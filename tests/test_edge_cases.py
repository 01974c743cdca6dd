"""Edge cases: bounces, clock skew, forgotten ids, damaged numbers, bounded
name lookups, tight budgets, odd SMTP greetings, AUTH and replies, option
limits.  The first part needs no mail server; the rest runs against the lab
and loopback fault servers."""

import email.message
import email.policy
import json
import socket
import subprocess
import sys
import time

import pytest

from check_mail_roundtrip import ledger, net, probe as probe_format
from check_mail_roundtrip.budget import Deadline
from check_mail_roundtrip.state import State, StateStore, file_stem
from tests.checkrun import COMMAND

SECRET = b"0123456789abcdef0123456789abcdef"
PROFILE = "p"


def _headers(msg):
    return msg.as_bytes(policy=email.policy.SMTP).split(b"\r\n\r\n", 1)[0]


def test_a_bounce_quoting_a_probe_is_not_the_probe():
    p = probe_format.new_probe(PROFILE, time.time())
    bounce = email.message.EmailMessage()
    bounce["Subject"] = "Undeliverable: Mail round-trip probe " + p.token(SECRET)
    bounce["Content-Type"] = 'multipart/report; report-type="delivery-status"; boundary="x"'
    found, reason = probe_format.recognise(_headers(bounce), SECRET, PROFILE)
    assert found is None and "delivery report" in reason
    # a read receipt likewise (folded header); an ordinary automatic reply is the probe coming back
    receipt = (b"Subject: Read: Mail round-trip probe " + p.token(SECRET).encode()
               + b"\r\nContent-Type: multipart/report;\r\n report-type=disposition-notification;"
               + b" boundary=y\r\n")
    assert probe_format.recognise(receipt, SECRET, PROFILE)[0] is None
    reply = email.message.EmailMessage()
    reply["Subject"] = "AW: Mail round-trip probe " + p.token(SECRET)
    reply.set_content("I am away.")
    assert probe_format.recognise(_headers(reply), SECRET, PROFILE)[0] == p


def test_server_clock_a_little_behind_is_not_implausible():
    st = State(PROFILE)
    p = probe_format.Probe(PROFILE, "ab" * 8, 1_000_000_500)      # sent at ...000.5
    ledger.record_sent(st, p)
    arrival = ledger.Arrival(p, 1_000_000 - 2.0, None)               # stamped 2.5 s "before"
    out = ledger.reconcile(st, [arrival], 1_000_300.0, 3600)
    assert out.rtts == [(p.probe_id, 0.0)]                           # not the 300 s interval
    assert any("clock is behind" in n for n in out.notes)


def test_a_probe_from_a_few_seconds_in_the_future_is_still_counted():
    st = State(PROFILE)
    p = probe_format.Probe(PROFILE, "cd" * 8, 1_000_003_000)         # no pending record
    out = ledger.reconcile(st, [ledger.Arrival(p, 1_000_003.0, None)], 1_000_000.0, 3600)
    assert [pid for pid, _ in out.rtts] == [p.probe_id]


def test_ids_forgotten_by_the_size_cap_are_never_counted_again(monkeypatch):
    monkeypatch.setattr(ledger, "MAX_REMEMBERED", 3)
    st = State(PROFILE)
    now = 2_000_000.0
    probes = [probe_format.Probe(PROFILE, "%016x" % i, int((now - 100 + i) * 1000)) for i in range(5)]
    for p in probes:
        ledger.record_sent(st, p)
    ledger.reconcile(st, [ledger.Arrival(p, None, None) for p in probes], now, 3600)
    assert len(st.counted) == 3 and st.counted_floor_ms == probes[1].sent_ms
    again = ledger.reconcile(st, [ledger.Arrival(probes[0], None, None)], now + 1, 3600)
    assert again.rtts == []                                          # a duplicate, not a success
    assert st.totals["returned"] == 5


@pytest.mark.parametrize("content", [
    b'{"schema": 1, "profile": "p", "last_success": NaN}',
    b'{"schema": 1, "profile": "p", "last_success": Infinity}',
    b'{"schema": 1, "profile": "p", "pending": {"a": 1' + b"0" * 400 + b"}}",
    b'{"schema": 1, "profile": "p", "counted": {"a": -5}}',
])
def test_numbers_that_are_not_times_count_as_damage(tmp_path, content):
    store = StateStore(str(tmp_path), PROFILE)
    with open(store.path, "wb") as f:
        f.write(content)
    state, problem = store.load()
    assert state.pending == {} and problem and "kept aside" in problem


def test_a_saved_state_with_a_forgotten_floor_loads_again(tmp_path):
    store = StateStore(str(tmp_path), PROFILE)
    st = State(PROFILE)
    st.counted_floor_ms = 123
    store.save(st)
    loaded, problem = store.load()
    assert problem is None and loaded.counted_floor_ms == 123


def test_a_name_lookup_that_hangs_ends_at_the_deadline(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(5))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="lookup of mail.example.test timed out"):
        net.lookup("mail.example.test", 25, Deadline(time.monotonic() + 0.3))
    assert time.monotonic() - t0 < 1.0
    net.lookup("127.0.0.1", 25, Deadline(time.monotonic() + 0.3))   # literals need no lookup


@pytest.mark.parametrize("value", ["1", "0.5", "3601", "1e10"])
def test_timeout_outside_its_limits_is_a_usage_error(tmp_path, value):
    r = subprocess.run(
        [sys.executable, COMMAND, "-H", "127.0.0.1", "--from", "a@b.test", "--state-dir", str(tmp_path),
         "-t", value],
        capture_output=True, text=True, env={"CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 3, r
    assert r.stdout.startswith("MAIL_ROUNDTRIP UNKNOWN - usage error: argument -t/--timeout: must be between 2 and 3600 seconds")


# -- against the lab and loopback fault servers ----------------------------------

import imaplib  # noqa: E402
import re  # noqa: E402

from tests import faultservers as fs  # noqa: E402
from tests.checkrun import Checker  # noqa: E402

MONITOR = "monitor@lab.test"


def _smtp_fault(lab, tmp_path, script, *extra):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "fault")
    with fs.FaultServer(script) as srv:
        return check("--smtp-port", str(srv.port), "--smtp-tls", "none", "-t", "6", *extra)


def test_smtp_greeting_refusal_is_told_in_the_servers_words(lab, tmp_path):
    r = _smtp_fault(lab, tmp_path, fs.SMTPScript({"GREETING": "421 4.7.0 fault.test too many connections"}))
    assert r.rc == 2, r
    assert r.line == ("MAIL_ROUNDTRIP CRITICAL - SMTP connect failed: 421 4.7.0 fault.test too many "
                      "connections, no probe out yet, 0 in flight "
                      "| junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=0;;;0"), r


def test_an_unreadable_reply_to_the_message_is_not_taken_as_accepted(lab, tmp_path):
    r = _smtp_fault(lab, tmp_path, fs.SMTPScript({"DOT": "xyz nonsense"}))
    assert r.rc == 2, r
    assert r.line.startswith("MAIL_ROUNDTRIP CRITICAL - SMTP send failed: connection lost after DATA, "
                             "outcome unknown: unreadable reply"), r
    assert r.perf["pending"] == 1  # it may have been taken: kept pending


def test_smtp_auth_with_a_non_ascii_password(lab, tmp_path):
    user, password = "umlaut@lab.test", "Prüfwört-ß-€"
    lab.add_user(user, password)
    pwfile = tmp_path / "smtp-password"
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission",
                    "--smtp-user", user, "--smtp-password-file", str(pwfile), "--name", "utf8")
    r = check()
    assert r.rc == 0, r
    assert r.text == "first probe sent, 1 in flight", r
    lab.wait_for(MONITOR, 1)


def test_a_bounce_about_a_probe_is_neither_counted_nor_deleted(lab, tmp_path):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "bounce", "-v")
    assert check().rc == 0
    lab.wait_for(MONITOR, 1)
    with open(tmp_path / "state" / "secret", "rb") as f:
        secret = f.read().strip()
    p = probe_format.new_probe("bounce", time.time() - 2)
    raw = (b"From: MAILER-DAEMON@lab.test\r\nTo: monitor@lab.test\r\n"
           b"Subject: Undeliverable: Mail round-trip probe " + p.token(secret).encode() + b"\r\n"
           b"MIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--b--\r\n")
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"],
                             ssl_context=__import__("ssl").create_default_context(cafile=lab.ca_file))
    conn.login(MONITOR, lab.users[MONITOR])
    conn.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw)
    conn.logout()
    r = check()
    assert r.rc == 0, r
    assert re.search(r"ignored: a delivery report \(bounce\) about a probe, not the probe itself", r.stdout), r
    assert p.probe_id not in re.findall(r"^probe ([0-9a-f]{16}) returned", r.stdout, re.M)
    assert any((m["subject"] or "").startswith("Undeliverable:") for m in lab.messages(MONITOR))


def test_nothing_in_flight_is_not_judged_against_a_lower_bound_range(lab, tmp_path):
    r = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "lowbound", "-w", "10:")()
    assert r.rc == 0, r
    assert r.line == ("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight "
                      "| junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;;600;0 pending=1;;;0"), r


# -- budget edges, connecting by address, report types, odd server text ------------

from check_mail_roundtrip import failure, imap as imap_transport, smtp as smtp_transport  # noqa: E402
from check_mail_roundtrip.settings import Endpoint  # noqa: E402
from check_mail_roundtrip.tls import client_context  # noqa: E402


def test_a_silent_smtp_server_with_a_tiny_budget_is_critical_inside_it(lab, tmp_path):
    """The goodbye (QUIT) stays inside the budget: no UNKNOWN, no phantom pending probe."""
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "tiny")
    with fs.FaultServer(fs.SMTPScript({"RCPT": fs.SMTPScript.SILENT})) as srv:
        closed = fs.free_port()
        r = check("--smtp-port", str(srv.port), "--smtp-tls", "none", "--imap-port", str(closed), "-t", "2")
    assert r.rc == 2, r
    assert r.line == ("MAIL_ROUNDTRIP CRITICAL - IMAP connect to 127.0.0.1:%d failed: connection refused, "
                      "SMTP send failed: " % closed +
                      "timed out, no probe out yet, 0 in flight "
                      "| lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=0;;;0"), r
    assert r.seconds < 2.0, r
    state = json.load(open(tmp_path / "state" / (file_stem("tiny") + ".json")))
    assert state["pending"] == {} and state["totals"]["sent"] == 0


def test_a_stale_alarm_signal_after_the_step_ended_is_ignored():
    alarm = Deadline(time.monotonic() + 5).alarm(lambda: RuntimeError("must not be raised"))
    alarm.start()
    alarm.stop()
    alarm._expire(14, None)  # a SIGALRM that was already pending when the step ended


def test_transports_connect_to_the_address_looked_up_once(lab, monkeypatch):
    """One bounded lookup per connection; TLS still verifies the host *name*."""
    real = socket.getaddrinfo
    asked = []

    def counting(host, *args, **kwargs):
        if host in ("localhost", b"localhost"):  # an ASCII name goes as bytes (no IDNA codec)
            asked.append("localhost")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    ctx = client_context(lab.ca_file)
    ep = Endpoint("IMAP", "localhost", lab.ports["imaps"], "tls", MONITOR, lab.users[MONITOR], ctx)
    with imap_transport.ImapCollector(ep, "INBOX", Deadline(time.monotonic() + 10), readonly=True) as c:
        assert c.find("MRTP1.none") == []
    assert asked == ["localhost"]
    ep = Endpoint("SMTP", "localhost", lab.ports["smtp"], "starttls", None, None, ctx)
    msg = "From: monitor@lab.test\r\nTo: monitor@lab.test\r\nSubject: by address\r\n\r\nhi\r\n"
    result = smtp_transport.send(msg, MONITOR, MONITOR, ep, Deadline(time.monotonic() + 10))
    assert result.status == "sent", result
    assert asked == ["localhost", "localhost"]
    lab.wait_for(MONITOR, 1)


@pytest.mark.parametrize("content_type", [
    "multipart/report; report-type=global-delivery-status; boundary=b",
    "multipart/report; report-type*=us-ascii''delivery-status; boundary=b",
    "Multipart/Report;\r\n boundary=b",
])
def test_every_multipart_report_is_a_report(content_type):
    p = probe_format.new_probe(PROFILE, time.time())
    raw = ("Subject: Undeliverable: " + p.token(SECRET) + "\r\nContent-Type: " + content_type + "\r\n").encode()
    found, reason = probe_format.recognise(raw, SECRET, PROFILE)
    assert found is None and "delivery report" in reason


def test_odd_server_text_never_breaks_the_description():
    huge = "b'" + "\\x41" * 100000 + "'"
    text = failure.describe(imaplib.IMAP4.error(huge))
    assert len(text) <= 300
    nested = "b'" + "(" * 5000 + "'"
    assert failure.describe(imaplib.IMAP4.error(nested)).startswith("(((")


def test_without_tls_cram_md5_is_preferred_to_a_clear_text_password(lab, tmp_path):
    pwfile = tmp_path / "pw"
    pwfile.write_text("s3cret\n")
    pwfile.chmod(0o600)
    script = fs.SMTPScript(auth="PLAIN LOGIN CRAM-MD5")
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "cram")
    with fs.FaultServer(script) as srv:
        r = check("--smtp-port", str(srv.port), "--smtp-tls", "none", "--smtp-user", "u@lab.test",
                  "--smtp-password-file", str(pwfile))
    assert r.rc == 0 and r.text == "first probe sent, 1 in flight", r
    auth = [line for line in srv.received if line.upper().startswith("AUTH")]
    assert auth == ["AUTH CRAM-MD5"], srv.received
