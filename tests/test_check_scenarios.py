"""The check against the lab under faults: whole status lines and exit codes.

Every scenario runs the real command (tests/checkrun.py) against the private
Postfix + Dovecot lab on 127.0.0.1.  Times are kept small (thresholds of a few
seconds) and every wait is bounded.

Here is what needs the real servers: a session cut at a given IMAP command, the
servers' words for a wrong password, TLS and its verification, other mail's
flags left as they were.  The mail path's faults and the counting rules are
proven in memory with whole status lines (the probe delayed past -w and -c:
tests/test_mem_thresholds.py; dropped, declared lost, late, forged, two
profiles on one mailbox, --keep: tests/test_mem_lost.py; the IMAP or SMTP
server down while the rest of the run goes on: tests/test_mem_failures.py),
the words of a refused connection in tests/test_network_faults.py, and
forged tokens, another profile's and --keep on the real server in
tests/test_reliability.py::test_hostile_and_odd_mail_is_never_counted_nor_touched.
"""

import email.header
import imaplib
import json
import os
import re
import time

import pytest

from check_mail_roundtrip.probe import profile_key
from tests import faultservers as fs
from tests.checkrun import Checker
from tests.lab.tls import link_hashed

MONITOR = "monitor@lab.test"
NUM = r"\d+(?:\.\d+)?"          # a plain decimal as check.plain() prints it
AGO = r"\d+[smhd]"              # check.ago()


class Check(Checker):
    """Checker with an explicit profile name, options, and a choice of state dir and CA."""

    def __init__(self, lab, tmp_path, *options, name="scenario", state_dir=None, ca=True, **kw):
        super().__init__(lab, tmp_path, **kw)
        if state_dir is not None:
            i = self.args.index("--state-dir")
            self.state_dir = self.args[i + 1] = str(state_dir)
        if not ca:
            i = self.args.index("--ca-file")
            del self.args[i:i + 2]
        self.name = name
        self.key = profile_key(name)
        self.args += ["--name", name, *options]

    def ours(self, msgs):
        """The messages of *msgs* that carry this profile's probe token."""
        return [m for m in msgs if "MRTP1.%s." % self.key in subject(m)]


def subject(m):
    """The decoded Subject of a lab.messages() entry (probes use RFC 2047 words)."""
    return str(email.header.make_header(email.header.decode_header(m["subject"])))


def has(msgs, probe_id):
    return any(probe_id in subject(m) for m in msgs)


def sent_id(r):
    """The id of the probe a run sent (from its -v notes)."""
    m = re.search(r"^probe ([0-9a-f]{16}) sent: 250 ", r.stdout, re.M)
    assert m, r
    return m.group(1)


def state_of(check):
    """The profile's state file (exactly one, nothing set aside)."""
    files = [f for f in os.listdir(check.state_dir) if f.endswith(".json")]
    assert len(files) == 1 and not [f for f in os.listdir(check.state_dir) if ".damaged-" in f], \
        os.listdir(check.state_dir)
    with open(os.path.join(check.state_dir, files[0])) as f:
        return json.load(f)


def assert_books(check, sent, returned, lost, pending, late=0):
    """The state's totals, and that they balance: sent = returned + pending + lost."""
    state = state_of(check)
    totals = state["totals"]
    assert totals["sent"] == totals["returned"] + len(state["pending"]) + totals["lost"], state
    assert (totals["sent"], totals["returned"], totals["lost"], len(state["pending"]), totals["late"]) \
        == (sent, returned, lost, pending, late), state
    return state


def perf(lost=0, oldest=r"0\.0", pending=1, rtt=None, since=None, w=120, c=600, lostw="", junk=0):
    """A regex for the whole perfdata part (labels in nagiosplugin's order);
    junk None: the mailbox was not read, so there is no junk figure."""
    text = "" if junk is None else r"junk=%s;;;0 " % junk
    text += r"lost=%s;%s;;0 oldest_pending=%ss;%s;%s;0 pending=%s;;;0" % (lost, lostw, oldest, w, c, pending)
    if rtt is not None:
        text += r" rtt=%ss;%s;%s;0" % (rtt, w, c)
    if since is not None:
        text += r" since_last_success=%ss;;;0" % since
    return text


def line(state, text, perfdata):
    return r"MAIL_ROUNDTRIP %s - %s \| %s" % (state, text, perfdata)


