"""Protocol trace for ``-vvv``: our commands and the servers' replies, one line each.

    IMAP C: a001 LOGIN monitor@example.org ****
    IMAP S: a001 OK [CAPABILITY IMAP4rev1 ...] Logged in
    IMAP S: * 3 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)]<0> {123 bytes})
    SMTP C: <message, 1234 bytes>
    SMTP S: 250 2.0.0 Ok: queued as 4F2A1
    POP3 C: TOP 3 0
    POP3 S: +OK <header, 1187 bytes>
    Graph C: GET /v1.0/users/monitor@example.org/mailFolders/inbox/messages?$filter=... HTTP/1.1
    Graph S: HTTP/1.1 200 OK <application/json, 2817 bytes>

The transports hook their socket-level I/O into a trace: IMAP reports every
chunk it sends and every line or literal it reads (:class:`ImapTrace`),
SMTP every chunk it sends and every reply (:class:`SmtpTrace`), POP3 every
chunk it sends and every reply, a multi-line one summarised or on one line
(:class:`Pop3Trace`), Graph each request line and response status line
(:class:`GraphTrace`).  Secrets never reach the output: the LOGIN or PASS
password, whatever follows the mechanism
of AUTH/AUTHENTICATE, every client line of an authentication dialogue, and
every secret of the run in any form wherever it would appear (the run's one
redaction, :mod:`.redact`, which the connection's secrets are added to).  Literals and
message contents are summarised by their size.  When the trace is off (no
``-vvv``) the hooks return at once.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterable, Sequence
from typing import Optional, Union

from .lazy_re import LazyPattern
from .redact import Secret, redact, register

log = logging.getLogger("check_mail_roundtrip.trace")
MAX_LINE = 2000  # characters of one trace line; a longer one is cut
_LITERAL = LazyPattern(rb"\{(\d+)\+?\}\r?\n?$")
_CONTROL = LazyPattern(r"[\x00-\x1f\x7f]")


def enable(handler: logging.Handler) -> None:
    """Send the protocol trace (``-vvv``) and the transports' debug notes to *handler*.

    imapclient's own debug logger (imaplib's parser internals) stays off.
    """
    ours = logging.getLogger("check_mail_roundtrip")
    ours.setLevel(logging.DEBUG)
    ours.addHandler(handler)


class _Lines:
    """Reassembles one direction of a byte stream into lines.

    With *literals* (IMAP), a line ending in ``{N}`` announces N bytes of
    literal data that continue the line: they are shown as ``{N bytes}``.
    """

    def __init__(self, literals: bool) -> None:
        self.literals = literals
        self.buf = b""
        self.text = ""        # the line so far (literals summarised)
        self.skip = 0         # literal bytes still to come

    def feed(self, data: bytes) -> list[str]:
        """The whole lines completed by *data*."""
        self.buf += data
        done: list[str] = []
        for _ in range(len(self.buf) + 1):  # every round consumes bytes or stops
            if self.skip:
                taken = min(self.skip, len(self.buf))
                self.buf, self.skip = self.buf[taken:], self.skip - taken
                if self.skip:
                    break
                continue
            end = self.buf.find(b"\n")
            if end < 0:
                break
            line, self.buf = self.buf[:end + 1], self.buf[end + 1:]
            m = _LITERAL.search(line) if self.literals else None
            if m:
                self.text += _decode(line[:m.start()]) + "{%d bytes}" % int(m.group(1))
                self.skip = int(m.group(1))
                continue
            done.append(self.text + _decode(line.rstrip(b"\r\n")))
            self.text = ""
        return done

    def flush(self) -> list[str]:
        """What is pending of an unfinished line (say, waiting for a continuation)."""
        text, self.text = self.text, ""
        return [text] if text else []


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class Trace:
    """The trace of one connection to one server; does nothing unless enabled."""

    protocol = "?"
    AUTH: Optional[LazyPattern] = None   # our command that starts an authentication dialogue (group 1: what to show)
    LOGIN: Optional[LazyPattern] = None  # our command with the password in it (group 1: what to show)

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self.on = log.isEnabledFor(logging.DEBUG)
        register(*secrets)
        self._auth = False  # inside an authentication dialogue: client lines are secret

    def hide(self, secret: Secret) -> None:
        """Keep *secret* (e.g. a token fetched after the connection began) out of the trace."""
        register(secret)

    def note(self, text: str, *args: object) -> None:
        """A line about the connection itself (connected, TLS started, ...)."""
        if self.on:
            log.debug("%s: " + text, self.protocol, *args)

    def connected(self, address: str, port: int, sock: Optional[socket.socket] = None) -> None:
        self.note("connected to %s port %s", address, port)
        if isinstance(sock, ssl.SSLSocket):
            self.tls_started(sock)

    def tls_started(self, sock: ssl.SSLSocket) -> None:
        self.note("TLS established (%s)", sock.version())

    def _emit(self, who: str, text: str) -> None:
        text = _CONTROL.sub("?", " ".join(redact(text).split())).replace("|", "/")  # '|' would start perfdata
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "... (%d characters)" % len(text)
        log.debug("%s %s: %s", self.protocol, who, text)

    def _client_line(self, line: str) -> str:
        """Our command line, secrets hidden."""
        if self._auth:
            return "****"
        m = self.AUTH.match(line) if self.AUTH else None
        if m:
            self._auth = True
            return m.group(1) + (" ****" if m.group(0) != m.group(1) else "")
        m = self.LOGIN.match(line) if self.LOGIN else None
        if m:
            return m.group(1) + " ****"
        return line


class ImapTrace(Trace):
    """IMAP: tagged commands, untagged and tagged replies, literals as their size."""

    protocol = "IMAP"
    AUTH = LazyPattern(r"(?i)^(\S+ AUTHENTICATE \S+)(?: .*)?$")
    LOGIN = LazyPattern(r'(?i)^(\S+ LOGIN (?:"(?:[^"\\]|\\.)*"|\{\d+ bytes\}|\S+))(?: .*)?$')

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        super().__init__(secrets)
        self._sent = _Lines(literals=True)
        self._read = _Lines(literals=True)
        self._auth_tag: Optional[str] = None

    def sent(self, data: bytes) -> None:
        if not self.on:
            return
        for line in self._sent.feed(data):
            if line:  # an empty line ends a literal sent on its own
                self._emit("C", self._client_line(line))
            if self._auth and self._auth_tag is None:
                self._auth_tag = line.split(" ", 1)[0]

    def received(self, data: bytes) -> None:
        if not self.on:
            return
        for line in self._sent.flush():  # a command waiting for "+": show it first
            self._emit("C", self._client_line(line))
        for line in self._read.feed(data):
            if self._auth_tag and line.startswith(self._auth_tag + " "):
                self._auth, self._auth_tag = False, None
            self._emit("S", line)


class SmtpTrace(Trace):
    """SMTP: commands, replies (one line each, however many lines the server
    sent), the message as its size."""

    protocol = "SMTP"
    AUTH = LazyPattern(r"(?i)^(AUTH \S+)(?: .*)?$")

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        super().__init__(secrets)
        self._sent = _Lines(literals=False)
        self._data = False  # after 354: what we send is the message

    def sent(self, data: Union[str, bytes]) -> None:
        if not self.on:
            return
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        if self._data:
            self._emit("C", "<message, %d bytes>" % len(data))
            return
        for line in self._sent.feed(data):
            self._emit("C", self._client_line(line))

    def reply(self, code: int, text: Union[str, bytes]) -> None:
        if not self.on:
            return
        lines = _decode(text).split("\n") if isinstance(text, bytes) else str(text).split("\n")
        self._emit("S", "%s %s" % (code, " / ".join(lines)))
        self._data = code == 354
        if code != 334:  # 334: the server wants more of the authentication
            self._auth = False


class Pop3Trace(Trace):
    """POP3: commands and replies, one line each; a multi-line answer as a
    summary (``+OK <header, 1187 bytes>``) or with its lines joined by " / "."""

    protocol = "POP3"
    AUTH = LazyPattern(r"(?i)^(AUTH \S+)(?: .*)?$")
    LOGIN = LazyPattern(r"(?i)^(PASS)(?: .*)?$")

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        super().__init__(secrets)
        self._sent = _Lines(literals=False)

    def sent(self, data: bytes) -> None:
        if not self.on:
            return
        for line in self._sent.feed(data):
            self._emit("C", self._client_line(line))

    def reply(self, line: Union[str, bytes], body: Union[str, Sequence[Union[str, bytes]], None] = None) -> None:
        """A reply line (bytes or text); *body*: a multi-line answer's lines
        (shown joined) or a summary of it (shown in angle brackets)."""
        if not self.on:
            return
        text = _decode(line).rstrip("\r\n") if isinstance(line, bytes) else str(line)
        if isinstance(body, str):
            text += " <%s>" % body
        elif body:
            text = " / ".join([text] + [_decode(b) if isinstance(b, bytes) else str(b) for b in body])
        self._emit("S", text)
        if not (text == "+" or text.startswith("+ ")):  # "+ ": the server wants more of the authentication
            self._auth = False


class GraphTrace(Trace):
    """Microsoft Graph: each request line and each response's status line, bodies as their
    size (the token travels in a header, which is never shown)."""

    protocol = "Graph"

    def sent(self, line: str) -> None:
        if self.on:
            self._emit("C", line)

    def reply(self, line: str) -> None:
        if self.on:
            self._emit("S", line)
