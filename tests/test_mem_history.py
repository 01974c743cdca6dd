"""The history file in memory: the line each settled probe leaves, repair, pruning, housekeeping.

Every run appends the probes it settled (returned, filed as Junk, declared
lost, back late after that) to ``<state file stem>.history.csv`` beside the
state file: a header, then one line per probe, times UTC with milliseconds.
A torn last line is cut off before the next append; lines older than
--history-days go once a day; --history-days 0 writes nothing; the daily
housekeeping removes an abandoned profile's history with its state.
"""

import os
import stat
import subprocess
import sys

import pytest

from check_mail_roundtrip.history import HEADER
from check_mail_roundtrip.state import State, StateStore, ensure_directory
from tests.checkrun import COMMAND
from tests.memlab import MONITOR, MailSystem, MemCheck, probe_mail, sent_id

P = "MAIL_ROUNDTRIP "
DAY = 86400.0
OPTIONS = ("-w", "60", "-c", "90", "--lost-after", "300", "--node", "mon1")
BACK = P + "OK - round trip 1.0s, 1 in flight, last success 59s ago | junk=0;;;0 lost=0;;;0 " \
           "oldest_pending=0.0s;60;90;0 pending=1;;;0 rtt=1.0s;60;90;0 since_last_success=59.0s;;;0"
# The fake clock starts at 2025-06-15 15:06:40 UTC.
T0, T0_1 = "2025-06-15T15:06:40.000Z", "2025-06-15T15:06:41.000Z"
T1, T1_1 = "2025-06-15T15:07:40.000Z", "2025-06-15T15:07:41.000Z"


def checker(tmp_path, *options, **kwargs):
    mail = MailSystem()
    return mail, MemCheck(mail, tmp_path, *OPTIONS, *options, **kwargs)


def history_path(check, profile=None):
    store = StateStore(check.state_dir, profile or check.settings().profile)
    return store.history_path


def history(check):
    """The lines of the profile's history file (None when there is none)."""
    path = history_path(check)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n"), text
    return text.split("\n")[:-1]


def after(mail, check, seconds, *extra):
    mail.clock.advance(seconds)
    return check(*extra)


# -- the lines -------------------------------------------------------------------------------------

def test_a_returned_probe_leaves_one_line_with_its_times_round_trip_folder_and_node(tmp_path):
    mail, check = checker(tmp_path)
    first = sent_id(check("-v"))
    assert history(check) is None   # nothing settled yet
    r = after(mail, check, 60, "-v")
    assert (r.rc, r.full_line) == (0, BACK), r
    assert history(check) == [HEADER, "%s,%s,1.000,returned,INBOX,,,mon1,%s" % (T0, T0_1, first)]


def test_each_run_appends_the_probes_it_settled_in_order(tmp_path):
    mail, check = checker(tmp_path)
    ids = [sent_id(check("-v"))]
    for _ in range(3):
        ids.append(sent_id(after(mail, check, 60, "-v")))
    times = ["2025-06-15T15:%02d:%02d.000Z" % divmod(6 * 60 + 40 + 60 * i, 60) for i in range(3)]
    arrived = ["2025-06-15T15:%02d:%02d.000Z" % divmod(6 * 60 + 41 + 60 * i, 60) for i in range(3)]
    assert history(check) == [HEADER] + ["%s,%s,1.000,returned,INBOX,,,mon1,%s" % (times[i], arrived[i], ids[i])
                                         for i in range(3)]


def test_a_probe_filed_as_spam_is_a_junk_line_naming_the_junk_folder(tmp_path):
    mail, check = checker(tmp_path)
    mail.junk_filter = True
    first = sent_id(check("-v"))
    r = after(mail, check, 60)
    assert (r.rc, r.full_line) == (1, P + "WARNING - probe delivered to Junk, round trip 1.0s, 1 in flight, last "
                                   "success 59s ago | junk=1;;;0 lost=0;;;0 oldest_pending=0.0s;60;90;0 "
                                   "pending=1;;;0 rtt=1.0s;60;90;0 since_last_success=59.0s;;;0"), r
    assert history(check) == [HEADER, "%s,%s,1.000,junk,Junk,,,mon1,%s" % (T0, T0_1, first)]


