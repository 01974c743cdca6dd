"""The history file (lib/check_mail_roundtrip/history.py): its lines, crash safety, pruning, the state's
thresholds; a property over runs killed anywhere; and one real run against the lab.

Whatever sequence of runs, faults and kills (while sending, between saving
the state and appending, in the middle of the append, while pruning), every
complete line of the history parses and no probe's outcome is written twice.
"""

import csv
import json
import os
import re
import stat
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st

from check_mail_roundtrip import history, state as state_mod
from check_mail_roundtrip.history import HEADER
from check_mail_roundtrip.ledger import JUNK, LATE, LOST, RETURNED, Settled
from check_mail_roundtrip.state import State, StateStore
from tests.checkrun import Checker
from tests.memlab import Killed, MailSystem, MemCheck

DAY = 86400.0
PROFILE = "history test"
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SECONDS = re.compile(r"\d+\.\d{3}")


# -- the lines -----------------------------------------------------------------------------------

def test_times_are_utc_with_milliseconds():
    assert history.utc(0) == "1970-01-01T00:00:00.000Z"
    assert history.utc(1796598262.1234) == "2026-12-06T23:04:22.123Z"
    assert history.utc(1796598262.9996) == "2026-12-06T23:04:23.000Z"


def test_a_line_has_the_columns_in_order():
    probe = Settled("4f0a9c1d2e3b4a59", 1796598201000, RETURNED, 1796598262.5, 61.5, "INBOX", (2.0, 59.25))
    assert history.line(probe, "mon1") == \
        "2026-12-06T23:03:21.000Z,2026-12-06T23:04:22.500Z,61.500,returned,INBOX,2.000,59.250,mon1,4f0a9c1d2e3b4a59"
    lost = Settled("4f0a9c1d2e3b4a5a", 1796598201123, LOST)
    assert history.line(lost, "mon1") == "2026-12-06T23:03:21.123Z,,,lost,,,,mon1,4f0a9c1d2e3b4a5a"


def test_fields_with_commas_quotes_or_line_ends_stay_one_csv_field_on_one_line():
    probe = Settled("4f0a9c1d2e3b4a59", 1796598201000, JUNK, 1796598202.0, 1.0, 'Spam, "bulk"', (None, 1.0))
    text = history.line(probe, "node\r\none")
    assert "\n" not in text and "\r" not in text
    assert next(csv.reader([text])) == ["2026-12-06T23:03:21.000Z", "2026-12-06T23:03:22.000Z", "1.000", "junk",
                                        'Spam, "bulk"', "", "1.000", "node  one", "4f0a9c1d2e3b4a59"]


def test_the_header_names_the_columns():
    assert HEADER == "sent_utc,arrived_utc,rtt_s,outcome,folder,leg_out_s,leg_back_s,node,probe_id"


# -- appending -------------------------------------------------------------------------------------

def probes(n, outcome=RETURNED, start=1796598201000):
    return [Settled("%016x" % i, start + 1000 * i, outcome, start / 1000.0 + i + 1, 1.0, "INBOX")
            for i in range(n)]


def test_a_file_without_a_line_end_in_its_last_64_kib_is_set_aside_and_started_afresh(tmp_path):
    path = str(tmp_path / "p.history.csv")
    with open(path, "wb") as f:
        f.write(HEADER.encode() + b"\n" + b"x" * history.TAIL)
    notes = []
    problem = history.append(path, probes(1), "mon1", notes)
    assert re.fullmatch(r"history file has no line end in its last 64 KiB \(not a history file\); kept aside as "
                        r"p\.history\.csv\.damaged-\d{8}T\d{6}-\d+, started afresh", problem), problem
    with open(path) as f:
        assert f.read() == HEADER + "\n" + history.line(probes(1)[0], "mon1") + "\n"
    (aside,) = [n for n in os.listdir(tmp_path) if ".damaged-" in n]
    assert os.path.getsize(tmp_path / aside) == len(HEADER) + 1 + history.TAIL


def test_appending_reads_only_the_end_of_the_file(tmp_path):
    path = str(tmp_path / "p.history.csv")
    history.append(path, probes(2000), "mon1", [])
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"2026-12-06T23:04")   # torn
    reads = []
    real = os.pread

    def pread(fd, n, offset):
        reads.append(n)
        return real(fd, n, offset)

    with mock.patch.object(history.os, "pread", pread):
        history.append(path, probes(1, LOST), "mon1", [])
    assert sum(reads) <= history.TAIL + 1 and size > history.TAIL, (reads, size)


