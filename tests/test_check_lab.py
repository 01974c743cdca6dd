"""The check against the real lab: whole status lines and exit codes."""

import email.parser
import email.policy
import imaplib
import os
import re
import time

from tests.checkrun import Checker

PERF_OK = r"junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"
MONITOR = "monitor@lab.test"
ECHO = "echo@lab.test"


def test_first_run_sends_the_first_probe(lab, tmp_path):
    r = Checker(lab, tmp_path)()
    assert r.rc == 0, r
    assert r.line == (
        "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight "
        "| junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"
    )
    lab.wait_for("monitor@lab.test", 1)


def test_round_trip_straight_to_the_monitor_mailbox(lab, tmp_path):
    check = Checker(lab, tmp_path)
    assert check().rc == 0
    lab.wait_for("monitor@lab.test", 1)
    r = check()
    assert r.rc == 0, r
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago "
        r"\| " + PERF_OK + r" rtt=\1s;120;600;0 since_last_success=\d+\.\d+s;;;0",
        r.line,
    ), r
    assert 0 <= r.perf["rtt"] < 5
    # the returned probe was removed, the new one is on its way
    msgs = lab.wait_for("monitor@lab.test", 1)
    assert len(msgs) == 1


# -- through the echo address ----------------------------------------------------------

def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_since(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def deliveries(text):
    """{message-id: [(recipient, status), ...]} from Postfix log lines."""
    ids = dict(re.findall(r" ([0-9A-F]{6,}): message-id=(<[^>\s]*>)", text))
    out = {}
    for qid, rcpt, status in re.findall(r" ([0-9A-F]{6,}): to=<([^>]*)>.*?, status=(\w+)", text):
        if qid in ids:
            out.setdefault(ids[qid], []).append((rcpt, status))
    return out


def probe_deliveries(lab, offset, probe_id, rcpt, timeout=10.0):
    """Deliveries logged since *offset* of the probe's Message-ID (<probe id>.<ms>@lab.test),
    polled (bounded) until one to *rcpt* succeeded: {message-id: [(recipient, status)]}."""
    deadline = time.monotonic() + timeout
    while True:
        found = {mid: rcpts for mid, rcpts in deliveries(log_since(lab.postfix_log, offset)).items()
                 if re.fullmatch(r"<%s\.\d+@lab\.test>" % probe_id, mid)}
        if any((rcpt, "sent") in rcpts for rcpts in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def fetch_headers(lab, user, probe_id):
    """Headers of the message in *user*'s INBOX whose Message-ID holds *probe_id* (IMAPS, CA verified)."""
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(), timeout=10)
    try:
        conn.login(user, lab.users[user])
        conn.select("INBOX", readonly=True)
        typ, data = conn.uid("SEARCH", "HEADER", "Message-ID", probe_id)
        assert typ == "OK", data
        uids = data[0].split()
        assert len(uids) == 1, data
        typ, data = conn.uid("FETCH", uids[0], "(BODY.PEEK[HEADER])")
        assert typ == "OK", data
        raw = next(part[1] for part in data if isinstance(part, tuple))
        return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    finally:
        conn.logout()


def test_round_trip_through_the_echo_address(lab, tmp_path):
    check = Checker(lab, tmp_path, to=ECHO)
    offset = log_size(lab.postfix_log)
    r = check("-v")
    assert r.rc == 0, r
    assert r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight"), r
    m = re.search(r"^probe ([0-9a-f]{16}) sent: 250 ", r.stdout, re.M)
    assert m, r
    probe_id = m.group(1)
    lab.wait_for(MONITOR, 1)

    # Postfix delivered the probe to the echo address, and the echo sent it on
    # to the monitor (a redirect keeps the Message-ID: <probe id>.<ms>@lab.test)
    found = probe_deliveries(lab, offset, probe_id, ECHO)
    assert len(found) == 1, (probe_id, found)
    assert (ECHO, "sent") in next(iter(found.values())), (probe_id, found)
    # ... and the copy in the monitor's mailbox is the one the echo returned
    headers = fetch_headers(lab, MONITOR, probe_id)
    assert headers["X-Mail-Lab-Echo"] == ECHO, headers
    assert headers["To"] == ECHO and headers["From"] == MONITOR, headers

    r = check("-v")
    assert r.rc == 0, r
    # with -v the perfdata follows the long output
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago",
        r.line.split(" | ")[0],
    ), r
    assert re.fullmatch(PERF_OK + r" rtt=\d+\.\d+s;120;600;0 since_last_success=\d+\.\d+s;;;0",
                        r.perfdata), r
    assert "probe %s returned, round trip" % probe_id in r.stdout, r
    assert 0 <= r.perf["rtt"] < 5, r
