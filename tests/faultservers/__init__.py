"""Small loopback servers that misbehave on purpose, for the network fault tests.

Every server binds 127.0.0.1 on a free port, serves in daemon threads and is
stopped by the test (use it as a context manager).  Every loop is bounded
(see server.py).  Nothing here talks to anything but loopback.

    with FaultServer(tarpit) as srv:          # accepts, never answers
        check("--imap-host", "127.0.0.1", "--imap-port", str(srv.port))

Handlers get a :class:`Conn` and do one scripted thing: greet and reset on
the first command, greet in plain text where TLS is expected, speak SMTP from
a script of replies (:class:`SMTPScript`), relay to a real server with a
delay (:class:`DelayProxy`), or relay to a real plain-text server and cut
the connection when the client sends a given command (:class:`CutRelay`).

One module per job, every public name re-exported here:
    server   FaultServer, Conn, Closed, free_port, server_context, the limits
    generic  tarpit, greet_then_reset, greet_then_close, plain_greeting, drip, Echo
    flood    Flood, lines (more than any client should take)
    imap     IMAPScript, IdleNews
    smtp     SMTPScript
    pop3     POP3Script
    relay    DelayProxy, CutRelay
    http     http_answer
"""

from .flood import FLOOD_SECONDS, FLOOD_TOTAL, Flood, lines
from .generic import Echo, drip, greet_then_close, greet_then_reset, plain_greeting, tarpit
from .http import http_answer
from .imap import IdleNews, IMAPScript
from .pop3 import POP3Script
from .relay import CutRelay, DelayProxy
from .server import CONN_LIFETIME, HOST, MAX_DATA, MAX_LINE, POLL, Closed, Conn, FaultServer, free_port, server_context
from .smtp import SMTPScript

__all__ = [
    "CONN_LIFETIME", "FLOOD_SECONDS", "FLOOD_TOTAL", "HOST", "MAX_DATA", "MAX_LINE", "POLL",
    "Closed", "Conn", "CutRelay", "DelayProxy", "Echo", "FaultServer", "Flood", "IdleNews", "IMAPScript",
    "POP3Script", "SMTPScript", "drip", "free_port", "greet_then_close", "greet_then_reset", "http_answer",
    "lines", "plain_greeting", "server_context", "tarpit",
]
