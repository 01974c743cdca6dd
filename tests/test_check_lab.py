"""The check against the real lab: whole status lines and exit codes."""

import re

from tests.checkrun import Checker

PERF_OK = r"lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"


def test_first_run_sends_the_first_probe(lab, tmp_path):
    r = Checker(lab, tmp_path)()
    assert r.rc == 0, r
    assert r.line == (
        "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight "
        "| lost=0;;;0 oldest_pending=0.0s;120;600;0 pending=1;;;0"
    )
    lab.wait_for("monitor@lab.test", 1)


def test_round_trip_straight_to_the_monitor_mailbox(lab, tmp_path):
    check = Checker(lab, tmp_path)
    assert check().rc == 0
    lab.wait_for("monitor@lab.test", 1)
    r = check()
    assert r.rc == 0, r
    assert re.fullmatch(
        r"MAIL_ROUNDTRIP OK - round trip (\d+\.\d+)s, 1 in flight, last success \d+s ago "
        r"\| " + PERF_OK + r" rtt=\1s;120;600;0 since_last_success=\d+\.\d+s;;;0",
        r.line,
    ), r
    assert 0 <= r.perf["rtt"] < 5
    # the returned probe was removed, the new one is on its way
    msgs = lab.wait_for("monitor@lab.test", 1)
    assert len(msgs) == 1


def test_round_trip_through_the_echo_address(lab, tmp_path):
    check = Checker(lab, tmp_path, to="echo@lab.test")
    assert check().rc == 0
    lab.wait_for("monitor@lab.test", 1)
    r = check()
    assert r.rc == 0, r
    assert r.text.startswith("round trip "), r
    assert "rtt" in r.perf
