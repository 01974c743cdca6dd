"""Collecting by POP3 (--collect pop3), against the lab's real Dovecot.

POP3S, POP3 with STLS, OAuth2 (both mechanisms); each foreign message's
header read once (TOP), never a whole message (no RETR), never deleted; a
probe among many messages; the arrival time from the Received header; a
session cut before QUIT (a relay in front of the plain POP3 port: Dovecot
takes a plain login from 127.0.0.1) keeps the probes, and the next run counts
nothing twice and removes them; a locked maildrop and a wrong password in the
server's words; --keep.  A locked maildrop comes from a loopback fault server
(the lab's Dovecot waits for its lock before it answers [IN-USE], and only
with pop3_lock_session = yes).
"""

import datetime
import os
import poplib
import re
import time

import pytest

from check_mail_roundtrip import ledger
from check_mail_roundtrip.pop3 import MAX_HEADER, received_date
from tests import faultservers as fs
from tests.test_check_scenarios import (
    AGO,
    MONITOR,
    NUM,
    Check,
    assert_books,
    assert_line,
    has,
    line,
    perf as any_perf,
    sent_id,
)
from tests.test_imap_candidates import fill_forged, forged_left, wait_count


def perf(**figures):
    """The perfdata of a POP3 run: POP3 sees no Junk folder, so there is no junk figure."""
    return any_perf(junk=None, **figures)


ENV_POP3 = "CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD"
TRACE = re.compile(r"^POP3 (C|S): (.*)$", re.M)


class Pop3Check(Check):
    """The check collecting by POP3 from the lab (POP3S by default), with no IMAP password at all."""

    def __init__(self, lab, tmp_path, *options, port="pop3s", name="pop3", **kw):
        tls = {"pop3s": "tls", "pop3": "starttls"}[port]
        super().__init__(lab, tmp_path, "--collect", "pop3", "--pop3-port", str(lab.ports[port]),
                         "--pop3-tls", tls, *options, name=name, **kw)
        self.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD")
        self.env[ENV_POP3] = lab.users[MONITOR]


def commands(r):
    """Our POP3 commands in a -vvv run."""
    return [text for who, text in TRACE.findall(r.stdout) if who == "C"]


def tops(r):
    return [c for c in commands(r) if c.startswith("TOP ")]


def returned(check, *extra):
    """Wait for one of the check's probes, run: an OK round trip (its line asserted whole)."""
    check.lab.wait_for(MONITOR, lambda msgs: len(check.ours(msgs)) >= 1)
    r = check(*extra)
    assert_line(r, 0, line("OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO),
                           perf(rtt=NUM, since=NUM)))
    return r


def first(check, *extra):
    r = check(*extra)
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    return r


# -- round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("port", ["pop3s", "pop3"], ids=["pop3s", "stls"])
def test_round_trip(lab, tmp_path, port):
    check = Pop3Check(lab, tmp_path, port=port)
    r = first(check, "-vvv")
    probe = sent_id(r)
    assert lab.users[MONITOR] not in r.stdout and "PASS ****" in commands(r), r.stdout
    r = returned(check, "-vvv")
    assert r.perf["rtt"] < 5, r
    assert "probe %s: arrival from the Received header" % probe in r.stdout, r.stdout
    said = commands(r)
    if port == "pop3":
        assert said[0] == "STLS" and "POP3: TLS established" in r.stdout, said
    assert said[-4:] == ["UIDL", "TOP 1 0", "DELE 1", "QUIT"], said
    assert "POP3 S: +OK Logging out, messages deleted." in r.stdout
    assert re.search(r"^POP3 S: \+OK <header, \d+ bytes>$", r.stdout, re.M), r.stdout
    msgs = lab.messages(MONITOR)
    assert not has(msgs, probe) and len(check.ours(msgs)) <= 1, msgs
    assert_books(check, sent=2, returned=1, lost=0, pending=1)


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_oauth2_round_trip(lab, tmp_path, mechanism):
    check, client_secret = oauth2_check(lab, tmp_path, "--oauth2-mechanism", mechanism)
    first(check, "-vvv")
    r = returned(check, "-vvv")
    assert "AUTH %s ****" % mechanism.upper() in commands(r), commands(r)
    assert "POP3 S: +OK Logged in." in r.stdout
    assert lab.tokens.count("client_credentials") == 1 and lab.tokens.count("introspect_active") == 2
    assert client_secret not in r.stdout and "auth=Bearer" not in r.stdout and "PASS" not in commands(r)


