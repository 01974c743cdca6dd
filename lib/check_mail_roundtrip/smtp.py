"""SMTP transport: send one probe, and tell the outcomes apart.

Steps, as named in the status line: ``SMTP connect`` (TCP and greeting),
``SMTP TLS`` (implicit TLS or STARTTLS, certificate checked), ``SMTP auth``,
``SMTP send`` (MAIL, RCPT, DATA).  A 4xx answer is a temporary rejection, a
5xx a permanent one.  A connection lost after the message was handed over in
DATA leaves the outcome uncertain: the probe may still arrive.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from typing import TYPE_CHECKING, Any, NoReturn, Optional, Union, cast

import nagiosplugin

from . import sasl, tracing
from .budget import Deadline
from .connection import Connection, Wire
from .failure import StepFailure, describe, step
from .mail import FAILED, SENT, UNCERTAIN, SendResult
from .net import host_arg
from .settings import Endpoint

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from .trace import SmtpTrace

    _Base = smtplib.SMTP
else:
    _Base = object  # the mixin stands before smtplib's class, see below


class _Traced(_Base):
    """smtplib's socket-level I/O, reported to the connection's trace."""

    def __init__(self, *args: Any, trace: SmtpTrace, **kwargs: Any) -> None:
        self.trace = trace
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host_arg(host), port, timeout)  # type: ignore[misc]  # smtplib's, not in its stubs
        self.trace.connected(host, port, sock)
        return sock

    def send(self, s: Union[ReadableBuffer, str]) -> None:
        self.trace.sent(cast("Union[str, bytes]", s))  # what smtplib sends
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        code, text = super().getreply()
        self.trace.reply(code, text)
        return code, text


class _SMTP(_Traced, smtplib.SMTP):
    pass


class _SMTP_SSL(_Traced, smtplib.SMTP_SSL):
    pass


def _connection(ep: Endpoint, deadline: Deadline, local_hostname: Optional[str]) -> Connection[_Traced]:
    """The SMTP connections to *ep* (see connection.py), greeting as *local_hostname*.

    A set-up that fails drops the connection without a QUIT; the name-reading
    connection's STARTTLS is smtplib's alone (no capability check, no EHLO after it).
    """
    wire = Wire("SMTP", lambda ep, address, deadline, why: _open(ep, address, deadline, local_hostname, why),
                _starttls, lambda conn: conn.sock, lambda conn: conn.quit(), lambda conn: conn.close(),
                login_step="auth", goodbye_step="quit", goodbye_on_failure=False,
                upgrade=lambda conn, ssl_context, deadline: conn.starttls(context=ssl_context))
    return Connection(wire, ep, deadline)


def _open(ep: Endpoint, address: str, deadline: Deadline, local_hostname: Optional[str],
          why: Optional[str] = None) -> _Traced:
    """A connection to *address*, greeted with EHLO (or HELO), TLS done for implicit TLS."""
    cls = _SMTP_SSL if ep.tls == "tls" else _SMTP
    kwargs = {"context": ep.ssl_context} if ep.tls == "tls" else {}
    trace: SmtpTrace = tracing.trace_for("SmtpTrace", ep.secrets())
    if why:
        trace.note(why)
    conn = cls(local_hostname=local_hostname, timeout=deadline.left(), trace=trace, **kwargs)
    # Python 3.11's smtplib names the TLS server (SNI, hostname check) from this
    conn._host = host_arg(ep.host)  # type: ignore[union-attr]
    try:
        code, text = conn.connect(address, ep.port)
        if code != 220:  # e.g. 421 too many connections, 554 no service
            raise smtplib.SMTPConnectError(code, text)
        deadline.arm(conn.sock)
        code, text = conn.ehlo()
        if code != 250:
            code, text = conn.helo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, text)
    except BaseException:
        conn.close()
        raise
    return conn


def _starttls(conn: _Traced, ssl_context: Optional[ssl.SSLContext], deadline: Deadline) -> None:
    if not conn.has_extn("starttls"):
        raise StepFailure("SMTP TLS", "server does not offer STARTTLS")
    deadline.arm(conn.sock)
    try:
        conn.starttls(context=ssl_context)
    except smtplib.SMTPResponseException as exc:
        raise StepFailure("SMTP TLS", "server refused STARTTLS: %s" % describe(exc)) from exc
    conn.trace.tls_started(cast(ssl.SSLSocket, conn.sock))
    deadline.arm(conn.sock)
    conn.ehlo()


def _authenticate(conn: _Traced, ep: Endpoint, deadline: Deadline) -> None:
    """One AUTH attempt (the step ``SMTP auth``): PLAIN with UTF-8 credentials
    where offered, else smtplib's login().

    Without TLS, CRAM-MD5 is preferred where offered: the password then does
    not cross the wire in clear.  With OAuth2, see :func:`_oauth2`.
    """
    if not conn.has_extn("auth"):
        raise StepFailure("SMTP auth", "server offers no AUTH (after %s)" % ep.tls)
    deadline.arm(conn.sock)
    password = ep.password or ""
    mechanisms = conn.esmtp_features.get("auth", "").lower().split()
    if ep.auth == "oauth2":
        _oauth2(conn, ep, mechanisms, deadline)
        return
    assert ep.user is not None  # called for an endpoint with a user only (see send)
    if ep.tls == "none" and "cram-md5" in mechanisms and (ep.user + password).isascii():
        conn.user, conn.password = ep.user, password
        conn.auth("CRAM-MD5", conn.auth_cram_md5)
        return
    if "plain" in mechanisms:
        blob = base64.b64encode(("\0%s\0%s" % (ep.user, password)).encode("utf-8")).decode("ascii")
        code, text = conn.docmd("AUTH", "PLAIN " + blob)
        if code == 334:  # the server wants the response on its own line
            code, text = conn.docmd(blob)
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, text)
        return
    try:
        conn.login(ep.user, password)
    except UnicodeError:  # smtplib encodes LOGIN/CRAM-MD5 credentials as ASCII
        raise StepFailure("SMTP auth", "the server offers no AUTH PLAIN, and its mechanisms "
                                       "take ASCII passwords only") from None


def _oauth2(conn: _Traced, ep: Endpoint, mechanisms: list[str], deadline: Deadline) -> None:
    """AUTH with the token; once more with a fresh token if the server refuses it."""
    from .oauth2 import sign_in  # only a run that signs in with OAuth2 loads it

    sign_in(ep, deadline, "SMTP auth", mechanisms,
            lambda mechanism, token: _sasl(conn, ep, mechanism, token, deadline), conn.trace.hide)


def _sasl(conn: _Traced, ep: Endpoint, mechanism: str, token: str, deadline: Deadline) -> Optional[str]:
    """One AUTH dialogue with an initial response: None when accepted, else the server's words."""
    blob = sasl.initial_response(mechanism, ep.user or "", token, ep.host, ep.port)
    deadline.arm(conn.sock)
    code, text = conn.docmd("AUTH", "%s %s" % (mechanism, base64.b64encode(blob).decode("ascii")))
    challenges: list[str] = []
    if code == 334:  # an error challenge: answer it empty, the server then gives its verdict
        challenges.append(text.decode("ascii", "replace") if isinstance(text, bytes) else text)
        deadline.arm(conn.sock)
        code, text = conn.docmd("")
    if code == 235:
        return None
    return sasl.refusal(describe(smtplib.SMTPAuthenticationError(code, text)), challenges)


