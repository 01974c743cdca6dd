"""Reading a history file for the report (lib/check_mail_roundtrip/history_read.py): every
well-formed line becomes a probe, a damaged one is skipped and counted with its number and why,
a torn last line is left out, and a file read a chunk at a time gives what it gives line by line.
Local files only."""

import math
import os

import pytest
from hypothesis import given, settings, strategies as st

from check_mail_roundtrip import history_read
from check_mail_roundtrip.history_read import JUNK, LATE, LOST, RETURNED, HistoryError, read_history
from tests.histories import probe, write

T0 = 1796000000.0  # 2026-11-30T00:53:20Z


def lines_of(history):
    return [(history.sent[i], None if math.isnan(history.rtt[i]) else history.rtt[i], history.outcome[i],
             history.folder[i], history.node[i], history.probe_id[i]) for i in range(len(history))]


def test_every_line_becomes_a_probe_with_its_send_time_round_trip_outcome_and_where_it_was_found(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, [probe(T0, 2.5, node="mon1", probe_id="a1"), probe(T0 + 60, None, probe_id="a2"),
                 probe(T0 + 120, 7.25, "junk", probe_id="a3"), probe(T0 + 60, 3700.0, "late", probe_id="a2")])
    h = read_history(path)
    assert lines_of(h) == [
        ("2026-11-30T00:53:20.000Z", 2.5, RETURNED, "INBOX", "mon1", "a1"),
        ("2026-11-30T00:54:20.000Z", None, LOST, "", "", "a2"),
        ("2026-11-30T00:55:20.000Z", 7.25, JUNK, "Junk", "", "a3"),
        ("2026-11-30T00:54:20.000Z", 3700.0, LATE, "INBOX", "", "a2"),
    ]
    assert (h.damaged, h.examples, h.truncated) == (0, [], False)


def test_damaged_lines_are_skipped_and_counted_with_their_numbers_and_why(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    good = probe(T0, 2.0)
    write(path, [good, "garbage", good.replace("returned", "bounced"), good.replace("2.000", "fast"),
                 good.replace("2026-11-30T00:53:20.000Z", "2026-02-30T00:53:20.000Z", 1), good,
                 good.replace(",2.000,", ",,"), good.replace("2.000", "-1")])
    h = read_history(path)
    assert len(h) == 2
    assert h.damaged == 6
    assert h.examples == [
        "line 3: 1 fields, not 9",
        "line 4: outcome 'bounced' is none of returned, junk, lost, late",
        "line 5: could not convert string to float: 'fast'",
        "line 6: '2026-02-30' is not a date",
        "line 8: rtt_s is empty",
    ]


def test_a_line_longer_than_the_bound_is_damaged_and_never_held_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(history_read, "CHUNK", 64)
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, [probe(T0, 1.0), "x" * 10000, probe(T0 + 60, 1.5), "y" * (history_read.MAX_LINE + 1),
                 probe(T0 + 120, 2.0)])
    h = read_history(path)
    assert [r for r in h.rtt] == [1.0, 1.5, 2.0]
    assert h.examples == ["line 3: longer than 4096 bytes", "line 5: longer than 4096 bytes"]


def test_a_torn_last_line_is_left_out_and_not_counted(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, [probe(T0, 1.0)])
    with open(path, "a") as fh:
        fh.write(probe(T0 + 60, 2.0)[:30])
    h = read_history(path)
    assert (len(h), h.damaged) == (1, 0)


