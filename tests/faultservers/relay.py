"""Relays to a real loopback server that misbehave on the way: DelayProxy (a slow server) and
CutRelay (a server that goes away in the middle of a session)."""

import re
import select
import socket
import threading

from .server import HOST, MAX_LINE, POLL, Closed


class DelayProxy:
    """Relay to a real server (*target_port* on loopback), holding every chunk
    from the server back by *delay* seconds: a slow server."""

    def __init__(self, target_port, delay):
        self.target_port = target_port
        self.delay = delay

    def __call__(self, conn):
        up = socket.create_connection((HOST, self.target_port), timeout=5.0)
        up.settimeout(POLL)
        try:
            if conn.buf:
                up.sendall(conn.buf)
                conn.buf = b""
            for _ in range(100000):
                conn._alive()
                ready, _, _ = select.select([conn.sock, up], [], [], POLL)
                if conn.sock in ready:
                    data = conn.sock.recv(65536)
                    if not data:
                        return
                    up.sendall(data)
                if up in ready:
                    data = up.recv(65536)
                    if not data:
                        return
                    conn.sleep(self.delay)
                    conn.send(data)
        except OSError:
            return
        finally:
            up.close()


class CutRelay:
    """Relay to a real plain-text server (*target_port* on loopback) and cut the
    connection when the client sends a command line matching *pattern*: a
    server that goes away in the middle of a session.

    The matching line is not passed on, so the server never sees the command
    (the mailbox stays as it was).  how: "reset" (TCP RST) or "close" (FIN).
    Only the first *times* matching lines cause a cut; later connections are
    relayed unchanged.  The client's lines are recorded in ``server.received``
    (a test-only relay: this includes a LOGIN password), the cut lines in
    ``cuts``.  Needs a plain-text protocol (IMAP with --imap-tls none): on
    TLS the relay would only see encrypted bytes.
    """

    def __init__(self, target_port, pattern, how="reset", times=1):
        if how not in ("reset", "close"):
            raise ValueError("how must be 'reset' or 'close'")
        self.target_port = target_port
        self.pattern = re.compile(pattern.encode("ascii") if isinstance(pattern, str) else pattern, re.I)
        self.how = how
        self.times = times
        self.cuts = []
        self._lock = threading.Lock()

    def _should_cut(self, line):
        with self._lock:
            if len(self.cuts) < self.times and self.pattern.search(line):
                self.cuts.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
                return True
        return False

    def __call__(self, conn):
        up = socket.create_connection((HOST, self.target_port), timeout=5.0)
        up.settimeout(5.0)
        pending = conn.buf
        conn.buf = b""
        try:
            for _ in range(100000):
                conn._alive()
                # pass on whole lines only, so a command is seen before it is sent
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    line += b"\n"
                    conn.server.received.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
                    if self._should_cut(line):
                        if self.how == "reset":
                            conn.reset()
                        else:
                            conn.close()
                        return
                    up.sendall(line)
                if len(pending) > MAX_LINE:
                    raise Closed()
                ready, _, _ = select.select([conn.sock, up], [], [], POLL)
                if conn.sock in ready:
                    data = conn.sock.recv(65536)
                    if not data:
                        return
                    pending += data
                if up in ready:
                    data = up.recv(65536)
                    if not data:
                        return
                    conn.send(data)
        except OSError:
            return
        finally:
            up.close()
