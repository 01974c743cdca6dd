"""The check against the lab under faults: whole status lines and exit codes.

Every scenario runs the real command (tests/checkrun.py) against the private
Postfix + Dovecot lab on 127.0.0.1.  Times are kept small (thresholds of a few
seconds) and every wait is bounded.
"""

import email.header
import imaplib
import json
import os
import re
import socket
import time

import pytest

from check_mail_roundtrip.probe import profile_key
from tests import faultservers as fs
from tests.checkrun import Checker

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


def closed_port():
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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


def sleep_until(t):
    time.sleep(max(0.0, t - time.monotonic()))


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


def round_trip(check, *extra, pending=1, p=None):
    """Wait for one of the check's probes, run: a plain OK round trip."""
    check.lab.wait_for(MONITOR, lambda msgs: len(check.ours(msgs)) >= 1)
    r = check(*extra)
    assert_line(r, 0, line(
        "OK", r"round trip %ss, %d in flight, last success %s ago" % (NUM, pending, AGO),
        perf(pending=pending, rtt=NUM, since=NUM, **(p or {}))))
    return r


# -- delay -------------------------------------------------------------------

DELAY = 12   # seconds the lab holds every mail in the delay test


def test_delay_warns_then_goes_critical_in_flight_then_reports_the_rtt(lab, tmp_path):
    # Times are measured from t_sent, taken when run 1 has returned: an upper
    # bound of the probe's send time (the probe goes out 0.1-1 s after the run
    # starts on a loaded machine).  Each run is placed 1 s beyond the threshold
    # it must cross, and the gaps (-w 2, -c 6, delay 12) leave seconds of room
    # for a slow run on the other side.
    check = Check(lab, tmp_path, "-w", "2", "-c", "6", "--lost-after", "60")
    p = dict(w=2, c=6)
    lab.delay(DELAY)
    r = check("-v")
    t_sent = time.monotonic()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf(**p)))
    first = sent_id(r)

    sleep_until(t_sent + 2 + 1.0)
    r = check()
    t_second = time.monotonic()   # the second probe went out before this
    assert_line(r, 1, line(
        "WARNING", r"probe in flight for (%s)s > 2s, no probe back this run, 2 in flight, no success yet" % NUM,
        perf(oldest=r"(%s)" % NUM, pending=2, **p)))
    assert 3 <= r.perf["oldest_pending"] < 6, r

    sleep_until(t_sent + 6 + 1.0)
    r = check()
    assert_line(r, 2, line(
        "CRITICAL", r"probe in flight for %ss > 6s, no probe back this run, 3 in flight, no success yet" % NUM,
        perf(oldest=NUM, pending=3, **p)))
    assert 7 <= r.perf["oldest_pending"] < DELAY, r

    # the first probe arrives after 12 s; then the mail path is healthy again
    # (the two probes sent meanwhile stay stuck in the hold queue: the second
    # would be released 12 s after it was sent, 3 s or more after the first)
    lab.wait_for(MONITOR, lambda msgs: has(msgs, first), timeout=DELAY + 10)
    lab.delay(0)
    t_run = time.monotonic()
    r = check("-v")
    # the second probe is about 9 s in flight now: beyond -c unless run 2
    # itself took seconds, and at least t_run - t_second in any case
    beyond = r"> 6s" if t_run - t_second > 6 else r"> [26]s"
    assert_line(r, 2, line(
        "CRITICAL", r"round trip %ss > 6s, probe in flight for %ss %s, 3 in flight, last success %s ago"
        % (NUM, NUM, beyond, AGO),
        perf(oldest=NUM, pending=3, rtt=NUM, since=NUM, **p)))
    assert DELAY <= r.perf["rtt"] < DELAY + 10, r
    assert r.perf["oldest_pending"] >= t_run - t_second, r
    assert "probe %s returned, round trip" % first in r.stdout, r
    fresh = sent_id(r)

    # a fresh probe comes back fast: OK again, the stuck ones are overtaken
    lab.wait_for(MONITOR, lambda msgs: has(msgs, fresh))
    r = check()
    assert_line(r, 0, line(
        "OK", r"round trip %ss, 3 in flight, last success %s ago" % (NUM, AGO),
        perf(pending=3, rtt=NUM, since=NUM, **p)))
    assert r.perf["rtt"] < 2, r


# -- drop, lost, late ----------------------------------------------------------

LOST_VIOLATION = r"1 probe lost > 0"   # like "> 2s" for the other figures


