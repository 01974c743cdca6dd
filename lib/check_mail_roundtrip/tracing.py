"""A connection's trace: the protocol trace (trace.py) with -vvv, else a quiet stand-in.

Each connection reports its traffic to a trace.  Only a run with the trace
on (-vvv: the trace logger at DEBUG) needs the real one; any other gets
:data:`QUIET`, whose methods do nothing, and trace.py is not loaded.  Either
way the connection's secrets are registered for redaction, and so is a
secret it learns later (``hide``: a fresh OAuth2 token).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .redact import Secret, register

LOGGER = "check_mail_roundtrip.trace"  # trace.log: what -vvv turns on


class Quiet:
    """What a trace does when the trace is off: nothing, but keep secrets out of the output."""

    on = False

    def hide(self, secret: Secret) -> None:
        register(secret)

    def _nothing(self, *_args: object, **_kwargs: object) -> None:
        """Nothing is traced."""

    note = connected = tls_started = sent = received = reply = _nothing


QUIET = Quiet()


def trace_for(kind: str, secrets: Iterable[Secret]) -> Any:
    """A new trace.<kind> (ImapTrace, SmtpTrace, Pop3Trace) when the trace is on, else QUIET;
    *secrets* (the endpoint's) registered for redaction either way."""
    register(*secrets)
    if not logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG):
        return QUIET
    from . import trace

    return getattr(trace, kind)()
