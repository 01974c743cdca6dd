"""A probe filed as spam, in memory: found in the Junk folder, counted, and reported by --junk-state.

The mail system's filter files what is handed over while ``junk_filter`` is
on into the mailbox's Junk folder.  A probe there is a round trip and the
junk figure; --junk-state sets the state; --no-junk and POP3 do not look.
"""

import pytest

from tests.memlab import MONITOR, MailSystem, MemCheck, plain_mail, sent_id

P = "MAIL_ROUNDTRIP "
TAIL = "1 in flight, last success 59s ago | junk=%d;;;0 lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0 " \
       "rtt=1.0s;120;600;0 since_last_success=59.0s;;;0"


def into_junk(mail, check, *extra):
    """A first run whose probe the filter files as spam; the next run's result."""
    mail.junk_filter = True
    check()
    mail.junk_filter = False
    mail.clock.advance(60)
    return check(*extra)


@pytest.mark.parametrize("junk_state, rc, line", [
    (None, 1, "WARNING - probe delivered to Junk, round trip 1.0s, " + TAIL % 1),
    ("warning", 1, "WARNING - probe delivered to Junk, round trip 1.0s, " + TAIL % 1),
    ("critical", 2, "CRITICAL - probe delivered to Junk, round trip 1.0s, " + TAIL % 1),
    ("ok", 0, "OK - round trip 1.0s, probe delivered to Junk, " + TAIL % 1),
])
def test_a_probe_in_junk_is_a_round_trip_in_the_junk_state(tmp_path, junk_state, rc, line):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, *(("--junk-state", junk_state) if junk_state else ()))
    r = into_junk(mail, check)
    assert (r.rc, r.full_line) == (rc, P + line), r


