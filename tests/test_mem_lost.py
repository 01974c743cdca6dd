"""Lost, late, duplicate, forged and foreign probes, in memory: whole status lines and the books.

A probe is lost once it is older than --lost-after and not back; if it comes
back after that it is late (not a round trip); a probe whose run died before
the server confirmed it is forgotten instead; a probe is counted once; what
is not this profile's verified probe is never counted nor removed, and is
read once.
"""

import os

import pytest

from check_mail_roundtrip.probe import profile_key
from tests.memlab import MONITOR, Killed, MailSystem, MemCheck, plain_mail, probe_mail, sent_id

P = "MAIL_ROUNDTRIP "
FIRST = P + "OK - first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 oldest_pending=0.0s;60;90;0 pending=1;;;0"
BACK = P + "OK - round trip 1.0s, 1 in flight, last success 59s ago | junk=0;;;0 lost=0;;;0 " \
           "oldest_pending=0.0s;60;90;0 pending=1;;;0 rtt=1.0s;60;90;0 since_last_success=59.0s;;;0"


def checker(tmp_path, *options):
    mail = MailSystem()
    return mail, MemCheck(mail, tmp_path, "-w", "60", "-c", "90", "--lost-after", "300", *options)


def after(mail, check, seconds, *extra):
    """A run *seconds* from now."""
    mail.clock.advance(seconds)
    return check(*extra)


def notes(r):
    return r.stdout.splitlines()[1:]


# -- lost and late ------------------------------------------------------------------------------

def test_a_dropped_probe_is_in_flight_then_overtaken_then_declared_lost_once(tmp_path):
    mail, check = checker(tmp_path)
    mail.lose(1)
    dropped = sent_id(check("-v"))
    r = after(mail, check, 60)
    assert (r.rc, r.full_line) == (0, P + "OK - no probe back this run, oldest in flight 60.0s, 2 in flight, "
                                   "no success yet | junk=0;;;0 lost=0;;;0 oldest_pending=60.0s;60;90;0 "
                                   "pending=2;;;0"), r
    for _ in range(4):   # newer probes come back: the dropped one is overtaken, and not lost before 300 s
        r = after(mail, check, 60, "-v")
        assert r.full_line == BACK.replace("1 in flight", "2 in flight").replace("pending=1", "pending=2"), r
    r = after(mail, check, 61, "-v")
    assert (r.rc, r.full_line) == (1, P + "WARNING - 1 probe lost > 0, round trip 1.0s, 1 in flight, last success "
                                   "60s ago | junk=0;;;0 lost=1;;;0 oldest_pending=0.0s;60;90;0 pending=1;;;0 "
                                   "rtt=1.0s;60;90;0 since_last_success=60.0s;;;0"), r
    assert "probe %s declared lost (sent 361s ago)" % dropped in notes(r), r
    r = after(mail, check, 60)   # lost once: not again, and not in flight
    assert r.full_line == BACK, r
    assert check.books() == (8, 6, 1, 1, 0)


def test_a_probe_back_after_it_was_declared_lost_is_late_not_a_round_trip(tmp_path):
    mail, check = checker(tmp_path, "--lost-warning", "1")
    mail.hold()
    late = sent_id(check("-v"))
    r = after(mail, check, 301, "-v")
    assert (r.rc, r.full_line) == (0, P + "OK - no probe back this run, 1 probe lost, 1 in flight, no success yet | "
                                   "junk=0;;;0 lost=1;1;;0 oldest_pending=0.0s;60;90;0 pending=1;;;0"), r
    assert "probe %s declared lost (sent 301s ago)" % late in notes(r), r
    mail.release()
    r = after(mail, check, 60, "-v")
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, 1 lost probe came back late, 1 in flight, "
                                   "last success 59s ago | junk=0;;;0 lost=0;1;;0 oldest_pending=0.0s;60;90;0 "
                                   "pending=1;;;0 rtt=1.0s;60;90;0 since_last_success=59.0s;;;0"), r
    assert "probe %s arrived late, after it was declared lost (sent 361s ago)" % late in notes(r), r
    assert not [n for n in notes(r) if n.startswith("probe %s returned" % late)], r
    assert mail.mailbox(MONITOR).probes() == [] and check.books() == (3, 1, 1, 1, 1)


