"""Redaction: no secret of the run leaves it, in whatever form a server echoes it.

One :class:`Redactor` per process (:data:`RUN`, through :func:`register` and
:func:`redact`) knows every secret of the run: the passwords of every side,
the OAuth2 client secret, access and refresh tokens (registered when they are
obtained), the signing secret.  Every text that leaves the check or the
reflector goes through it last: the status line, long output, the protocol
trace, notes, exception texts, the reflector's log lines.  A secret is masked
as ``****`` in each of these forms:

- as it is, with ``|`` as ``/`` and whitespace collapsed or gone (what the
  output's own clean-up does to a line);
- URL-encoded or form-encoded, wholly or in part, percent-escapes in upper or
  lower case hex, a space as ``+``;
- escaped as in JSON, an IMAP quoted string, or HTML;
- in base64 (standard or URL-safe alphabet) inside a longer base64 run, at
  each of its three possible alignments: that covers SASL PLAIN
  (``\\0user\\0pass``, ``user\\0pass``), XOAUTH2 and OAUTHBEARER responses and
  any other encoded blob carrying it.  The whole run is masked.

A secret needs MIN_LENGTH characters to be looked for on its own (a shorter
one would mask ordinary words), and MIN_CORE base64 characters that it fills
entirely at an alignment to be looked for inside longer base64 runs.  Given
the *user*, the base64 of the SASL PLAIN combinations is masked also for a
password too short for that.

The expressions are compiled when a text may hold a secret, not before: a
text that holds none of the base64 texts, or (with nothing in it that starts
an encoded or escaped character) not each run of a secret's own characters,
cannot hold a secret and is returned as it is.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
from collections.abc import Sequence
from re import Pattern
from typing import Optional, Union

from .lazy_re import LazyPattern

MASK = "****"
MIN_LENGTH = 4
MIN_CORE = 6
_B64_CHAR = LazyPattern(r"[A-Za-z0-9+/_-]")
_ESCAPES = ("%", "\\", "&")  # what starts a character's URL-encoded, escaped or HTML form
_HTML = {"&": ("&amp;",), "<": ("&lt;",), ">": ("&gt;",), '"': ("&quot;",), "'": ("&#39;", "&#x27;")}

Secret = Union[str, bytes, None]


def _text(secret: Secret) -> str:
    """*secret* as text (bytes decoded as UTF-8)."""
    return secret.decode("utf-8", "replace") if isinstance(secret, bytes) else str(secret)


def _utf8(text: str) -> bytes:
    """*text* in UTF-8; a byte the environment could not decode as itself again."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _forms(c: str) -> set[str]:
    """Patterns for one character of a secret in each of the supported forms."""
    forms = {re.escape(c), "".join("%%(?i:%02X)" % b for b in _utf8(c))}
    if c == "|":
        forms.add("/")
    if c in '"\\':
        forms.add(re.escape("\\" + c))
    if c == "/":
        forms.add(re.escape("\\/"))
    forms.update(re.escape(entity) for entity in _HTML.get(c, ()))
    if not 0x20 <= ord(c) < 0x7f:  # JSON writes these as \u escapes
        units = c.encode("utf-16-be", "surrogatepass")
        forms.add("".join(r"\\u(?i:%02X%02X)" % (units[i], units[i + 1]) for i in range(0, len(units), 2)))
        if len(json.dumps(c)) == 4:  # JSON's short escapes: \n \t ...
            forms.add(re.escape(json.dumps(c)[1:-1]))
    return forms


def _either(forms: set[str]) -> str:
    """One pattern for any of *forms*, the longest tried first."""
    return "(?:%s)" % "|".join(sorted(forms, key=len, reverse=True))


def pattern(secret: str) -> str:
    """The regular expression that finds *secret* as it is, URL- or form-encoded, or escaped.

    A run of whitespace in it may be collapsed or gone, each of its
    characters written in any of the forms or as '+'.  No two ways of
    matching start with the same character (no runaway backtracking).
    """
    parts = []
    for piece in re.split(r"(\s+)", secret):
        if piece.isspace():
            forms = set().union(*(_forms(c) - {re.escape(c)} for c in piece))
            parts.append(_either(forms | {r"\s", r"\+"}) + "*")
        elif piece:
            parts.append("".join(_either(_forms(c)) for c in piece))
    return "".join(parts)


def own_runs(secret: str) -> tuple[str, ...]:
    """The runs of *secret* between its whitespace, '|' as '/': in a text without
    _ESCAPES, pattern(secret) matches only where each of them stands as it is."""
    return tuple(piece.replace("|", "/") for piece in secret.split())  # str.split's whitespace is re's \s