def status_line(r):
    """The status line; with -v nagiosplugin moves the perfdata after the long output."""
    if "|" in r.line or "|" not in r.stdout:
        return r.line
    return "%s | %s" % (r.line, r.perfdata)


def assert_line(r, rc, pattern):
    assert r.rc == rc, r
    assert re.fullmatch(pattern, status_line(r)), "%s\n   pattern: %s" % (r, pattern)


def round_trip(check, *extra):
    """Wait for one of the check's probes, run: a plain OK round trip."""
    check.lab.wait_for(MONITOR, lambda msgs: len(check.ours(msgs)) >= 1)
    r = check(*extra)
    assert_line(r, 0, line(
        "OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO), perf(rtt=NUM, since=NUM)))
    return r


# -- IMAP going away in the middle of a run ------------------------------------------
#
# A CutRelay in front of the lab's plain IMAP port (--imap-tls none: the relay
# must read the commands; Dovecot allows a plain LOGIN from 127.0.0.1) passes
# the session through and cuts it when the check sends the given command,
# before the server sees it.

def through_cut_relay(relay):
    return ["--imap-host", "127.0.0.1", "--imap-port", str(relay.port), "--imap-tls", "none"]


def test_imap_cut_at_fetch_counts_nothing_then_the_next_run_counts_it(lab, tmp_path):
    check = Check(lab, tmp_path, name="cut-fetch")
    r = check("-v")
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    first = sent_id(r)
    lab.wait_for(MONITOR, lambda msgs: has(msgs, first))

    cut = fs.CutRelay(lab.ports["imap"], r"^\S+ UID FETCH ", how="reset")
    with fs.FaultServer(cut, max_connections=2) as relay:
        r = check("-v", *through_cut_relay(relay))
    assert len(cut.cuts) == 1, (cut.cuts, relay.received)
    assert_line(r, 2, line(
        "CRITICAL", r"IMAP fetch failed: connection reset by peer, oldest in flight %ss, 2 in flight, no success yet"
        % NUM, perf(oldest=NUM, pending=2, junk=None)))
    assert "returned" not in r.stdout and "declared lost" not in r.stdout, r
    second = sent_id(r)   # the probe still went out
    assert_books(check, sent=2, returned=0, lost=0, pending=2)
    msgs = lab.wait_for(MONITOR, lambda msgs: has(msgs, second))
    assert has(msgs, first), msgs   # untouched by the cut run

    r = check("-v")
    assert_line(r, 0, line(
        "OK", r"2 round trips, slowest %ss, 1 in flight, last success %s ago" % (NUM, AGO),
        perf(rtt=NUM, since=NUM)))
    assert "probe %s returned" % first in r.stdout and "probe %s returned" % second in r.stdout, r
    assert_books(check, sent=3, returned=2, lost=0, pending=1)
    msgs = lab.messages(MONITOR)
    assert not has(msgs, first) and not has(msgs, second), msgs


@pytest.mark.parametrize("command, how, words", [
    # the \Deleted flag is never set: the probe stays as it came
    (r"UID STORE ", "reset", r"connection reset by peer"),
    # flagged \Deleted, then the connection closes before UID EXPUNGE
    (r"UID EXPUNGE ", "close", r"connection closed by the server \(at UID\)"),
], ids=["store-reset", "expunge-close"])
def test_imap_cut_at_delete_counts_the_probe_once(lab, tmp_path, command, how, words):
    check = Check(lab, tmp_path, name="cut-delete")
    r = check("-v")
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    first = sent_id(r)
    lab.wait_for(MONITOR, lambda msgs: has(msgs, first))

    cut = fs.CutRelay(lab.ports["imap"], r"^\S+ " + command, how=how)
    with fs.FaultServer(cut, max_connections=2) as relay:
        r = check("-v", *through_cut_relay(relay))
    assert len(cut.cuts) == 1, (cut.cuts, relay.received)
    # counted in this run (the state was saved before the delete), probe sent
    assert_line(r, 2, line(
        "CRITICAL", r"IMAP delete failed: %s, round trip %ss, 1 in flight, last success %s ago"
        % (words, NUM, AGO), perf(rtt=NUM, since=NUM)))
    assert r.perf["rtt"] < 5, r
    assert "probe %s returned, round trip" % first in r.stdout, r
    second = sent_id(r)
    assert_books(check, sent=2, returned=1, lost=0, pending=1)
    msgs = lab.wait_for(MONITOR, lambda msgs: has(msgs, second))
    assert has(msgs, first), msgs   # the delete did not happen

    # the next normal run finds the first probe again: a duplicate, removed
    r = check("-v")
    assert_line(r, 0, line(
        "OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO), perf(rtt=NUM, since=NUM)))
    assert "probe %s: duplicate of a probe already counted, not counted again" % first in r.stdout, r
    assert "probe %s returned" % second in r.stdout, r
    assert "probe %s returned" % first not in r.stdout, r
    assert_books(check, sent=3, returned=2, lost=0, pending=1)
    msgs = lab.messages(MONITOR)
    assert not has(msgs, first) and not has(msgs, second), msgs


# -- a server that refuses us -----------------------------------------------------------

def test_wrong_imap_password(lab, tmp_path):
    check = Check(lab, tmp_path)
    r = check(env={"CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD": "not-the-password"})
    # the probe still went out
    assert r.perf == {"lost": 0, "oldest_pending": 0, "pending": 1}, r
    # Was a bug (fixed): the server's words arrive as a Python bytes repr:
    # "IMAP login failed: b'[AUTHENTICATIONFAILED] Authentication failed.'".
    # imapclient's login() raises LoginError(str(e)) where e.args[0] is bytes,
    # and failure.describe() takes args[0] as it is.
    assert_line(r, 2, line(
        "CRITICAL", r"IMAP login failed: \[AUTHENTICATIONFAILED\] Authentication failed, "
                    r"probe sent, 1 in flight",
        perf(junk=None)))


def password_file(tmp_path, password, name="smtp.pw"):
    path = tmp_path / name
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


def test_wrong_smtp_password(lab, tmp_path):
    check = Check(lab, tmp_path, "--smtp-user", MONITOR,
                  "--smtp-password-file", password_file(tmp_path, "not-the-password"), smtp="submission")
    r = check()
    assert_line(r, 2, line(
        "CRITICAL", r"SMTP auth failed: 535 5\.7\.8 [^|]+, no probe out yet, 0 in flight",
        perf(pending=0)))
    assert lab.count(MONITOR) == (0, 0)


def test_untrusted_certificate_fails_on_both_sides_without_fallback(lab, tmp_path):
    # no --ca-file: the system store does not know the lab CA
    check = Check(lab, tmp_path, ca=False)
    r = check()
    assert_line(r, 2, line(
        "CRITICAL", r"IMAP TLS failed: certificate verify failed: [^,|(]+ \(a private CA or a self-signed "
                    r"certificate\? trust it with --ca-file, or skip verification with --insecure\), "
                    r"SMTP TLS failed: certificate verify failed: [^,|(]+ \(a private CA or a self-signed "
                    r"certificate\? trust it with --ca-file, or skip verification with --insecure\), "
                    r"no probe out yet, 0 in flight",
        perf(pending=0, junk=None)))
    # nothing went out in clear text instead
    time.sleep(0.5)
    assert lab.count(MONITOR) == (0, 0)
    assert lab.queue() == []


def test_the_system_store_is_read_from_its_hashed_directory_and_a_bundle_of_ones_own_still_counts(lab, tmp_path):
    """No --ca-file: the lab CA in a hashed certificate directory (SSL_CERT_DIR, as
    update-ca-certificates keeps /etc/ssl/certs) is trusted on both sides, and not when the
    directory lacks it; SSL_CERT_FILE naming a bundle of one's own is read as before."""
    certs = tmp_path / "certs"
    certs.mkdir()
    link_hashed(certs, lab.ca_file, "lab.pem")
    check = Check(lab, tmp_path, ca=False)
    check.env.pop("SSL_CERT_FILE", None)
    check.env["SSL_CERT_DIR"] = str(certs)
    r = check()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    round_trip(check)
    (tmp_path / "empty").mkdir()
    check.env["SSL_CERT_DIR"] = str(tmp_path / "empty")
    r = check()
    assert r.status == "CRITICAL" and "IMAP TLS failed: certificate verify failed" in r.line, r
    check.env["SSL_CERT_FILE"] = str(certs / "lab.pem")
    round_trip(check)


def test_insecure_is_an_explicit_opt_out(lab, tmp_path):
    check = Check(lab, tmp_path, "--insecure", ca=False)
    r = check()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    round_trip(check)


# -- what is not ours stays untouched ------------------------------------------------

def imap_session(lab, user=MONITOR):
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(), timeout=10)
    conn.login(user, lab.users[user])
    conn.select("INBOX")
    return conn


def store_flags(lab, flags_by_subject):
    """Set flags (e.g. "\\\\Deleted") on the messages whose Subject is given."""
    conn = imap_session(lab)
    try:
        for m in lab.messages(MONITOR):
            flags = flags_by_subject.get(subject(m))
            if flags:
                typ, _ = conn.uid("STORE", str(m["uid"]), "+FLAGS", "(%s)" % flags)
                assert typ == "OK"
    finally:
        conn.logout()


def flags(m):
    """A message's stored flags; \\Recent is per session (any SELECT clears it), not stored."""
    return frozenset(m["flags"] - {"\\Recent"})


def others(check, msgs):
    return {m["uid"]: (m["subject"], m["message_id"], flags(m))
            for m in msgs if m not in check.ours(msgs)}


def test_other_messages_stay_untouched(lab, tmp_path):
    check = Check(lab, tmp_path)
    lab.fill(MONITOR, 5)
    lab.fill(MONITOR, 5, seen=True)
    lab.send(subject="unseen mail")
    lab.send(subject="to be deleted")
    lab.send(subject="flagged and answered")
    # found by the server-side search for this profile, but no token at all
    lab.send(subject="Re: what is MRTP1.%s about?" % check.key)
    lab.wait_for(MONITOR, 14)
    store_flags(lab, {"to be deleted": "\\Deleted", "flagged and answered": "\\Flagged \\Answered"})
    before = others(check, lab.messages(MONITOR))
    assert len(before) == 14
    kinds = sorted(sorted(f) for _s, _i, f in before.values())
    assert kinds.count([]) == 7 and kinds.count(["\\Seen"]) == 5, kinds
    assert ["\\Deleted"] in kinds and ["\\Answered", "\\Flagged"] in kinds, kinds

    r = check("-v")
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    assert re.search(r"^message UID \d+ ignored: no probe token$", r.stdout, re.M), r
    for _ in range(3):
        r = round_trip(check, "-v")
        assert "ignored" not in r.stdout, r  # read once, never again

    after = lab.messages(MONITOR)
    assert others(check, after) == before
    assert len(check.ours(after)) <= 1  # only the probe in flight


# -- TLS variants --------------------------------------------------------------

@pytest.mark.parametrize("imap, smtp, auth", [
    ("imap", "smtp", False),          # IMAP STARTTLS
    ("imaps", "smtps", True),         # SMTP implicit TLS + AUTH
    ("imaps", "submission", True),    # submission STARTTLS + AUTH
])
def test_tls_variants(lab, tmp_path, imap, smtp, auth):
    options = ["--smtp-user", MONITOR, "--smtp-password-file",
               password_file(tmp_path, lab.users[MONITOR])] if auth else []
    check = Check(lab, tmp_path, *options, imap=imap, smtp=smtp)
    r = check()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    round_trip(check)


# -- usage errors --------------------------------------------------------------

@pytest.mark.parametrize("drop, extra, message", ids=[
    "missing-from", "bad-range", "reversed-range", "lost-after-below-critical", "lost-after-equal-critical",
], argvalues=[
    ("--from", [], r"--from is required"),
    (None, ["-w", "abc"], r"argument -w/--warning: not a Nagios range: 'abc' \(.+\)"),
    (None, ["-c", "10:5"], r"argument -c/--critical: not a Nagios range: '10:5' \(.+\)"),
    (None, ["-c", "10", "--lost-after", "5"],
     r"--lost-after \(5s\) must exceed the critical threshold \(10s\)"),
    (None, ["-c", "10", "--lost-after", "10"],
     r"--lost-after \(10s\) must exceed the critical threshold \(10s\)"),
])
def test_usage_errors_are_unknown(lab, tmp_path, drop, extra, message):
    check = Check(lab, tmp_path)
    if drop:
        i = check.args.index(drop)
        del check.args[i:i + 2]
    r = check(*extra)
    assert r.rc == 3, r
    assert re.fullmatch(r"MAIL_ROUNDTRIP UNKNOWN - usage error: %s \(see --help\)\n" % message, r.stdout), r
    assert not os.path.exists(check.state_dir), r  # nothing was done