def oauth2_check(lab, tmp_path, *options):
    """POP3 with a client_credentials token from the lab's token service; (check, client secret)."""
    client_id, client_secret = lab.tokens.client("monitor")
    secret = tmp_path / "client.secret"
    secret.write_text(client_secret + "\n")
    secret.chmod(0o600)
    check = Pop3Check(lab, tmp_path, "--pop3-auth", "oauth2", "--oauth2-token-url", lab.tokens.token_url,
                      "--oauth2-client-id", client_id, "--oauth2-client-secret-file", str(secret),
                      "--oauth2-scope", "mail", *options)
    check.env.pop(ENV_POP3)
    return check, client_secret


def test_a_refused_token_is_retried_once_then_told_in_the_servers_words(lab, tmp_path):
    check, _secret = oauth2_check(lab, tmp_path)
    lab.tokens.revoke()  # every token, also the fresh one the check asks for
    r = check("-t", "20")
    assert_line(r, 2, line(
        "CRITICAL", r"POP3 login failed: -ERR \[AUTH\] Authentication failed; the server's OAuth2 answer: "
                    r"invalid_token \(with a fresh token too\), probe sent, 1 in flight", perf()))
    assert lab.tokens.count("client_credentials") == 2  # the token and one fresh one: no more


# -- what is read, and what is left ------------------------------------------------------

def test_foreign_mail_is_read_once_never_whole_and_never_deleted(lab, tmp_path):
    check = Pop3Check(lab, tmp_path)
    for n in range(3):
        lab.send(subject="someone else's mail %d" % n)
    lab.send(subject="Re: what is MRTP1.%s about?" % check.key)  # this profile's key, no token
    lab.wait_for(MONITOR, 4)
    before = sorted(m["message_id"] for m in lab.messages(MONITOR))
    r = first(check, "-v")
    assert len(re.findall(r"^message UIDL \S+ ignored: no probe token$", r.stdout, re.M)) == 4, r.stdout
    for _ in range(2):
        r = returned(check, "-vvv")
        assert "ignored" not in r.stdout, r.stdout
        assert tops(r) == ["TOP 5 0"], commands(r)  # the probe only (message 5 of 5 each time)
        assert [c for c in commands(r) if c.startswith("DELE ")] == ["DELE 5"], commands(r)
        assert not [c for c in commands(r) if c.startswith("RETR")], commands(r)
    after = lab.messages(MONITOR)
    assert sorted(m["message_id"] for m in after if m not in check.ours(after)) == before


@pytest.mark.parametrize("order", ["probe-first", "flood-first"])
def test_a_probe_among_a_thousand_other_messages_is_found_in_the_first_run(lab, tmp_path, order):
    check = Pop3Check(lab, tmp_path)
    if order == "flood-first":
        lab.fill(MONITOR, 1000)
    r = first(check, "-v", "-t", "60")
    probe = sent_id(r)
    lab.wait_for(MONITOR, lambda msgs: has(msgs, probe), timeout=20)
    if order == "probe-first":
        lab.fill(MONITOR, 1000)
    r = returned(check, "-vvv", "-t", "60")
    assert "probe %s returned" % probe in r.stdout
    assert len(tops(r)) == (1001 if order == "probe-first" else 1), len(tops(r))
    r = returned(check, "-vvv", "-t", "60")  # steady state: the listing and the new probe
    assert len(tops(r)) == 1 and "ignored" not in r.stdout, tops(r)
    msgs = lab.messages(MONITOR)
    assert len(msgs) - len(check.ours(msgs)) == 1000


