"""A connection's trace (lib/check_mail_roundtrip/tracing.py): the protocol trace
with -vvv, else a quiet stand-in that still keeps the connection's secrets out
of the output.  The trace itself, against the lab: test_trace.py; no secret in
any output at -v, -vv and -vvv: test_redact.py."""

import inspect
import logging

import pytest

from check_mail_roundtrip import trace, tracing
from check_mail_roundtrip.redact import redact


@pytest.fixture
def trace_on():
    """The trace logger at DEBUG, as -vvv sets it (trace.enable), for one test."""
    ours = logging.getLogger("check_mail_roundtrip")
    level = ours.level
    ours.setLevel(logging.DEBUG)
    yield
    ours.setLevel(level)


def test_the_quiet_trace_does_all_a_trace_does(trace_on):
    for kind in ("ImapTrace", "SmtpTrace", "Pop3Trace"):
        real = tracing.trace_for(kind, ())
        assert type(real) is getattr(trace, kind) and real.on
        public = {name for name, _ in inspect.getmembers(real, callable) if not name.startswith("_")}
        assert public <= set(dir(tracing.Quiet)), kind


def test_without_the_trace_a_connection_gets_the_quiet_one_and_its_secrets_are_registered():
    assert not logging.getLogger(tracing.LOGGER).isEnabledFor(logging.DEBUG)
    quiet = tracing.trace_for("SmtpTrace", ["pw-of-the-quiet-test", None])
    assert quiet is tracing.QUIET and not quiet.on
    quiet.sent(b"AUTH PLAIN pw-of-the-quiet-test\r\n")  # does nothing
    quiet.hide("token-learnt-later-0815")
    assert redact("pw-of-the-quiet-test and token-learnt-later-0815") == "**** and ****"