def test_dropped_probe_is_critical_in_flight_then_declared_lost(lab, tmp_path):
    # t_sent (run 1 has returned) is an upper bound of the first probe's send
    # time; --lost-after 12 leaves the runs before it several seconds of room
    check = Check(lab, tmp_path, "-w", "2", "-c", "3", "--lost-after", "12")
    p = dict(w=2, c=3)
    lab.drop()
    r = check("-v")
    t_sent = time.monotonic()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf(**p)))
    dropped = sent_id(r)

    lab.delay(0)  # mail flows again; the first probe is gone for good
    sleep_until(t_sent + 3 + 1.0)
    r = check()
    assert_line(r, 2, line(
        "CRITICAL", r"probe in flight for (%s)s > 3s, no probe back this run, 2 in flight, no success yet" % NUM,
        perf(oldest=r"(%s)" % NUM, pending=2, **p)))
    assert 4 <= r.perf["oldest_pending"] < 12, r

    # a newer probe comes back: the dropped one is overtaken (OK), not yet lost
    # (it is some 5-7 s old here, well inside --lost-after)
    r = round_trip(check, "-v", pending=2, p=p)
    assert "declared lost" not in r.stdout, r

    sleep_until(t_sent + 12 + 1.0)
    lab.wait_for(MONITOR, lambda msgs: len(check.ours(msgs)) >= 1)
    r = check("-v")
    # Was a bug (fixed): any violation of a count range for "lost" crashes the check with
    # "MAIL_ROUNDTRIP UNKNOWN: TypeError: not all arguments converted during
    # string formatting": check.violation() formats "outside range %s" % rng,
    # and nagiosplugin.Range is a tuple, so %-formatting unpacks it.  With the
    # default --lost-warning 0 every lost probe ends in UNKNOWN instead of WARNING.
    assert_line(r, 1, line(
        "WARNING", r"%s, round trip %ss, 1 in flight, last success %s ago" % (LOST_VIOLATION, NUM, AGO),
        perf(lost=1, pending=1, rtt=NUM, since=NUM, **p)))
    assert "probe %s declared lost" % dropped in r.stdout, r

    # lost once: the next run does not count it again, and it is not pending
    r = round_trip(check, p=p)
    assert r.perf["lost"] == 0 and r.perf["pending"] == 1, r
    assert_books(check, sent=5, returned=3, lost=1, pending=1)


def test_probe_arriving_after_it_was_declared_lost_is_late_not_a_success(lab, tmp_path):
    # --lost-warning 1 (0:1) keeps one lost probe OK: this test is about the
    # late arrival, not the alert.  -w 4 leaves the second probe, held from its
    # sending until release(), room for a slow run and release.
    check = Check(lab, tmp_path, "-w", "4", "-c", "5", "--lost-after", "7", "--lost-warning", "1")
    p = dict(w=4, c=5, lostw=1)
    lab.hold()
    r = check("-v")
    t_sent = time.monotonic()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf(**p)))
    late = sent_id(r)

    sleep_until(t_sent + 7 + 1.0)
    r = check("-v")
    # lost, and no longer pending: the one in flight is the probe just sent
    assert_line(r, 0, line(
        "OK", r"no probe back this run, 1 probe lost, 1 in flight, no success yet",
        perf(lost=1, pending=1, **p)))
    assert "probe %s declared lost" % late in r.stdout, r
    second = sent_id(r)

    lab.release()
    lab.wait_for(MONITOR, lambda msgs: has(msgs, late) and has(msgs, second))
    r = check("-v")
    # only the second probe counts as a round trip (the late one would be > 7 s)
    assert_line(r, 0, line(
        "OK", r"round trip %ss, 1 lost probe came back late, 1 in flight, last success %s ago" % (NUM, AGO),
        perf(pending=1, rtt=NUM, since=NUM, **p)))
    assert r.perf["rtt"] < 4, r
    assert "probe %s arrived late" % late in r.stdout, r
    assert "probe %s returned" % second in r.stdout, r
    assert "probe %s returned" % late not in r.stdout, r
    # both were cleaned up from the mailbox
    left = lab.messages(MONITOR)
    assert not has(left, late) and not has(left, second), left
    assert_books(check, sent=3, returned=1, lost=1, pending=1, late=1)


# -- a server that cannot be reached or refuses us ---------------------------------

def test_imap_down_is_critical_and_the_probe_is_still_sent(lab, tmp_path):
    """Nothing is declared lost while the mailbox cannot be read."""
    # -w 2 (not 1): a probe delivered at once can still measure up to 1 s
    # (INTERNALDATE has whole seconds) plus its delivery time
    check = Check(lab, tmp_path, "-w", "2", "-c", "3", "--lost-after", "5")
    p = dict(w=2, c=3)
    r = check("-v")
    t_sent = time.monotonic()
    assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf(**p)))
    first = sent_id(r)
    lab.wait_for(MONITOR, lambda msgs: has(msgs, first))
    lab.imap_down()

    # the first probe is older than --lost-after now (it sits unread in the mailbox)
    sleep_until(t_sent + 5 + 1.0)
    r = check("-v")
    assert_line(r, 2, line(
        # nothing was read: the line does not claim that nothing came back
        "CRITICAL", r"IMAP connect to 127\.0\.0\.1:\d+ failed: connection refused, "
                    r"probe in flight for %ss > 3s, 2 in flight, no success yet" % NUM,
        perf(oldest=NUM, pending=2, junk=None, **p)))
    assert r.perf["oldest_pending"] > 5, r   # old enough to be declared lost ...
    assert "declared lost" not in r.stdout, r  # ... but the mailbox could not be read
    second = sent_id(r)
    assert_books(check, sent=2, returned=0, lost=0, pending=2)
    # the probe went out: both are in the mailbox now
    msgs = lab.wait_for(MONITOR, lambda msgs: has(msgs, second))
    assert len(check.ours(msgs)) == 2, msgs

    lab.imap_up()
    r = check("-v")
    assert_line(r, 0, line(
        "OK", r"2 round trips, slowest %ss, 1 in flight, last success %s ago" % (NUM, AGO),
        perf(rtt=NUM, since=NUM, **p)))
    assert "probe %s returned" % first in r.stdout and "probe %s returned" % second in r.stdout, r
    assert "declared lost" not in r.stdout, r
    assert_books(check, sent=3, returned=2, lost=0, pending=1)


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


