"""Hostile servers: whatever a server sends, the run's memory and time stay bounded.

The real command against loopback fault servers (tests/faultservers/)
that send without end: an IMAP literal of 4294967295 bytes (in the greeting,
as the answer to FETCH, to IDLE during --wait, to the reflector's poll),
untagged lines after LOGIN, 2 MB of untagged lines before each of many
IDLEs' "+", a POP3 UIDL listing (long lines, then short ones).  Each Flood
sends 320 MiB within seconds, so a client that kept what it was sent would
hold far more than the bound.

Every run must end within its -t with the failed step in its status line,
and the process's peak memory (its max RSS) must stay under 100 MB.  The
SMTP side is a scripted server that accepts the probe: the first run's line
ends in "probe sent, 1 in flight".
"""

import os
import re
import subprocess
import sys
import tempfile
import time

from tests import faultservers as fs
from tests.checkrun import COMMAND, ROOT, Result

HOST = "127.0.0.1"
MONITOR = "monitor@lab.test"
SECONDS = 10                 # -t of every run
MAX_RSS = 100 * 1000 * 1000  # bytes
REFLECTOR = os.path.join(ROOT, "mail_roundtrip_reflector")
LITERAL = b"{4294967295}\r\n"
MIB_OF_X = b"x" * (1 << 20)
SENT = ", probe sent, 1 in flight | lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"


# Runs argv[3:], killed after argv[1] seconds; writes its peak RSS (KiB) to the file argv[2].
# A small process of its own: Linux hands a process's memory high-water mark on to
# the program it starts (vfork, exec), so pytest's own size must not be in between.
WRAPPER = """
import resource, subprocess, sys
p = subprocess.Popen(sys.argv[3:])
try:
    p.wait(float(sys.argv[1]))
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
with open(sys.argv[2], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(p.returncode)
"""


def measured(argv, env, seconds=SECONDS):
    """Run *argv* as a monitoring system would: (Result, its peak RSS in bytes).

    The command is killed if it outlives its -t (*seconds*) by 20 seconds.
    """
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.monotonic()
        p = subprocess.run([sys.executable, "-c", WRAPPER, str(seconds + 20), peak.name, *argv], env=env,
                           capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                           timeout=seconds + 40)
        result = Result(p.returncode, p.stdout, p.stderr, time.monotonic() - started)
        return result, int(peak.read()) * 1024


def check(tmp_path, collect, *extra, seconds=SECONDS):
    """One run of the check: IMAP (or POP3, *collect* says) from a fault server, SMTP to a
    scripted server that accepts the probe, with -t *seconds*; (Result, peak RSS)."""
    protocol, port = collect
    env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD="secret", CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD="secret")
    env.pop("CHECK_MAIL_ROUNDTRIP_STATE_DIR", None)
    with fs.FaultServer(fs.SMTPScript()) as smtp:
        return measured([sys.executable, COMMAND, "-H", HOST, "--from", MONITOR, "-t", str(seconds),
                         "--state-dir", str(tmp_path / "state"), "--smtp-port", str(smtp.port), "--smtp-tls", "none",
                         "--collect", protocol, "--%s-port" % protocol, str(port), "--%s-tls" % protocol, "none",
                         *extra], env, seconds)


def assert_bounded(r, rss, line, rc=2, seconds=SECONDS):
    print("peak memory %.0f MB, %.1fs: %s" % (rss / 1e6, r.seconds, r.line))
    assert r.rc == rc and r.full_line == line, r
    assert "Traceback" not in r.stdout + r.stderr, r
    assert r.seconds < seconds, "run took %.1fs with -t %d: %s" % (r.seconds, seconds, r)
    assert rss < MAX_RSS, "peak memory %.0f MB: %s" % (rss / 1e6, r)


def imap_mailbox(**replies):
    """A mailbox server with an empty INBOX, IDLE and UIDPLUS; *replies* as IMAPScript's."""
    return fs.IMAPScript(folders=["INBOX"], capabilities="IDLE UIDPLUS", replies=replies)


def fetch_flooded():
    """A mailbox whose search finds UID 7, and whose FETCH announces a huge literal and sends it."""
    flood = fs.Flood(b"* 1 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)]<0> " + LITERAL, MIB_OF_X)
    return imap_mailbox(**{"UID SEARCH": "* SEARCH 7\n{tag} OK SEARCH done", "UID FETCH": flood})


def wait_ends_quietly(tmp_path, idle, wait, why):
    """A --wait run whose IDLE is answered by *idle*: the wait ends with *why* (the
    failure's words), the run is a bounded OK first run with the probe in flight."""
    seconds = wait + 10  # -t must leave 10s beyond --wait
    with fs.FaultServer(imap_mailbox(IDLE=idle)) as srv:
        r, rss = check(tmp_path, ("imap", srv.port), "--no-junk", "--wait", str(wait), "-v", seconds=seconds)
    assert_bounded(r, rss, "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight | lost=0;;;0 "
                           "oldest_pending=0.0s;120;600;0 pending=1;;;0", rc=0, seconds=seconds)
    assert re.search(r"^waiting for probe \w+ ended after \d+\.\ds: IMAP wait failed: %s \(left for the next run\)$"
                     % re.escape(why), r.stdout, re.M), r.stdout


