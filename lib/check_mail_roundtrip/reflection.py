"""Reflection format: the signed return address, the reflector's stamp, and the legs.

Pure logic, no I/O and no clock (callers pass times in), shared by the
check (which signs the return address and reads the stamp) and the
reflector (which checks the one and writes the other; its rules for an
incoming mail are in reflector_rules.py).

- **The return address** is signed: the check puts
  ``X-Mail-Roundtrip-Return: <address>; sig=<hex>`` into each probe, an
  HMAC over the token and the address, keyed with the secret.  The reflector
  sends a probe back only to that address, and only when it is the probe's
  From: a probe whose From was changed, or that has no signed return
  address, is never answered (no backscatter to forged senders, no relay).
- **The stamp** the reflector adds, ``X-Mail-Roundtrip-Reflected: <token>;
  received=<ms>; sent=<ms>; sig=<hex>``, says when it received the probe and
  when it sent it back, signed like the rest.  A mail that carries one is
  never reflected again (two reflectors pointed at each other stop after
  one step).
- :func:`legs` splits a round trip into its two legs, from two clocks.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import re
from typing import Optional, Union

from .lazy_re import LazyPattern
from .probe import STAMP_HEADER, VERSION, header_values

# Clock difference tolerated between the check's and the reflector's clocks.
SKEW = 5.0
_STAMP = LazyPattern(r"^\s*(\S+)\s*;\s*received=(\d{10,15})\s*;\s*sent=(\d{10,15})\s*;\s*sig=([0-9a-f]{32})\s*$",
                    re.I)
_RETURN = LazyPattern(r"^\s*(.+?)\s*;\s*sig=([0-9a-f]{32})\s*$", re.I)


def _mac(secret: bytes, *parts: object) -> str:
    msg = "|".join((VERSION,) + tuple(str(p) for p in parts)).encode("utf-8")
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def address(text: Optional[str]) -> Optional[str]:
    """The bare address in a From/To value (lower-case domain), or None."""
    _name, addr = email.utils.parseaddr(text or "")
    if "@" not in addr or any(c in addr for c in " \t\r\n<>,;"):
        return None
    local, _, domain = addr.rpartition("@")
    return "%s@%s" % (local, domain.lower())


def return_header(token: str, mail_from: str, secret: bytes) -> str:
    """The value of RETURN_HEADER for a probe with *token* sent from *mail_from*."""
    addr = address(mail_from) or mail_from
    return "%s; sig=%s" % (addr, _mac(secret, "return", token, addr.lower()))


def signed_return(value: Optional[str], token: str, secret: bytes) -> Optional[str]:
    """The return address in a RETURN_HEADER *value*, if *secret* signed it for *token*; else None."""
    m = _RETURN.match(value or "")
    if not m:
        return None
    addr = address(m.group(1))
    if addr is None or not hmac.compare_digest(_mac(secret, "return", token, addr.lower()), m.group(2).lower()):
        return None
    return addr


def stamp(token: str, received_ms: int, sent_ms: int, secret: bytes) -> str:
    """The value of STAMP_HEADER: when the reflector received the probe and sent it back."""
    return "%s; received=%d; sent=%d; sig=%s" % (
        token, received_ms, sent_ms, _mac(secret, "reflected", token, received_ms, sent_ms))


def read_stamp(header_block: Union[str, bytes], token: str, secret: bytes) -> Optional[tuple[int, int]]:
    """(received_ms, sent_ms) of a valid stamp for *token* in *header_block*, else None."""
    for _name, value in header_values(header_block, (STAMP_HEADER,)):
        m = _STAMP.match(value)
        if not m or m.group(1).lower() != token.lower():
            continue
        received, sent = int(m.group(2)), int(m.group(3))
        if hmac.compare_digest(_mac(secret, "reflected", token, received, sent), m.group(4).lower()):
            return received, sent
    return None


# -- the two legs ----------------------------------------------------------------

def legs(sent: float, received: float, reflected: float, arrival: float,
         rtt: float) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """(leg_out, leg_back, note): seconds out (probe sent -> reflector received) and
    back (reflector sent -> arrival), or None for a leg the clocks make implausible
    (below -SKEW, or above the round trip), with a note for -v saying so.

    *sent* and *arrival* are on the monitor's and the mail server's clocks (as the
    round trip), *received* and *reflected* on the reflector's.
    """
    out, back = received - sent, arrival - reflected
    bad = [name for name, leg in (("out", out), ("back", back)) if leg < -SKEW or leg > rtt]
    note = None
    if bad:
        note = ("leg%s %s not reported: the reflector's clock and ours disagree (out %.3fs, back %.3fs, "
                "round trip %.3fs)" % ("s" if len(bad) > 1 else "", " and ".join(bad), out, back, rtt))
    return (None if "out" in bad else max(0.0, out)), (None if "back" in bad else max(0.0, back)), note
