"""A clock that moves only when told: epoch seconds and a monotonic reading.

The check takes its epoch clock (send and collection times) and its budget's
monotonic clock from here; the mail system delivers by it, and a collector
that waits (--wait) moves it on to the next delivery or to the wait's end.
Nothing sleeps.
"""

# 2025-06-15 15:06:40 UTC: far from a day boundary, so dates in the daily
# housekeeping do not depend on when the tests run.
START = 1750000000.0
_MONOTONIC_AT_START = 1000.0


class FakeClock:
    """Epoch seconds (:meth:`time`) and a monotonic reading (:meth:`monotonic`), moved by :meth:`advance`."""

    def __init__(self, start: float = START) -> None:
        self.now = float(start)
        self._offset = self.now - _MONOTONIC_AT_START

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - self._offset

    def epoch(self, monotonic: float) -> float:
        """The epoch time of a *monotonic* reading (a Deadline's ``at``)."""
        return monotonic + self._offset

    def advance(self, seconds: float) -> float:
        """Move on by *seconds* (never back); the new epoch time."""
        if seconds < 0:
            raise ValueError("a clock does not go back: %r" % seconds)
        self.now += seconds
        return self.now

    def advance_to(self, epoch: float) -> float:
        """Move on to *epoch* when that is later than now; the new epoch time."""
        return self.advance(max(0.0, epoch - self.now))