def test_the_folder_is_the_collection_folder_as_named(tmp_path):
    mail = MailSystem()
    mail.mailbox(MONITOR).add_folder("Monitoring, probes")
    check = MemCheck(mail, tmp_path, *OPTIONS, "--imap-folder", "Monitoring, probes")
    probe, raw = probe_mail(check.secret, check.settings().profile, mail.clock.now - 5, node="mon1")
    mail.append(MONITOR, raw, at=mail.clock.now - 4, folder="Monitoring, probes")
    r = check()
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 2.0s, 1 in flight, last success 3s ago | junk=0;;;0 "
                                   "lost=0;;;0 oldest_pending=0.0s;60;90;0 pending=1;;;0 rtt=2.0s;60;90;0 "
                                   "since_last_success=3.0s;;;0"), r
    assert history(check) == [HEADER, '2025-06-15T15:06:35.000Z,2025-06-15T15:06:37.000Z,2.000,returned,'
                                      '"Monitoring, probes",,,mon1,%s' % probe.probe_id]


def test_a_lost_probe_is_a_lost_line_and_its_late_return_a_late_line(tmp_path):
    mail, check = checker(tmp_path, "--lost-warning", "1")
    mail.hold()
    late = sent_id(check("-v"))
    r = after(mail, check, 301)
    assert (r.rc, r.full_line) == (0, P + "OK - no probe back this run, 1 probe lost, 1 in flight, no success yet | "
                                   "junk=0;;;0 lost=1;1;;0 oldest_pending=0.0s;60;90;0 pending=1;;;0"), r
    assert history(check) == [HEADER, "%s,,,lost,,,,mon1,%s" % (T0, late)]
    mail.release()
    r = after(mail, check, 60)
    assert (r.rc, r.full_line) == (0, P + "OK - round trip 1.0s, 1 lost probe came back late, 1 in flight, "
                                   "last success 59s ago | junk=0;;;0 lost=0;1;;0 oldest_pending=0.0s;60;90;0 "
                                   "pending=1;;;0 rtt=1.0s;60;90;0 since_last_success=59.0s;;;0"), r
    lines = history(check)
    # released at 15:11:41: both probes arrive in that second; the late one 301 s after it was sent
    assert lines[:3] == [HEADER, "%s,,,lost,,,,mon1,%s" % (T0, late),
                         "%s,2025-06-15T15:11:42.000Z,302.000,late,INBOX,,,mon1,%s" % (T0, late)], lines
    assert lines[3].startswith("2025-06-15T15:11:41.000Z,2025-06-15T15:11:42.000Z,1.000,returned,INBOX,,,mon1,")
    assert len(lines) == 4