def _transaction(conn: _Traced, deadline: Deadline, mail_from: str, rcpt_to: str,
                 data: str) -> tuple[Optional[int], str]:
    """MAIL, RCPT, DATA; returns the final reply or raises."""
    for verb, call in (("MAIL", lambda: conn.mail(mail_from)), ("RCPT", lambda: conn.rcpt(rcpt_to))):
        deadline.arm(conn.sock)
        code, text = call()
        if not 200 <= code < 300:
            _reject(verb, code, text)
    deadline.arm(conn.sock)
    code, text = conn.docmd("DATA")
    if code != 354:
        _reject("DATA", code, text)
    handed_over = False
    try:
        deadline.arm(conn.sock)
        conn.send(smtplib.quotedata(data).encode("utf-8") + b"\r\n.\r\n")
        handed_over = True
        code, text = conn.getreply()
    except nagiosplugin.Timeout:
        raise
    except Exception as exc:
        if handed_over:  # the server may have taken the message
            return None, exc.detail if isinstance(exc, StepFailure) else describe(exc)
        raise
    if code < 0:  # no parsable reply: the server may have taken the message
        return None, "unreadable reply %r" % (text,)
    if not 200 <= code < 300:
        _reject("end of DATA", code, text)
    return code, text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _reject(verb: str, code: int, text: Union[str, bytes]) -> NoReturn:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kind = {4: "temporary rejection", 5: "permanent rejection"}.get(code // 100, "unexpected reply")
    raise StepFailure("SMTP send", "%s at %s: %s %s" % (kind, verb, code, " ".join(text.split())))


def send(message: str, mail_from: str, rcpt_to: str, endpoint: Endpoint, deadline: Deadline,
         local_hostname: Optional[str] = None) -> SendResult:
    """Send *message* (str, CRLF or LF line ends); a SendResult, never raises."""
    connection = _connection(endpoint, deadline, local_hostname)
    try:
        conn = connection.open((lambda conn: _authenticate(conn, endpoint, deadline)) if endpoint.user else None)
    except StepFailure as failure:
        return SendResult(FAILED, failure)
    try:
        with step("SMTP send", deadline):
            code, text = _transaction(conn, deadline, mail_from, rcpt_to, message)
        if code is None:
            return SendResult(
                UNCERTAIN,
                StepFailure("SMTP send", "connection lost after DATA, outcome unknown: %s" % text),
            )
        return SendResult(SENT, None, "%s %s" % (code, " ".join(text.split())))
    except StepFailure as failure:
        return SendResult(FAILED, failure)
    finally:
        connection.close(conn)