def test_the_arrival_time_is_the_received_date(lab, tmp_path):
    """A probe delivered, collected 3 s later: its rtt is the delivery's (Received), not 3 s."""
    check = Pop3Check(lab, tmp_path)
    probe = sent_id(first(check, "-v"))
    lab.wait_for(MONITOR, lambda msgs: has(msgs, probe))
    time.sleep(3)
    r = returned(check, "-v")
    assert r.perf["rtt"] <= 2, r  # delivery at once: the Received second, plus at most 1 s
    assert "probe %s: arrival from the Received header" % probe in r.stdout


def test_received_dates_are_read_leniently():
    when = datetime.datetime(2026, 11, 30, 19, 35, 50, tzinfo=datetime.timezone.utc).timestamp()
    top = (b"Return-Path: <a@b>\r\nReceived: from mail.lab.test\r\n\tby mail.lab.test with LMTP\r\n"
           b"\tid x; Mon, 30 Nov 2026 19:35:50 +0000\r\nReceived: from client (localhost [127.0.0.1])\r\n"
           b"\tby mail.lab.test (Postfix); Mon, 30 Nov 2026 19:30:00 +0000 (UTC)\r\nSubject: x\r\n\r\n")
    assert received_date(top) == when  # the topmost: the final delivery
    assert received_date(b"Received: by x; 30 Nov 2026 20:35:50 +0100 (CET)\r\n\r\n") == when
    assert received_date(b"Received: by x; Mon, 30 Nov 2026 19:35:50 -0000\r\n\r\n") == when
    for odd in (b"Subject: no Received\r\n\r\n", b"Received: by x (no date)\r\n\r\n",
                b"Received: by x; yesterday\r\n\r\n", b"Received: by x; Mon, 99 Foo 2026 99:99 +9999\r\n\r\n",
                b"Received: \xff\xfe;\r\n\r\n", b""):
        assert received_date(odd) is None, odd
    assert ledger.arrival_time(100.0, 101.0, 200.0, "Received") == (102.0, "arrival from the Received header")
    assert ledger.arrival_time(100.0, None, 200.0, "Received")[1] == (
        "no usable Received date; collection time used as arrival time")
    assert ledger.arrival_time(100.0, 50.0, 200.0, "Received")[1].startswith("Received date 50 implausible")


# -- a session that ends before QUIT -------------------------------------------------------

@pytest.mark.parametrize("how, words", [("reset", "connection reset by peer"),
                                        ("close", r"connection closed by the server \(at QUIT\)")])
def test_a_session_cut_before_quit_keeps_the_probe_and_the_next_run_counts_it_once(lab, tmp_path, how, words):
    check = Pop3Check(lab, tmp_path, name="pop3-cut")
    probe = sent_id(first(check, "-v"))
    lab.wait_for(MONITOR, lambda msgs: has(msgs, probe))

    cut = fs.CutRelay(lab.ports["pop3"], r"^QUIT", how=how)
    with fs.FaultServer(cut, max_connections=2) as relay:
        r = check("-vvv", "--pop3-port", str(relay.port), "--pop3-tls", "none")
    assert cut.cuts == ["QUIT"], (cut.cuts, relay.received)
    # counted in this run (the state was saved before DELE), the probe still sent
    assert_line(r, 2, line("CRITICAL", r"POP3 delete failed: %s, round trip %ss, 1 in flight, last success %s ago"
                           % (words, NUM, AGO), perf(rtt=NUM, since=NUM)))
    assert commands(r)[-2:] == ["DELE 1", "QUIT"], commands(r)
    second = sent_id(r)
    assert_books(check, sent=2, returned=1, lost=0, pending=1)
    msgs = lab.wait_for(MONITOR, lambda msgs: has(msgs, second))
    assert has(msgs, probe), msgs  # the server never saw QUIT: DELE not done

    r = check("-vvv")
    assert_line(r, 0, line("OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO),
                           perf(rtt=NUM, since=NUM)))
    assert "probe %s: duplicate of a probe already counted, not counted again" % probe in r.stdout
    assert "probe %s returned" % second in r.stdout and "probe %s returned" % probe not in r.stdout
    assert tops(r) == ["TOP 1 0", "TOP 2 0"] and commands(r)[-3:] == ["DELE 1", "DELE 2", "QUIT"], commands(r)
    assert_books(check, sent=3, returned=2, lost=0, pending=1)
    msgs = lab.messages(MONITOR)
    assert not has(msgs, probe) and not has(msgs, second), msgs


