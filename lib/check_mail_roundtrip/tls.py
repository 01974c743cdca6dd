"""TLS client contexts: certificates verified unless the user opts out.

Also the words for a TLS failure, with a hint at the fix: the options that
trust a private CA, or the names a certificate for another host is for.
"""

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


def client_context(ca_file: Optional[str] = None, insecure: bool = False) -> ssl.SSLContext:
    """An SSLContext that verifies the server against *ca_file* or the system store.

    Only *insecure* (the ``--insecure`` option) turns verification off.
    """
    ctx = ssl.create_default_context(cafile=ca_file)
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
    probe = ssl.create_default_context()
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
