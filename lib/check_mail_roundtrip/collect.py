"""What a collector is, and the one that serves an endpoint.

A collector reads the probes back from the mailbox, over IMAP
(:class:`imap.ImapCollector`) or POP3 (:class:`pop3.Pop3Collector`).  It is a
context manager (the session) and offers:

- ``find(key, before=None, wanted=())``: references of the mails to examine
  (not read before; at most a run's share, the newest first and, where the
  protocol can search, first those carrying one of the probe ids *wanted*;
  *before*, a date: the daily look for abandoned probes, where the protocol
  can do it);
- ``fetch(refs)``: a :class:`Fetched` for each mail still there;
- ``settle(examined, to_remove)``: what need not be read again, and what is
  looked at again until it is gone;
- ``remove(refs)``: delete exactly those mails (nothing with ``readonly``);
- ``name(ref)``: a reference in words, for ``-v``;
- ``wait(until)``: after sending, block until new mail may have come (True;
  the caller looks with ``find``) or until *until* (a Deadline) passes
  (False): IMAP IDLE or a NOOP poll, POP3 a new session;
- ``notes`` (lines for ``-v``) and ``unexpunged`` (IMAP without UIDPLUS: the
  probes flagged \\Deleted that wait for an EXPUNGE; None elsewhere).

``memory`` is a dict kept in the state file between runs, the collector's
own: what it examined before.
"""

from dataclasses import dataclass


@dataclass
class Fetched:
    """One candidate mail: its reference, raw headers (bounded), arrival time."""

    ref: object                 # IMAP: the UID; POP3: the UIDL
    headers: bytes
    internaldate: float         # epoch seconds, or None
    source: str = "INTERNALDATE"  # where internaldate comes from (ledger.SOURCES)
    junk: bool = False          # found in the Junk folder


def open_collector(endpoint, folder, deadline, readonly=False, memory=None, dedicated=False,
                   junk=None, daily=False, idle=True, now=None):
    """The collector for *endpoint*, by its protocol (IMAP or POP3).

    *junk* (IMAP: None, True for "find it", or a folder name), *daily* (look
    up again what is remembered for a day: the Junk folder), *idle* (wait
    with IDLE where offered) and *now* (the run's clock, epoch seconds)
    concern IMAP only.
    """
    if endpoint.protocol == "IMAP":
        from .imap import ImapCollector
        return ImapCollector(endpoint, folder, deadline, readonly, memory, dedicated, junk, daily, idle, now)
    if endpoint.protocol == "POP3":
        from .pop3 import Pop3Collector
        return Pop3Collector(endpoint, deadline, readonly, memory)
    raise ValueError("no collector for protocol %s" % endpoint.protocol)
