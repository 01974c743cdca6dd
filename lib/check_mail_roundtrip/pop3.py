"""POP3 transport: find, read and remove this profile's returned probes.

POP3 cannot search, so a run lists the maildrop (``UIDL``: at most
MAX_LISTING bytes and MAX_LISTED lines, see intake.py) and reads the
header of each message it has not examined before (``TOP n 0``: at most
MAX_HEADER bytes of it kept, the rest read and dropped), never a whole
message (no ``RETR``).  ``memory`` (kept in the state file) remembers which
UIDLs were examined, as short hashes pruned to what is still listed: a
foreign message costs one read, ever, and a steady-state run reads the
listing and the new messages only.  At most MAX_READ messages are read per
run, the newest first (a probe that arrives behind a flood of other mail is
read at once; the older messages wait for the next runs).  Probes to be
removed are read again until they are gone.

Removal: ``DELE`` of exactly the processed probes, committed by ``QUIT``.  A
session that ends any other way leaves them in the maildrop; the next run
reads them again, finds them counted and removes them.  With ``readonly``
(--keep) nothing is deleted, and the probes left are not read again until a
run without --keep removes them.

POP3 has no INTERNALDATE: the date of the topmost ``Received:`` header (the
stamp of the final delivery) stands in for the arrival time.  The trace
fields a run asks for (``trace``: Received, Authentication-Results) are
those of the header TOP read already: nothing more is read for them.  There is no
search by date either: ``find(key, before=...)`` finds nothing.

Steps, as named in the status line: ``POP3 connect``, ``POP3 TLS`` (implicit
TLS or STLS), ``POP3 login``, ``POP3 list``, ``POP3 fetch``, ``POP3 delete``,
with the server's words as it sent them (``-ERR [IN-USE] ...``).
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Optional

from . import probe as probe_format, sasl, tracing
from .budget import Deadline
from .candidates import newest
from .connection import Connection, Wire
from .failure import StepFailure, step
from .intake import MIB, Intake
from .mail import TRACE_BYTES, Fetched
from .net import host_arg, tcp
from .settings import Endpoint

if TYPE_CHECKING:
    from .trace import Pop3Trace

MAX_READ = 2000         # messages examined per run at most (newest first; the rest in the next runs)
MAX_HEADER = 64 * 1024  # bytes of one header kept (the rest of the TOP answer is read and dropped)
PIPELINE = 50           # commands sent at once to a server that offers PIPELINING
FETCH_RESERVE = 3.0     # seconds kept for DELE and QUIT: no new batch of TOPs after that
MAX_LINE = 64 * 1024    # bytes read at once; a longer line is read in pieces
MAX_PIECES = 4000000    # pieces of one answer read at most (the step's deadline comes first)
MAX_LISTING = 8 * MIB   # bytes of a UIDL listing at most (100,000 lines of the longest unique ids)
MAX_LISTED = 100000     # lines of a UIDL listing at most: messages in a maildrop
SASL_IR_LINE = 255      # longest AUTH line with an initial response (RFC 5034)
MARK = 8                # characters of one examined UIDL's hash in the memory
POLL_EVERY = 2.0        # seconds between sessions while waiting for a probe (--wait)


class ServerSaid(Exception):
    """The server answered -ERR; ``words`` is its reply line."""

    def __init__(self, line: bytes) -> None:
        self.words = _words(line)
        super().__init__(self.words)


def _words(line: bytes) -> str:
    return " ".join(line.decode("utf-8", "replace").split())


def _mark(uidl: str) -> str:
    """A short, stable hash of a UIDL (48 bits: 8 base64 characters)."""
    return base64.urlsafe_b64encode(hashlib.sha256(uidl.encode("utf-8")).digest()[:6]).decode("ascii")


def _marks(text: str) -> set[str]:
    return {text[i:i + MARK] for i in range(0, len(text), MARK)}


def received_date(header: bytes) -> Optional[float]:
    """Epoch seconds of the date in the topmost ``Received:`` header (the
    text after its last ';'), or None when there is none or it is no date."""
    for _name, value in probe_format.header_values(header, ("Received",)):
        try:
            when = email.utils.parsedate_to_datetime(value.rpartition(";")[2].strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, without saying where the sender was
            when = when.replace(tzinfo=datetime.timezone.utc)
        return when.timestamp()
    return None


class _Session:
    """One POP3 connection to *address*: commands, replies, multi-line answers,
    each reported to the trace; every read bounded by the step's deadline."""

    def __init__(self, ep: Endpoint, address: str, deadline: Deadline, why: Optional[str] = None) -> None:
        self.ep, self.deadline = ep, deadline
        self.trace: Pop3Trace = tracing.trace_for("Pop3Trace", ep.secrets())
        if why:
            self.trace.note(why)
        self.verb = "greeting"
        self.capabilities: set[str] = set()
        self.mechanisms: list[str] = []
        self.sock = tcp(address, ep.port, deadline.left())
        self.file = self.sock.makefile("rb")
        try:
            self.trace.connected(address, ep.port)
            if ep.tls == "tls":
                self._start_tls()
            self.status()
        except BaseException:
            self.close()
            raise

    def _start_tls(self) -> None:
        self.file.close()
        assert self.ep.ssl_context is not None  # the CLI always gives one
        sock = self.ep.ssl_context.wrap_socket(self.sock, server_hostname=host_arg(self.ep.host))
        self.sock = sock
        self.file = self.sock.makefile("rb")
        self.trace.tls_started(sock)

    # -- the wire ----------------------------------------------------------------------
    def send(self, *lines: str, verb: Optional[str] = None) -> None:
        """Command lines, sent at once (pipelined when there are several);
        *verb* names them in messages (default: the last one's first word)."""
        data = b"".join(line.encode("utf-8") + b"\r\n" for line in lines)
        self.verb = verb or lines[-1].split(" ", 1)[0].upper()
        self.deadline.arm(self.sock)
        self.trace.sent(data)
        self.sock.sendall(data)

    def _piece(self) -> bytes:
        """Up to MAX_LINE bytes, ending at a line end when one comes first."""
        self.deadline.arm(self.sock)
        data = self.file.readline(MAX_LINE)
        if not data:
            raise ConnectionError("connection closed by the server (at %s)" % self.verb)
        return data

    def _line(self) -> bytes:
        """One whole reply line, without its line end (a long one cut at MAX_LINE)."""
        line = self._piece()
        for _ in range(MAX_PIECES):
            if line.endswith(b"\n"):
                break
            if self._piece().endswith(b"\n"):
                line += b"\n"
        return line.rstrip(b"\r\n")

    def status(self, multiline: bool = False) -> bytes:
        """The reply line of the last command: +OK (or a "+ " continuation)
        returned; -ERR raises ServerSaid.  With *multiline*, a +OK is left for
        the caller to trace together with the answer that follows it."""
        line = self._line()
        if line.startswith(b"-"):
            self.trace.reply(line)
            raise ServerSaid(line)
        if not line.startswith(b"+"):
            self.trace.reply(line)
            raise ConnectionError("not a POP3 reply at %s: %s" % (self.verb, _words(line)[:80] or "(empty)"))
        if not multiline or not line.startswith(b"+OK"):
            self.trace.reply(line)
        return line

    def pieces(self) -> Iterator[bytes]:
        """The pieces (see _piece) of a multi-line answer up to its lone ".", dot-unstuffed."""
        start = True
        for _ in range(MAX_PIECES):
            piece = self._piece()
            if start and piece in (b".\r\n", b".\n"):
                return
            if start and piece.startswith(b"."):
                piece = piece[1:]
            start = piece.endswith(b"\n")
            yield piece
        raise ConnectionError("answer to %s too long" % self.verb)

    def answer(self, keep: int = MAX_HEADER) -> tuple[bytes, int]:
        """A multi-line answer: (its first *keep* bytes, its size in bytes)."""
        kept: list[bytes] = []
        size = 0
        for piece in self.pieces():
            size += len(piece)
            if keep > 0:
                kept.append(piece[:keep])
                keep -= len(kept[-1])
        return b"".join(kept), size

    def command(self, line: str) -> bytes:
        self.send(line)
        return self.status()

    # -- commands ----------------------------------------------------------------------
    def stls(self) -> None:
        try:
            self.command("STLS")
        except ServerSaid as refused:
            raise StepFailure("POP3 TLS", "server refused STLS: %s" % refused.words) from None
        self._start_tls()

    def capa(self) -> None:
        """CAPA (RFC 2449): the capabilities, and the SASL mechanisms offered."""
        self.send("CAPA")
        try:
            status = self.status(multiline=True)
        except ServerSaid:
            return  # a server of before RFC 2449: USER/PASS, one command at a time
        data, _size = self.answer()
        lines = data.decode("utf-8", "replace").split()
        self.trace.reply(status, data.decode("utf-8", "replace").splitlines())
        self.capabilities = {word.upper() for word in lines}
        for line in data.decode("utf-8", "replace").splitlines():
            if line.upper().startswith("SASL "):
                self.mechanisms = line.split()[1:]

    def authenticate(self, mechanism: str, initial: bytes) -> tuple[Optional[str], list[str]]:
        """One AUTH dialogue (RFC 5034): (None, challenges) when logged in,
        else (the server's words, challenges); *initial*: the client's first
        response, sent with the command where the line stays short enough."""
        response = base64.b64encode(initial).decode("ascii") or "="
        challenges: list[str] = []
        pending: Optional[str] = None
        if len("AUTH %s %s" % (mechanism, response)) <= SASL_IR_LINE:
            self.send("AUTH %s %s" % (mechanism, response))
        else:
            self.send("AUTH " + mechanism)
            pending = response  # sent when the server asks for it (its first "+ ")
        for _ in range(4):
            try:
                line = self.status()
            except ServerSaid as refused:
                return refused.words, challenges
            if line.startswith(b"+OK"):
                return None, challenges
            if pending is None:  # the server's error challenge: answer it empty, it says -ERR then
                challenges.append(line[1:].strip().decode("ascii", "replace"))
            self.send(pending or "", verb="AUTH")
            pending = None
        self.send("*", verb="AUTH")  # cancel a dialogue that does not end
        try:
            self.status()
        except ServerSaid as refused:
            return refused.words, challenges
        return "the server did not end the authentication", challenges

    def uidl(self) -> dict[str, int]:
        """UIDL: {unique id: message number}, in message-number order (oldest first).

        Read line by line, at most MAX_LISTING bytes and MAX_LISTED lines
        (intake.Flooded past either: a listing without end holds no memory)."""
        self.send("UIDL")
        status = self.status(multiline=True)
        intake = Intake("answer to UIDL too long: more than %s", MAX_LISTING, max_lines=MAX_LISTED)
        listed: dict[str, int] = {}
        start = True
        for piece in self.pieces():
            whole = start and piece.endswith(b"\n")  # a line longer than MAX_LINE lists nothing
            start = piece.endswith(b"\n")
            intake.took(piece, lines=int(start))
            fields = piece.split() if whole else ()
            if len(fields) == 2 and fields[0].isdigit():
                listed.setdefault(fields[1].decode("utf-8", "replace"), int(fields[0]))
        self.trace.reply(status, "unique-id listing, %d message%s, %d bytes"
                         % (len(listed), "" if len(listed) == 1 else "s", intake.bytes))
        return dict(sorted(listed.items(), key=lambda item: item[1]))

    def top(self) -> tuple[bytes, int]:
        """The header of the message whose TOP n 0 was sent: (bytes, its size)."""
        status = self.status(multiline=True)
        header, size = self.answer()
        self.trace.reply(status, "header, %d bytes" % size)
        return header, size

    def quit(self) -> None:
        self.command("QUIT")
        self.close()

    def close(self) -> None:
        for thing in (self.file, self.sock):
            try:
                thing.close()
            except OSError:
                pass


