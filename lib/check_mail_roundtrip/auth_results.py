"""How the receiving side judged a probe: its Authentication-Results fields (RFC 8601), read and trusted.

Pure: no I/O.  A field reads ``authserv-id [version]; method=result
[reason=...] [ptype.property=value ...]; ...`` (or ``authserv-id; none``),
with comments and quoted strings anywhere; :func:`parse` reads one.

Anybody can write such a field into a mail, so only those of one host count
(:func:`verdicts`): the host whose name the fields carry as authserv-id, by
default the server that wrote the topmost Received field (the one that
delivered the probe into the mailbox), else the name given
(--auth-results-host).  And of that host only the fields that stand above
the Received field of the host *before* it: a host prepends its own fields
above what came with the mail, so anything below the Received field of an
earlier hop was written before the mail reached the trusted host, forged or
not, and is ignored (RFC 8601 section 5; its milters, OpenDKIM and OpenDMARC,
put theirs just below its own Received field, above the earlier hop's).  What
the hop right before it wrote in that place cannot be told apart: RFC 8601
asks the trusted host to remove fields with its name that come from outside.

The verdicts told are spf, dkim and dmarc: per method the first "pass" (a
mail may carry several DKIM signatures), else the topmost result.  fail,
softfail and none are bad (:meth:`Verdicts.bad`); a method the host did not
report is not judged.  Hostile fields cost little and never raise: each read
up to hops.MAX_FIELD characters, at most MAX_RESULTS results and MAX_FIELDS
fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

from .hops import MAX_FIELD, scan, shown, stamp
from .lazy_re import LazyPattern
from .record import field, record

METHODS = ("spf", "dkim", "dmarc")   # the verdicts told, in this order
BAD = ("fail", "softfail", "none")   # results that --auth-results-state judges
MAX_RESULTS = 50                     # results read of one field
MAX_FIELDS = 200                     # trace fields (Received and Authentication-Results) read of one mail
MAX_REASON = 80                      # characters of a reason shown

_METHOD = LazyPattern(r"^([A-Za-z0-9][\w-]*)(?:\s*/\s*\d+)?\s*=\s*([A-Za-z0-9][\w-]*)(.*)$", re.S)
_REASON = LazyPattern(r'(?:^|\s)reason\s*=\s*("(?:[^"\\]|\\.)*"|\S+)', re.I | re.S)
_PRINTABLE = LazyPattern(r"[^\x20-\x7e]|\|")


@record(frozen=True)
class Result:
    """One method's result in a field."""

    method: str          # lower case: spf, dkim, dmarc, ...
    result: str          # lower case: pass, fail, softfail, none, neutral, ...
    reason: str = ""     # the reason= value, else the comment after the result, shown safely


@record(frozen=True)
class Field:
    """One Authentication-Results field, read."""

    authserv_id: str                       # lower case, no trailing dot; "" when the field names none
    version: Optional[int] = None
    results: tuple = ()                    # Result


@record()
class Verdicts:
    """What the trusted host said of a probe."""

    host: str                                      # the trusted host ("" when none is known)
    results: list = field(default_factory=list)    # Result of the trusted fields, in order
    trusted_fields: int = 0                        # its fields counted
    ignored: int = 0                               # fields with its name that stood below an earlier hop's
    problem: str = ""                              # why nothing could be trusted, in words

    def verdict(self, method: str) -> Optional[Result]:
        """The first pass for *method*, else its topmost result; None when the host did not report it."""
        found = [r for r in self.results if r.method == method]
        return next((r for r in found if r.result == "pass"), found[0] if found else None)

    def bad(self) -> list[Result]:
        """The verdicts of METHODS that are fail, softfail or none."""
        told = [self.verdict(m) for m in METHODS]
        return [r for r in told if r is not None and r.result in BAD]

    def line(self) -> str:
        """``auth: spf=pass dkim=pass dmarc=pass (by mail.lab.test)`` for -v."""
        if self.problem:
            return "auth: %s" % self.problem
        told = [r for r in (self.verdict(m) for m in METHODS) if r is not None]
        words = " ".join("%s=%s%s" % (r.method, r.result, " (%s)" % r.reason if r.reason and r.result != "pass"
                                      else "") for r in told) or "no spf, dkim or dmarc result"
        text = "auth: %s (by %s)" % (words, self.host)
        if self.ignored:
            text += "; %d Authentication-Results with its name from before it ignored" % self.ignored
        return text


def _clean(text: str) -> str:
    """A reason as it may be printed: printable ASCII without '|', unquoted, at most MAX_REASON."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    text = " ".join(_PRINTABLE.sub("?", text[:MAX_REASON + 1]).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def _name(text: str) -> str:
    """A host name as compared: lower case, without a trailing dot."""
    return text.strip().lower().rstrip(".")


def parse(value: str) -> Field:
    """One Authentication-Results field's value (folded or not), read; never raises."""
    parts, _ = scan(value[:MAX_FIELD])
    segments: list[list[tuple[str, str]]] = [[]]
    for kind, part in parts:
        if kind == "word" and part == ";":
            segments.append([])
        else:
            segments[-1].append((kind, part))
    head = [p for kind, p in segments[0] if kind == "word"]
    authserv_id, version, rest = "", None, segments[1:]
    if head and "=" in head[0]:   # no authserv-id (as some servers write it): the first part is a result
        rest = segments
    elif head:
        authserv_id = _name(head[0].strip('"'))
        if len(head) > 1 and head[1].isdigit() and len(head[1]) < 10:
            version = int(head[1])
    results = []
    for segment in rest[:MAX_RESULTS]:
        words = " ".join(p for kind, p in segment if kind == "word")
        m = _METHOD.match(words)
        if not m:
            continue
        reason = _REASON.search(m.group(3))
        comments = [p for kind, p in segment if kind == "comment"]
        text = reason.group(1) if reason else comments[0] if comments else ""
        results.append(Result(m.group(1).lower(), m.group(2).lower(), _clean(text)))
    return Field(authserv_id, version, tuple(results))


def verdicts(fields: Sequence[tuple[str, str]], host: Optional[str] = None) -> Verdicts:
    """The verdicts of the trusted host from a mail's trace fields, as they stand in it (newest
    first): (lower-case name, value) of its Received and Authentication-Results fields.

    *host*: the trusted authserv-id (--auth-results-host); None: the server of the topmost
    Received field.  See the module doc for which fields count.
    """
    fields = list(fields[:MAX_FIELDS])
    servers = [(i, _name(stamp(v).server)) for i, (n, v) in enumerate(fields) if n == "received"]
    trusted = _name(host) if host else (servers[0][1] if servers else "")
    if not trusted:
        return Verdicts("", problem="no Received field names the server that delivered the probe")
    own = [i for i, name in servers if name == trusted]
    if not own:
        return Verdicts(shown(trusted), problem="no Received field by %s: its Authentication-Results cannot be "
                                                "told from forged ones" % shown(trusted))
    boundary = next((i for i, name in servers if i > own[0] and name != trusted), len(fields))
    out = Verdicts(shown(trusted))
    for i, (name, value) in enumerate(fields):
        if name != "authentication-results":
            continue
        read = parse(value)
        if read.authserv_id != trusted:
            continue
        if i < boundary:
            out.trusted_fields += 1
            out.results.extend(read.results)
        else:
            out.ignored += 1
    if not out.trusted_fields:
        out.problem = "no Authentication-Results by %s" % out.host + (
            " (%d with its name from before it ignored)" % out.ignored if out.ignored else "")
    return out
