"""A mail system in memory: an MTA that delivers by a fake clock into mailboxes with folders.

What the lab's Postfix and Dovecot are to the check, without a network:
:meth:`MailSystem.send` is a :class:`check_mail_roundtrip.mail.Sender` (it
takes the probe's real text), :meth:`MailSystem.open_collector` a
:class:`check_mail_roundtrip.mail.CollectorFactory` (see collector.py),
and :attr:`MailSystem.transports` hands both to a run.

A mail handed over is delivered ``delay`` seconds later (when the clock has
got there and a collector looks), with a ``Received:`` header and an
INTERNALDATE in whole seconds on the server's clock (``skew`` seconds off the
monitor's).  Faults, each until changed:

- ``delay`` (seconds), :meth:`lose` (the next mails vanish), :meth:`hold` /
  :meth:`release` (mail waits in the queue), ``junk_filter`` (mail handed
  over meanwhile is taken for spam and filed into the mailbox's Junk folder);
- :meth:`smtp_fails` (the send fails at a step, in the words given: a
  refused connection, a 5xx refusal), :meth:`smtp_uncertain` (the connection
  is lost after DATA: the mail may or may not go on), :meth:`smtp_killed`
  (the run dies while it hands the probe over);
- :meth:`fail` (a collector step fails, in the words given);
- :meth:`reflector`: an address where a reflector (the real rules of
  reflector_rules.py) sends verified probes back, stamped.

Mail not sent by the check (spam, other profiles' probes, forgeries) is put
into a folder with :meth:`append`, as IMAP APPEND would.

The way to the mailbox: :attr:`MailSystem.relays` (each a :class:`Relay`)
are the MTAs a mail passes before the mail server, in order: each stamps its
``Received:`` field (its protocol, its clock) ``delay`` seconds after the one
before and may add header fields of its own (a forged Authentication-Results);
the mail server's own field follows ``MailSystem.delay`` seconds after the
last, with :attr:`MailSystem.verdicts` (Authentication-Results values, those
in force when the mail was handed over) just below it, where OpenDKIM and
OpenDMARC put theirs.

The faults in force when a mail is handed over decide its fate (delay,
loss, holding, the filter's verdict, the server clock it will arrive by),
though it is delivered only when a collector looks.
"""

import email
import email.policy
import email.utils
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from check_mail_roundtrip import reflection, reflector_rules
from check_mail_roundtrip.failure import StepFailure
from check_mail_roundtrip.mail import FAILED, SENT, UNCERTAIN, SendResult
from check_mail_roundtrip.probe import RETURN_HEADER, Probe, build_message, new_probe
from check_mail_roundtrip.transports import Transports

from .clock import FakeClock
from .collector import MemoryCollector

SERVER = "mx.memory.test"
MONITOR = "monitor@memory.test"
KILLED = "killed"


class Killed(BaseException):
    """The run was killed (as by SIGKILL) while its probe was being handed over."""


def crlf(text: str) -> bytes:
    """*text* as a mail on the wire: CRLF line ends, UTF-8."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def plain_mail(subject: str, sender: str = "someone@memory.test", to: str = MONITOR, headers: str = "") -> bytes:
    """A short mail that is no probe (or that only looks like one, by its *subject*)."""
    return crlf("From: %s\nTo: %s\nSubject: %s\n%s\nhello\n" % (sender, to, subject, headers))


def probe_text(secret: bytes, profile: str, at: float, sender: str = MONITOR, to: str = MONITOR,
               node: Optional[str] = None) -> tuple[Probe, str]:
    """A probe of *profile* signed with *secret*, sent at *at* (by *node*), as a check builds it:
    (the probe, its text)."""
    probe = new_probe(profile, at, node)
    msg = build_message(probe, secret, sender, to, "elsewhere.memory.test", at)
    msg[RETURN_HEADER] = reflection.return_header(probe.token(secret), sender, secret)
    return probe, msg.as_string(policy=email.policy.SMTP.clone(max_line_length=998))


def probe_mail(secret: bytes, profile: str, at: float, **options: Any) -> tuple[Probe, bytes]:
    """As :func:`probe_text`, the mail as a server holds it: (the probe, its bytes)."""
    probe, text = probe_text(secret, profile, at, **options)
    return probe, crlf(text)


@dataclass
class Message:
    """One mail in a folder."""

    uid: int
    raw: bytes
    internaldate: float         # the server's arrival time, whole seconds
    deleted: bool = False       # flagged \Deleted

    @property
    def headers(self) -> bytes:
        """The header block, as IMAP's BODY[HEADER] gives it (ending in an empty line)."""
        head, _sep, _body = self.raw.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    @property
    def subject(self) -> str:
        """The Subject, decoded (what an IMAP SEARCH SUBJECT looks in)."""
        return str(email.message_from_bytes(self.headers, policy=email.policy.default).get("Subject", ""))


