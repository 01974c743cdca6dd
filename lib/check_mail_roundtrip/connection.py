"""Setting up a connection to a mail server, the same way for every protocol.

The steps, as named in the status line (for IMAP; POP3 and SMTP alike):
the OAuth2 token first (without one there is no point in connecting), then
``IMAP connect`` (the addresses of the host in turn, see :func:`net.connect`;
implicit TLS is part of it), ``IMAP TLS`` (STARTTLS, where asked for) and
``IMAP login``.  A TLS failure, in either place, is a failure of the TLS step
with a hint at the fix; for a certificate issued to another name, a second
connection that goes no further than TLS reads whom it is for.  A set-up that
fails after the connection was made ends it; :meth:`Connection.close` says
goodbye (a polite QUIT or LOGOUT within GOODBYE_SECONDS, else the
connection is dropped).

What differs between the protocols, a :class:`Wire` says: how to open a
connection, start TLS in it, find its socket, and end it politely or not.
"""

from __future__ import annotations

import socket
import ssl
from typing import Callable, Generic, Optional, TypeVar, cast

from . import record, tls
from .budget import Deadline
from .failure import StepFailure, attempt, goodbye, step
from .net import connect
from .settings import Endpoint

GOODBYE_SECONDS = 1.0  # a polite goodbye may take this long, then the connection is dropped
NAMES_WHY = "reading the certificate's names"

Conn = TypeVar("Conn")


@record.record(frozen=True)
class Wire(Generic[Conn]):
    """What one protocol does on the wire, for a :class:`Connection` to call.

    *open(endpoint, address, deadline, why)*: a connection to *address*,
    greeted, with TLS done for implicit TLS (*why*, when given, is noted in
    its trace); *starttls(conn, ssl_context, deadline)*: TLS started in it
    (a refusal told as a StepFailure of the TLS step); *socket(conn)*: its
    socket; *polite(conn)*: QUIT or LOGOUT; *rude(conn)*: closing it without
    a word.  *upgrade*, where given, starts TLS instead of *starttls* on a
    connection that only reads the certificate's names.
    """

    name: str                                                    # "IMAP": steps "IMAP connect", ...
    open: Callable[[Endpoint, str, Deadline, Optional[str]], Conn]
    starttls: Callable[[Conn, Optional[ssl.SSLContext], Deadline], None]
    socket: Callable[[Conn], Optional[socket.socket]]
    polite: Callable[[Conn], object]
    rude: Callable[[Conn], object]
    login_step: str = "login"                                    # "IMAP login", "SMTP auth"
    goodbye_step: str = "logout"                                 # "IMAP logout", "SMTP quit"
    goodbye_on_failure: bool = True                              # a failed set-up ends politely
    upgrade: Optional[Callable[[Conn, Optional[ssl.SSLContext], Deadline], object]] = None


class Connection(Generic[Conn]):
    """Connections of one protocol to *endpoint*, set up within *deadline*."""

    def __init__(self, wire: Wire, endpoint: Endpoint, deadline: Deadline) -> None:
        self.wire = wire
        self.ep = endpoint
        self.deadline = deadline
        self.tls_step = wire.name + " TLS"

    def open(self, login: Optional[Callable[[Conn], None]]) -> Conn:
        """A connection through the steps connect, TLS and ``login(conn)``
        (None: no login, and no token either); on failure it is ended."""
        ep, deadline, wire = self.ep, self.deadline, self.wire
        if login is not None and ep.auth == "oauth2":  # the token first: without one there is no point in connecting
            assert ep.oauth2 is not None  # OAuth2 logins come with their token source
            ep.oauth2.token(deadline)
        with step(wire.name + " connect", deadline):
            conn, address = connect(ep.host, ep.port, deadline, ep.family, self._opened)
        try:
            if ep.tls == "starttls":
                with step(self.tls_step, deadline):
                    self._tls_told(lambda: wire.starttls(conn, ep.ssl_context, deadline), address)
            if login is not None:
                with step("%s %s" % (wire.name, wire.login_step), deadline):
                    login(conn)
        except BaseException:
            if wire.goodbye_on_failure:
                self.close(conn)
            else:
                wire.rude(conn)
            raise
        return conn

    def close(self, conn: Conn) -> None:
        """Goodbye: the polite one within GOODBYE_SECONDS, else the connection dropped."""
        wire = self.wire
        goodbye("%s %s" % (wire.name, wire.goodbye_step), self.deadline.within(GOODBYE_SECONDS),
                lambda: wire.polite(conn), lambda: wire.rude(conn))

    def _opened(self, address: str) -> tuple:
        """(a connection to *address*, *address*); a TLS failure told with a hint."""
        return self._tls_told(lambda: self.wire.open(self.ep, address, self.deadline, None), address), address

    def _tls_told(self, work: Callable[[], object], address: str) -> object:
        """``work()``; a TLS failure becomes a StepFailure of the TLS step with a hint at the fix."""
        try:
            return work()
        except ssl.SSLError as exc:
            names = None
            if tls.wrong_name(exc):
                names = attempt(self.tls_step, self.deadline, lambda: self._names(address))
            raise StepFailure(self.tls_step, tls.describe(exc, names)) from exc

    def _names(self, address: str) -> list[str]:
        """The names in the certificate of *address*, read over a second connection
        that verifies the chain but not the host name, and goes no further than TLS."""
        wire = self.wire
        assert self.ep.ssl_context is not None  # the CLI always gives one
        ep = record.replace(self.ep, ssl_context=tls.names_only(self.ep.ssl_context))
        conn = wire.open(ep, address, self.deadline, NAMES_WHY)
        try:
            if ep.tls == "starttls":
                (wire.upgrade or wire.starttls)(conn, ep.ssl_context, self.deadline)
            return tls.certificate_names(cast(ssl.SSLSocket, wire.socket(conn)))  # TLS is up
        finally:
            wire.rude(conn)
