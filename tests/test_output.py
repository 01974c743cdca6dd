"""Tests for the output helpers of lib/check_mail_roundtrip/check.py:
plain decimals, perfdata threshold fields and short durations; each context
says its own figure, the Summary orders and joins."""

import re

import pytest
from hypothesis import given, settings, strategies as st
from nagiosplugin import Range

from check_mail_roundtrip.check import ago, plain, threshold_field

PLAIN_RE = re.compile(r"^[0-9]+\.[0-9]{1,3}$")


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(0, 1e9), st.floats(0, 1e-3), st.floats(0, 1e-300), st.integers(0, 10**9)))
def test_plain_never_produces_an_exponent(value):
    text = plain(value)
    assert "e" not in text.lower()
    assert PLAIN_RE.match(text), text
    assert abs(float(text) - value) <= 0.0005 + 1e-12 * value


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(0, 1e9), st.integers(0, 10**12)))
def test_plain_counts_are_integers(value):
    text = plain(value, seconds=False)
    assert re.fullmatch(r"[0-9]+", text), text
    assert int(text) == int(value)


@pytest.mark.parametrize("value, text", [
    (0, "0.0"), (0.0, "0.0"), (1e-10, "0.0"), (5e-324, "0.0"), (0.0004, "0.0"), (0.0006, "0.001"),
    (1.5, "1.5"), (2, "2.0"), (120.25, "120.25"), (1e9, "1000000000.0"), (123456789.123, "123456789.123"),
])
def test_plain_examples(value, text):
    assert plain(value) == text


@pytest.mark.parametrize("spec, field", [
    ("120", "120"),
    ("0:120", "120"),
    ("10:", ""),
    ("@0:5", ""),
    ("~:5", ""),
    ("", ""),
    ("0:1.5", "1.5"),
    ("2.5", "2.5"),
    ("10:20", ""),
    ("@10", ""),
])
def test_threshold_field(spec, field):
    assert threshold_field(Range(spec)) == field


def test_threshold_field_none():
    assert threshold_field(None) == ""


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (-5, "0s"), (0.9, "0s"), (45, "45s"), (89, "89s"), (89.99, "89s"),
    (90, "1m"), (300, "5m"), (5399, "89m"), (5400, "1h"), (3 * 3600, "3h"),
    (48 * 3600 - 1, "47h"), (48 * 3600, "2d"), (10 * 86400 + 5, "10d"),
])
def test_ago(seconds, text):
    assert ago(seconds) == text


@settings(max_examples=500, deadline=None)
@given(st.floats(-1e6, 1e9))
def test_ago_is_short_and_well_formed(seconds):
    assert re.fullmatch(r"[0-9]{1,5}[smhd]|[0-9]+d", ago(seconds))


def test_each_context_says_its_own_figure_and_the_summary_orders_and_joins():
    import nagiosplugin
    from nagiosplugin.state import Warn

    from check_mail_roundtrip.check import Figure, Note, Summary
    from check_mail_roundtrip.roundtrip import Report

    class Run(nagiosplugin.Resource):
        report = Report()

        def probe(self):
            yield nagiosplugin.Metric("pending", 3, min=0, context="pending")
            yield nagiosplugin.Metric("queue", 7, context="queue")
            yield nagiosplugin.Metric("state", "state file kept | aside", context="state")

    def queue(metric, rng, report):  # a figure of its own, with its own words
        return "queue of %d%s" % (metric.value, " beyond %s" % rng.end if rng else "")

    check = nagiosplugin.Check(
        Run(), Figure("pending", seconds=False, evaluated=False, words=lambda m, rng, report: "%d in flight" % m.value),
        Figure("queue", "0:5", "0:10", seconds=False, words=queue), Note("state", Warn), Summary())
    check()
    assert check.summary_str == "queue of 7 beyond 5, state file kept / aside, 3 in flight"
    assert check.perfdata == ["pending=3;;;0", "queue=7;5;10"]
