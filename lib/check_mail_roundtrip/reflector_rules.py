"""The reflector's rules: whether to send an incoming mail back, and the mail it sends.

Pure logic, no I/O and no clock (callers pass times in); only the reflector
loads it.  :func:`decide` holds every rule for one incoming mail (a probe
signed with the secret, from its signed return address, not a bounce, not
automatic, not reflected before, within the rate limit), :class:`Memory`
what the reflector remembers between mails, :func:`build_reflection` the
mail that sends a probe back.  The formats both sides share are in
reflection.py.
"""

from __future__ import annotations

import email.message
import email.utils
import re
from typing import Any, Optional, Union

from .lazy_re import LazyPattern
from .probe import HEADER, RETURN_HEADER, STAMP_HEADER, Token, header_values, own_token
from .record import field, record
from .reflection import SKEW, address, signed_return, stamp

# What the reflector reads of an incoming mail (and fetches over IMAP).
REFLECTOR_HEADERS = ("Subject", HEADER, RETURN_HEADER, STAMP_HEADER, "Content-Type", "From", "To",
                     "Message-ID", "Auto-Submitted", "Return-Path", "Precedence")

# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators:
# nothing of them is copied from a mail into the reflection or a log line.
_CONTROL = LazyPattern("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_REPORT = LazyPattern(r"\s*multipart/report\b", re.I)
_BULK = LazyPattern(r"\s*(bulk|list|junk)\b", re.I)


def printable(text: str) -> str:
    """*text* without control characters (CR, LF, NUL, ESC, all of C0 and C1, DEL) or
    Unicode line separators: safe on one header or log line."""
    return _CONTROL.sub("", text)


@record()
class Memory:
    """What the reflector remembers: probes reflected, recent reflections per address."""

    reflected: dict[str, float] = field(default_factory=dict)   # probe id -> reflected at (epoch s)
    recent: dict[str, list[float]] = field(default_factory=dict)  # address -> [epoch s of reflections]

    def to_json(self) -> dict[str, Any]:
        return {"reflected": self.reflected, "recent": self.recent}

    @classmethod
    def from_json(cls, data: Any) -> Memory:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        reflected, recent = data.get("reflected", {}), data.get("recent", {})
        if not (isinstance(reflected, dict) and isinstance(recent, dict)
                and all(isinstance(v, (int, float)) for v in reflected.values())
                and all(isinstance(v, list) and all(isinstance(t, (int, float)) for t in v)
                        for v in recent.values())):
            raise ValueError("wrong shape")
        merged: dict[str, list[float]] = {}
        for addr, times in recent.items():
            merged.setdefault(str(addr).lower(), []).extend(times)
        return cls(dict(reflected), merged)

    def prune(self, now: float, max_age: float) -> None:
        """Forget what can no longer matter: reflections older than *max_age* (a probe that
        old is refused anyway), rate-limit times older than a minute."""
        self.reflected = {k: t for k, t in self.reflected.items() if now - t <= max_age + SKEW}
        self.recent = {a: [t for t in ts if now - t < 60.0] for a, ts in self.recent.items()}
        self.recent = {a: ts for a, ts in self.recent.items() if ts}

    def record(self, probe_id: str, to: str, now: float) -> None:
        """Remember a reflection of *probe_id* to *to* at *now* (addresses counted case-insensitively)."""
        self.reflected[probe_id] = now
        self.recent.setdefault(to.lower(), []).append(now)

    def forget(self, probe_id: str, to: str, now: float) -> None:
        """Undo :meth:`record` for a reflection that was not sent after all."""
        self.reflected.pop(probe_id, None)
        times = self.recent.get(to.lower(), [])
        if now in times:
            times.remove(now)
        if not times:
            self.recent.pop(to.lower(), None)

    def sent_recently(self, to: str) -> int:
        """Reflections to *to* (any case) still within the rate-limit minute."""
        return len(self.recent.get(to.lower(), []))


@record()
class Decision:
    """Reflect (to *to*) or drop (why)."""

    to: Optional[str] = None    # the return address, when the probe is to be reflected
    why: Optional[str] = None   # why not, in words
    token: Optional[Token] = None  # when one was found
    subject: str = ""
    message_id: Optional[str] = None
    again: bool = False         # a verified probe reflected before (a duplicate: may be removed)


def decide(header_block: Union[str, bytes], envelope_sender: Optional[str], secret: bytes, memory: Memory,
           now: float, max_age: float, max_per_minute: int) -> Decision:
    """Whether to reflect one incoming mail (raw headers), at *now* (epoch seconds).

    *envelope_sender*: the SMTP MAIL FROM ("" for a bounce; None when unknown).
    """
    pairs = header_values(header_block, REFLECTOR_HEADERS)
    get: dict[str, str] = {}
    for name, value in pairs:
        get.setdefault(name, value)
    token = own_token(header_block, secret)
    d = Decision(token=token, subject=get.get("subject", ""), message_id=get.get("message-id"))
    sender = envelope_sender if envelope_sender is not None else get.get("return-path")
    auto = get.get("auto-submitted", "no").strip().lower()
    if sender is not None and sender.strip() in ("", "<>"):
        d.why = "a bounce (null envelope sender)"
    elif _REPORT.match(get.get("content-type", "")):
        d.why = "a delivery report (bounce)"
    elif STAMP_HEADER.lower() in get:
        d.why = "reflected already (it carries a reflector stamp)"
    elif auto and not auto.startswith("no"):
        d.why = "an automatic mail (Auto-Submitted: %s)" % auto
    elif _BULK.match(get.get("precedence", "")):
        d.why = "a bulk or list mail (Precedence: %s)" % get["precedence"].strip()
    elif token is None:
        d.why = "no probe signed with this secret"
    if d.why:
        return d
    assert token is not None  # else d.why says there is none
    to = signed_return(get.get(RETURN_HEADER.lower()), token_text(token), secret)
    if to is None:
        d.why = "no signed return address"
        return d
    author = address(get.get("from"))
    if author is None or author.lower() != to.lower():
        d.why = "From (%s) is not the signed return address" % (get.get("from") or "none")
        return d
    age = now - token.sent_ms / 1000.0
    if age > max_age:
        d.why = "sent %.0fs ago, more than --max-age %gs" % (age, max_age)
        return d
    if age < -SKEW * 60:
        d.why = "sent %.0fs in the future (clock?)" % -age
        return d
    if token.probe_id in memory.reflected:
        d.why, d.again = "reflected before (a duplicate)", True
        return d
    if memory.sent_recently(to) >= max_per_minute:
        d.why = "rate limit: %d reflections to %s in the last minute" % (max_per_minute, to)
        return d
    d.to = to
    return d


def token_text(token: Token) -> str:
    """A probe.Token as it stands in the mail."""
    return token.text()


# -- the reflected mail --------------------------------------------------------

def build_reflection(decision: Decision, received_ms: int, sent_ms: int, secret: bytes, mail_from: str,
                     hostname: str) -> email.message.EmailMessage:
    """The mail that sends a verified probe back (email.message.EmailMessage).

    The token stays in the Subject and in X-Mail-Roundtrip; the stamp says
    when the probe came and went; ``Auto-Submitted: auto-replied`` (RFC 3834)
    keeps vacation responders and other reflectors from answering it.
    Nothing taken from the probe or the environment brings a control
    character along (see :func:`printable`).
    """
    assert decision.token is not None and decision.to is not None  # a decision to reflect
    token = token_text(decision.token)
    mail_from, to, hostname = printable(mail_from), printable(decision.to), printable(hostname)
    subject, message_id = printable(decision.subject), printable(decision.message_id or "").strip()
    msg = email.message.EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = subject if token in subject else "Mail round-trip probe %s" % token
    msg["Date"] = email.utils.formatdate(sent_ms / 1000.0, localtime=False)
    _local, at, domain = mail_from.rpartition("@")
    msg["Message-ID"] = "<%s.%d.reflected@%s>" % (decision.token.probe_id, sent_ms, domain if at else hostname)
    if message_id:
        msg["In-Reply-To"] = message_id
        msg["References"] = message_id
    msg["Auto-Submitted"] = "auto-replied"
    msg[HEADER] = token
    msg[STAMP_HEADER] = stamp(token, received_ms, sent_ms, secret)
    msg.set_content(
        "This is mail_roundtrip_reflector on %s sending a check_mail_roundtrip\n"
        "probe back to %s, the address the probe was signed for.\n"
        "It received the probe at %s and sent it back at %s (UTC).\n"
        % (hostname, to, _utc(received_ms), _utc(sent_ms)))
    return msg


def _utc(ms: int) -> str:
    return email.utils.formatdate(ms / 1000.0, usegmt=True)