# -- the server says no -------------------------------------------------------------------

def test_a_wrong_password_in_dovecots_words(lab, tmp_path):
    check = Pop3Check(lab, tmp_path)
    r = check(env={ENV_POP3: "not-the-password"})
    assert_line(r, 2, line("CRITICAL", r"POP3 login failed: -ERR \[AUTH\] Authentication failed, "
                                       r"probe sent, 1 in flight", perf()))
    assert "not-the-password" not in r.stdout


LOCKED = "-ERR [IN-USE] Mailbox is locked by another POP3 session."  # Dovecot's words


def locked_maildrop(conn):
    """A POP3 server whose maildrop another session holds (answers PASS with [IN-USE])."""
    conn.reply("+OK Dovecot (Debian) ready.")
    for _ in range(10):
        verb = conn.readline().decode("utf-8", "replace").split(" ", 1)[0].strip().upper()
        if verb == "CAPA":
            conn.reply("+OK\nCAPA\nTOP\nUIDL\nRESP-CODES\nUSER\n.")
        elif verb == "USER":
            conn.reply("+OK")
        elif verb == "PASS":
            conn.reply(LOCKED)
            return
        else:
            conn.reply("-ERR Unknown command.")


def test_a_locked_maildrop_in_the_servers_words(lab, tmp_path):
    check = Pop3Check(lab, tmp_path)
    with fs.FaultServer(locked_maildrop) as srv:
        r = check("--pop3-port", str(srv.port), "--pop3-tls", "none", "-t", "8")
    assert_line(r, 2, line("CRITICAL", r"POP3 login failed: %s, probe sent, 1 in flight"
                           % re.escape(LOCKED.rstrip(".")), perf()))
    assert srv.received[:3] == ["CAPA", "USER monitor@lab.test", "PASS %s" % lab.users[MONITOR]], srv.received
    assert r.seconds < 8, r


def _lab_locks_pop3_sessions(lab):
    with open(lab.dovecot_conf) as f:
        return re.search(r"(?m)^\s*pop3_lock_session\s*=\s*yes\b", f.read()) is not None


def test_a_maildrop_locked_by_another_dovecot_session(lab, tmp_path):
    assert _lab_locks_pop3_sessions(lab), "the lab's Dovecot lacks pop3_lock_session = yes (tests/lab/dovecot.py)"
    check = Pop3Check(lab, tmp_path)
    other = poplib.POP3_SSL(lab.host, lab.ports["pop3s"], context=lab.ssl_context(), timeout=30)
    try:
        other.user(MONITOR)
        other.pass_(lab.users[MONITOR])
        r = check("-t", "40")  # Dovecot waits about 10 s for the lock, then says [IN-USE]
    finally:
        other.quit()
    assert_line(r, 2, line("CRITICAL", r"POP3 login failed: %s, probe sent, 1 in flight"
                           % re.escape(LOCKED.rstrip(".")), perf()))


def test_an_untrusted_certificate(lab, tmp_path):
    check = Pop3Check(lab, tmp_path, ca=False)
    r = check("--smtp-port", str(fs.free_port()))
    assert_line(r, 2, line(
        "CRITICAL", r"POP3 TLS failed: certificate verify failed: [^,|(]+ \(a private CA or a self-signed "
                    r"certificate\? trust it with --ca-file, or skip verification with --insecure\), "
                    r"SMTP connect to 127\.0\.0\.1:\d+ failed: connection refused, no probe out yet, 0 in flight", perf(pending=0)))


# -- --keep ---------------------------------------------------------------------------------