def test_smtp_down_is_critical_and_collection_is_still_done(lab, tmp_path):
    check = Check(lab, tmp_path)
    r = check("-v")
    assert r.rc == 0, r
    first = sent_id(r)
    lab.wait_for(MONITOR, 1)
    r = check("--smtp-port", str(closed_port()))
    assert_line(r, 2, line(
        "CRITICAL", r"SMTP connect to 127\.0\.0\.1:\d+ failed: connection refused, round trip %ss, 0 in flight, last success %s ago"
        % (NUM, AGO),
        perf(pending=0, rtt=NUM, since=NUM)))
    # the returned probe was collected and removed; nothing new went out
    time.sleep(0.5)
    assert not has(lab.messages(MONITOR), first)
    assert lab.count(MONITOR) == (0, 0)


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


def forged_subject(key, sent_ms):
    """A probe subject of the right shape with a random (bad) signature."""
    return "Mail round-trip probe MRTP1.%s.%s.%d.%s" % (key, os.urandom(8).hex(), sent_ms, os.urandom(16).hex())


def test_forged_probe_is_neither_counted_nor_deleted(lab, tmp_path):
    check = Check(lab, tmp_path)
    r = check()
    assert r.rc == 0, r
    # right shape, right profile key, sent 100 s ago, bad signature
    forged = forged_subject(check.key, int((time.time() - 100) * 1000))
    lab.send(subject=forged)
    lab.wait_for(MONITOR, 2)
    r = round_trip(check, "-v")  # one round trip, a few ms: not the forged 100 s
    assert r.perf["rtt"] < 5, r
    assert re.search(r"^message UID \d+ ignored: bad signature \(forged or tampered token\)$",
                     r.stdout, re.M), r
    r = round_trip(check, "-v")  # read once: not read again, never deleted
    assert "ignored" not in r.stdout, r
    left = [m for m in lab.messages(MONITOR) if subject(m) == forged]
    assert len(left) == 1 and flags(left[0]) == set(), left


@pytest.mark.parametrize("shared_state", [True, False], ids=["shared-state-dir", "own-state-dirs"])
def test_two_profiles_sharing_a_mailbox_keep_to_their_own_probes(lab, tmp_path, shared_state):
    a = Check(lab, tmp_path, name="a")
    # shared: same state directory, so the same secret; else each its own
    b = Check(lab, tmp_path, name="b", state_dir=None if shared_state else tmp_path / "state-b")
    for check in (a, b):
        r = check()
        assert_line(r, 0, line("OK", "first probe sent, 1 in flight", perf()))
    lab.wait_for(MONITOR, lambda msgs: a.ours(msgs) and b.ours(msgs))

    r = round_trip(a, "-v")
    assert "ignored" not in r.stdout, r
    msgs = lab.messages(MONITOR)
    assert len(b.ours(msgs)) == 1, msgs  # b's probe is still there

    r = round_trip(b, "-v")
    assert "ignored" not in r.stdout, r
    for _ in range(2):
        round_trip(a)
        round_trip(b)


# -- TLS variants and --keep ------------------------------------------------------

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


def test_keep_leaves_probes_and_does_not_count_them_again(lab, tmp_path):
    check = Check(lab, tmp_path, "--keep")
    r = check("-v")
    assert r.rc == 0, r
    first = sent_id(r)
    r = round_trip(check, "-v")
    second = sent_id(r)
    msgs = lab.wait_for(MONITOR, lambda msgs: has(msgs, second))
    kept = [m for m in msgs if first in subject(m)]
    assert len(kept) == 1 and flags(kept[0]) == set(), msgs  # still there, still unseen

    r = round_trip(check, "-v")  # the second counts; the first, read before, is not read again
    assert "probe %s" % first not in r.stdout, r
    assert "probe %s returned" % second in r.stdout, r
    assert len(check.ours(lab.messages(MONITOR))) >= 2

    # without --keep, the duplicates are cleaned up like any processed probe
    check.args.remove("--keep")
    r = check()
    assert_line(r, 0, line(
        "OK", r"round trip %ss, 1 in flight, last success %s ago" % (NUM, AGO), perf(rtt=NUM, since=NUM)))
    msgs = lab.messages(MONITOR)
    assert not has(msgs, first) and not has(msgs, second), msgs


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
