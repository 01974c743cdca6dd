"""Each candidate is read once; floods never hide a probe; servers without UIDPLUS.

Against the lab's real Dovecot: its IMAP on 127.0.0.2 (lab.NO_UIDPLUS_HOST)
serves the same mailboxes but announces no UIDPLUS.
"""

import json
import os
import re
import time

import pytest

from check_mail_roundtrip import candidates, probe as probe_format
from tests.checkrun import Checker
from tests.lab.common import NO_UIDPLUS_HOST

MONITOR = "monitor@lab.test"


def _key(name):
    return probe_format.profile_key(name)


@pytest.mark.parametrize("order", ["probe-first", "flood-first"])
def test_a_probe_among_a_thousand_unverifiable_candidates_is_found_in_the_first_run(lab, tmp_path, order):
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "flooded")
    if order == "flood-first":
        fill_forged(lab, _key("flooded"), 1000)
    r = check()
    assert r.rc == 0 and "first probe sent" in r.line, r
    lab.wait_for(MONITOR, lambda msgs: any("MRTP1.%s" % _key("flooded") in m["subject"] and "0" * 32 not in
                                           m["subject"] for m in msgs), timeout=20)
    if order == "probe-first":
        fill_forged(lab, _key("flooded"), 1000)
    r = check("-v", "-t", "60")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    ignored = len(re.findall(r"^message UID \d+ ignored: bad signature", r.stdout, re.M))
    assert ignored == (1000 if order == "probe-first" else 0), ignored  # flood-first: read by run 1
    lab.wait_for(MONITOR, lambda msgs: sum(1 for m in msgs if "0" * 32 not in m["subject"]) >= 1)
    r = check("-vvv", "-t", "60")  # each candidate's headers were read once: none again
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert "ignored" not in r.stdout
    fetches = re.findall(r"^IMAP C: \S+ UID FETCH (\S+) \(INTERNALDATE BODY\.PEEK\[HEADER\.FIELDS \(SUBJECT ",
                         r.stdout, re.M)  # (-v also fetches the new probe's Received fields: its hop lines)
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


# -- a flood of forged candidates (anyone can compute the key in the Subject) --------------------

def fill_forged(lab, key, count):
    """*count* forged candidates written into the Maildir at once: this profile's key, made-up
    ids, a bad signature."""
    if count:
        lab.fill(MONITOR, count, subject="Mail round-trip probe MRTP1.%s.%%016x.%d.%s"
                 % (key, int(time.time() * 1000), "0" * 32))


def _fetched(r):
    """The UIDs whose headers a -vvv run fetched."""
    uids = set()
    for uid_set in re.findall(r"^IMAP C: \S+ UID FETCH (\S+) ", r.stdout, re.M):
        for part in uid_set.split(","):
            lo, _, hi = part.partition(":")
            uids.update(range(int(lo), int(hi or lo) + 1))
    return uids


def forged_left(lab, count):
    """The forged candidates are all there: not deleted, not flagged, not even \\Seen."""
    forged = [m for m in lab.messages(MONITOR) if "0" * 32 in m["subject"]]
    assert len(forged) == count and not any(m["flags"] for m in forged), [m for m in forged if m["flags"]][:3]


def wait_count(lab, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while lab.count(MONITOR)[0] < count:
        assert time.monotonic() < deadline, lab.count(MONITOR)
        time.sleep(0.1)


ROUND_TRIP = (r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago "
              r"\| junk=0;;;0 lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0 "
              r"rtt=\1s;120;600;0 since_last_success=\d+\.\d+s;;;0")


@pytest.mark.parametrize("count", [5000, 20000])
@pytest.mark.parametrize("where", ["behind", "amid"])
def test_a_probe_behind_or_amid_a_flood_of_forged_candidates_is_found_in_the_first_run(lab, tmp_path, count, where):
    """The probe arrives after *count* forged candidates (behind: the oldest-first reading of
    2000 a run would reach it only in the third or eleventh run), or in their middle (amid:
    neither the oldest nor the newest 2000 hold it; a search for the ids of the probes
    waited for finds it)."""
    name = "flood-%s-%d" % (where, count)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", name, "-t", "60")
    lab.hold()
    r = check("-v")
    assert r.rc == 0 and "first probe sent" in r.line, r
    probe = re.search(r"^probe (\w+) sent", r.stdout, re.M).group(1)
    before = count if where == "behind" else count // 2
    t0 = time.monotonic()
    fill_forged(lab, _key(name), before)
    lab.release()
    wait_count(lab, before + 1)
    fill_forged(lab, _key(name), count - before)
    assert time.monotonic() - t0 < 60
    r = check("-vvv")
    assert r.rc == 0 and re.fullmatch(ROUND_TRIP, r.full_line), r.full_line
    assert re.search(r"^probe %s returned, round trip " % probe, r.stdout, re.M), r.stdout[-3000:]
    assert ("%d probe candidates found; reading 2000 this run (1 with the id of a probe waited for, then the "
            "newest), the older ones in the next runs" % (count + 1)) in r.stdout
    first = _fetched(r)
    assert len(first) <= 2000 + 1, len(first)
    forged_left(lab, count)
    # steady state: no forged candidate is read twice, at most 2000 a run, the memory stays small
    runs = [first]
    for _ in range(3 if count == 5000 else 1):
        wait_count(lab, count + 1)
        r = check("-vvv")
        assert r.rc == 0 and re.fullmatch(ROUND_TRIP, r.full_line), r.full_line
        runs.append(_fetched(r))
        assert len(runs[-1]) <= 2000 + 1 and not runs[-1] & set().union(*runs[:-1]), len(runs[-1])
        state_file, = [f for f in os.listdir(check.state_dir) if f.endswith(".json")]
        with open(os.path.join(check.state_dir, state_file)) as f:
            memory = json.load(f)["collector"]
        assert len(memory["backlog"]) <= candidates.MAX_BACKLOG and len(json.dumps(memory)) < 1000, memory
    if count == 5000:  # the older candidates were read in the next runs, newest first, each once
        assert len(runs[-1]) == 1 and sum(len(f) for f in runs) == count + 4, [len(f) for f in runs]
    forged_left(lab, count)
