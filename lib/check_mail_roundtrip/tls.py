"""TLS client contexts: certificates verified unless the user opts out.

The system's trust store is read the cheap way where it can be: OpenSSL's
default CA bundle is one file of some 150 certificates, parsed whole when a
context loads it (40 to 60 ms of CPU, more than half of what starting Python
with nagiosplugin and imapclient costs: docs/explanation/cost.md); the
hashed certificate directory beside it (``/etc/ssl/certs`` on Debian, kept by
``update-ca-certificates``) holds the same certificates, one file each under
its subject's hash, and OpenSSL reads only the one a server's chain asks for.
The bundle is read as before when the directory has no hashed names (as on
Fedora or RHEL), or when ``SSL_CERT_FILE`` names a bundle other than the default.

Also the words for a TLS failure, with a hint at the fix: the options that
trust a private CA, or the names a certificate for another host is for.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Optional

# OpenSSL verify codes: the chain ends at a certificate nobody told us to trust
_UNTRUSTED = {
    2,   # unable to get issuer certificate
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
    27,  # certificate not trusted
}
_WRONG_NAME = {62, 64}  # hostname mismatch, IP address mismatch
MAX_NAMES = 4
MAX_DIR_ENTRIES = 10000  # entries of the certificate directory looked at for a hashed name


def is_hashed_name(name: str) -> bool:
    """Is *name* a hashed certificate link, ``<8 hex digits>.<digits>`` (as ``openssl rehash`` names them)?"""
    stem, dot, serial = name.partition(".")
    return (len(stem) == 8 and dot == "." and serial.isdigit() and serial.isascii()
            and all(c in "0123456789abcdef" for c in stem))


def system_directory() -> Optional[str]:
    """The system's hashed CA directory when it can stand in for the whole store, else None.

    None when ``SSL_CERT_FILE`` names a bundle other than OpenSSL's default (a
    bundle of the user's own must be read), when there is no such directory
    (``SSL_CERT_DIR`` or OpenSSL's default), or when none of its first
    MAX_DIR_ENTRIES names is a hashed link.
    """
    paths = ssl.get_default_verify_paths()
    own = os.environ.get("SSL_CERT_FILE")
    if own and os.path.realpath(own) != os.path.realpath(paths.openssl_cafile):
        return None
    capath = paths.capath  # SSL_CERT_DIR or OpenSSL's, None if not a directory
    if not capath:
        return None
    try:
        with os.scandir(capath) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_DIR_ENTRIES:
                    break
                if is_hashed_name(entry.name):
                    return capath
    except OSError:
        pass
    return None


def _system_context() -> ssl.SSLContext:
    """A verifying context that trusts the system store (its hashed directory where it can)."""
    capath = system_directory()
    return ssl.create_default_context(capath=capath) if capath else ssl.create_default_context()


def client_context(ca_file: Optional[str] = None, insecure: bool = False) -> ssl.SSLContext:
    """An SSLContext that verifies the server against *ca_file* or the system store.

    Only *insecure* (the ``--insecure`` option) turns verification off.
    """
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else _system_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe(exc: ssl.SSLError, names: Optional[list[str]] = None) -> str:
    """One line for the TLS failure *exc*; *names*: whom the certificate is for."""
    if not isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS error: %s" % (exc.reason or exc)
    text = "certificate verify failed: %s" % (exc.verify_message or exc.reason or exc)
    text = text.rstrip(". ")
    if exc.verify_code in _UNTRUSTED:
        text += " (a private CA or a self-signed certificate? trust it with --ca-file, " \
                "or skip verification with --insecure)"
    elif exc.verify_code in _WRONG_NAME and names:
        shown = names[:MAX_NAMES] + (["..."] if len(names) > MAX_NAMES else [])
        text += " (the certificate is for %s)" % ", ".join(shown)
    return text


def wrong_name(exc: BaseException) -> bool:
    """Is *exc* a certificate issued for another host name?"""
    return isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _WRONG_NAME


def names_only(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """A context for reading whom a certificate is for after a name mismatch.

    It verifies the chain against the CAs of *ctx* (and the system store) but
    not the host name; the connection is used for nothing else.
    """
    probe = _system_context()
    probe.check_hostname = False
    cas = ctx.get_ca_certs(binary_form=True)
    if cas:
        probe.load_verify_locations(cadata=b"".join(cas))
    return probe


def certificate_names(sock: ssl.SSLSocket) -> list[str]:
    """The DNS names and addresses in the peer certificate of *sock* (else its common name)."""
    cert: dict[str, Any] = sock.getpeercert() or {}
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    if not names:
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return names