# -- IMAP: literals ------------------------------------------------------------------

def test_a_huge_literal_in_the_greeting_is_refused_before_it_is_read(tmp_path):
    flood = fs.Flood(b"* OK " + LITERAL, MIB_OF_X)
    with fs.FaultServer(flood) as srv:
        r, rss = check(tmp_path, ("imap", srv.port))
    assert_bounded(r, rss, "MAIL_ROUNDTRIP CRITICAL - IMAP connect failed: server sent a 4294967295-byte literal "
                           "(limit 1 MiB)" + SENT)


def test_a_huge_literal_answering_fetch_is_refused_before_it_is_read(tmp_path):
    script = fetch_flooded()
    with fs.FaultServer(script) as srv:
        r, rss = check(tmp_path, ("imap", srv.port), "--no-junk")
    assert_bounded(r, rss, "MAIL_ROUNDTRIP CRITICAL - IMAP fetch failed: server sent a 4294967295-byte literal "
                           "(limit 1 MiB)" + SENT)
    assert "UID FETCH" in script.commands and script.commands[-1] != "LOGOUT", script.commands


def test_a_huge_literal_during_the_wait_ends_the_wait_quietly(tmp_path):
    wait_ends_quietly(tmp_path, fs.Flood(b"* 1 FETCH (BODY[] " + LITERAL, MIB_OF_X), 2,
                      "server sent a 4294967295-byte literal (limit 1 MiB)")


def test_the_reflectors_poll_refuses_a_huge_literal(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o600)
    env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD="secret")
    with fs.FaultServer(fetch_flooded()) as srv:
        r, rss = measured([sys.executable, REFLECTOR, "poll", "-H", HOST, "--imap-port", str(srv.port),
                           "--imap-tls", "none", "--imap-user", MONITOR, "--secret-file", str(secret),
                           "--state-dir", str(tmp_path / "state"), "--timeout", str(SECONDS)], env)
    print("peak memory %.0f MB, %.1fs: %s" % (rss / 1e6, r.seconds, r.stderr.strip()))
    assert r.rc == 1, r
    assert r.stderr.splitlines()[-1].endswith(
        "poll: IMAP fetch failed: server sent a 4294967295-byte literal (limit 1 MiB)"), r
    assert r.seconds < SECONDS and rss < MAX_RSS, (r.seconds, rss, r)


# -- IMAP: what one answer, and one session, may bring ----------------------------------

def test_endless_untagged_lines_after_login_end_at_the_answers_limit(tmp_path):
    flood = fs.Flood(b"", fs.lines(b"* OK " + b"x" * 16000))
    with fs.FaultServer(imap_mailbox(LOGIN=flood)) as srv:
        r, rss = check(tmp_path, ("imap", srv.port), "--no-junk")
    assert_bounded(r, rss, "MAIL_ROUNDTRIP CRITICAL - IMAP login failed: server sent too much: more than 2 MiB in "
                           "one answer" + SENT)


def test_untagged_lines_piling_up_over_many_answers_end_at_the_sessions_limit(tmp_path):
    # 90 lines before each IDLE's "+" (MAX_IDLE_LINES is 100), just under 2 MiB: every
    # IDLE tells of a new mail, the wait searches and idles again at once
    idle = fs.IdleNews(b"".join(b"* FOO %d %s\r\n" % (i, b"z" * 23000) for i in range(90)))
    wait_ends_quietly(tmp_path, idle, 8, "server sent too much: more than 40 MiB in one session")
    assert 20 <= idle.idles <= 21, idle.idles  # 40 MiB in IDLEs of 2 MB each


# -- POP3: the listing -----------------------------------------------------------------

def test_an_endless_uidl_listing_of_long_lines_ends_at_its_byte_limit(tmp_path):
    flood = fs.Flood(b"+OK\r\n", fs.lines(b"1 " + b"u" * 60000))
    with fs.FaultServer(fs.POP3Script({"UIDL": flood})) as srv:
        r, rss = check(tmp_path, ("pop3", srv.port))
    assert_bounded(r, rss, "MAIL_ROUNDTRIP CRITICAL - POP3 list failed: answer to UIDL too long: more than 8 MiB"
                   + SENT)


def test_an_endless_uidl_listing_of_short_lines_ends_at_its_line_limit(tmp_path):
    def listing(n):  # 20,000 distinct unique ids a chunk
        return b"".join(b"%d uid-%d\r\n" % (i, i) for i in range(n * 20000 + 1, (n + 1) * 20000 + 1))

    flood = fs.Flood(b"+OK\r\n", listing)
    with fs.FaultServer(fs.POP3Script({"UIDL": flood})) as srv:
        r, rss = check(tmp_path, ("pop3", srv.port))
    assert_bounded(r, rss, "MAIL_ROUNDTRIP CRITICAL - POP3 list failed: answer to UIDL too long: more than 100000 "
                           "lines" + SENT)
