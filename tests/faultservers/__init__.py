"""Small loopback servers that misbehave on purpose, for the network fault tests.

The servers live in tests/faultservers/server.py for now; this package
re-exports every public name, so ``from tests import faultservers as fs``
and ``from tests.faultservers import ...`` work as before.
"""

from .server import (
    CONN_LIFETIME,
    FLOOD_SECONDS,
    FLOOD_TOTAL,
    HOST,
    MAX_DATA,
    MAX_LINE,
    POLL,
    Closed,
    Conn,
    CutRelay,
    DelayProxy,
    Echo,
    FaultServer,
    Flood,
    IdleNews,
    IMAPScript,
    POP3Script,
    SMTPScript,
    drip,
    free_port,
    greet_then_close,
    greet_then_reset,
    http_answer,
    lines,
    plain_greeting,
    server_context,
    tarpit,
)

__all__ = [
    "CONN_LIFETIME", "FLOOD_SECONDS", "FLOOD_TOTAL", "HOST", "MAX_DATA", "MAX_LINE", "POLL",
    "Closed", "Conn", "CutRelay", "DelayProxy", "Echo", "FaultServer", "Flood", "IdleNews", "IMAPScript",
    "POP3Script", "SMTPScript", "drip", "free_port", "greet_then_close", "greet_then_reset", "http_answer",
    "lines", "plain_greeting", "server_context", "tarpit",
]
