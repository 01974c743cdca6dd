"""The report's figures (lib/check_mail_roundtrip/report_stats.py, report_text.py): shares by
threshold, nearest-rank percentiles, windows by send time, a late arrival instead of its loss,
hourly and daily buckets, runs of lost probes, the verdict, and how shares read.  In-process,
histories as the check writes them."""

import math

from hypothesis import given, settings, strategies as st

from check_mail_roundtrip.history_read import read_history
from check_mail_roundtrip.report_stats import Outage, Thresholds, nearest_rank, summarise, verdict
from check_mail_roundtrip.report_text import percent, seconds
from tests.histories import probe, write

NOW = 1796000000.0  # 2026-11-30T00:53:20Z
HOUR, DAY = 3600.0, 86400.0
LIMITS = Thresholds(30.0, 90.0)


def summary_of(tmp_path, lines, limits=LIMITS, **kw):
    path = str(tmp_path / "p-0123456789.history.csv")
    write(path, lines)
    return summarise(read_history(path), NOW, limits, **kw)


def shares(w):
    return (w.probes, w.within_w, w.within_c, w.later, w.junk, w.lost)


def test_each_probe_counts_once_back_within_w_within_c_later_in_junk_or_lost(tmp_path):
    lines = [probe(NOW - HOUR - i * 60, float(rtt)) for i, rtt in enumerate(range(1, 101))]
    lines += [probe(NOW - 2 * HOUR - i * 60, None) for i in range(5)]
    lines += [probe(NOW - 3 * HOUR, 5.0, "junk"), probe(NOW - 3 * HOUR, 500.0, "junk")]
    day = summary_of(tmp_path, lines).windows[0]
    assert day.name == "24 h"
    assert shares(day) == (107, 30, 60, 10, 2, 5)
    # nearest rank over what came back, Junk too: 1..100, 5, 500
    assert day.rtts == (50.0, 96.0, 100.0, 500.0)


def test_a_probe_counted_lost_that_came_back_late_counts_by_its_round_trip_and_not_as_lost(tmp_path):
    lines = [probe(NOW - HOUR, 2.0), probe(NOW - 2 * HOUR, None, probe_id="x1"),
             probe(NOW - 3 * HOUR, None, probe_id="x2"), probe(NOW - 2 * HOUR, 3900.0, "late", probe_id="x1")]
    s = summary_of(tmp_path, lines)
    assert shares(s.windows[0]) == (3, 1, 0, 1, 0, 1)
    assert s.windows[0].rtts == (2.0, 3900.0, 3900.0, 3900.0)
    assert s.outages == [Outage("2026-11-29T21:53:20.000Z", "2026-11-29T21:53:20.000Z", 1)]


def test_windows_reach_back_24_hours_7_days_30_days_and_the_whole_history_by_send_time(tmp_path):
    lines = [probe(NOW - 1 * HOUR, 1.0), probe(NOW - 2 * DAY, 40.0), probe(NOW - 10 * DAY, 100.0, "junk"),
             probe(NOW - 100 * DAY, None), probe(NOW - 23.99 * HOUR, 1.0), probe(NOW - 24.01 * HOUR, 1.0)]
    s = summary_of(tmp_path, lines)
    assert [(w.name, shares(w)) for w in s.windows] == [
        ("24 h", (2, 2, 0, 0, 0, 0)),
        ("7 d", (4, 3, 1, 0, 0, 0)),
        ("30 d", (5, 3, 1, 0, 1, 0)),
        ("all", (6, 3, 1, 0, 1, 1)),
    ]
    assert (s.first, s.last) == ("2026-08-22T00:53:20.000Z", "2026-11-29T23:53:20.000Z")


def test_since_leaves_out_earlier_probes_and_until_later_ones(tmp_path):
    lines = [probe(NOW - 50 * DAY, 1.0), probe(NOW - 5 * DAY, 1.0), probe(NOW - HOUR, 1.0), probe(NOW + HOUR, 1.0)]
    s = summary_of(tmp_path, lines, since=NOW - 10 * DAY, until=True)
    assert [w.probes for w in s.windows] == [1, 2, 2, 2]
    assert summary_of(tmp_path, lines).windows[-1].probes == 4


def test_lines_out_of_order_are_counted_by_their_send_times(tmp_path):
    lines = [probe(NOW - HOUR, 1.0), probe(NOW - 2 * DAY, None), probe(NOW - 30 * HOUR, 2.0), probe(NOW - 3 * HOUR, 3.0)]
    s = summary_of(tmp_path, lines)
    assert [w.probes for w in s.windows] == [2, 4, 4, 4]
    assert [p[1] for p in s.points] == [3.0, 1.0]


def test_hours_and_days_carry_their_probes_round_trips_and_losses(tmp_path):
    base = NOW - NOW % HOUR - 5 * HOUR  # the start of an hour
    lines = [probe(base + 60 * i, float(i + 1)) for i in range(20)] + [probe(base + 1800, None),
                                                                       probe(base + 1900, 7.0, "junk")]
    s = summary_of(tmp_path, lines)
    hour = [b for b in s.hours if b.start == base]
    assert len(hour) == 1
    assert (hour[0].probes, hour[0].p50, hour[0].p95, hour[0].max, hour[0].lost, hour[0].junk) == (
        22, 10.0, 19.0, 20.0, 1, 1)  # p95 of 1..20 and 7: the 20th of 21
    assert sum(b.probes for b in s.days) == 22


