"""The collector that serves an endpoint, by its protocol (IMAP or POP3).

What a collector offers is described in :mod:`mail`; the protocol module is
imported only when its collector is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .budget import Deadline
    from .mail import Collector
    from .settings import Endpoint


def open_collector(endpoint: Endpoint, folder: str, deadline: Deadline, readonly: bool = False,
                   memory: Optional[dict] = None, dedicated: bool = False, junk: object = None, daily: bool = False,
                   idle: bool = True, now: Optional[float] = None, since: Optional[float] = None) -> Collector:
    """The collector for *endpoint*, by its protocol (IMAP or POP3).

    *junk* (IMAP: None, True for "find it", or a folder name), *daily* (look
    up again what is remembered for a day: the Junk folder), *idle* (wait
    with IDLE where offered) and *now* (the run's clock, epoch seconds)
    concern IMAP only; *since* (Graph's) neither.
    """
    if endpoint.protocol == "IMAP":
        from .imap import ImapCollector
        return ImapCollector(endpoint, folder, deadline, readonly, memory, dedicated, junk, daily, idle, now)
    if endpoint.protocol == "POP3":
        from .pop3 import Pop3Collector
        return Pop3Collector(endpoint, deadline, readonly, memory)
    raise ValueError("no collector for protocol %s" % endpoint.protocol)