def test_several_late_probes_are_told_in_one_phrase(tmp_path):
    mail, check = checker(tmp_path, "--lost-warning", "5")
    mail.hold()
    for _ in range(3):
        check()
        mail.clock.advance(10)
    r = after(mail, check, 300)
    assert (r.rc, r.text) == (0, "no probe back this run, 3 probes lost, 1 in flight, no success yet"), r
    mail.release()
    r = after(mail, check, 60)
    assert (r.rc, r.text) == (0, "round trip 1.0s, 3 lost probes came back late, 1 in flight, "
                                 "last success 59s ago"), r
    assert check.books() == (5, 1, 3, 1, 3)


def test_a_lost_probe_is_remembered_for_a_week_then_not_counted_at_all(tmp_path):
    mail, check = checker(tmp_path, "--lost-warning", "1")
    mail.hold()
    late = sent_id(check("-v"))
    mail.holding = False            # that probe stays held; the next ones flow
    after(mail, check, 301)         # ... and it is lost
    after(mail, check, 7 * 86400)   # lost ids are remembered for 7 days
    mail.release()
    r = after(mail, check, 60, "-v")
    assert r.full_line == BACK.replace("lost=0;;;0", "lost=0;1;;0"), r
    assert ("probe %s ignored: sent 605161s ago, no pending record and outside the 300s window (or older than what "
            "is remembered)" % late) in notes(r), r


# -- runs that died while sending ------------------------------------------------------------------

def test_a_probe_whose_run_died_before_the_server_confirmed_it_is_forgotten_not_lost(tmp_path):
    mail, check = checker(tmp_path)
    check()
    mail.smtp_killed()
    with pytest.raises(Killed):
        after(mail, check, 60)
    state = check.state()
    (unconfirmed,) = state["unconfirmed"]
    assert unconfirmed in state["pending"]
    mail.smtp_fails(None)
    r = after(mail, check, 60)   # the first probe was collected by the run that died
    assert r.full_line == P + "OK - no probe back this run, oldest in flight 60.0s, 2 in flight, last success 1m " \
                              "ago | junk=0;;;0 lost=0;;;0 oldest_pending=60.0s;60;90;0 pending=2;;;0 " \
                              "since_last_success=119.0s;;;0", r
    r = after(mail, check, 250, "-v")
    assert (r.rc, r.text) == (0, "round trip 1.0s, 1 in flight, last success 4m ago"), r
    assert ("probe %s forgotten, not counted as lost: its run ended before the server confirmed it, and it is not "
            "back after 310s (it most likely never went out)" % unconfirmed) in notes(r), r
    assert check.books() == (3, 2, 0, 1, 0) and check.state()["unconfirmed"] == []


def test_a_probe_whose_run_died_after_it_went_out_is_counted_when_it_comes(tmp_path):
    mail, check = checker(tmp_path)
    check()
    mail.smtp_killed(delivered=True)
    with pytest.raises(Killed):
        after(mail, check, 60)
    mail.smtp_fails(None)
    r = after(mail, check, 60)
    assert r.full_line == BACK, r
    assert check.books() == (3, 2, 0, 1, 0) and check.state()["unconfirmed"] == []


# -- counted once ---------------------------------------------------------------------------------

def test_a_probe_delivered_twice_is_counted_once_and_both_copies_are_removed(tmp_path):
    mail, check = checker(tmp_path)
    first = sent_id(check("-v"))
    text = mail.sent[-1].text
    assert after(mail, check, 60).full_line == BACK
    mail.send(text, MONITOR, MONITOR, None, None)   # the same mail once more
    r = after(mail, check, 60, "-v")
    assert r.full_line == BACK, r
    assert "probe %s: duplicate of a probe already counted, not counted again" % first in notes(r), r
    assert mail.mailbox(MONITOR).probes() == [] and check.books() == (3, 2, 0, 1, 0)


def test_a_probe_without_a_pending_record_is_measured_from_its_signed_send_time(tmp_path):
    mail, check = checker(tmp_path)
    first = sent_id(check("-v"))
    os.remove(os.path.join(check.state_dir, [f for f in os.listdir(check.state_dir) if f.endswith(".json")][0]))
    r = after(mail, check, 60, "-v")
    assert r.full_line == BACK, r
    assert notes(r)[1:3] == ["probe %s had no pending record; measured from its signed send time" % first,
                             "probe %s returned, round trip 1.000s" % first], r