def test_a_probe_in_junk_is_removed_from_there_and_other_spam_stays(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    mail.append(MONITOR, plain_mail("a real spam"), folder="Junk")
    mail.junk_filter = True
    first = sent_id(check("-v"))
    mail.junk_filter = False
    mail.clock.advance(60)
    r = check("-v")
    assert 'probe %s found in the Junk folder (UID 2 in "Junk")' % first in r.stdout.splitlines(), r
    assert mail.mailbox(MONITOR).subjects("Junk") == ["a real spam"]
    mail.clock.advance(60)
    r = check()   # back in INBOX: OK again
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, " + TAIL % 0), r


def test_probes_in_junk_and_in_inbox_are_all_counted(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    mail.junk_filter = True
    check()
    mail.clock.advance(60)
    r = check("--no-junk")   # does not look into Junk: nothing back
    assert (r.rc, r.full_line) == (0, P + "OK - no probe back this run, oldest in flight 60.0s, 2 in flight, "
                                   "no success yet | lost=0;;;0 oldest_pending=60.0s;120;600;0 pending=2;;;0"), r
    mail.junk_filter = False
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (1, P + "WARNING - 2 probes delivered to Junk, 2 round trips, slowest 1.0s, "
                                   + TAIL % 2), r
    assert check.books() == (3, 2, 0, 1, 0) and mail.mailbox(MONITOR).probes("Junk") == []


def test_a_mailbox_without_a_junk_folder_reports_none_found(tmp_path):
    mail = MailSystem()
    mail.mailbox(MONITOR, junk=None)
    check = MemCheck(mail, tmp_path)
    mail.junk_filter = True   # nowhere to file it: INBOX
    r = check("-v")
    assert "no Junk folder found (by the \\Junk attribute or the usual names)" in r.stdout.splitlines(), r
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, " + TAIL % 0), r


def test_a_junk_folder_named_by_the_option_is_looked_into_and_one_that_does_not_open_is_no_error(tmp_path):
    mail = MailSystem()
    box = mail.mailbox(MONITOR, junk=None)   # no folder flagged \Junk
    box.add_folder("Spam")
    check = MemCheck(mail, tmp_path)
    check()
    mail.deliver_due()
    (probe,) = box.probes()
    box.folders["Spam"].append(probe.raw, probe.internaldate)   # a filter moved it there
    probe.deleted = True
    box.folders["INBOX"].expunge()
    mail.clock.advance(60)
    r = check("-v", "--junk-folder", "Nowhere")
    assert r.text == "no probe back this run, oldest in flight 60.0s, 2 in flight, no success yet", r
    assert 'Junk folder "Nowhere" not looked into: it does not open' in r.stdout.splitlines() \
        and r.perf["junk"] == 0, r
    mail.clock.advance(60)
    r = check("--junk-folder", "Spam")
    assert (r.rc, r.text) == (1, "probe delivered to Junk, 2 round trips, slowest 1.0s, 1 in flight, "
                                 "last success 59s ago") and r.perf["junk"] == 1, r
    assert box.probes("Spam") == []


def test_with_keep_the_probe_in_junk_is_counted_and_left_there(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--keep")
    r = into_junk(mail, check)
    assert r.rc == 1 and r.text.startswith("probe delivered to Junk, round trip 1.0s"), r
    assert len(mail.mailbox(MONITOR).probes("Junk")) == 1
    mail.clock.advance(60)
    r = check("-v")   # read once: not counted again
    assert (r.rc, r.text) == (0, "round trip 1.0s, 1 in flight, last success 59s ago") and "Junk" not in r.stdout, r


def test_pop3_and_no_junk_have_no_junk_figure(tmp_path):
    for options in (("--collect", "pop3"), ("--no-junk",)):
        mail = MailSystem()
        check = MemCheck(mail, tmp_path / options[-1], *options)
        r = into_junk(mail, check)
        assert (r.rc, r.full_line) == (0, P + "OK - no probe back this run, oldest in flight 60.0s, 2 in flight, "
                                       "no success yet | lost=0;;;0 oldest_pending=60.0s;120;600;0 pending=2;;;0"), r


def test_a_probe_waited_for_in_junk_is_found_by_the_next_run(tmp_path):
    """--wait watches the collection folder only; the Junk folder is read by the next run."""
    mail = MailSystem()
    check = MemCheck(mail, tmp_path)
    mail.junk_filter = True
    r = check("--wait", "5", "-v")
    assert r.text == "first probe sent, oldest in flight 5.0s, 1 in flight", r
    assert "probe %s not back after waiting 5.0s (IDLE in memory)" % sent_id(r) in r.stdout.splitlines(), r
    mail.junk_filter = False
    mail.clock.advance(55)
    r = check()
    assert (r.rc, r.text) == (1, "probe delivered to Junk, round trip 1.0s, 1 in flight, last success 59s ago"), r


def test_with_no_junk_probes_filed_as_spam_are_in_flight_then_lost_and_stay_in_junk(tmp_path):
    """--no-junk watches the collection folder only: a probe filed as spam is a stall, then a loss."""
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "-w", "1", "-c", "2", "--lost-after", "4", "--no-junk")
    mail.junk_filter = True
    lines = []
    for seconds in (0, 3, 3):
        mail.clock.advance(seconds)
        r = check()
        lines.append((r.rc, r.full_line))
    perf = "lost=%d;;;0 oldest_pending=%s;1;2;0 pending=%d;;;0"
    assert lines == [
        (0, P + "OK - first probe sent, 1 in flight | " + perf % (0, "0.0s", 1)),
        (2, P + "CRITICAL - probe in flight for 3.0s > 2s, no probe back this run, 2 in flight, no success yet | "
         + perf % (0, "3.0s", 2)),
        # the first probe is 6 s old: lost; the second 3 s
        (2, P + "CRITICAL - probe in flight for 3.0s > 2s, 1 probe lost > 0, no probe back this run, 2 in flight, "
         "no success yet | " + perf % (1, "3.0s", 2)),
    ]
    mail.junk_filter = False
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (1, P + "WARNING - 2 probes lost > 0, no probe back this run, 1 in flight, "
                                   "no success yet | " + perf % (2, "0.0s", 1)), r
    mail.clock.advance(60)
    r = check()
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, 1 in flight, last success 59s ago | "
                                   + perf % (0, "0.0s", 1) + " rtt=1.0s;1;2;0 since_last_success=59.0s;;;0"), r
    mail.deliver_due()
    assert len(mail.mailbox(MONITOR).probes("Junk")) == 3 and check.books() == (5, 1, 3, 1, 0)   # left in Junk
