"""The time budget: deadlines, the step alarm, and how steps report a timeout."""

import signal
import time

import nagiosplugin
import pytest

from check_mail_roundtrip.budget import Budget, Deadline
from check_mail_roundtrip.failure import BudgetExhausted, StepFailure, step


def _outer_alarm(seconds):
    fired = []
    signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return fired


def teardown_function():
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


def test_a_step_that_overruns_its_deadline_fails_by_name_and_restores_the_outer_timer():
    fired = _outer_alarm(5.0)
    t0 = time.monotonic()
    with pytest.raises(StepFailure) as info:
        with step("IMAP fetch", Deadline(time.monotonic() + 0.2)):
            for _ in range(100):  # a server drip-feeding its reply: every read succeeds
                time.sleep(0.05)
    assert str(info.value) == "IMAP fetch failed: timed out"
    assert 0.15 < time.monotonic() - t0 < 1.0
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 3.5 < left <= 4.85  # the outer alarm goes on with the time it had left
    assert not fired


def test_an_outer_alarm_that_comes_first_is_left_alone():
    _outer_alarm(0.2)
    handler = signal.getsignal(signal.SIGALRM)
    with step("SMTP send", Deadline(time.monotonic() + 10)):
        assert signal.getsignal(signal.SIGALRM) is handler


def test_a_step_within_its_deadline_leaves_no_timer_behind():
    with step("SMTP connect", Deadline(time.monotonic() + 5)):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_errors_inside_a_step_name_the_step_and_nagiosplugin_timeout_passes():
    with pytest.raises(StepFailure, match="^IMAP login failed: connection refused$"):
        with step("IMAP login", Deadline(time.monotonic() + 5)):
            raise ConnectionRefusedError()
    with pytest.raises(StepFailure, match="no time left in the run's budget"):
        with step("SMTP auth", Deadline(time.monotonic() + 5)):
            raise BudgetExhausted()
    with pytest.raises(nagiosplugin.Timeout):
        with step("SMTP auth", Deadline(time.monotonic() + 5)):
            raise nagiosplugin.Timeout("30s")


def test_budget_shares_and_deadlines():
    now = [100.0]
    budget = Budget(10.0, clock=lambda: now[0])
    d = budget.share(0.5)  # half of (10 - reserve 0.5)
    assert d.at == pytest.approx(104.75)
    now[0] = 104.8
    with pytest.raises(BudgetExhausted):
        d.left()
    assert budget.remaining() == pytest.approx(5.2)