def test_the_header_names_the_columns_and_more_columns_are_ignored(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    with open(path, "w") as fh:
        fh.write("probe_id,outcome,rtt_s,sent_utc,arrived_utc,folder,leg_out_s,leg_back_s,node,extra\n")
        fh.write("z9,returned,4.500,2026-11-30T00:53:20.000Z,2026-11-30T00:53:24.500Z,INBOX,1.250,3.250,n1,x\n")
    h = read_history(path)
    assert lines_of(h) == [("2026-11-30T00:53:20.000Z", 4.5, RETURNED, "INBOX", "n1", "z9")]
    assert (h.leg_out[0], h.leg_back[0]) == (1.25, 3.25)


def test_a_header_without_a_needed_column_makes_the_file_unreadable(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    with open(path, "w") as fh:
        fh.write("sent_utc,rtt_s\n2026-11-30T00:53:20.000Z,1.0\n")
    with pytest.raises(HistoryError, match="the header line has no column arrived_utc, outcome, folder"):
        read_history(path)


def test_a_quoted_folder_with_a_comma_is_one_field(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, [probe(T0, 1.0, "junk", folder='"Spam, old"')])
    assert read_history(path).folder == ["Spam, old"]


def test_times_without_milliseconds_or_with_more_are_taken_in_the_fixed_form(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, [probe(T0, 1.0).replace(".000Z", "Z", 1), probe(T0, 1.0).replace(".000Z", ".1234567Z", 1)])
    assert read_history(path).sent == ["2026-11-30T00:53:20.000Z", "2026-11-30T00:53:20.123Z"]


def test_a_symlink_or_a_directory_is_not_read(tmp_path):
    target = tmp_path / "real.csv"
    write(str(target), [probe(T0, 1.0)])
    os.symlink(str(target), str(tmp_path / "l-0123456789.history.csv"))
    with pytest.raises(HistoryError, match="is a symlink"):
        read_history(str(tmp_path / "l-0123456789.history.csv"))
    os.mkdir(str(tmp_path / "d-0123456789.history.csv"))
    with pytest.raises(HistoryError, match="is not a regular file|cannot be read"):
        read_history(str(tmp_path / "d-0123456789.history.csv"))


def test_reading_stops_after_the_most_lines_it_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(history_read, "MAX_LINES", 3)
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, [probe(T0 + i, 1.0) for i in range(5)])
    h = read_history(path)
    assert (len(h), h.truncated) == (2, True)  # the header is the first line


def test_the_lines_are_kept_as_they_stand_when_asked_for(tmp_path):
    path = str(tmp_path / "p-0123456789.history.csv")
    lines = [probe(T0, 1.0), "broken", probe(T0 + 60, None)]
    write(path, lines)
    assert read_history(path, keep_lines=True).lines == [lines[0], lines[2]]


_good = st.builds(
    lambda sent, rtt, outcome, folder, node: probe(
        T0 + sent, None if outcome == "lost" else rtt, outcome, folder=None if outcome == "lost" else folder,
        node=node),
    st.integers(0, 400 * 86400), st.floats(0, 1e5, allow_nan=False), st.sampled_from(["returned", "junk", "lost",
                                                                                     "late"]),
    st.sampled_from(["INBOX", "Junk", "Spam"]), st.sampled_from(["", "mon1"]))
_bad = st.sampled_from(["", "x", "1,2,3", ",,,,,,,,", probe(T0, 1.0).replace("returned", "nope"),
                        probe(T0, 1.0) + ",extra", "\u00e9" + probe(T0, 1.0)[1:]])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _good, _bad), max_size=60), st.sampled_from([48, 200, 1 << 20]))
def test_a_chunk_at_a_time_gives_what_line_by_line_gives(tmp_path_factory, rows, chunk):
    path = str(tmp_path_factory.mktemp("h") / "p-0123456789.history.csv")
    lines = [good if ok else bad for ok, good, bad in rows]
    write(path, lines)
    original = history_read.CHUNK
    history_read.CHUNK = chunk
    try:
        h = read_history(path)
    finally:
        history_read.CHUNK = original
    one_by_one = history_read.History()
    reader = history_read._Reader(one_by_one)
    for number, line in enumerate(lines, 2):
        reader.line(number, line.encode("utf-8"))
    assert lines_of(h) == lines_of(one_by_one)
    assert (h.damaged, h.examples) == (one_by_one.damaged, one_by_one.examples)
    assert h.damaged == sum(1 for ok, _g, _b in rows if not ok)
