"""IMAP session: the connection under the collector (imap.py).

imapclient on imaplib, connected to an address looked up in advance, its
traffic reported to the trace, and bounded against a hostile server (see
intake.py): no literal over MAX_LITERAL (refused when announced), at most
MAX_ANSWER bytes an answer and MAX_RECEIVED a connection.  The server's words
are kept as it sent them (UTF-8, modified UTF-7 folder names decoded);
``WIRE`` is how connection.py opens, secures and closes such a session.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import ssl
from typing import TYPE_CHECKING, Any, Optional

import imapclient
from imapclient import imap4, tls

from . import tracing
from .budget import Deadline
from .connection import Wire
from .failure import StepFailure
from .intake import MIB, Intake
from .lazy_re import LazyPattern
from .net import host_arg, tcp
from .settings import Endpoint

if TYPE_CHECKING:
    from .trace import ImapTrace

# What one connection takes from the server (see intake.py): a literal is refused when announced.
MAX_LITERAL = MIB           # header slices are 8 KiB
MAX_ANSWER = 2 * MIB        # all a command's answer: a FETCH of MAX_FETCH slices is 1.6 MiB
MAX_RECEIVED = 40 * MIB     # a connection: 2 folders x 2,000 slices of 8 KiB are 32 MiB
_COMPLETION = re.compile(rb"\S+ (?:OK|NO|BAD) ?(.*?)\r?\n?$", re.S)
_MUTF7 = LazyPattern(r"&([A-Za-z0-9+,]+)-")
_DOVECOT_TIMING = LazyPattern(r"\s*\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)\.?$")


def server_words(raw: object) -> str:
    """The text of a server reply, readable.

    UTF-8 where the server sent it (Dovecot names a missing folder in UTF-8),
    folder names in modified UTF-7 (RFC 3501) decoded where recognisable, and
    Dovecot's timing suffix "(0.001 + 0.000 secs)." left out.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = _MUTF7.sub(_from_mutf7, " ".join(text.split()))
    return _DOVECOT_TIMING.sub("", text)


def _from_mutf7(m: re.Match[str]) -> str:
    b64 = m.group(1).replace(",", "/")
    try:
        text = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True).decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError):
        return m.group(0)
    if not text or any(" " <= c <= "~" for c in text):  # printable ASCII is never encoded
        return m.group(0)
    return text


class ServerSaid(imapclient.IMAPClient.Error):
    """A command the server answered NO or BAD; ``words`` is its text."""

    def __init__(self, raw: object) -> None:
        self.words = server_words(raw)
        super().__init__(self.words)


class _Client(imapclient.IMAPClient):
    """IMAPClient that connects to an address looked up in advance (within the
    step's deadline), reports its traffic to *trace* and keeps the server's
    words intact; TLS and STARTTLS still check the certificate against the
    host name."""

    def __init__(self, host: str, address: str, trace: ImapTrace, **kwargs: Any) -> None:
        self._address = address
        self._trace = trace
        super().__init__(host, **kwargs)
        self._imap.debug = 0  # imapclient turns on imaplib's parser chatter; the trace says what counts

    def _create_IMAP4(self) -> _Connection:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _TLSConnection(self._address, self._trace, self.host, self.port, self.ssl_context, timeout)
        return _PlainConnection(self._address, self._trace, self.host, self.port, timeout)

    def _check_resp(self, expected: str, command: str, typ: str, data: list[Any]) -> None:
        # imapclient would decode the server's words as ASCII, dropping every other byte
        if typ != expected:
            raise ServerSaid(data[0] if data and isinstance(data[0], (bytes, str)) else b"")


# What _Connection stands before: imaplib's IMAP4 as imapclient extends it (no types of its own).
_IMAP4: Any = object


class _Connection(_IMAP4):
    """imaplib's socket-level I/O: to the address looked up, reported to the
    trace, bounded (no literal over MAX_LITERAL, at most MAX_ANSWER bytes
    a command, MAX_RECEIVED a connection; what no one took of an answer is
    dropped at the next command); a refused STARTTLS is told in the
    server's words."""

    def __init__(self, address: str, trace: ImapTrace, *args: Any) -> None:
        self.address = address
        self.trace = trace
        self.completion = b""  # the server's last tagged reply
        self.intake = Intake("server sent too much: more than %s", MAX_RECEIVED, max_answer=MAX_ANSWER,
                             max_literal=MAX_LITERAL, scope=" in one session")
        super().__init__(*args)

    def _open_tcp(self, timeout: Optional[float]) -> socket.socket:
        sock = tcp(self.address, self.port, timeout if timeout is not None else self._timeout)
        self.trace.connected(self.address, self.port)
        return sock

    def send(self, data: bytes) -> None:
        self.trace.sent(data)
        # every caller takes what it needs of an answer before its next command: untagged
        # responses left over (unasked for, or of no use) would pile up for the session
        self.untagged_responses.clear()
        self.intake.next_answer()
        super().send(data)

    def readline(self) -> bytes:
        self.intake.before()
        line = super().readline()
        self.intake.took(line)
        self.trace.received(line)
        if line.startswith(self.tagpre):
            self.completion = line
        return line

    def read(self, size: int) -> bytes:
        self.intake.before(size)  # imaplib reads a literal whole: refused before it is read
        data = super().read(size)
        self.intake.took(data, lines=0)
        self.trace.received(data)
        return data

    def starttls(self, ssl_context: Optional[ssl.SSLContext] = None) -> Any:
        self.completion = b""
        try:
            result = super().starttls(ssl_context)
        except self.abort:
            raise
        except self.error as exc:  # imaplib says "Couldn't establish TLS session"
            m = _COMPLETION.match(self.completion)
            if isinstance(self.sock, ssl.SSLSocket) or not m:
                raise
            raise StepFailure("IMAP TLS", "server refused STARTTLS: %s" % server_words(m.group(1))) from exc
        self.trace.tls_started(self.sock)
        return result


class _TLSConnection(_Connection, tls.IMAP4_TLS):
    def _create_socket(self, timeout: Optional[float] = None) -> ssl.SSLSocket:
        sock = tls.wrap_socket(self._open_tcp(timeout), self.ssl_context, host_arg(self.host))
        self.trace.tls_started(sock)
        return sock


class _PlainConnection(_Connection, imap4.IMAP4WithTimeout):
    def _create_socket(self, timeout: Optional[float] = None) -> socket.socket:
        return self._open_tcp(timeout)


def _shut(client: _Client) -> None:
    try:
        client.shutdown()
    except OSError:
        pass


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _connect(ep: Endpoint, address: str, deadline: Deadline, why: Optional[str] = None) -> _Client:
    """A client connected to *address* (with TLS for implicit TLS)."""
    trace: ImapTrace = tracing.trace_for("ImapTrace", ep.secrets())
    if why:
        trace.note(why)
    client = _Client(ep.host, address, trace, port=ep.port, ssl=(ep.tls == "tls"),
                     ssl_context=ep.ssl_context, timeout=deadline.left())
    client.normalise_times = False
    return client


def _starttls(client: _Client, ssl_context: Optional[ssl.SSLContext], deadline: Deadline) -> None:
    deadline.arm(client.socket())
    if not client.has_capability("STARTTLS"):
        raise StepFailure("IMAP TLS", "server does not offer STARTTLS")
    client.starttls(ssl_context)


WIRE = Wire("IMAP", _connect, _starttls, lambda client: client.socket(), lambda client: client.logout(), _shut)
