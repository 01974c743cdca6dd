"""What a run exchanges with a mail system: the collector and sender interfaces.

A **collector** reads the probes back from the mailbox (IMAP:
:class:`imap.ImapCollector`, POP3: :class:`pop3.Pop3Collector`, Microsoft
Graph: :class:`graph.GraphCollector`).  It is a
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
- ``trace(refs)``: the trace fields (TRACE_HEADERS: Received and
  Authentication-Results) of mails fetched before, as they stand in each
  (newest first), at most TRACE_BYTES of each: asked only for the few
  probes a run looks at closer (see route.py), so that a run that needs
  none reads nothing more (IMAP: one FETCH of those fields; POP3 and
  Graph: what was read already);
- ``wait(until)``: after sending, block until new mail may have come (True;
  the caller looks with ``find``) or until *until* (a Deadline) passes
  (False): IMAP IDLE or a NOOP poll, POP3 a new session;
- ``notes`` (lines for ``-v``), ``unexpunged`` (IMAP without UIDPLUS: the
  probes flagged \\Deleted that wait for an EXPUNGE; None elsewhere) and
  ``watching`` (how ``wait`` watched, in words; None before it did).

``memory`` is a dict kept in the state file between runs, the collector's
own: what it examined before.

A **sender** hands one probe to the mail system (SMTP: :func:`smtp.send`,
Graph: :class:`graph_send.GraphSender`)
and says how that went in a :class:`SendResult`; it never raises.

Only the standard library is imported here (the transports import this
module, not the other way round).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Protocol

from .record import record

# The header fields that tell a mail's way and how it was judged on it, and how much of them is read.
TRACE_HEADERS = ("Received", "Authentication-Results")
TRACE_BYTES = 64 * 1024

if TYPE_CHECKING:
    import datetime

    from .budget import Deadline
    from .failure import StepFailure
    from .settings import Endpoint


@record()
class Fetched:
    """One candidate mail: its reference, raw headers (bounded), arrival time."""

    ref: object                 # IMAP: the UID; POP3: the UIDL
    headers: bytes
    internaldate: Optional[float]  # epoch seconds, or None
    source: str = "INTERNALDATE"  # where internaldate comes from (ledger.SOURCES)
    junk: bool = False          # found in the Junk folder
    folder: str = "INBOX"       # the folder it was found in, as the collector names it


# How a send ended: accepted, refused (or never handed over), or unknown
# (the connection was lost after the message was handed over in DATA).
SENT, FAILED, UNCERTAIN = "sent", "failed", "uncertain"


@record()
class SendResult:
    status: str                 # SENT, FAILED or UNCERTAIN
    failure: Optional[StepFailure] = None
    reply: str = ""             # the server's answer to the message


class Collector(Protocol):
    """A session with the mailbox the probes come back to (see the module doc)."""

    notes: list[str]
    unexpunged: Optional[int]
    watching: Optional[str]

    def __enter__(self) -> Collector: ...

    def __exit__(self, *exc: object) -> Optional[bool]: ...

    def find(self, key: str, before: Optional[datetime.date] = None, wanted: Sequence[str] = ()) -> list[Any]:
        ...

    def fetch(self, refs: Sequence[Any]) -> list[Fetched]: ...

    def settle(self, examined: Sequence[Any], to_remove: Sequence[Any]) -> None: ...

    def remove(self, refs: Sequence[Any]) -> None: ...

    def name(self, ref: Any) -> str: ...

    def trace(self, refs: Sequence[Any]) -> dict[Any, bytes]: ...

    def wait(self, until: Deadline) -> bool: ...


class CollectorFactory(Protocol):
    """Opens a :class:`Collector` for *endpoint* (not yet entered).

    *junk* (None, True for "find it", or a folder name; IMAP and Graph),
    *daily* (look up again what is remembered for a day), *idle* (wait with
    IDLE where offered) and *now* (the run's clock, epoch seconds) concern
    IMAP (*now* Graph too); *since* (when the oldest probe in flight was
    sent, epoch seconds, or None) concerns Graph, which lists what arrived
    since then.
    """

    def __call__(self, endpoint: Endpoint, folder: str, deadline: Deadline, readonly: bool = False,
                 memory: Optional[dict] = None, dedicated: bool = False, junk: object = None, daily: bool = False,
                 idle: bool = True, now: Optional[float] = None, since: Optional[float] = None) -> Collector: ...


class Sender(Protocol):
    """Sends *message* (str, CRLF or LF line ends) from *mail_from* to *rcpt_to*
    through *endpoint* within *deadline*, greeting as *local_hostname*; never raises."""

    def __call__(self, message: str, mail_from: str, rcpt_to: str, endpoint: Endpoint, deadline: Deadline,
                 local_hostname: Optional[str] = None) -> SendResult: ...
