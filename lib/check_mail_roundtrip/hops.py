"""The way a returned probe took: its Received fields as hops, oldest first, each with its time.

Pure: no I/O, no clock (the caller passes the probe's send time and when it
was collected).  A Received field (RFC 5321 4.4) reads ``from A (info) by B
(info) with PROTO id X for <rcpt>; date``; each server prepends its own, so
the newest stands on top.  :func:`hops` turns the fields (as they stand in the
mail, newest first) into :class:`Hop` records, oldest first:

- *from* (the client's EHLO name, and the address the server saw), *by* (the
  server that wrote the field), *with* (the protocol), TLS (a protocol of RFC
  3848 ending in S or SA, such as ESMTPS or LMTPS, or a comment such as
  Postfix's ``(using TLSv1.3 with cipher ...)`` or ``(version=TLS1_2, ...)``)
  and the date after the last ``;`` outside comments;
- the hop's time: since the hop before, for hop 1 since the probe was sent.
  Received dates have whole seconds: a hop shown as +0.0s took less than a
  second, and hop 1 (measured from the send time in milliseconds) may be up
  to a second longer than shown.  A time is never negative: a date more than
  a second before the hop before (or after the probe was collected) means
  the clocks of those servers disagree, and the hop says ``clock?``; the
  next hop is measured from the last date that made sense.
- where the time was spent (:attr:`Hop.at`): for hop 1 the first server (the
  probe's own SMTP dialogue with it), for a later hop the server of the hop
  before, whose queue held the mail until the next server took it
  (greylisting by the next server shows there too: the mail waits in that
  queue to be tried again).

Hostile fields cost little and never raise: at most MAX_RECEIVED fields and
MAX_TOTAL characters of them (the newest), each read up to MAX_FIELD characters, comments nested at most
MAX_DEPTH deep, names shown as at most MAX_NAME characters of a safe set
(nothing that could end a status line or start perfdata).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from typing import Optional

from .lazy_re import LazyPattern
from .record import field, record

MAX_RECEIVED = 500   # Received fields read at most (the newest; a mail loop has hundreds)
MAX_FIELD = 4096     # characters of one field read
MAX_TOTAL = 64 * 1024  # characters of all fields read (the newest fields first)
MAX_DEPTH = 20       # comment nesting followed (deeper is still skipped as comment)
MAX_NAME = 80        # characters of a name shown
MAX_SHOWN = 40       # hop lines shown at most (the first and the last half of them)
SKEW = 5.0           # seconds a date may lie after the collection (the monitor's clock) before it is doubted

_TLS_PROTOCOL = LazyPattern(r"^(?:E?SMTP|LMTP|UTF8SMTP|UTF8LMTP)SA?$", re.I)
_TLS_COMMENT = LazyPattern(r"\busing\s+TLS|\bversion=TLS", re.I)
_ADDRESS = LazyPattern(r"\[(?:IPv6:)?[0-9A-Fa-f:.]{2,45}\]")
_UNSAFE = LazyPattern(r"[^\w.:@\[\]-]")
_KEYWORDS = ("from", "by", "via", "with", "id", "for")


@record(frozen=True)
class Stamp:
    """One Received field, read: what it says (names as shown, safe to print)."""

    sender: str = ""             # the from clause: EHLO name and address seen, "" when absent
    server: str = ""             # the by clause: the server that wrote the field
    protocol: str = ""           # the with clause, upper case ("" when absent)
    tls: bool = False
    date: Optional[float] = None  # epoch seconds (whole), None when absent or no date


@record(frozen=True)
class Hop:
    """One hop, oldest first: its stamp and its time."""

    number: int
    stamp: Stamp
    seconds: Optional[float] = None   # since the hop before (hop 1: since sending); None when unknown
    doubt: str = ""                   # why the time is not told: the clocks disagree ("clock?"), no date
    at: str = ""                      # where the time was spent (see the module doc)

    def line(self) -> str:
        """``hop N: FROM -> BY (with PROTO, TLS yes|no) +X.Xs``."""
        s = self.stamp
        how = ("with %s, " % s.protocol if s.protocol else "") + "TLS %s" % ("yes" if s.tls else "no")
        when = "+%.1fs" % self.seconds if self.seconds is not None else self.doubt
        return "hop %d: %s -> %s (%s) %s" % (self.number, s.sender or "?", s.server or "?", how, when)


@record()
class Route:
    """The hops of one probe, oldest first, and what was left out."""

    hops: list = field(default_factory=list)  # Hop
    dropped: int = 0                          # older Received fields not read (beyond MAX_RECEIVED)

    def slowest(self) -> Optional[Hop]:
        """The hop that took longest (the first of equals), or None when no hop has a time."""
        timed = [h for h in self.hops if h.seconds is not None]
        return max(timed, key=lambda h: h.seconds) if timed else None

    def lines(self) -> list[str]:
        """One line per hop, oldest first; of a very long chain the first and the last MAX_SHOWN/2."""
        lines = [h.line() for h in self.hops]
        if len(lines) > MAX_SHOWN:
            half = MAX_SHOWN // 2
            lines[half:-half] = ["... %d hops not shown ..." % (len(lines) - 2 * half)]
        if self.dropped:
            lines.insert(0, "(%d older Received fields not read: too many)" % self.dropped)
        return lines


def shown(text: str) -> str:
    """A name as it may be printed: a safe set of characters (others as '?'), at most MAX_NAME."""
    text = _UNSAFE.sub("?", text[:MAX_NAME + 1])
    return text if len(text) <= MAX_NAME else text[:MAX_NAME - 3] + "..."


def scan(text: str) -> tuple[list[tuple[str, str]], int]:
    """The parts of a field: ([("word" or "comment", text)], where its date starts).

    Comments (nested, with quoted pairs) are kept as one part each; quoted
    strings belong to the word they stand in.  The date starts after the
    last ';' outside comments and quotes (-1: there is none).
    """
    parts: list[tuple[str, str]] = []
    word: list[str] = []
    comment: list[str] = []
    depth, quoted, escaped, semicolon = 0, False, False, -1

    def end_word() -> None:
        if word:
            parts.append(("word", "".join(word)))
            word.clear()

    for i, ch in enumerate(text):
        if escaped:
            (comment if depth else word).append(ch)
            escaped = False
        elif ch == "\\" and (depth or quoted):
            escaped = True
        elif depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if not depth:
                    parts.append(("comment", "".join(comment)))
                    comment.clear()
                    continue
            if depth <= MAX_DEPTH:
                comment.append(ch)
        elif quoted:
            quoted = ch != '"'
            word.append(ch)
        elif ch == "(":
            end_word()
            depth = 1
        elif ch == '"':
            quoted = True
            word.append(ch)
        elif ch in " \t\r\n":
            end_word()
        elif ch == ";":
            end_word()
            semicolon = i
            parts.append(("word", ";"))
        else:
            word.append(ch)
    end_word()
    if comment:
        parts.append(("comment", "".join(comment)))
    return parts, semicolon


def date_of(text: str) -> Optional[float]:
    """Epoch seconds of an RFC 5322 date, or None when it is none (never raises)."""
    try:
        parsed = email.utils.parsedate_tz(text[:200])
        return float(email.utils.mktime_tz(parsed)) if parsed else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def stamp(value: str) -> Stamp:
    """One Received field's value (unfolded or not), read."""
    text = value[:MAX_FIELD]
    parts, semicolon = scan(text)
    clauses: dict[str, str] = {}
    infos: dict[str, list[str]] = {}
    current = ""
    for kind, part in parts:
        if kind == "word" and part == ";":
            break
        if kind == "comment":
            infos.setdefault(current, []).append(part)
        elif current and current not in clauses:
            clauses[current] = part
        elif part.lower() in _KEYWORDS:
            current = part.lower()
    date = None
    if semicolon >= 0:
        date_parts, _ = scan(text[semicolon + 1:])
        date = date_of(" ".join(p for kind, p in date_parts if kind == "word"))
    sender = clauses.get("from", "")
    address = next((m.group(0) for info in infos.get("from", ()) for m in [_ADDRESS.search(info)] if m), "")
    shown_sender = " ".join(shown(t) for t in (sender, address) if t)
    protocol = shown(clauses.get("with", "")).upper()
    tls = bool(_TLS_PROTOCOL.match(protocol)) or any(
        _TLS_COMMENT.search(info) for infos_of in infos.values() for info in infos_of)
    return Stamp(shown_sender, shown(clauses.get("by", "")), protocol, tls, date)


