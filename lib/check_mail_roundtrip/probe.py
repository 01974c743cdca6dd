"""Probe format: build a signed probe mail and recognise one that came back.

A probe carries a token::

    MRTP1.<profile key>.<probe id>.<send time in ms>.<signature>

- profile key: 12 hex digits of SHA-256 over the profile name, so that a
  server-side ``SEARCH SUBJECT "MRTP1.<key>"`` finds one profile's probes only;
- probe id: 16 hex digits, the first 4 naming the node that sent it (a hash
  of its name, see :func:`node_tag`), the rest random;
- send time: the monitor's clock, integer milliseconds since the epoch;
- signature: HMAC-SHA256 (first 128 bits, hex) over version, profile key,
  id and send time, keyed with the secret, so that whoever holds the secret
  can verify any probe by its token alone (probes of earlier versions were
  signed over the profile name and are still accepted for their profile).

The token stands in the Subject (it survives forwards and automatic replies
that keep only the subject: prefixes, RFC 2047 encoding and folding do not
hurt it) and in the header ``X-Mail-Roundtrip``.  Everything here is pure:
no I/O, no clock (the caller passes times in).
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.quoprimime
import email.utils
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Optional, Union

from .lazy_re import LazyPattern
from .record import record

VERSION = "MRTP1"
HEADER = "X-Mail-Roundtrip"
SUBJECT = "Mail round-trip probe "  # the Subject of a probe: this, then its token
# The signed return address of a probe, and the reflector's stamp (reflection.py).
RETURN_HEADER = "X-Mail-Roundtrip-Return"
STAMP_HEADER = "X-Mail-Roundtrip-Reflected"
# Headers fetched from the server to recognise a probe (keep this list short:
# it is what each returned probe costs in bytes).  Content-Type tells a
# delivery report (a bounce quoting the probe) from the probe itself; the
# stamp of a reflector splits the round trip into its legs.
FETCH_HEADERS = ("Subject", HEADER, "Content-Type", STAMP_HEADER)
_REPORT = LazyPattern(r"\s*multipart/report\b", re.IGNORECASE)  # a probe never is one

_TOKEN_RE = LazyPattern(
    r"MRTP1\.([0-9a-f]{12})\.([0-9a-f]{16})\.([0-9]{10,15})\.([0-9a-f]{32})(?![0-9a-f])",
    re.IGNORECASE,
)
# Bound the text examined, so a hostile 1 MB header costs little.
MAX_HEADER_CHARS = 64 * 1024


def profile_key(profile: str) -> str:
    """The 12-hex-digit key that marks one profile's probes (not secret)."""
    return hashlib.sha256(profile.encode("utf-8")).hexdigest()[:12]


def search_key(profile: str) -> str:
    """The string a server-side subject search looks for."""
    return "%s.%s" % (VERSION, profile_key(profile))


def _signature(secret: bytes, signed: str, probe_id: str, sent_ms: int) -> str:
    """HMAC over version, *signed* (the profile key; the name in older probes), id, time."""
    msg = "|".join((VERSION, signed, probe_id, str(sent_ms))).encode("utf-8")
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def _token_text(key: str, probe_id: str, sent_ms: int, signature: str) -> str:
    return "%s.%s.%s.%d.%s" % (VERSION, key, probe_id, sent_ms, signature)


@record(frozen=True)
class Probe:
    """One probe: who sent it (profile), its id and its send time."""

    profile: str
    probe_id: str
    sent_ms: int

    @property
    def sent(self) -> float:
        """Send time in seconds since the epoch."""
        return self.sent_ms / 1000.0

    def token(self, secret: bytes) -> str:
        key = profile_key(self.profile)
        return _token_text(key, self.probe_id, self.sent_ms, _signature(secret, key, self.probe_id, self.sent_ms))


NODE_TAG = 4  # hex digits of the probe id that name the sending node


def node_tag(node: str) -> str:
    """The first hex digits of the ids of the probes *node* sends (a hash of its name)."""
    return hashlib.sha256(node.encode("utf-8")).hexdigest()[:NODE_TAG]


