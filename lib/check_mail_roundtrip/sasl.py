"""SASL for OAuth2 logins: XOAUTH2 and OAUTHBEARER (RFC 7628).

Pure: builds the initial client responses, picks the mechanism from what a
server offers, and reads the error challenge a server sends when it rejects
a token (its words masked by the run's redaction before they are cut short).
No I/O; the transports send and receive.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Optional, Union

from .redact import redact

XOAUTH2, OAUTHBEARER = "XOAUTH2", "OAUTHBEARER"
MECHANISMS = ("auto", "oauthbearer", "xoauth2")


class NoMechanism(Exception):
    """The server offers neither OAuth2 mechanism."""


def choose(forced: Optional[str], offered: Iterable[str]) -> str:
    """The mechanism to use: *forced* ("auto", "oauthbearer", "xoauth2"), else
    OAUTHBEARER when *offered* (the server's mechanism names) has it, else XOAUTH2."""
    if forced and forced != "auto":
        return forced.upper()
    offered = {m.upper() for m in offered}
    for mechanism in (OAUTHBEARER, XOAUTH2):
        if mechanism in offered:
            return mechanism
    raise NoMechanism("the server offers neither OAUTHBEARER nor XOAUTH2 (it offers: %s)"
                      % (" ".join(sorted(offered)) or "nothing"))


def initial_response(mechanism: str, user: str, token: str, host: str, port: int) -> bytes:
    """The client's first message (bytes, not yet base64) for *mechanism*."""
    if mechanism == XOAUTH2:
        return ("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode("utf-8")
    if mechanism == OAUTHBEARER:
        name = user.replace("=", "=3D").replace(",", "=2C")  # RFC 5801 saslname
        return ("n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01"
                % (name, host, port, token)).encode("utf-8")
    raise ValueError("not an OAuth2 mechanism: %s" % mechanism)


def error_text(challenge: Union[str, bytes]) -> str:
    """The words of a server's error challenge (JSON, RFC 7628 section 3.2.2).

    *challenge*: the decoded bytes, or the base64 text as sent.  Returns e.g.
    "invalid_token (scope mail)", or the text as it came when it is no JSON.
    """
    if isinstance(challenge, str):
        sent = challenge
        try:
            challenge = base64.b64decode(sent.strip(), validate=True)
        except (binascii.Error, ValueError):
            return _words(sent)
    text = challenge.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return _words(text)
    if not isinstance(data, dict):
        return _words(text)
    words = str(data.get("status") or data.get("error") or "rejected")
    if words.isdigit():  # XOAUTH2 servers (Google, Dovecot) send an HTTP status
        words = "status " + words
    extra = ["%s %s" % (k, data[k]) for k in ("scope", "schemes") if data.get(k)]
    return words + (" (%s)" % ", ".join(extra) if extra else "")


def _words(text: str) -> str:
    """*text* on one line, cut to 200 characters after any secret in it is masked."""
    return " ".join(redact(text).split())[:200]


def refusal(words: str, challenges: Iterable[Union[str, bytes, None]]) -> str:
    """The server's *words* for a refused token, with its OAuth2 answer (the
    first error challenge among *challenges*) when it sent one."""
    answers = [error_text(c) for c in challenges if c]
    return words.rstrip(". ") + ("; the server's OAuth2 answer: %s" % answers[0] if answers else "")
