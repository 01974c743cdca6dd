"""The daily housekeeping in memory: abandoned profiles' and gone nodes' probes and state files.

Once a day (and on a profile's first run) a run removes the probes signed
with its secret for another profile, or for its profile by another node,
that were sent more than 7 days ago (or twice --lost-after), and the state
files of other profiles untouched that long; nothing else.  It never fails
the run.
"""

import os

from check_mail_roundtrip.state import State, StateStore, ensure_directory
from tests.memlab import MONITOR, MailSystem, MemCheck, plain_mail, probe_mail

DAY = 86400.0
P = "MAIL_ROUNDTRIP "
FIRST = P + "OK - first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"
REMOVED = "removed %d probe(s) of abandoned profiles or nodes (signed with this check's secret, sent more than %s ago)"


def old_probe(mail, secret, profile, days, **kwargs):
    """A probe of *profile* sent and delivered *days* ago; its id."""
    at = mail.clock.now - days * DAY
    probe, raw = probe_mail(secret, profile, at, node=kwargs.get("node"))
    if kwargs.get("bounce"):
        raw = raw.replace(b"Content-Type: text/plain",
                          b"Content-Type: multipart/report; report-type=delivery-status; boundary=x")
    mail.append(MONITOR, raw, at=at)
    return probe.probe_id


def old_state_file(check, profile, days):
    store = StateStore(check.state_dir, profile)
    ensure_directory(check.state_dir)
    store.save(State(profile))
    when = check.mail.clock.now - days * DAY
    os.utime(store.path, (when, when))
    return store.path


def subjects(mail):
    return " ".join(mail.mailbox(MONITOR).subjects())


def test_abandoned_profiles_probes_and_state_files_go_and_nothing_else(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--name", "current")
    s = check.secret
    gone = [old_probe(mail, s, "tried once", 8), old_probe(mail, s, "tried twice", 30)]
    kept = [old_probe(mail, b"another check's secret, not ours", "tried once", 8),
            old_probe(mail, s, "still in use", 2), old_probe(mail, s, "tried once", 9, bounce=True)]
    mail.append(MONITOR, plain_mail("an old mail MRTP1. about probes"), at=mail.clock.now - 40 * DAY)
    abandoned, young = old_state_file(check, "tried once", 8), old_state_file(check, "still in use", 2)
    foreign = os.path.join(check.state_dir, "notes-0123456789.json")
    with open(foreign, "w") as f:
        f.write('{"profile": "whatever"}')
    os.utime(foreign, (mail.clock.now - 30 * DAY,) * 2)

    r = check("-v")
    assert r.full_line == FIRST, r
    lines = r.stdout.splitlines()
    assert REMOVED % (2, "7d") in lines, r
    assert ("removed the state file of abandoned profile 'tried once' (no run for more than 7d): %s"
            % os.path.basename(abandoned)) in lines, r
    assert not any(pid in subjects(mail) for pid in gone) and all(pid in subjects(mail) for pid in kept)
    assert "an old mail MRTP1. about probes" in subjects(mail)
    assert not os.path.exists(abandoned) and os.path.exists(young) and os.path.exists(foreign)

    later = old_probe(mail, s, "tried once", 8)
    mail.clock.advance(60)
    r = check("-v")   # once a day: the new abandoned probe waits for tomorrow's look
    assert not [line for line in r.stdout.splitlines() if line.startswith("removed")], r
    assert later in subjects(mail)
    mail.clock.advance(DAY)
    r = check("-v")
    assert REMOVED % (1, "7d") in r.stdout.splitlines() and later not in subjects(mail), r


def test_a_longer_lost_after_keeps_probes_longer(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--name", "patient", "--lost-after", "432000")
    kept = old_probe(mail, check.secret, "tried once", 8)   # younger than 2 x 5 days
    gone = old_probe(mail, check.secret, "tried once", 11)
    r = check("-v")
    assert REMOVED % (1, "10d") in r.stdout.splitlines(), r
    assert kept in subjects(mail) and gone not in subjects(mail)


def test_probes_of_nodes_gone_away_go_and_those_of_nodes_still_there_stay(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--name", "ha-zone", "--node", "alpha")
    gone = old_probe(mail, check.secret, "ha-zone", 8, node="gamma")
    kept = old_probe(mail, check.secret, "ha-zone", 2, node="beta")
    r = check("-v")
    # beta's probe, left for beta, arrived 2 days ago, a second after it was sent: the last success
    assert r.full_line == P + "OK - first probe sent, 1 in flight, last success 47h ago | junk=0;;;0 lost=0;;;0 " \
                              "oldest_pending=0.0s;120;600;0 pending=1;;;0 since_last_success=172799.0s;;;0", r
    assert REMOVED % (1, "7d") in r.stdout.splitlines(), r
    assert gone not in subjects(mail) and kept in subjects(mail)


def test_keep_and_pop3_remove_no_abandoned_probes(tmp_path):
    for options, note in ((("--keep",), None),
                          (("--collect", "pop3"), "POP3 cannot search by date: probes of abandoned profiles are "
                                                  "not looked for")):
        mail = MailSystem()
        check = MemCheck(mail, tmp_path / options[-1], *options)
        old = old_probe(mail, check.secret, "tried once", 8)
        r = check("-v")
        assert r.rc == 0 and not [line for line in r.stdout.splitlines() if line.startswith("removed")], r
        assert old in subjects(mail)
        assert note is None or note in r.stdout.splitlines(), r


def test_a_failure_while_looking_for_abandoned_probes_does_not_fail_the_run(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    old = old_probe(mail, check.secret, "tried once", 8)
    mail.fail("IMAP fetch", "connection reset by peer", times=1)   # only the look for abandoned probes fetches
    r = check("-v")
    assert r.full_line == FIRST, r
    assert "looking for abandoned probes: IMAP fetch failed: connection reset by peer" in r.stdout.splitlines(), r
    assert old in subjects(mail)
