"""The transports of a run, chosen in one place from its settings.

A run collects with a collector (IMAP or POP3, by ``--collect``) and sends
with a sender (SMTP); :func:`for_settings` picks them, and a run is handed
them (tests hand in a mail system in memory).  The protocol modules are
imported only here, and only when a run is about to use them.
"""

from typing import TYPE_CHECKING

from .mail import CollectorFactory, Sender
from .record import record

if TYPE_CHECKING:
    from .settings import Settings


@record(frozen=True)
class Transports:
    """How a run opens its collector and sends its probe."""

    open_collector: CollectorFactory
    send: Sender


def for_settings(settings: "Settings") -> Transports:
    """The collector *settings* collect by (IMAP or POP3: the protocol of
    ``settings.collect``) and the SMTP sender."""
    from . import smtp
    from .collect import open_collector
    return Transports(open_collector, smtp.send)
