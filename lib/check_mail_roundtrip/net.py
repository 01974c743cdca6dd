"""Host name lookup bounded by a deadline.

``getaddrinfo`` is a C call that no signal interrupts: a resolver that does
not answer would hold a step past its deadline.  The lookup runs in a daemon
thread instead, and the step waits for it only as long as its deadline
allows.  The transports then connect to the address found (no second
lookup) while TLS still checks the certificate against the host name.
"""

import ipaddress
import socket
import threading


def lookup(host, port, deadline):
    """The address to connect to for *host*; raises OSError/TimeoutError/ValueError."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    result = {}

    def work():
        try:
            result["infos"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except Exception as exc:  # gaierror, or UnicodeError for an invalid name
            result["error"] = exc

    worker = threading.Thread(target=work, name="lookup %s" % host, daemon=True)
    worker.start()
    worker.join(deadline.left())
    if worker.is_alive():
        raise TimeoutError("host name lookup of %s timed out" % host)
    if "error" in result:
        raise result["error"]
    if not result["infos"]:
        raise socket.gaierror("no address for %s" % host)
    return result["infos"][0][4][0]


def fqdn(deadline, limit=1.0):
    """This host's fully qualified name (``socket.getfqdn``), asked for at most
    *limit* seconds within *deadline*; else the plain host name."""
    result = {}

    def work():
        try:
            result["name"] = socket.getfqdn()
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