def may_hold(text: str, secrets: Sequence[tuple[str, ...]]) -> bool:
    """Might a pattern of one of *secrets* (each as its :func:`own_runs`) match in *text*?"""
    if any(escape in text for escape in _ESCAPES):
        return True
    text = text.replace("|", "/")
    return any(all(run in text for run in runs) for runs in secrets)


def cores(data: bytes) -> list[str]:
    """The base64 text that *data* alone determines inside a longer base64 run,
    at each of the three alignments it may have there (MIN_CORE characters or more)."""
    found = []
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + data).decode("ascii")
        start, end = -(-8 * k // 6), 8 * (k + len(data)) // 6   # characters whose 6 bits are all *data*'s
        core = encoded[start:end]
        if len(core) >= MIN_CORE:
            found += [core, core.replace("+", "-").replace("/", "_")]
    return found


def plain_logins(user: str, password: str) -> list[bytes]:
    """What SASL PLAIN (and its looser variants) encodes for *user* and *password*."""
    u, p = _utf8(user), _utf8(password)
    return [b"\0" + u + b"\0" + p, u + b"\0" + p, u + b"\0" + u + b"\0" + p]


class Redactor:
    """The secrets of one run, and the masking of every form of them in a text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._own: frozenset[tuple[str, ...]] = frozenset()  # each secret's own_runs
        self._runs: frozenset[str] = frozenset()  # base64 text that masks the run it is found in
        self._plain: Optional[Pattern] = None
        self._base64: Optional[Pattern] = None

    def add(self, secret: Secret, user: Optional[str] = None) -> None:
        """Know *secret* (str or bytes; None or empty is ignored); with *user*,
        also the SASL PLAIN encodings of the login *user* / *secret*."""
        if not secret:
            return
        text = _text(secret)
        alone = len("".join(text.split())) >= MIN_LENGTH
        runs = set(cores(_utf8(text))) if alone else set()
        if user is not None:
            runs.update(base64.b64encode(blob).decode("ascii") for blob in plain_logins(user, text))
        with self._lock:
            if alone and text not in self._secrets:
                self._secrets.add(text)
                self._own |= {own_runs(text)}
                self._plain = None
            if not runs <= self._runs:
                self._runs |= runs
                self._base64 = None

    def __call__(self, text: str) -> str:
        """*text* with every form of every known secret masked."""
        if not text:
            return text
        runs, own = self._runs, self._own  # frozen: replaced, never changed, by add()
        if any(run in text for run in runs):
            base64_runs = self._patterns()[1]
            assert base64_runs is not None  # compiled: runs are known
            text = _mask_runs(text, base64_runs)
        if own and may_hold(text, tuple(own)):
            plain = self._patterns()[0]
            assert plain is not None  # compiled: secrets are known
            text = plain.sub(MASK, text)
        return text

    def _patterns(self) -> tuple[Optional[Pattern], Optional[Pattern]]:
        """(the secrets' own forms, the base64 that masks a run), compiled once after a change."""
        with self._lock:
            if self._plain is None and self._secrets:
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._plain = re.compile("|".join(pattern(s) for s in ordered))
            if self._base64 is None and self._runs:
                self._base64 = re.compile("|".join(re.escape(r) for r in sorted(self._runs, key=len, reverse=True)))
            return self._plain, self._base64


def _mask_runs(text: str, runs: Pattern) -> str:
    """*text* with each base64 run that holds a match of *runs* masked whole (padding too)."""
    out, done = [], 0
    for _ in range(len(text)):  # every round masks one run further on, or ends
        m = runs.search(text, done)
        if m is None:
            break
        start, end = m.start(), m.end()
        while start > done and _B64_CHAR.match(text, start - 1):
            start -= 1
        while end < len(text) and _B64_CHAR.match(text, end):
            end += 1
        while end < len(text) and text[end] == "=":
            end += 1
        out += [text[done:start], MASK]
        done = end
    return "".join(out) + text[done:]


RUN = Redactor()


def register(*secrets: Secret, user: Optional[str] = None) -> None:
    """Make the run's redaction know *secrets* (with *user*: a login's password)."""
    for secret in secrets:
        RUN.add(secret, user)


def redact(text: str) -> str:
    """*text* without any secret of the run."""
    return RUN(text)


class Stream:
    """Standard output (whatever sys.stdout is when written to), every text written redacted."""

    def write(self, text: str) -> int:
        return sys.stdout.write(redact(text))

    def flush(self) -> None:
        sys.stdout.flush()