@dataclass
class Folder:
    """A folder: its messages by UID, and its UIDVALIDITY."""

    name: str
    uidvalidity: int = 1
    next_uid: int = 1
    messages: dict[int, Message] = field(default_factory=dict)

    def append(self, raw: bytes, internaldate: float) -> Message:
        message = Message(self.next_uid, raw, internaldate)
        self.messages[message.uid] = message
        self.next_uid += 1
        return message

    def live(self) -> list[Message]:
        """The messages not flagged \\Deleted, by UID."""
        return [m for _uid, m in sorted(self.messages.items()) if not m.deleted]

    def expunge(self, uids: Optional[list[int]] = None) -> None:
        """Remove the messages flagged \\Deleted (only those of *uids*, when given)."""
        for uid, m in list(self.messages.items()):
            if m.deleted and (uids is None or uid in uids):
                del self.messages[uid]

    def renumber(self) -> None:
        """A new UIDVALIDITY: every message gets a new UID (as after a server's rebuild)."""
        messages = [m for _uid, m in sorted(self.messages.items())]
        self.uidvalidity += 1
        self.messages, self.next_uid = {}, 1
        for m in messages:
            self.append(m.raw, m.internaldate).deleted = m.deleted


class Mailbox:
    """One account: INBOX and, unless *junk* is None, a folder flagged \\Junk; *uidplus*: the
    server offers UID EXPUNGE (else removed probes stay flagged \\Deleted)."""

    def __init__(self, address: str, junk: Optional[str] = "Junk", uidplus: bool = True) -> None:
        self.address = address
        self.junk = junk
        self.uidplus = uidplus
        self.folders = {"INBOX": Folder("INBOX")}
        if junk:
            self.folders[junk] = Folder(junk)

    def add_folder(self, name: str) -> Folder:
        """A folder more (not flagged \\Junk)."""
        return self.folders.setdefault(name, Folder(name))

    def messages(self, folder: str = "INBOX") -> list[Message]:
        """The messages of *folder* not flagged \\Deleted."""
        return self.folders[folder].live()

    def subjects(self, folder: str = "INBOX") -> list[str]:
        return [m.subject for m in self.messages(folder)]

    def probes(self, folder: str = "INBOX") -> list[Message]:
        """The messages of *folder* that carry a probe token."""
        return [m for m in self.messages(folder) if "MRTP1." in m.subject]


@dataclass
class Sent:
    """One message handed to the sender."""

    at: float
    mail_from: str
    rcpt_to: str
    text: str
    local_hostname: Optional[str]


@dataclass
class Relay:
    """An MTA before the mail server: it stamps a mail *delay* seconds after the hop before (by
    its clock, *skew* seconds off the monitor's), with *protocol*, and adds *headers* (whole
    lines, above its Received field)."""

    name: str
    delay: float = 0.0
    protocol: str = "ESMTPS"
    skew: float = 0.0
    headers: list[str] = field(default_factory=list)


@dataclass
class _Delivery:
    due: float                  # when it arrives (the monitor's clock)
    seq: int
    mail_from: str
    rcpt_to: str
    raw: bytes
    junk: bool = False          # the filter took it for spam: it goes to the Junk folder, where there is one
    skew: float = 0.0           # the server's clock minus the monitor's when it arrives
    verdicts: list[str] = field(default_factory=list)  # the Authentication-Results the server will add


@dataclass
class Reflector:
    """mail_roundtrip_reflector at an address: it sends verified probes back,
    *pause* seconds after they came, stamped by its clock (*skew* seconds off
    the monitor's); the reflection arrives *back* seconds after it left."""

    address: str
    secret: bytes
    back: float = 0.0
    pause: float = 0.0
    skew: float = 0.0
    max_age: float = 86400.0
    memory: reflector_rules.Memory = field(default_factory=reflector_rules.Memory)
    dropped: list[str] = field(default_factory=list)   # why a mail was not reflected

    def receive(self, system: "MailSystem", delivery: _Delivery) -> None:
        now = delivery.due + self.skew
        decision = reflector_rules.decide(delivery.raw, delivery.mail_from, self.secret, self.memory, now,
                                     self.max_age, 60)
        if decision.to is None or decision.token is None:
            self.dropped.append(decision.why or "")
            return
        received_ms, sent_ms = int(now * 1000), int((now + self.pause) * 1000)
        mail = reflector_rules.build_reflection(decision, received_ms, sent_ms, self.secret, self.address,
                                           "reflector.memory.test")
        self.memory.record(decision.token.probe_id, decision.to, now)
        system.submit(self.address, decision.to, crlf(mail.as_string(policy=email.policy.SMTP)),
                      at=delivery.due + self.pause, delay=self.back)