WIRE = Wire("POP3", _Session, lambda session, ssl_context, deadline: session.stls(), lambda session: session.sock,
            _Session.quit, _Session.close)


class Pop3Collector:
    """A session with one POP3 maildrop (see the module doc and collect.py)."""

    def __init__(self, endpoint: Endpoint, deadline: Deadline, readonly: bool = False,
                 memory: Optional[dict[str, Any]] = None) -> None:
        self.ep = endpoint
        self.deadline = deadline
        self.readonly = readonly
        self.memory = memory if memory is not None else {}
        self.session: Optional[_Session] = None
        self.connection: Connection[_Session] = Connection(WIRE, endpoint, deadline)
        self.listed: Optional[dict[str, int]] = None  # {UIDL: message number} of this session
        self.headers: dict[str, bytes] = {}  # the headers read in this session, by UIDL (for trace)
        self.notes: list[str] = []
        self.unexpunged: Optional[int] = None  # IMAP only
        self.watching: Optional[str] = None  # how wait() watches the maildrop, in words

    # -- session -------------------------------------------------------------
    def __enter__(self) -> Pop3Collector:
        self.session = self.connection.open(self._login)
        return self

    def _login(self, session: _Session) -> None:
        """The login of *session* (the step ``POP3 login``)."""
        session.capa()
        if self.ep.auth == "oauth2":
            self._oauth2_login(session)
        else:
            self._password_login(session)

    def _password_login(self, session: _Session) -> None:
        """USER and PASS; AUTH PLAIN for a non-ASCII login where the server offers it."""
        user, password = self.ep.user or "", self.ep.password or ""
        if not (user + password).isascii() and "PLAIN" in (m.upper() for m in session.mechanisms):
            refused, _ = session.authenticate("PLAIN", ("\0%s\0%s" % (user, password)).encode("utf-8"))
            if refused is not None:
                raise StepFailure("POP3 login", refused)
            return
        session.command("USER " + user)
        session.command("PASS " + password)

    def _oauth2_login(self, session: _Session) -> None:
        ep = self.ep

        def authenticate(mechanism: str, token: str) -> Optional[str]:
            first = sasl.initial_response(mechanism, ep.user or "", token, ep.host, ep.port)
            refused, challenges = session.authenticate(mechanism, first)
            return None if refused is None else sasl.refusal(refused, challenges)

        from .oauth2 import sign_in  # only a run that signs in with OAuth2 loads it

        sign_in(ep, self.deadline, "POP3 login", session.mechanisms, authenticate, session.trace.hide)

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            self.connection.close(session)

    # -- work ----------------------------------------------------------------
    def find(self, key: str, before: Optional[datetime.date] = None, wanted: Sequence[str] = ()) -> list[str]:
        """UIDLs of the messages not examined before (POP3 cannot search: all
        of them, whatever *key* and *wanted*), the newest MAX_READ at most.
        *before* (the daily look for abandoned probes, by arrival date): nothing."""
        if before is not None:
            self.notes.append("POP3 cannot search by date: probes of abandoned profiles are not "
                              "looked for (IMAP only)")
            return []
        assert self.session is not None  # in the session
        with step("POP3 list", self.deadline):
            self.listed = self.session.uidl()
        memory = self._memory()
        skip = _marks(memory["seen"]) | (_marks(memory["kept"]) if self.readonly else set())
        new = [uidl for uidl in self.listed if _mark(uidl) not in skip]
        return newest(new, MAX_READ, self.notes, "messages not examined before")

    def _memory(self) -> dict[str, Any]:
        """What was examined in this maildrop before: {"seen", "kept"} (hashes of UIDLs)."""
        m = self.memory
        maildrop = _mark("%s\0%s" % (self.ep.user or "", self.ep.host))  # any port: the same maildrop
        ok = (m.get("kind") == "pop3" and m.get("maildrop") == maildrop
              and all(isinstance(m.get(k), str) and len(m[k]) % MARK == 0 for k in ("seen", "kept")))
        if not ok and m:
            self.notes.append("another maildrop, or nothing remembered of it: examining every message")
        if not ok:
            m.clear()
            m.update(kind="pop3", maildrop=maildrop, seen="", kept="")
        return m

    def settle(self, examined: Sequence[str], to_remove: Sequence[str]) -> None:
        """*examined* need not be read again; *to_remove* is read again until it is
        gone (with --keep: once a run without --keep comes)."""
        if self.listed is None:
            return
        m = self._memory()
        listed = {_mark(u) for u in self.listed}
        read = {_mark(u) for u in examined}
        removed = {_mark(u) for u in to_remove}
        seen = (_marks(m["seen"]) | read) - removed
        kept = (_marks(m["kept"]) - read) | (removed if self.readonly else set())
        m["seen"] = "".join(sorted(seen & listed))
        m["kept"] = "".join(sorted(kept & listed))

    def name(self, ref: str) -> str:
        return "UIDL %s" % ref

    def wait(self, until: Deadline) -> bool:
        """A POP3 session shows the maildrop as it was at login: end the
        session, pause about POLL_EVERY seconds and log in afresh (True), unless
        *until* passes first (False).  Nothing is deleted meanwhile."""
        pause = min(POLL_EVERY, until.at - until.clock())
        if pause <= 0:
            return False
        self.watching = "a new POP3 session every %gs" % POLL_EVERY
        self._close()
        time.sleep(pause)
        self.__enter__()
        return True

    def fetch(self, refs: Sequence[str]) -> list[Fetched]:
        """The headers of *refs* (TOP n 0), with the topmost Received date as the
        arrival time; PIPELINE commands at once where the server offers PIPELINING."""
        refs = [r for r in refs if self.listed and r in self.listed]
        out: list[Fetched] = []
        if not refs:
            return out
        assert self.listed is not None and self.session is not None  # in the session, after find
        batch = PIPELINE if "PIPELINING" in self.session.capabilities else 1
        with step("POP3 fetch", self.deadline):
            for start in range(0, len(refs), batch):
                if out and self.deadline.at - self.deadline.clock() < FETCH_RESERVE:
                    self.notes.append("%d messages left for the next run (time)" % (len(refs) - start))
                    break
                part = refs[start:start + batch]
                self.session.send(*("TOP %d 0" % self.listed[r] for r in part))
                for ref in part:
                    try:
                        header, size = self.session.top()
                    except ServerSaid as refused:
                        self.notes.append("%s: TOP refused (%s); left for the next run"
                                          % (self.name(ref), refused.words))
                        continue
                    if size > MAX_HEADER:
                        self.notes.append("%s: header of %d bytes, the first %d read"
                                          % (self.name(ref), size, MAX_HEADER))
                    out.append(Fetched(ref, header, received_date(header), "Received"))
                    self.headers[ref] = header
        return out

    def trace(self, refs: Sequence[str]) -> dict[str, bytes]:
        """The headers of *refs* as TOP read them (the trace fields among them): nothing more is read."""
        return {ref: self.headers[ref][:TRACE_BYTES] for ref in refs if ref in self.headers}

    def remove(self, refs: Sequence[str]) -> None:
        """DELE exactly *refs*, then QUIT, which commits the deletion (the session ends)."""
        refs = [r for r in refs if self.listed and r in self.listed]
        if not refs or self.readonly:
            return
        assert self.listed is not None and self.session is not None  # in the session, after find
        batch = PIPELINE if "PIPELINING" in self.session.capabilities else 1
        with step("POP3 delete", self.deadline):
            for start in range(0, len(refs), batch):
                part = refs[start:start + batch]
                self.session.send(*("DELE %d" % self.listed[r] for r in part))
                for _ in part:
                    self.session.status()
            session, self.session = self.session, None
            try:
                session.quit()
            finally:
                session.close()