def test_keep_deletes_nothing_reads_each_probe_once_and_a_later_run_removes_them(lab, tmp_path):
    check = Pop3Check(lab, tmp_path)
    one = sent_id(first(check, "--keep", "-v"))
    r = returned(check, "--keep", "-vvv")
    two = sent_id(r)
    assert "probe %s returned" % one in r.stdout and not [c for c in commands(r) if c.startswith("DELE")]
    r = returned(check, "--keep", "-vvv")  # the kept probe is not read again
    assert tops(r) == ["TOP 2 0"] and "duplicate" not in r.stdout, commands(r)
    assert "probe %s returned" % two in r.stdout and not [c for c in commands(r) if c.startswith("DELE")]
    msgs = lab.wait_for(MONITOR, 3)
    assert has(msgs, one) and has(msgs, two), msgs
    r = returned(check, "-v")  # without --keep: the kept ones are read again, and removed
    assert "probe %s: duplicate" % one in r.stdout and "probe %s: duplicate" % two in r.stdout, r.stdout
    assert_books(check, sent=4, returned=3, lost=0, pending=1)
    assert len(check.ours(lab.messages(MONITOR))) <= 1


# -- options --------------------------------------------------------------------------------

def test_the_pop3_side_needs_its_own_password_and_names_the_profile(lab, tmp_path):
    check = Pop3Check(lab, tmp_path)  # the default profile name: no --name
    i = check.args.index("--name")
    del check.args[i:i + 2]
    r = check(env={ENV_POP3: ""})
    assert r.stdout == ("MAIL_ROUNDTRIP UNKNOWN - usage error: no POP3 password: give --pop3-password-file "
                        "or set $%s (see --help)\n" % ENV_POP3), r
    ini = tmp_path / "check.ini"
    ini.write_text("[check_mail_roundtrip]\npop3-password = %s\n" % lab.users[MONITOR])
    os.chmod(ini, 0o600)
    r = check("-v", "--extra-opts", "@%s" % ini, env={ENV_POP3: ""})
    assert r.rc == 0, r
    state = re.search(r"^state file (\S+)$", r.stdout, re.M).group(1)
    assert os.path.basename(state).startswith("monitor@lab.test_monitor@lab.test_smtp_127.0.0.1_%d_pop3_127.0.0.1_%d-"
                                              % (lab.ports["smtp"], lab.ports["pop3s"])), state


def test_a_long_header_is_read_only_in_part(lab, tmp_path):
    check = Pop3Check(lab, tmp_path)
    lab.send(subject="long header", headers={"X-Padding": " ".join(["x" * 70] * 1000)})
    lab.wait_for(MONITOR, 1)
    r = first(check, "-v")
    assert re.search(r"^UIDL \S+: header of \d+ bytes, the first %d read$" % MAX_HEADER, r.stdout, re.M), r.stdout
    assert re.search(r"^message UIDL \S+ ignored: no probe token$", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("count", [5000, 20000])
def test_a_probe_behind_a_flood_of_forged_candidates_is_found_in_the_first_run(lab, tmp_path, count):
    """POP3 cannot search: the newest 2000 messages not examined are read first (oldest first,
    the probe behind *count* forged ones would wait for the third or eleventh run), the older
    ones in the next runs, each once; none is deleted or marked."""
    check = Pop3Check(lab, tmp_path, "-t", "60", name="pop3-flood-%d" % count)
    lab.hold()
    probe = sent_id(first(check, "-v"))
    fill_forged(lab, check.key, count)
    lab.release()
    wait_count(lab, count + 1)
    r = check("-vvv")
    assert_line(r, 0, line("OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO),
                           perf(rtt=NUM, since=NUM)))
    assert "probe %s returned" % probe in r.stdout
    assert ("%d messages not examined before; reading the newest 2000 this run, the older ones in the next runs"
            % (count + 1)) in r.stdout
    read = [set(int(c.split()[1]) for c in tops(r))]
    assert len(read[0]) == 2000 and count + 1 in read[0]
    for _ in range(3 if count == 5000 else 1):  # the older ones, newest first, none twice
        wait_count(lab, count + 1)
        r = check("-vvv")
        assert_line(r, 0, line("OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO),
                               perf(rtt=NUM, since=NUM)))
        read.append(set(int(c.split()[1]) for c in tops(r)) - {count + 1})  # less the new probe
        assert len(read[-1]) <= 2000 and not read[-1] & set().union(*read[:-1]), len(read[-1])
    if count == 5000:
        assert sum(len(n) for n in read) == count + 1 and not read[-1], [len(n) for n in read]
    forged_left(lab, count)
