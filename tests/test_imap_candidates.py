"""Each candidate is read once; floods never hide a probe; servers without UIDPLUS.

Against the lab's real Dovecot: its IMAP on 127.0.0.2 (lab.NO_UIDPLUS_HOST)
serves the same mailboxes but announces no UIDPLUS.
"""

import imaplib
import re
import ssl
import time

import pytest

from check_mail_roundtrip import probe as probe_format
from tests.checkrun import Checker
from tests.lab.common import NO_UIDPLUS_HOST

MONITOR = "monitor@lab.test"


def _forged(key, n):
    """A candidate with this profile's key in the Subject and a bad signature."""
    sent = int(time.time() * 1000)
    return ("From: someone@lab.test\r\nTo: %s\r\nSubject: Mail round-trip probe MRTP1.%s.%016x.%d.%s\r\n\r\n"
            "not a probe\r\n" % (MONITOR, key, n, sent, "0" * 32)).encode()


def _append_many(lab, key, count):
    conn = imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], timeout=30,
                             ssl_context=ssl.create_default_context(cafile=lab.ca_file))
    try:
        conn.login(MONITOR, lab.users[MONITOR])
        for n in range(count):
            assert conn.append("INBOX", None, None, _forged(key, n))[0] == "OK"
    finally:
        conn.logout()


def _key(name):
    return probe_format.profile_key(name)


@pytest.mark.parametrize("order", ["probe-first", "flood-first"])
def test_a_probe_among_a_thousand_unverifiable_candidates_is_found_in_the_first_run(lab, tmp_path, order):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "flooded")
    if order == "flood-first":
        _append_many(lab, _key("flooded"), 1000)
    r = check()
    assert r.rc == 0 and "first probe sent" in r.line, r
    lab.wait_for(MONITOR, lambda msgs: any("MRTP1.%s" % _key("flooded") in m["subject"] and "0" * 32 not in
                                           m["subject"] for m in msgs), timeout=20)
    if order == "probe-first":
        _append_many(lab, _key("flooded"), 1000)
    r = check("-v", "-t", "60")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    ignored = len(re.findall(r"^message UID \d+ ignored: bad signature", r.stdout, re.M))
    assert ignored == (1000 if order == "probe-first" else 0), ignored  # flood-first: read by run 1
    lab.wait_for(MONITOR, lambda msgs: sum(1 for m in msgs if "0" * 32 not in m["subject"]) >= 1)
    r = check("-vvv", "-t", "60")  # each candidate's headers were read once: none again
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert "ignored" not in r.stdout
    fetches = re.findall(r"^IMAP C: \S+ UID FETCH (\S+) ", r.stdout, re.M)
    assert len(fetches) == 1 and "," not in fetches[0] and ":" not in fetches[0], fetches  # the new probe
    assert re.search(r"^IMAP C: \S+ UID SEARCH UNDELETED SUBJECT MRTP1\.%s UID \d+:\*$" % _key("flooded"),
                     r.stdout, re.M), r.stdout


def _no_uidplus(lab, tmp_path, *extra):
    return Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--imap-host", NO_UIDPLUS_HOST,
                   "--name", "no-uidplus", *extra)


def _flagged(lab):
    return [m for m in lab.messages(MONITOR) if "\\Deleted" in m["flags"]]


def test_without_uidplus_probes_stay_flagged_are_not_read_again_and_the_count_is_shown(lab, tmp_path):
    check = _no_uidplus(lab, tmp_path)
    lab.send(subject="someone else's mail", sender="other@lab.test")
    assert check().rc == 0
    for expected in (1, 2):
        lab.wait_for(MONITOR, lambda msgs: len(msgs) - len(_flagged(lab)) >= 3 - 1)
        r = check("-vvv")
        assert r.rc == 0, r
        assert ("round trip " in r.line and "%d removed probe%s flagged \\Deleted wait for an EXPUNGE "
                "(server without UIDPLUS, see --dedicated-mailbox)" % (expected, "" if expected == 1 else "s")
                in r.line), r.line
        assert "unexpunged=%d;;;0" % expected in r.stdout.split("|", 1)[1]
        assert not re.search(r"^IMAP C: \S+ (UID )?EXPUNGE", r.stdout, re.M)  # never without the opt-in
        assert "duplicate" not in r.stdout  # the flagged one is not read again
    assert len(_flagged(lab)) == 2
    assert any(m["subject"] == "someone else's mail" and not m["flags"] & {"\\Deleted"}
               for m in lab.messages(MONITOR))


def test_without_uidplus_a_dedicated_mailbox_is_expunged(lab, tmp_path):
    check = _no_uidplus(lab, tmp_path, "--dedicated-mailbox")
    assert check().rc == 0
    lab.wait_for(MONITOR, 1)
    r = check("-vvv")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert "wait for an EXPUNGE" not in r.line
    assert re.search(r"^IMAP C: \S+ EXPUNGE$", r.stdout, re.M), r.stdout
    assert "server lacks UIDPLUS: 1 probe(s) removed with a plain EXPUNGE (--dedicated-mailbox)" in r.stdout
    assert not _flagged(lab)
