"""Host name lookup bounded by a deadline.

``getaddrinfo`` is a C call that no signal interrupts: a resolver that does
not answer would hold a step past its deadline.  The lookup runs in a daemon
thread instead, and the step waits for it only as long as its deadline
allows.  IP literals need no lookup.
"""

import ipaddress
import socket
import threading


def lookup(host, port, deadline):
    """Make sure *host* resolves before the deadline; raises OSError/TimeoutError.

    The answer lands in the resolver's caches (nscd, systemd-resolved, the
    C library's /etc/hosts reading), so the connect that follows is quick.
    """
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    result = {}

    def work():
        try:
            result["infos"] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            result["error"] = exc

    worker = threading.Thread(target=work, name="lookup %s" % host, daemon=True)
    worker.start()
    worker.join(deadline.left())
    if worker.is_alive():
        raise TimeoutError("host name lookup of %s timed out" % host)
    if "error" in result:
        raise result["error"]
