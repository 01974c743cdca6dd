"""Time budget: the run's ``-t`` seconds, shared out among its steps.

Each network step gets a :class:`Deadline`; before every command the
transport arms the socket with the time left, so a silent or slow server can
hold a step at most until its deadline and the check always ends by itself.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType
from typing import Callable, Literal, Optional

from .failure import BudgetExhausted

# Time kept back for writing the state and printing the result.
RESERVE = 0.5


class Budget:
    """The whole run: *total* seconds from now."""

    def __init__(self, total: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.end = clock() + total

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock())

    def share(self, fraction: float, keep: float = RESERVE) -> Deadline:
        """A Deadline for a step that may use *fraction* of what is left after *keep*."""
        usable = max(0.0, self.remaining() - keep)
        return Deadline(self.clock() + usable * fraction, self.clock)


class Deadline:
    """An absolute point in (monotonic) time by which a step must be done."""

    MINIMUM = 0.05

    def __init__(self, at: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.at = at
        self.clock = clock

    def left(self) -> float:
        """Seconds left; raises BudgetExhausted when (almost) none are."""
        left = self.at - self.clock()
        if left < self.MINIMUM:
            raise BudgetExhausted()
        return left

    def arm(self, sock: Optional[socket.socket]) -> None:
        """Give *sock* the time left as its timeout (per operation)."""
        if sock is not None:
            sock.settimeout(self.left())

    def within(self, seconds: float) -> Deadline:
        """A Deadline *seconds* from now, but no later than this one."""
        return Deadline(min(self.clock() + seconds, self.at), self.clock)

    def alarm(self, on_expiry: Callable[[], BaseException]) -> Alarm:
        """An :class:`Alarm` that raises ``on_expiry()`` when this deadline passes."""
        return Alarm(self, on_expiry)


class Alarm:
    """Interrupt the main thread with an exception once a deadline passes.

    A per-operation socket timeout does not stop a server that drip-feeds its
    reply a byte at a time; a real-time interval timer does.  The handler
    restores the previous timer before it raises, so no code path depends on
    a ``finally`` clause to put things back.  An outer alarm (nagiosplugin's
    ``-t``) that would fire earlier is left alone; a later one is restored
    with the time it has left.  In other threads this does nothing.
    """

    def __init__(self, deadline: Deadline, on_expiry: Callable[[], BaseException]) -> None:
        self.deadline = deadline
        self.on_expiry = on_expiry
        self.active = False

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        left = self.deadline.at - self.deadline.clock()
        outer_left, _interval = signal.getitimer(signal.ITIMER_REAL)
        if outer_left and outer_left <= left:
            return
        self.outer_left = outer_left
        self.started = time.monotonic()
        self.outer_handler = signal.signal(signal.SIGALRM, self._expire)
        self.active = True
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def stop(self) -> None:
        if not self.active:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)  # first: no new expiry ...
        self.active = False                      # ... and one already pending is ignored
        signal.signal(signal.SIGALRM, self.outer_handler)
        if self.outer_left:
            spent = time.monotonic() - self.started
            signal.setitimer(signal.ITIMER_REAL, max(0.001, self.outer_left - spent))

    def _expire(self, signum: int, frame: Optional[FrameType]) -> None:
        if not self.active:  # stale: the step ended just as its deadline passed
            return
        self.stop()
        raise self.on_expiry()

    def __enter__(self) -> Alarm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.stop()
        return False
