"""Host name lookup bounded by a deadline, and connecting to the addresses found.

``getaddrinfo`` is a C call that no signal interrupts: a resolver that does
not answer would hold a step past its deadline.  The lookup runs in a daemon
thread instead, and the step waits for it only as long as its deadline
allows.  The transports then connect to the addresses found, in the
resolver's order, trying the next one when one refuses (no second lookup),
while TLS still checks the certificate against the host name.  ``-4``/``-6``
keep only one family.

:func:`connect` does both and marks a failure that is the address's fault
(no such name, refused, unreachable) with ``where`` ("host:port"), so the
step's status line names the server the admin has to look at.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, cast

if TYPE_CHECKING:
    from .budget import Deadline

T = TypeVar("T")

FAMILIES = {None: socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
# A connection refused or a network not reachable: the next address may do.
_NEXT = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
# Of those, the ones whose status line names the server (:func:`connect`).
_AT_SERVER = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)


def host_arg(host: str) -> Union[str, bytes]:
    """*host* as socket and ssl are to be given it: an ASCII name as bytes, taken as
    they are; a str they would IDNA-encode first, and importing that codec (with
    stringprep and unicodedata) is a noticeable part of a run's CPU.  A name in
    another script stays a str and is encoded as before."""
    return host.encode("ascii") if host.isascii() else host


def tcp(address: str, port: int, timeout: Optional[float]) -> socket.socket:
    """A TCP connection to *address*, an IP address as :func:`addresses` gives (no lookup)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def addresses(host: str, port: int, deadline: Deadline, family: Optional[str] = None) -> list[str]:
    """The addresses to try for *host*, in the resolver's order; raises OSError/TimeoutError."""
    want = FAMILIES[family]
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if want != socket.AF_UNSPEC and (literal.version == 6) != (want == socket.AF_INET6):
            raise OSError(errno.EAFNOSUPPORT, "%s is an IPv%d address, but -%d was given"
                          % (host, literal.version, 6 if want == socket.AF_INET6 else 4))
        return [host]
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["infos"] = socket.getaddrinfo(cast(str, host_arg(host)), port, want, socket.SOCK_STREAM)
        except Exception as exc:  # gaierror, or UnicodeError for an invalid name
            result["error"] = exc

    worker = threading.Thread(target=work, name="lookup %s" % host, daemon=True)
    worker.start()
    worker.join(deadline.left())
    if worker.is_alive():
        raise TimeoutError("host name lookup of %s timed out" % host)
    if "error" in result:
        raise result["error"]
    found: list[str] = []
    for info in result["infos"]:
        if info[4][0] not in found:
            found.append(info[4][0])
    if not found:
        raise socket.gaierror("no address for %s" % host)
    return found


def lookup(host: str, port: int, deadline: Deadline, family: Optional[str] = None) -> str:
    """The first address to connect to for *host*."""
    return addresses(host, port, deadline, family)[0]


def connect_any(candidates: Iterable[str], attempt: Callable[[str], T]) -> T:
    """attempt(address) for each address in turn until one connects; its result.

    Only a refused or unreachable address moves on to the next; any other
    failure (a timeout, TLS) ends the step.  When every address refused, the
    last refusal is raised.
    """
    last: Optional[OSError] = None
    for address in candidates:
        try:
            return attempt(address)
        except OSError as exc:
            if exc.errno not in _NEXT or isinstance(exc, socket.timeout):
                raise
            last = exc
    raise cast(OSError, last)  # not None: addresses() never gives an empty list


def endpoint_text(host: str, port: int) -> str:
    """'mail.example.org:993', '[::1]:993'."""
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def connect(host: str, port: int, deadline: Deadline, family: Optional[str], attempt: Callable[[str], T]) -> T:
    """attempt(address) for the addresses of *host*, as :func:`connect_any`;
    a lookup failure or a refusal by every address carries ``where``."""
    try:
        candidates = addresses(host, port, deadline, family)
    except socket.gaierror as exc:
        exc.where = endpoint_text(host, port)  # type: ignore[attr-defined]
        raise
    try:
        return connect_any(candidates, attempt)
    except OSError as exc:
        if exc.errno in _AT_SERVER and not isinstance(exc, socket.timeout):
            exc.where = endpoint_text(host, port)  # type: ignore[attr-defined]
        raise


def fqdn(deadline: Deadline, limit: float = 1.0) -> str:
    """This host's fully qualified name (as ``socket.getfqdn``: the first name with a
    dot among the names of the host name's address), asked for at most *limit*
    seconds within *deadline*; else the plain host name."""
    result: dict[str, str] = {}

    def work() -> None:
        try:
            name, aliases, _ = socket.gethostbyaddr(cast(str, host_arg(socket.gethostname())))
            result["name"] = next((n for n in (name, *aliases) if "." in n), name)
        except Exception:  # an odd resolver: the plain name will do
            pass

    worker = threading.Thread(target=work, name="fqdn", daemon=True)
    worker.start()
    try:
        worker.join(min(limit, deadline.left()))
    except Exception:  # no time left in the budget
        pass
    name = result.get("name") or ""
    return name if "." in name else (socket.gethostname() or "localhost")