def test_a_write_that_fails_is_undone_and_named(tmp_path):
    path = str(tmp_path / "p.history.csv")
    history.append(path, probes(1), "mon1", [])
    before = open(path, "rb").read()
    real = os.write

    def short_write(fd, data):
        return real(fd, data[:10])

    with mock.patch.object(history.os, "write", short_write), pytest.raises(history.Unwritable) as caught:
        history.append(path, probes(2), "mon1", [])
    assert str(caught.value) == "cannot write history file %s: only 10 of %d bytes written" % (
        path, len("".join(history.line(p, "mon1") + "\n" for p in probes(2))))
    assert open(path, "rb").read() == before


# -- pruning ---------------------------------------------------------------------------------------

def test_pruning_out_of_time_leaves_the_file_and_no_temp_file(tmp_path):
    path = str(tmp_path / "p.history.csv")
    history.append(path, probes(3 * history.CHECK_EVERY), "mon1", [])
    before = open(path, "rb").read()
    with pytest.raises(history.OutOfTime):
        history.prune(path, 1796598201.0 + 10, lambda: True, [])
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["p.history.csv"]


def test_a_pruning_cut_short_by_a_kill_leaves_a_temp_file_the_next_run_removes(tmp_path):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "--name", PROFILE)
    check()
    mail.clock.advance(60)
    check()
    store = StateStore(check.state_dir, PROFILE)
    stale = store.history_path + ".tmp-1-2"
    with open(stale, "w") as f:
        f.write(HEADER + "\n2025")
    mail.clock.advance(60)
    r = check()
    assert r.text == "round trip 1.0s, 1 in flight, last success 59s ago", r
    assert not os.path.exists(stale)