def test_a_reflected_probe_has_its_legs(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--to", "echo@far.test", "--node", "mon1")
    mail.reflector("echo@far.test", check.secret, pause=0.5, back=4.0)
    mail.delay = 2.0
    first = sent_id(check("-v"))
    r = after(mail, check, 60)
    assert r.text == "round trip 7.0s (out 2.0s, back 4.5s), 1 in flight, last success 53s ago", r
    assert history(check) == [HEADER, "%s,2025-06-15T15:06:47.000Z,7.000,returned,INBOX,2.000,4.500,mon1,%s"
                              % (T0, first)]


def test_each_node_writes_its_own_probes_under_its_name(tmp_path):
    mail = MailSystem()
    options = ("--name", "ha-zone", "-w", "60", "-c", "90")
    alpha = MemCheck(mail, tmp_path, *options, "--node", "alpha", state="alpha")
    beta = MemCheck(mail, tmp_path, *options, "--node", 'beta "2", east', state="beta")
    a, b = sent_id(alpha("-v")), sent_id(beta("-v"))
    mail.clock.advance(60)
    r = alpha()
    assert r.text == "round trip 1.0s, 1 in flight, last success 59s ago", r
    r = beta()   # alpha's new probe has just arrived
    assert r.text == "round trip 1.0s, 1 in flight, last success 0s ago", r
    assert history(alpha) == [HEADER, "%s,%s,1.000,returned,INBOX,,,alpha,%s" % (T0, T0_1, a)]
    assert history(beta) == [HEADER, '%s,%s,1.000,returned,INBOX,,,"beta ""2"", east",%s' % (T0, T0_1, b)]


# -- the file ------------------------------------------------------------------------------------

def test_the_history_file_is_the_owners_alone_whatever_the_umask(tmp_path):
    mail, check = checker(tmp_path)
    old = os.umask(0)
    try:
        check()
        after(mail, check, 60)
    finally:
        os.umask(old)
    path = history_path(check)
    assert os.path.basename(path) == os.path.basename(check_state_path(check))[:-len(".json")] + ".history.csv"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def check_state_path(check):
    return StateStore(check.state_dir, check.settings().profile).path


def test_a_torn_last_line_is_cut_off_before_the_next_lines(tmp_path):
    mail, check = checker(tmp_path)
    first = sent_id(check("-v"))
    second = sent_id(after(mail, check, 60, "-v"))
    with open(history_path(check), "ab") as f:   # a run stopped while it wrote
        f.write(b"2025-06-15T15:07:40.000Z,2025-06-15T1")
    r = after(mail, check, 60, "-v")
    assert (r.rc, r.full_line) == (0, BACK), r
    assert ("history file %s: an incomplete last line (37 bytes, from a run that was stopped while writing) cut off"
            % os.path.basename(history_path(check))) in r.stdout.splitlines(), r
    assert history(check) == [HEADER, "%s,%s,1.000,returned,INBOX,,,mon1,%s" % (T0, T0_1, first),
                              "%s,%s,1.000,returned,INBOX,,,mon1,%s" % (T1, T1_1, second)]


def test_a_torn_first_write_starts_the_file_afresh(tmp_path):
    mail, check = checker(tmp_path)
    first = sent_id(check("-v"))
    ensure_directory(check.state_dir)
    with open(history_path(check), "wb") as f:
        f.write(HEADER[:20].encode())
    after(mail, check, 60)
    assert history(check) == [HEADER, "%s,%s,1.000,returned,INBOX,,,mon1,%s" % (T0, T0_1, first)]


def test_a_symlink_in_place_of_the_history_file_is_set_aside_not_followed(tmp_path):
    mail, check = checker(tmp_path)
    first = sent_id(check("-v"))
    target = tmp_path / "elsewhere"
    target.write_text("not to be touched\n")
    os.symlink(str(target), history_path(check))
    r = after(mail, check, 60)
    name = os.path.basename(history_path(check))
    assert r.rc == 1, r
    assert r.full_line.startswith(P + "WARNING - history file is a symlink (not followed); kept aside as %s.damaged-"
                                  % name), r
    assert r.full_line.endswith(", started afresh, round trip 1.0s, 1 in flight, last success 59s ago | junk=0;;;0 "
                                "lost=0;;;0 oldest_pending=0.0s;60;90;0 pending=1;;;0 rtt=1.0s;60;90;0 "
                                "since_last_success=59.0s;;;0"), r
    assert target.read_text() == "not to be touched\n"
    assert history(check) == [HEADER, "%s,%s,1.000,returned,INBOX,,,mon1,%s" % (T0, T0_1, first)]
    r = after(mail, check, 60)
    assert (r.rc, r.full_line) == (0, BACK), r


def test_history_days_0_writes_no_history_and_leaves_one_there_alone(tmp_path):
    mail, check = checker(tmp_path, "--history-days", "0")
    check()
    r = after(mail, check, 60)
    assert (r.rc, r.full_line) == (0, BACK), r
    assert history(check) is None
    with open(history_path(check), "w") as f:
        f.write(HEADER + "\n2020-01-01T00:00:00.000Z,,,lost,,,,mon1,0123456789abcdef\n")
    after(mail, check, 2 * DAY)
    assert history(check) == [HEADER, "2020-01-01T00:00:00.000Z,,,lost,,,,mon1,0123456789abcdef"]


# -- pruning ---------------------------------------------------------------------------------------

OLD = "2024-05-10T15:06:39.999Z,2024-05-10T15:06:41.000Z,1.001,returned,INBOX,,,mon1,00000000000000aa"
YOUNG = "2024-05-11T15:06:40.000Z,,,lost,,,,mon1,00000000000000bb"


def test_lines_older_than_history_days_go_once_a_day(tmp_path):
    mail, check = checker(tmp_path, "--history-days", "400")   # 400 days before the start: 2024-05-11 15:06:40
    ensure_directory(check.state_dir)
    path = history_path(check)
    with open(path, "w") as f:
        f.write(HEADER + "\n" + OLD + "\n" + YOUNG + "\n" + "damaged line\n")
    r = check("-v")   # the first run prunes
    assert (r.rc, r.full_line) == (0, P + "OK - first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 "
                                   "oldest_pending=0.0s;60;90;0 pending=1;;;0"), r
    assert ("history file %s pruned: 1 line(s) sent before 2024-05-11T15:06:40.000Z dropped, and 1 damaged one(s), "
            "1 kept" % os.path.basename(path)) in r.stdout.splitlines(), r
    assert history(check) == [HEADER, YOUNG]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert check.state()["history_pruned"] == mail.clock.now
    with open(path, "a") as f:
        f.write(OLD + "\n")
    r = after(mail, check, DAY - 1, "-v")   # less than a day later: not pruned
    assert not [n for n in r.stdout.splitlines() if "pruned" in n], r
    assert history(check)[:3] == [HEADER, YOUNG, OLD]
    r = after(mail, check, 1, "-v")   # a day later: pruned again, now YOUNG is too old as well
    assert ("history file %s pruned: 2 line(s) sent before 2024-05-12T15:06:40.000Z dropped, 2 kept"
            % os.path.basename(path)) in r.stdout.splitlines(), r
    lines = history(check)
    assert lines[0] == HEADER and len(lines) == 3 and all(n.startswith("2025-06-1") for n in lines[1:]), lines
    assert check.state()["history_pruned"] == mail.clock.now


def test_pruning_with_nothing_to_drop_leaves_the_file_as_it_is(tmp_path):
    mail, check = checker(tmp_path)
    ensure_directory(check.state_dir)
    path = history_path(check)
    with open(path, "w") as f:
        f.write(HEADER + "\n" + YOUNG + "\n")
    before = os.stat(path).st_ino
    r = check("-v")
    assert not [n for n in r.stdout.splitlines() if "pruned" in n], r
    assert os.stat(path).st_ino == before and history(check) == [HEADER, YOUNG]
    assert check.state()["history_pruned"] == mail.clock.now


# -- the state: thresholds ---------------------------------------------------------------------------

def test_the_state_records_the_round_trip_thresholds_for_the_report(tmp_path):
    mail, check = checker(tmp_path)
    check()
    assert check.state()["thresholds"] == {"warning": 60, "critical": 90}
    after(mail, check, 60, "-w", "~:30", "-c", "0:45")
    assert check.state()["thresholds"] == {"warning": None, "critical": 45}
    after(mail, check, 60, "-w", ":50", "-c", "@0:40")
    assert check.state()["thresholds"] == {"warning": 50, "critical": None}


# -- housekeeping --------------------------------------------------------------------------------

def old_profile(check, profile, days, lines=True):
    """A state file (and history) of *profile* last touched *days* ago."""
    store = StateStore(check.state_dir, profile)
    ensure_directory(check.state_dir)
    store.save(State(profile))
    if lines:
        with open(store.history_path, "w") as f:
            f.write(HEADER + "\n" + YOUNG + "\n")
    when = check.mail.clock.now - days * DAY
    os.utime(store.path, (when, when))
    return store


def test_housekeeping_removes_an_abandoned_profiles_history_with_its_state(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--name", "current")
    abandoned, young = old_profile(check, "tried once", 8), old_profile(check, "still in use", 2)
    _probe, raw = probe_mail(check.secret, "still in use", mail.clock.now - 2 * DAY)
    r = check("-v")
    assert r.full_line == P + "OK - first probe sent, 1 in flight | junk=0;;;0 lost=0;;;0 " \
                              "oldest_pending=0.0s;120;600;0 pending=1;;;0", r
    assert ("removed the state file of abandoned profile 'tried once' (no run for more than 7d): %s"
            % os.path.basename(abandoned.path)) in r.stdout.splitlines(), r
    assert not os.path.exists(abandoned.path) and not os.path.exists(abandoned.history_path)
    assert os.path.exists(young.path) and os.path.exists(young.history_path)


# -- the option ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1", "1.5", "36501", "a year"])
def test_history_days_is_a_whole_number_of_days(tmp_path, value):
    p = subprocess.run([sys.executable, COMMAND, "--from", MONITOR, "--state-dir", str(tmp_path),
                        "--history-days=" + value], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stdout) == (3, P + "UNKNOWN - usage error: argument --history-days: must be a whole "
                                        "number of days from 0 to 36500: %r (see --help)\n" % value), p
