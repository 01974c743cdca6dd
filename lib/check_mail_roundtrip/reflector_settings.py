"""The reflector's settings: plain values built once from its command line and handed down.

Only the reflector loads it; the check's own are in settings.py.
"""

from __future__ import annotations

from typing import Optional

from .record import record
from .settings import Endpoint


@record(frozen=True)
class ReflectorSettings:
    """Everything one run of the reflector needs (mail_roundtrip_reflector pipe or poll)."""

    mode: str                       # "pipe" or "poll"
    secret_file: str
    state_dir: str
    timeout: float                  # for one message or one poll pass
    max_per_minute: int             # reflections to one address per minute at most
    max_age: float                  # seconds: an older probe is not reflected
    mail_from: Optional[str] = None  # sender of the reflections; None: the address the probe came to
    smtp: Optional[Endpoint] = None  # the way back by SMTP; None with sendmail
    helo: Optional[str] = None      # EHLO/HELO name; None: this host's FQDN
    sendmail: Optional[str] = None  # the local MTA's sendmail program, instead of SMTP
    sender: Optional[str] = None    # pipe: the envelope sender given; None: $SENDER
    recipient: Optional[str] = None  # pipe: the envelope recipient given; None: from the environment
    imap: Optional[Endpoint] = None  # poll: the mailbox read
    folder: str = "INBOX"           # poll: the folder the probes arrive in
    loop: bool = False              # poll: keep watching the folder ...
    loop_for: float = 0.0           # ... for this many seconds