def test_pruning_streams_a_large_file_in_bounded_memory(tmp_path):
    import tracemalloc

    path = str(tmp_path / "p.history.csv")
    day = 86400 * 1000
    history.append(path, probes(60000, start=1796598201000 - 2 * day), "mon1", [])
    history.append(path, probes(60000, start=1796598201000), "mon1", [])
    tracemalloc.start()
    try:
        notes = []
        history.prune(path, 1796598201.0 - DAY, lambda: False, notes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert notes == ["history file p.history.csv pruned: 60000 line(s) sent before 2026-12-05T23:03:21.000Z "
                     "dropped, 60000 kept"]
    assert os.path.getsize(path) > 4 * 1024 * 1024 and peak < 1024 * 1024, peak
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# -- the state -----------------------------------------------------------------------------------

def test_a_state_file_of_an_earlier_version_without_thresholds_is_read(tmp_path):
    data = State(PROFILE).to_json()
    del data["thresholds"], data["history_pruned"]
    state = State.from_json(json.loads(json.dumps(data)), PROFILE)
    assert state.thresholds == {"warning": None, "critical": None} and state.history_pruned is None


@pytest.mark.parametrize("bad", [[120, 600], {"warning": "120"}, {"critical": -1}, {"warning": True}])
def test_thresholds_that_are_no_seconds_are_damage(bad):
    data = State(PROFILE).to_json()
    data["thresholds"] = bad
    with pytest.raises(ValueError, match="field 'thresholds' is not a table of seconds"):
        State.from_json(data, PROFILE)


def test_remove_abandoned_removes_the_history_too(tmp_path):
    store = StateStore(str(tmp_path), PROFILE)
    store.save(State(PROFILE))
    history.append(store.history_path, probes(1), "mon1", [])
    assert state_mod.remove_abandoned(store.path)
    assert os.listdir(tmp_path) == []


# -- any sequence of runs, faults and kills ------------------------------------------------------------

ACTIONS = st.sampled_from(["run", "run", "run", "hold", "release", "lose", "junk", "killed sending",
                           "killed before the append", "torn append", "killed pruning"])


def _history_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    complete = data.decode("utf-8").split("\n")[:-1]   # a torn last line is no line yet
    assert not complete or complete[0] == HEADER, complete[:2]
    return complete[1:]


def _parses(line):
    fields = next(csv.reader([line]))
    assert len(fields) == 9, line
    sent, arrived, rtt, outcome, folder, leg_out, leg_back, node, pid = fields
    assert LINE.fullmatch(sent) and outcome in (RETURNED, JUNK, LOST, LATE), line
    if outcome == LOST:
        assert arrived == rtt == folder == "", line
    else:
        assert LINE.fullmatch(arrived) and SECONDS.fullmatch(rtt) and arrived >= sent, line
        assert folder == {JUNK: "Junk", RETURNED: "INBOX"}.get(outcome, folder) in ("INBOX", "Junk"), line
    assert leg_out == leg_back == "" and node == "mon1" and re.fullmatch(r"[0-9a-f]{16}", pid), line
    return pid, outcome


def _killed_copying(path, fill):
    """A run killed while it copied the history to prune it: half a temp file left."""
    with open(path + ".tmp-1-2", "w") as f:
        f.write(HEADER + "\n2025")
    raise Killed()


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(ACTIONS, st.integers(1, 400), st.integers(0, 10 ** 6)), min_size=1, max_size=25))
def test_every_complete_line_parses_and_no_probe_is_written_twice(tmp_path_factory, steps):
    mail = MailSystem()
    check = MemCheck(mail, tmp_path_factory.mktemp("h"), "--name", PROFILE, "--node", "mon1", "-w", "60",
                     "-c", "90", "--lost-after", "300", "--history-days", "1")
    path = StateStore(check.state_dir, PROFILE).history_path
    killed = False
    for action, seconds, cut in steps:
        mail.clock.advance(seconds)
        if action == "hold":
            mail.hold()
        elif action == "release":
            mail.release()
        elif action == "lose":
            mail.lose(1)
        elif action == "junk":
            mail.junk_filter = not mail.junk_filter
        elif action == "killed sending":
            mail.smtp_killed(delivered=bool(cut % 2))
            with pytest.raises(Killed):
                check()
            mail.smtp_fails(None)
        elif action == "killed before the append":
            with mock.patch.object(history, "append", side_effect=Killed):
                try:
                    check()
                except Killed:
                    killed = True
        elif action == "torn append":
            size = os.path.getsize(path) if os.path.exists(path) else 0
            check()
            after = os.path.getsize(path) if os.path.exists(path) else 0
            if after > size:   # the run was stopped while it wrote: only some of its bytes are there
                os.truncate(path, size + cut % (after - size))
                killed = True
        elif action == "killed pruning":
            mail.clock.advance(DAY)
            with mock.patch.object(history, "replace_with", side_effect=_killed_copying):
                try:
                    check()
                except Killed:
                    killed = True
        else:
            check()
    mail.clock.advance(60)
    check()
    seen = [_parses(line) for line in _history_lines(path)]
    assert len(seen) == len(set(seen)), seen
    fates = {}
    for pid, outcome in seen:
        fates.setdefault(pid, []).append(outcome)
    for pid, outcomes in fates.items():
        assert outcomes in ([RETURNED], [JUNK], [LOST], [LOST, LATE], [LATE]), (pid, outcomes)
        assert outcomes != [LATE] or killed, (pid, outcomes)
    assert not [n for n in os.listdir(check.state_dir) if ".tmp-" in n]


# -- the lab ---------------------------------------------------------------------------------------

def test_a_real_run_writes_the_returned_line_with_its_folder_and_round_trip(lab, tmp_path):
    check = Checker(lab, tmp_path, "monitor@lab.test", None, "imaps", "smtp", "--node", "lab-node")
    assert check().rc == 0
    lab.wait_for("monitor@lab.test", 1)
    r = check()
    m = re.fullmatch(r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago \| .*", r.line)
    assert r.rc == 0 and m, r
    (name,) = [n for n in os.listdir(check.state_dir) if n.endswith(".history.csv")]
    path = os.path.join(check.state_dir, name)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        header, line = f.read().splitlines()
    assert header == HEADER
    sent, arrived, rtt, outcome, folder, leg_out, leg_back, node, pid = line.split(",")
    assert (outcome, folder, leg_out, leg_back, node) == ("returned", "INBOX", "", "", "lab-node"), line
    assert float(rtt) == float(m.group(1)) and LINE.fullmatch(sent) and LINE.fullmatch(arrived), (line, r)
    assert re.fullmatch(r"[0-9a-f]{16}", pid) and name == os.path.basename(
        [n for n in os.listdir(check.state_dir) if n.endswith(".json")][0])[:-5] + ".history.csv"