def hops(received: Sequence[str], sent: float, collected: Optional[float] = None) -> Route:
    """The hops of a probe sent at *sent* (epoch seconds) and collected at *collected*
    (None: not known), from its Received field values as they stand in the mail (newest first)."""
    kept, total = [], 0
    for value in received[:MAX_RECEIVED]:
        total += min(len(value), MAX_FIELD)
        if total > MAX_TOTAL:
            break
        kept.append(value)
    route = Route(dropped=len(received) - len(kept))
    stamps = [stamp(v) for v in kept][::-1]
    last = sent          # the last date that made sense (hop 1: the send time)
    before = ""          # the server of the hop before
    for number, s in enumerate(stamps, 1):
        seconds, doubt = None, ""
        if s.date is None:
            doubt = "date?"
        elif s.date - last <= -1.0:
            doubt = "clock? (dated %.0fs before the %s)" % (last - s.date, "hop before" if number > 1 else
                                                            "probe was sent")
        elif collected is not None and s.date > collected + SKEW:
            doubt = "clock? (dated %.0fs after the probe was collected)" % (s.date - collected)
        else:
            seconds, last = max(0.0, s.date - last), s.date
        at = (before or s.sender.split(" ")[0]) if number > 1 else s.server
        route.hops.append(Hop(number, s, seconds, doubt, at or s.server or "?"))
        before = s.server or before
    return route