def test_a_probe_without_a_pending_record_older_than_lost_after_is_ignored_and_removed(tmp_path):
    mail, check = checker(tmp_path)
    mail.hold()
    first = sent_id(check("-v"))
    os.remove(os.path.join(check.state_dir, [f for f in os.listdir(check.state_dir) if f.endswith(".json")][0]))
    mail.release()
    r = after(mail, check, 400, "-v")
    assert r.full_line == FIRST, r
    assert ("probe %s ignored: sent 400s ago, no pending record and outside the 300s window (or older than what is "
            "remembered)" % first) in notes(r), r
    assert mail.mailbox(MONITOR).probes() == []


# -- not ours ---------------------------------------------------------------------------------------

def test_forged_foreign_and_quoted_probes_are_read_once_and_never_counted_nor_removed(tmp_path):
    mail, check = checker(tmp_path, "--name", "mine")
    now = mail.clock.now
    mail.append(MONITOR, probe_mail(check.secret, "another profile", now - 100)[1])
    mail.append(MONITOR, probe_mail(b"another check's secret, not ours", "mine", now - 100)[1])
    bounce = probe_mail(check.secret, "mine", now - 100)[1].replace(
        b"Content-Type: text/plain", b"Content-Type: multipart/report; report-type=delivery-status; boundary=x")
    mail.append(MONITOR, bounce)
    mail.append(MONITOR, plain_mail("Re: what is MRTP1.%s about?" % profile_key("mine")))
    mail.append(MONITOR, plain_mail("hello"))
    before = mail.mailbox(MONITOR).subjects()
    r = check("-v")
    assert r.full_line == FIRST, r
    assert [n for n in notes(r) if n.startswith("message ")] == [
        "message UID 2 ignored: bad signature (forged or tampered token)",
        "message UID 3 ignored: a delivery report (bounce) about a probe, not the probe itself",
        "message UID 4 ignored: no probe token",
    ], r   # another profile's probe is not even found by the search for this profile's key
    for _ in range(2):
        r = after(mail, check, 60, "-v")
        assert r.full_line == BACK and "ignored" not in r.stdout, r
    assert mail.mailbox(MONITOR).subjects() == before


@pytest.mark.parametrize("shared", [True, False], ids=["shared-state-dir-and-secret", "own-state-dirs-and-secrets"])
def test_two_profiles_on_one_mailbox_keep_to_their_own_probes(tmp_path, shared):
    mail = MailSystem()
    a = MemCheck(mail, tmp_path, "--name", "a", state="state" if shared else "a")
    # shared: one state directory and one secret, so b's probes verify with a's secret too
    b = MemCheck(mail, tmp_path, "--name", "b", **({"state": "state"} if shared else {"state": "b", "secret": "b" * 64}))
    for check in (a, b):
        assert check().text == "first probe sent, 1 in flight"
    for _ in range(3):
        mail.clock.advance(60)
        for check in (a, b):
            r = check("-v")
            assert (r.rc, r.text) == (0, "round trip 1.0s, 1 in flight, last success 59s ago"), r
            assert "ignored" not in r.stdout, r
    assert a.books() == b.books() == (4, 3, 0, 1, 0)


def test_keep_leaves_the_probes_and_counts_each_once_then_a_run_without_it_removes_them(tmp_path):
    mail, check = checker(tmp_path, "--keep")
    first = sent_id(check("-v"))
    r = after(mail, check, 60, "-v")
    second = sent_id(r)
    assert r.full_line == BACK, r
    r = after(mail, check, 60, "-v")
    assert r.full_line == BACK and "probe %s" % first not in r.stdout, r   # read once only
    assert len(mail.mailbox(MONITOR).probes()) == 2
    check.args.remove("--keep")
    r = after(mail, check, 60, "-v")
    assert r.full_line == BACK, r
    assert {"probe %s: duplicate of a probe already counted, not counted again" % pid for pid in (first, second)} \
        <= set(notes(r)), r
    assert mail.mailbox(MONITOR).probes() == []