def test_runs_of_lost_probes_are_one_outage_each_newest_first(tmp_path):
    lines = ([probe(NOW - 10 * HOUR + 60 * i, None) for i in range(4)] + [probe(NOW - 9 * HOUR, 1.0)]
             + [probe(NOW - 2 * HOUR, None)] + [probe(NOW - 40 * DAY, None)])
    s = summary_of(tmp_path, lines)
    assert s.outages == [Outage("2026-11-29T22:53:20.000Z", "2026-11-29T22:53:20.000Z", 1),
                         Outage("2026-11-29T14:53:20.000Z", "2026-11-29T14:56:20.000Z", 4)]


def test_the_slowest_table_names_the_slowest_probes_of_30_days_with_where_they_were_found(tmp_path):
    lines = [probe(NOW - i * HOUR, float(i), node="mon%d" % (i % 2)) for i in range(1, 30)]
    lines += [probe(NOW - 31 * DAY, 9999.0), probe(NOW - 2 * DAY, 77.0, "junk", leg_out="30.000", leg_back="47.000")]
    slow = summary_of(tmp_path, lines).slowest
    assert [(p.rtt, p.folder, p.node) for p in slow[:3]] == [(77.0, "Junk", ""), (29.0, "INBOX", "mon1"),
                                                             (28.0, "INBOX", "mon0")]
    assert (slow[0].leg_out, slow[0].leg_back) == (30.0, 47.0)
    assert len(slow) == 10


def test_a_history_without_probes_has_empty_windows(tmp_path):
    s = summary_of(tmp_path, [])
    assert [shares(w) for w in s.windows] == [(0, 0, 0, 0, 0, 0)] * 4
    assert (s.points, s.hours, s.days, s.slowest, s.outages, s.first) == ([], [], [], [], [], None)
    assert verdict(s.windows[0], LIMITS) == "grey"


def test_the_verdict_is_green_amber_or_red_by_the_share_back_within_c_and_the_percentiles(tmp_path):
    def day(lines):
        return verdict(summary_of(tmp_path, lines).windows[0], LIMITS)

    fast = [probe(NOW - HOUR - i * 60, 2.0) for i in range(100)]
    assert day(fast) == "green"
    assert day(fast[:99] + [probe(NOW - 5 * HOUR, None)]) == "green"             # 99 % back within -c
    assert day(fast[:98] + [probe(NOW - 5 * HOUR - i, None) for i in range(2)]) == "amber"
    assert day(fast[:94] + [probe(NOW - 5 * HOUR - i, None) for i in range(6)]) == "red"   # under 95 %
    slowish = [probe(NOW - HOUR - i * 60, 2.0 if i < 90 else 60.0) for i in range(100)]
    assert day(slowish) == "amber"                                                # p95 beyond -w
    assert day([probe(NOW - HOUR - i * 60, 95.0) for i in range(100)]) == "red"  # p50 beyond -c


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), st.floats(0.01, 1.0))
def test_nearest_rank_is_the_smallest_value_at_least_that_share_does_not_exceed(values, share):
    ordered = sorted(values)
    p = nearest_rank(ordered, share)
    assert p in values
    assert sum(1 for v in values if v <= p) >= share * len(values) - 1e-9
    assert sum(1 for v in values if v < p) < share * len(values) + 1e-9


_probes = st.lists(st.tuples(st.floats(0, 40 * DAY), st.one_of(st.none(), st.floats(0, 2000)),
                             st.booleans()), max_size=80)


@settings(max_examples=150, deadline=None)
@given(_probes, st.floats(1, 100), st.floats(100, 1000))
def test_the_shares_of_every_window_add_up_to_its_probes_and_follow_the_thresholds(tmp_path_factory, rows, w, c):
    lines = [probe(NOW - age, rtt, "lost" if rtt is None else ("junk" if junk else "returned"))
             for age, rtt, junk in rows]
    path = str(tmp_path_factory.mktemp("h") / "p-0123456789.history.csv")
    write(path, lines)
    s = summarise(read_history(path), NOW, Thresholds(w, c))
    for window, span in zip(s.windows, (DAY, 7 * DAY, 30 * DAY, math.inf)):
        inside = [(round(rtt, 3) if rtt is not None else None, junk) for age, rtt, junk in rows if age < span]
        assert window.probes == window.within_w + window.within_c + window.later + window.junk + window.lost
        if all(abs(age - span) > 0.01 for age, _r, _j in rows):
            assert window.probes == len(inside)
            assert window.lost == sum(1 for r, _j in inside if r is None)
            assert window.junk == sum(1 for r, j in inside if r is not None and j)
            assert window.within_w == sum(1 for r, j in inside if r is not None and not j and r <= w)
            assert window.later == sum(1 for r, j in inside if r is not None and not j and r > c)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_a_share_reads_0_or_100_percent_only_when_it_is(count, total):
    count = min(count, total)
    text = percent(count, total)
    assert (text == "0.00 %") == (count == 0)
    assert (text == "100.00 %") == (count == total)


def test_round_trips_read_in_seconds_with_sensible_precision():
    assert [seconds(v) for v in (None, 0.042, 2.14, 99.94, 612.4, 5400.0)] == [
        "\u2013", "0.04 s", "2.1 s", "99.9 s", "612 s", "1.5 h"]