class MailSystem:
    """The MTA, the mailboxes and the clock (see the module doc)."""

    def __init__(self, clock: Optional[FakeClock] = None) -> None:
        self.clock = clock or FakeClock()
        self.mailboxes: dict[str, Mailbox] = {}
        self.reflectors: dict[str, Reflector] = {}
        self.queue: list[_Delivery] = []
        self.held: list[_Delivery] = []
        self.lost: list[bytes] = []         # mails the system lost
        self.bounced: list[bytes] = []      # mails for nobody here
        self.sent: list[Sent] = []          # every message handed to the sender
        self.sessions = 0                   # collector sessions opened
        self.delay = 0.0
        self.skew = 0.0                     # the mail server's clock minus the monitor's
        self.junk_filter = False
        self.holding = False
        self.relays: list[Relay] = []       # the MTAs before the mail server, in order
        self.verdicts: list[str] = []       # Authentication-Results values the mail server adds
        self.traced: list[Any] = []         # refs whose trace fields a collector was asked for
        self._lose = 0
        # the fault of the next sends: (status, step, words, delivered), or None
        self._smtp: Optional[tuple[str, str, str, bool]] = None
        self._collect: dict[str, list] = {}  # step -> [words, times left or None]
        self._seq = itertools.count(1)
        self.transports = Transports(self.open_collector, self.send)

    # -- accounts ------------------------------------------------------------------------------
    def mailbox(self, address: str, **options: Any) -> Mailbox:
        """The mailbox of *address*, made with *options* (see Mailbox) when it is new."""
        key = address.lower()
        if key not in self.mailboxes:
            self.mailboxes[key] = Mailbox(address, **options)
        return self.mailboxes[key]

    def reflector(self, address: str, secret: bytes, **options: Any) -> Reflector:
        """A reflector at *address* that shares the check's *secret* (see Reflector)."""
        self.reflectors[address.lower()] = Reflector(address, secret, **options)
        return self.reflectors[address.lower()]

    def append(self, address: str, raw: bytes, at: Optional[float] = None, folder: str = "INBOX") -> Message:
        """Put *raw* into *folder* of *address*, arrived at *at* (default: now), like IMAP APPEND."""
        at = self.clock.now if at is None else at
        return self.mailbox(address).folders[folder].append(raw, float(math.floor(at)))

    # -- faults --------------------------------------------------------------------------------
    def lose(self, count: int = 1) -> None:
        """The next *count* mails handed over vanish."""
        self._lose = count

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """Mail held arrives now (or after the delay it had left), and mail flows again."""
        self.holding = False
        for d in self.held:
            d.due = max(d.due, self.clock.now)
        self.queue += self.held
        self.held = []

    def smtp_fails(self, step: Optional[str], words: str = "") -> None:
        """Every send fails at *step* ("SMTP connect", "SMTP send", ...) in *words*; None: sends work."""
        self._smtp = None if step is None else (FAILED, step, words, False)

    def smtp_uncertain(self, words: str = "connection reset by peer", delivered: bool = True) -> None:
        """Every send loses its connection after DATA (the mail goes on when *delivered*)."""
        self._smtp = (UNCERTAIN, "SMTP send", "connection lost after DATA, outcome unknown: %s" % words, delivered)

    def smtp_killed(self, delivered: bool = False) -> None:
        """Every run is killed while it hands its probe over (raises Killed; the mail goes on
        when *delivered*)."""
        self._smtp = (KILLED, "", "", delivered)

    def fail(self, step: str, words: Optional[str], times: Optional[int] = None) -> None:
        """The collector's *step* ("IMAP login", "IMAP fetch", "POP3 delete", ...) fails in *words*
        (*times* times, or until told otherwise; None words: it works again)."""
        if words is None:
            self._collect.pop(step, None)
        else:
            self._collect[step] = [words, times]

    def fault(self, step: str) -> None:
        """Raise the StepFailure armed for *step*, if any (called by the collector)."""
        armed = self._collect.get(step)
        if armed is None:
            return
        words, times = armed
        if times is not None:
            armed[1] -= 1
            if armed[1] <= 0:
                del self._collect[step]
        raise StepFailure(step, words)

    # -- the MTA -------------------------------------------------------------------------------
    def send(self, message: str, mail_from: str, rcpt_to: str, endpoint: object, deadline: object,
             local_hostname: Optional[str] = None) -> SendResult:
        """The Sender: hand *message* over (see the faults)."""
        self.sent.append(Sent(self.clock.now, mail_from, rcpt_to, message, local_hostname))
        if self._smtp is not None:
            status, step, words, delivered = self._smtp
            if delivered:
                self.submit(mail_from, rcpt_to, crlf(message))
            if status == KILLED:
                raise Killed()
            return SendResult(status, StepFailure(step, words))
        self.submit(mail_from, rcpt_to, crlf(message))
        return SendResult(SENT, None, "250 2.0.0 Ok: queued as M%d" % len(self.sent))

    def submit(self, mail_from: str, rcpt_to: str, raw: bytes, at: Optional[float] = None,
               delay: Optional[float] = None) -> None:
        """Queue *raw* for *rcpt_to*, handed over at *at* (default: now), for *delay* seconds
        (default: the system's); lost, or held, as the faults say."""
        if self._lose:
            self._lose -= 1
            self.lost.append(raw)
            return
        at = self.clock.now if at is None else at
        seq = next(self._seq)
        for relay in self.relays:
            at += relay.delay
            raw = self._relayed(relay, raw, at, seq, rcpt_to)
        d = _Delivery(at + (self.delay if delay is None else delay), seq, mail_from, rcpt_to, raw,
                      self.junk_filter, self.skew, list(self.verdicts))
        reflector = self.reflectors.get(rcpt_to.lower())
        if self.holding:
            self.held.append(d)
        elif reflector is not None:  # it will get there: its reflection is on its way, as the reflector is now
            reflector.receive(self, d)
        else:
            self.queue.append(d)

    def _relayed(self, relay: Relay, raw: bytes, at: float, seq: int, rcpt_to: str) -> bytes:
        """*raw* as *relay* passes it on at *at*: its header lines and its Received field on top."""
        i = self.relays.index(relay)
        before = self.relays[i - 1].name if i else "monitor"
        received = ("Received: from %s by %s with %s id R%d.%d\r\n\tfor <%s>; %s\r\n"
                    % (before, relay.name, relay.protocol, i + 1, seq, rcpt_to,
                       email.utils.formatdate(at + relay.skew, usegmt=True)))
        return "".join(line + "\r\n" for line in relay.headers).encode("utf-8") + received.encode("ascii") + raw

    def next_due(self) -> Optional[float]:
        """When the next mail in the queue arrives, or None."""
        return min((d.due for d in self.queue), default=None)

    def deliver_due(self) -> None:
        """Deliver what has arrived by now, in order (reflections included)."""
        for _ in range(100000):
            ready = [d for d in self.queue if d.due <= self.clock.now]
            if not ready:
                return
            d = min(ready, key=lambda d: (d.due, d.seq))
            self.queue.remove(d)
            reflector = self.reflectors.get(d.rcpt_to.lower())
            if reflector is not None:
                reflector.receive(self, d)
            else:
                self._store(d)

    def _store(self, d: _Delivery) -> None:
        box = self.mailboxes.get(d.rcpt_to.lower())
        if box is None:
            self.bounced.append(d.raw)
            return
        folder = box.junk if d.junk and box.junk in box.folders else "INBOX"
        arrival = d.due + d.skew
        before = self.relays[-1].name if self.relays else "monitor"
        received = ("Received: from %s by %s with ESMTP id M%d\r\n\tfor <%s>; %s\r\n"
                    % (before, SERVER, d.seq, d.rcpt_to, email.utils.formatdate(arrival, usegmt=True)))
        verdicts = "".join("Authentication-Results: %s\r\n" % v for v in d.verdicts)
        box.folders[folder].append((received + verdicts).encode("utf-8") + d.raw, float(math.floor(arrival)))

    # -- the collector ---------------------------------------------------------------------------
    def open_collector(self, endpoint: object, folder: str, deadline: object, readonly: bool = False,
                       memory: Optional[dict] = None, dedicated: bool = False, junk: object = None,
                       daily: bool = False, idle: bool = True, now: Optional[float] = None,
                       since: Optional[float] = None) -> MemoryCollector:
        """The CollectorFactory: a session with the mailbox of the endpoint's user."""
        return MemoryCollector(self, endpoint, folder, readonly, memory, dedicated, junk, idle)
