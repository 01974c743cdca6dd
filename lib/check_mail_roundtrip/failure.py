"""Failures of a step, told in the words of whoever failed.

Every transport wraps its steps in :func:`step`, which turns any exception
into a :class:`StepFailure` naming the step ("SMTP connect", "IMAP login",
...) and carrying the server's own words where there are any.  The protocol
libraries are not imported here: an exception of one can only come from a
run that loaded it.
"""

from __future__ import annotations

import ast
import functools
import re
import socket
import ssl
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, TypeVar, cast

import nagiosplugin

from . import tls
from .redact import redact

if TYPE_CHECKING:
    import smtplib

    from .budget import Deadline

T = TypeVar("T")

HINT_SECONDS = 2.0  # after a failure, asking the server for a hint may take this long


class StepFailure(Exception):
    """One named step failed; ``detail`` holds the server's or system's words.

    A single full stop at the end of the words is left out: the status line
    goes on after them ("Authentication failed, first probe sent").
    """

    def __init__(self, step: str, detail: str) -> None:
        detail = _one_line(detail)
        if detail.endswith(".") and not detail.endswith(".."):
            detail = detail[:-1].rstrip()
        super().__init__("%s failed: %s" % (step, detail))
        self.step = step
        self.detail = detail


class BudgetExhausted(Exception):
    """A step would start with no time left in the run's budget."""


def _raised_by(exc: BaseException, module: str, *names: str) -> bool:
    """Is *exc* one of the exceptions *names* (e.g. "IMAP4.error") of the library *module*?
    Not when no part of the run loaded that library (nothing is imported to ask)."""
    loaded: Any = sys.modules.get(module)
    if loaded is None:
        return False
    return isinstance(exc, tuple(functools.reduce(getattr, name.split("."), loaded) for name in names))


def describe(exc: BaseException) -> str:
    """A short, single-line text for *exc*, the server's reply where known."""
    if _raised_by(exc, "smtplib", "SMTPServerDisconnected") and isinstance(exc.__context__, OSError):
        return describe(exc.__context__)  # smtplib's wrapper of a socket error
    if _raised_by(exc, "smtplib", "SMTPResponseException"):
        reply = cast("smtplib.SMTPResponseException", exc)
        text = reply.smtp_error
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return _one_line("%s %s" % (reply.smtp_code, text))
    if _raised_by(exc, "smtplib", "SMTPRecipientsRefused"):
        parts = []
        for rcpt, (code, text) in cast("smtplib.SMTPRecipientsRefused", exc).recipients.items():
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            parts.append("%s: %s %s" % (rcpt, code, text))
        return _one_line("; ".join(parts))
    if isinstance(exc, ssl.SSLError):
        return _one_line(tls.describe(exc))
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return _one_line(str(exc) or "timed out")
    if isinstance(exc, socket.gaierror):
        return _one_line("cannot resolve host name: %s" % exc.strerror)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    if _raised_by(exc, "imaplib", "IMAP4.error") or _raised_by(exc, "poplib", "error_proto"):
        text = exc.args[0] if exc.args else str(exc)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return _one_line(_imaplib_socket_words(_unwrap_bytes_repr(str(text))))
    text = str(exc) or type(exc).__name__
    return _one_line(text)


def _imaplib_socket_words(text: str) -> str:
    """imaplib reports a dropped connection as "command: X => socket error: EOF"."""
    m = re.fullmatch(r"command: (\S+) => socket error: (.*)", text, re.S)
    if not m:
        return text
    if m.group(2).strip() in ("EOF", "unexpected EOF"):
        return "connection closed by the server (at %s)" % m.group(1)
    return "connection lost at %s: %s" % (m.group(1), m.group(2))


def _unwrap_bytes_repr(text: str) -> str:
    """imapclient passes some server replies on as "b'...'": show the words."""
    m = re.fullmatch(r"b(['\"])(.*)\1", text, re.S)
    if not m:
        return text
    if len(text) > 2000:  # the status line shows 300 characters anyway
        return m.group(2)
    try:
        return ast.literal_eval(text).decode("utf-8", "replace")
    except Exception:  # whatever the text holds, it only has to be shown
        return m.group(2)


def _one_line(text: object, limit: int = 300) -> str:
    text = " ".join(redact(str(text)).split())  # before the cut: no part of a secret is left
    text = text.replace("|", "/")  # '|' would start perfdata
    return text if len(text) <= limit else text[: limit - 3] + "..."


def attempt(name: str, deadline: Deadline, work: Callable[[], T]) -> Optional[T]:
    """``work()`` as an optional extra (a hint after a failure): run as step
    *name* for HINT_SECONDS at most, and not past *deadline*; None if it
    fails or runs out of time."""
    try:
        with step(name, deadline.within(HINT_SECONDS)):
            return work()
    except StepFailure:
        return None


def goodbye(name: str, deadline: Deadline, polite: Callable[[], object], rude: Callable[[], object]) -> None:
    """``polite()`` (a QUIT, a LOGOUT) as step *name* until *deadline*; when it
    fails or takes too long, ``rude()`` (closing the connection) instead."""
    try:
        with step(name, deadline):
            polite()
    except StepFailure:
        rude()


class step:
    """``with step(name, deadline):`` runs a block as one named step.

    The block must end by *deadline* (a budget.Deadline): when it passes, the
    block is interrupted.  Any failure leaves as a StepFailure naming the
    step; nagiosplugin's own Timeout passes unchanged.
    """

    def __init__(self, name: str, deadline: Deadline) -> None:
        self.name = name
        self._alarm = deadline.alarm(lambda: StepFailure(name, "timed out"))

    def __enter__(self) -> step:
        self._alarm.start()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        self._alarm.stop()
        if exc is None or isinstance(exc, (StepFailure, nagiosplugin.Timeout)):
            return False
        if isinstance(exc, BudgetExhausted):
            raise StepFailure(self.name, "no time left in the run's budget") from exc
        if isinstance(exc, Exception):  # every failure must become a status line
            try:
                detail = describe(exc)
            except Exception:
                detail = type(exc).__name__
            where = getattr(exc, "where", None)  # net.connect: the server that refused, or no such name
            name = "%s to %s" % (self.name, where) if isinstance(where, str) else self.name
            raise StepFailure(name, detail) from exc
        return False