def new_probe(profile: str, now: float, node: Optional[str] = None) -> Probe:
    """A fresh probe for *profile*, sent at *now* (epoch seconds) by *node* (a name;
    None: an id all random)."""
    tag = node_tag(node) if node is not None else secrets.token_hex(NODE_TAG // 2)
    return Probe(profile, tag + secrets.token_hex(8 - NODE_TAG // 2), int(round(now * 1000)))


@record(frozen=True)
class Token:
    """A token as found in a mail, not yet verified."""

    key: str
    probe_id: str
    sent_ms: int
    signature: str

    def verify(self, secret: bytes, profile: str) -> Optional[Probe]:
        """The Probe if this token is a genuine one of *profile*, else None."""
        if self.key != profile_key(profile):
            return None
        if not (self.signed_with(secret) or hmac.compare_digest(
                _signature(secret, profile, self.probe_id, self.sent_ms), self.signature)):
            return None
        return Probe(profile, self.probe_id, self.sent_ms)

    def text(self) -> str:
        """The token as it stands in the mail."""
        return _token_text(self.key, self.probe_id, self.sent_ms, self.signature)

    def signed_with(self, secret: bytes) -> bool:
        """True if *secret* made this token, whatever its profile."""
        expected = _signature(secret, self.key, self.probe_id, self.sent_ms)
        return hmac.compare_digest(expected, self.signature)


def find_tokens(text: str) -> list[Token]:
    """All well-formed tokens in *text* (a decoded header value)."""
    found: list[Token] = []
    for m in _TOKEN_RE.finditer(text[:MAX_HEADER_CHARS]):
        key, pid, sent, sig = m.groups()
        found.append(Token(key.lower(), pid.lower(), int(sent), sig.lower()))
    return found


_ENCODED_WORD = LazyPattern(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = LazyPattern(r"(\?=)[ \t]+(?==\?)")


def _decode_word(m: re.Match[str]) -> str:
    charset, encoding, text = m.group(1), m.group(2).upper(), m.group(3)
    try:
        if encoding == "B":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = email.quoprimime.header_decode(text).encode("latin-1")
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown or odd charset, bad base64: keep the raw word
        return m.group(0)


def decode_header_value(raw: Union[str, bytes]) -> str:
    """Decode an RFC 2047 encoded, possibly folded header value to text.

    Linear in the input and never raises: undecodable parts are kept as they
    are, so hostile input (8-bit, invalid UTF-8, odd charsets) is read as far
    as it can be, and cheaply.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    raw = raw[:MAX_HEADER_CHARS]
    unfolded = re.sub(r"\r?\n[ \t]+", " ", raw) if "\n" in raw else raw
    if "=?" not in unfolded:  # no encoded word (a probe's own headers): nothing more to decode
        return unfolded
    joined = _BETWEEN_WORDS.sub(r"\1", unfolded)  # blanks between encoded words vanish
    return _ENCODED_WORD.sub(_decode_word, joined)


def header_values(header_block: Union[str, bytes], names: Iterable[str] = FETCH_HEADERS) -> list[tuple[str, str]]:
    """Values of the named headers in a raw header block (bytes or str).

    Tolerates 8-bit bytes, invalid UTF-8, bare LF line ends and folding.
    Returns a list of (lower-case name, decoded value).
    """
    if isinstance(header_block, bytes):
        header_block = header_block.decode("utf-8", "replace")
    wanted = {n.lower() for n in names}
    values: list[tuple[str, list[str]]] = []
    current: Optional[tuple[str, list[str]]] = None
    for line in re.split(r"\r?\n", header_block):
        if line[:1] in (" ", "\t") and current is not None:
            current[1].append(line)
            continue
        current = None
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in wanted:
            current = (name.strip().lower(), [value])
            values.append(current)
    return [(n, decode_header_value("\n".join(v).strip())) for n, v in values]


def tokens_in_headers(pairs: Iterable[tuple[str, str]]) -> list[Token]:
    """Every token in the probe headers (from header_values), header first, then Subject."""
    tokens: list[Token] = []
    for name, value in sorted(pairs, key=lambda p: p[0] != HEADER.lower()):
        if name == "content-type":
            continue
        for tok in find_tokens(value):
            if tok not in tokens:
                tokens.append(tok)
    return tokens


def recognise(header_block: Union[str, bytes], secret: bytes, profile: str) -> tuple[Optional[Probe], Optional[str]]:
    """Verify a returned mail's headers.

    Returns (probe, reason): the genuine Probe of *profile* and None, or
    None and a short reason why the mail is not one (for ``-v``).  A
    delivery report (bounce, read receipt) quoting a probe is never the
    probe coming back: counting it would report mail flowing when it does not.
    """
    pairs = header_values(header_block)
    if any(name == "content-type" and _REPORT.match(value) for name, value in pairs):
        return None, "a delivery report (bounce) about a probe, not the probe itself"
    tokens = tokens_in_headers(pairs)
    if not tokens:
        return None, "no probe token"
    key = profile_key(profile)
    for tok in tokens:
        probe = tok.verify(secret, profile)
        if probe is not None:
            return probe, None
    if all(t.key != key for t in tokens):
        return None, "token of another profile"
    return None, "bad signature (forged or tampered token)"


PROBE_BODY = ("This is an automatic test message from check_mail_roundtrip,\n"
              "a monitoring check run on %s (check profile %r).\n\n"
              "It tests that mail from %s to %s is delivered and measures how\n"
              "long delivery takes. The check removes it when it comes back.\n"
              "Please do not reply to it.\n")


def build_message(probe: Probe, secret: bytes, mail_from: str, rcpt_to: str, hostname: str,
                  now: float) -> email.message.EmailMessage:
    """The probe as a proper mail (email.message.EmailMessage).

    Date, Message-ID, From, To and a short plain-text body saying what it
    is: empty bodies and missing Message-IDs score as spam.
    """
    token = probe.token(secret)
    msg = email.message.EmailMessage()
    msg["From"] = mail_from
    msg["To"] = rcpt_to
    msg["Subject"] = SUBJECT + token
    msg["Date"] = email.utils.formatdate(now, localtime=False)
    _local, at, domain = mail_from.rpartition("@")
    domain = domain if at and domain else hostname
    msg["Message-ID"] = "<%s.%d@%s>" % (probe.probe_id, probe.sent_ms, domain)
    msg[HEADER] = token
    msg.set_content(PROBE_BODY % (hostname, probe.profile, mail_from, rcpt_to))
    return msg


# The characters of an atom (RFC 5322) but "=" and "?", which could start an encoded word.
_ATEXT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/^_`{|}~-")


def _plain_address(address: str) -> bool:
    """Is *address* one the email package writes as given (a dot-atom local part and
    domain, no "=" or "?"): one :func:`message_text` writes itself?"""
    local, at, domain = address.partition("@")
    return bool(at) and all(atom and _ATEXT.issuperset(atom) for part in (local, domain) for atom in part.split("."))
TEXT_LINE = 78     # the email package's longest body line sent as it is (7bit), else quoted-printable
# Header lines up to this length (RFC 5322's limit) are not folded: the token
# stays readable as plain text in the Subject (no RFC 2047 encoding) for
# servers and filters that match on it.
HEADER_LINE = 998


def message_text(probe: Probe, secret: bytes, mail_from: str, rcpt_to: str, hostname: str, now: float,
                 extra: Iterable[tuple[str, str]] = ()) -> str:
    """The probe as sent (CRLF line ends): :func:`build_message` with the *extra*
    headers added, as the email package writes it under its SMTP policy with
    lines up to HEADER_LINE.

    A probe of plain addresses with a body of printable ASCII (the usual one)
    is written here, to the byte as the email package writes it (its choice
    of 7bit or quoted-printable included), without loading its header parser;
    any other is handed to the email package.
    """
    token = probe.token(secret)
    body = PROBE_BODY % (hostname, probe.profile, mail_from, rcpt_to)
    body_lines = body.split("\n")[:-1]
    cte, payload = "7bit", body
    if any(len(line) > TEXT_LINE for line in body_lines):
        cte, payload = "quoted-printable", email.quoprimime.body_encode(body, TEXT_LINE)
    _local, _at, domain = mail_from.rpartition("@")
    headers = [("From", mail_from), ("To", rcpt_to), ("Subject", SUBJECT + token),
               ("Date", email.utils.formatdate(now, localtime=False)),
               ("Message-ID", "<%s.%d@%s>" % (probe.probe_id, probe.sent_ms, domain)), (HEADER, token),
               ("Content-Type", 'text/plain; charset="utf-8"'), ("Content-Transfer-Encoding", cte),
               ("MIME-Version", "1.0")] + list(extra)
    lines = ["%s: %s" % pair for pair in headers]
    plain = (_plain_address(mail_from) and _plain_address(rcpt_to)
             and all(line.isascii() and line.isprintable() for line in body_lines)
             and (cte == "7bit" or len(payload) <= len(binascii.b2a_base64(body.encode("ascii"))))
             and all(line.isascii() and line.isprintable() and "=?" not in line and "  " not in line
                     and len(line) <= HEADER_LINE for line in lines))
    if plain:
        return "".join(line + "\r\n" for line in lines) + "\r\n" + "\r\n".join(payload.split("\n"))
    from email.policy import SMTP  # only for a probe the email package must write

    msg = build_message(probe, secret, mail_from, rcpt_to, hostname, now)
    for name, value in extra:
        msg[name] = value
    return msg.as_string(policy=SMTP.clone(max_line_length=HEADER_LINE))


def own_token(header_block: Union[str, bytes], secret: bytes) -> Optional[Token]:
    """The first token in a mail's headers that *secret* signed (any profile), else None.

    Delivery reports about a probe are never taken for it.
    """
    pairs = header_values(header_block)
    if any(name == "content-type" and _REPORT.match(value) for name, value in pairs):
        return None
    for tok in tokens_in_headers(pairs):
        if tok.signed_with(secret):
            return tok
    return None
