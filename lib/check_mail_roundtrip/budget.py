"""Time budget: the run's ``-t`` seconds, shared out among its steps.

Each network step gets a :class:`Deadline`; before every command the
transport arms the socket with the time left, so a silent or slow server can
hold a step at most until its deadline and the check always ends by itself.
"""

import contextlib
import signal
import threading
import time

from .failure import BudgetExhausted

# Time kept back for writing the state and printing the result.
RESERVE = 0.5


class Budget:
    """The whole run: *total* seconds from now."""

    def __init__(self, total, clock=time.monotonic):
        self.clock = clock
        self.end = clock() + total

    def remaining(self):
        return max(0.0, self.end - self.clock())

    def share(self, fraction, keep=RESERVE):
        """A Deadline for a step that may use *fraction* of what is left after *keep*."""
        usable = max(0.0, self.remaining() - keep)
        return Deadline(self.clock() + usable * fraction, self.clock)


class Deadline:
    """An absolute point in (monotonic) time by which a step must be done."""

    MINIMUM = 0.05

    def __init__(self, at, clock=time.monotonic):
        self.at = at
        self.clock = clock

    def left(self):
        """Seconds left; raises BudgetExhausted when (almost) none are."""
        left = self.at - self.clock()
        if left < self.MINIMUM:
            raise BudgetExhausted()
        return left

    def arm(self, sock):
        """Give *sock* the time left as its timeout (per operation)."""
        if sock is not None:
            sock.settimeout(self.left())

    @contextlib.contextmanager
    def enforced(self):
        """Interrupt the block with TimeoutError once the deadline passes.

        A per-operation socket timeout does not stop a server that drip-feeds
        its reply a byte at a time; a real-time interval timer does.  Main
        thread only.  An outer alarm (nagiosplugin's ``-t``) that would fire
        earlier is left alone; a later one is restored afterwards.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        left = self.at - self.clock()
        outer_left, _interval = signal.getitimer(signal.ITIMER_REAL)
        if outer_left and outer_left <= left:
            yield
            return

        def expire(signum, frame):
            raise TimeoutError("timed out")

        outer_handler = signal.signal(signal.SIGALRM, expire)
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, outer_handler)
            if outer_left:
                signal.setitimer(signal.ITIMER_REAL, max(0.001, outer_left - (time.monotonic() - started)))
