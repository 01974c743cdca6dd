"""Run settings: plain values built once by the CLI and handed down.

No module reads options from anywhere else; tests build Settings directly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Union

from .record import field, record

if TYPE_CHECKING:
    import ssl

    from nagiosplugin import Range

    from .oauth2 import TokenSource


@record(frozen=True)
class Endpoint:
    """One server connection: where, how (TLS mode) and as whom."""

    protocol: str            # "SMTP", "IMAP", "POP3" or "Graph" (names the steps in messages)
    host: str
    port: int
    tls: str                 # "tls", "starttls" or "none"
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ssl_context: Optional[ssl.SSLContext] = field(default=None, repr=False, compare=False)
    auth: str = "password"   # "password" or "oauth2"
    oauth2: Optional[TokenSource] = field(default=None, repr=False, compare=False)
    mechanism: str = "auto"  # OAuth2 SASL mechanism: "auto", "oauthbearer" or "xoauth2"
    family: Optional[str] = None  # "ipv4", "ipv6", or None: whatever the name resolves to

    def secrets(self) -> list[str]:
        """What a trace must never show: the password, the OAuth2 token and its secrets."""
        found = [self.password] if self.password else []
        return found + (self.oauth2.secrets() if self.oauth2 is not None else [])


@record(frozen=True)
class Settings:
    """Everything one run needs."""

    profile: str
    mail_from: str
    rcpt_to: str
    smtp: Optional[Endpoint]        # None when Graph sends
    imap: Optional[Endpoint]        # None when POP3 or Graph collects
    state_dir: str
    folder: str = "INBOX"
    secret_file: Optional[str] = None
    warning: Optional[Range] = None   # for rtt / oldest_pending
    critical: Optional[Range] = None
    lost_after: float = 3600.0
    lost_warning: Optional[Range] = None   # for the lost count
    lost_critical: Optional[Range] = None
    stale_warning: Optional[Range] = None  # for since_last_success (None: not evaluated)
    stale_critical: Optional[Range] = None
    leg_warning: Optional[Range] = None    # for each leg of a reflected round trip (None: not evaluated)
    leg_critical: Optional[Range] = None
    keep: bool = False
    dedicated: bool = False         # the folder is the check's alone: plain EXPUNGE allowed
    error_state: str = "critical"
    timeout: float = 30.0
    verbose: int = 0
    hostname: str = "localhost"
    helo: Optional[str] = None      # EHLO/HELO name; None: this host's FQDN
    pop3: Optional[Endpoint] = None  # with collect_by "pop3"
    collect_by: str = "imap"        # the side that collects: "imap", "pop3" or "graph"
    junk: Union[bool, str, None] = True  # IMAP's Junk folder: True (find it), a name, or None (--no-junk)
    junk_state: str = "warning"     # state of a run that found a probe in Junk
    wait: float = 0.0               # seconds to wait for the probe just sent (--wait)
    idle: bool = True               # wait with IDLE where the server offers it (else poll)
    node: Optional[str] = None      # this monitoring node's name (its probes' ids carry its tag)
    history_days: int = 400         # days of history kept (0: no history file written)
    graph: Optional[Endpoint] = None  # Microsoft Graph, when a leg uses it (its user: the mailbox)
    send_by: str = "smtp"           # the side that sends: "smtp" or "graph"
    auth_results_state: str = "ok"  # state when a probe's spf, dkim or dmarc verdict is fail, softfail or none
    auth_results_host: Optional[str] = None  # whose Authentication-Results count (None: the delivering server)

    @property
    def collect(self) -> Endpoint:
        """The Endpoint the probes are collected from (IMAP, POP3 or Graph)."""
        endpoint = {"pop3": self.pop3, "graph": self.graph}.get(self.collect_by, self.imap)
        assert endpoint is not None  # the settings of the side that collects are always given
        return endpoint

    @property
    def sending(self) -> Endpoint:
        """The Endpoint the probes are sent through (SMTP or Graph)."""
        endpoint = self.graph if self.send_by == "graph" else self.smtp
        assert endpoint is not None  # the settings of the side that sends are always given
        return endpoint


def upper_bound(rng: Optional[Range]) -> Optional[float]:
    """N for a plain 0:N range (also written N or :N), else None."""
    if rng is None or rng.invert or rng.start != 0 or math.isinf(rng.end):
        return None
    return rng.end
