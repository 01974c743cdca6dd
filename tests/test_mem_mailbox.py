"""What the mailbox and its server do, in memory: UIDVALIDITY, UIDPLUS, the server's clock, the state file.

A folder with a new UIDVALIDITY is searched whole, and nothing is counted
twice; without UIDPLUS removed probes stay flagged \\Deleted and are
reported (unless --dedicated-mailbox allows a plain EXPUNGE); the server's
arrival time is used when it is plausible; a damaged state file is kept
aside (WARNING) and a state directory that cannot be made is UNKNOWN.
"""

import os
import re

import pytest

from check_mail_roundtrip.probe import profile_key
from tests.memlab import MONITOR, MailSystem, MemCheck, plain_mail

P = "MAIL_ROUNDTRIP "
BACK = "round trip 1.0s, 1 in flight, last success 59s ago"
PERF_BACK = "junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0 rtt=1.0s;120;600;0 " \
            "since_last_success=59.0s;;;0"
UNEXPUNGED = "%d removed probe%s flagged \\Deleted wait for an EXPUNGE (server without UIDPLUS, see --dedicated-mailbox)"


def every_minute(mail, check, runs, *extra):
    """*runs* runs a minute apart; their results."""
    results = []
    for _ in range(runs):
        mail.clock.advance(60)
        results.append(check(*extra))
    return results


def test_a_new_uidvalidity_makes_the_folder_read_whole_and_nothing_is_counted_twice(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--keep")
    check()
    every_minute(mail, check, 1)
    mail.append(MONITOR, plain_mail("other mail"))
    mail.deliver_due()
    mail.mailbox(MONITOR).folders["INBOX"].renumber()
    (r,) = every_minute(mail, check, 1, "-v")
    assert (r.rc, r.full_line) == (0, P + "OK - " + BACK + " | " + PERF_BACK), r
    lines = r.stdout.splitlines()
    assert "folder INBOX changed (UIDVALIDITY): searching all of it" in lines, r
    assert len([line for line in lines if "duplicate of a probe already counted" in line]) == 1, r
    assert check.books() == (3, 2, 0, 1, 0)


def test_without_uidplus_removed_probes_are_reported_until_expunged(tmp_path):
    mail = MailSystem()
    box = mail.mailbox(MONITOR, uidplus=False)
    check = MemCheck(mail, tmp_path)
    check()
    results = every_minute(mail, check, 2)
    assert [(r.rc, r.full_line) for r in results] == [
        (0, P + "OK - %s, %s | %s unexpunged=%d;;;0" % (BACK, UNEXPUNGED % (n, "" if n == 1 else "s"), PERF_BACK, n))
        for n in (1, 2)], results
    box.folders["INBOX"].expunge()   # someone expunges the folder
    (r,) = every_minute(mail, check, 1)
    assert r.full_line == P + "OK - %s, %s | %s unexpunged=1;;;0" % (BACK, UNEXPUNGED % (1, ""), PERF_BACK), r


def test_a_dedicated_mailbox_without_uidplus_is_expunged_whole(tmp_path):
    mail = MailSystem()
    box = mail.mailbox(MONITOR, uidplus=False)
    check = MemCheck(mail, tmp_path, "--dedicated-mailbox")
    check()
    mail.append(MONITOR, plain_mail("flagged by someone")).deleted = True
    (r,) = every_minute(mail, check, 1, "-v")
    assert r.full_line == P + "OK - " + BACK + " | " + PERF_BACK, r
    assert "server lacks UIDPLUS: 1 probe(s) removed with a plain EXPUNGE (--dedicated-mailbox)" \
        in r.stdout.splitlines(), r
    assert box.folders["INBOX"].messages == {}   # a plain EXPUNGE removes every mail flagged \Deleted


@pytest.mark.parametrize("skew, rtt, since, note", [
    (0, 1.0, 59.0, None),
    (3, 4.0, 56.0, None),        # ahead: the round trip looks longer, within the skew tolerated
    (-3, 0.0, 62.0, "INTERNALDATE 1749999997 before the send time 1750000000.000: the mail server's clock is behind"),
    (-100, 60.0, 0.0, "INTERNALDATE 1749999900 implausible for send time 1750000000.000 (clock skew?); collection "
                      "time used as arrival time"),
    (100, 60.0, 0.0, "INTERNALDATE 1750000100 implausible for send time 1750000000.000 (clock skew?); collection "
                     "time used as arrival time"),
])
def test_the_servers_arrival_time_is_used_when_it_is_plausible(tmp_path, skew, rtt, since, note):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    mail.skew = skew
    check()
    (r,) = every_minute(mail, check, 1, "-v")
    assert r.full_line == P + "OK - round trip %.1fs, 1 in flight, last success %ds ago | junk=0;;;0 lost=0;;;0 " \
        "oldest_pending=0.0s;120;600;0 pending=1;;;0 rtt=%.1fs;120;600;0 since_last_success=%.1fs;;;0" % (
            rtt, since, rtt, since), r
    notes = [line.split(": ", 1)[1] for line in r.stdout.splitlines() if re.match(r"probe \w+: ", line)]
    assert notes == ([note] if note else []), r


def test_other_mail_is_read_once(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--name", "mine")
    for n in range(3):   # found by the search for the profile's key, but no probe
        mail.append(MONITOR, plain_mail("about MRTP1.%s, number %d" % (profile_key("mine"), n)))
    r = check("-v")
    assert len(re.findall(r"^message UID \d ignored: no probe token$", r.stdout, re.M)) == 3, r
    for r in every_minute(mail, check, 2, "-v"):
        assert r.text == BACK and "ignored" not in r.stdout, r
    assert len(mail.mailbox(MONITOR).messages()) == 3


def test_a_damaged_state_file_is_kept_aside_with_a_warning_and_the_run_goes_on(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    check()
    (name,) = [f for f in os.listdir(check.state_dir) if f.endswith(".json")]
    with open(os.path.join(check.state_dir, name), "w") as f:
        f.write("{not json")
    (r,) = every_minute(mail, check, 1)
    assert r.rc == 1 and re.fullmatch(
        re.escape(P + "WARNING - state file is not valid JSON (Expecting property name enclosed in double quotes: "
                      "line 1 column 2 (char 1)); kept aside as " + name + ".damaged-")
        + r"\d{8}T\d{6}-\d+" + re.escape(", started afresh, " + BACK + " | " + PERF_BACK), r.full_line), r
    (r,) = every_minute(mail, check, 1)
    assert (r.rc, r.text) == (0, BACK), r


def test_a_state_directory_that_cannot_be_made_is_unknown(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    with open(check.state_dir, "w") as f:
        f.write("a file, not a directory")
    r = check()
    assert (r.rc, r.full_line) == (3, P + "UNKNOWN - cannot create state directory %s: File exists"
                                   % check.state_dir), r
    assert mail.sent == [] and mail.sessions == 0
