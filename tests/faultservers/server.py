"""What every fault server runs on: FaultServer, the Conn its handler gets, free_port, server_context.

FaultServer binds 127.0.0.1 on a free port, serves in daemon threads and is
stopped by the test (use it as a context manager).  Every loop is bounded:
the accept loop by a number of connections and a lifetime, each connection
by a lifetime and a byte limit, every wait by a short socket timeout that
re-checks the stop flag.  Nothing here talks to anything but loopback.
"""

import socket
import ssl
import struct
import threading
import time

HOST = "127.0.0.1"
POLL = 0.1              # seconds between checks of the stop flag
CONN_LIFETIME = 30.0    # a connection is closed after this long whatever happens
MAX_LINE = 64 * 1024
MAX_DATA = 4 * 1024 * 1024


def free_port():
    """A loopback port that nothing listens on (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def server_context(cert_file, key_file):
    """A server-side SSLContext presenting *cert_file*."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class Closed(Exception):
    """The peer went away, the server is stopping, or a limit was reached."""


class Conn:
    """One accepted connection, with bounded line reading."""

    def __init__(self, sock, server):
        self.sock = sock
        self.server = server
        self.buf = b""
        self.until = time.monotonic() + min(CONN_LIFETIME, server.lifetime)
        self.line = ""  # the last line read, as text (see Echo)
        sock.settimeout(POLL)

    def _alive(self):
        if self.server.stopping.is_set() or time.monotonic() > self.until:
            raise Closed()

    def _recv(self):
        while True:
            self._alive()
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                raise Closed()
            if not data:
                raise Closed()
            return data

    def readline(self):
        """One line (bytes, with its line end); Closed at EOF or a limit."""
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise Closed()
            self.buf += self._recv()
        line, _, self.buf = self.buf.partition(b"\n")
        self.line = line.rstrip(b"\r").decode("utf-8", "replace")
        self.server.received.append(self.line)
        return line + b"\n"

    def read_until(self, marker, limit=MAX_DATA):
        """Bytes up to and including *marker*."""
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise Closed()
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def read_exactly(self, n, limit=MAX_DATA):
        """Exactly *n* bytes (a request body)."""
        if n > limit:
            raise Closed()
        while len(self.buf) < n:
            self.buf += self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def drain(self):
        """Read and discard until the peer closes or the connection's time is up."""
        try:
            while True:
                self.buf = b""
                self._recv()
        except Closed:
            pass

    def hold(self):
        """Say nothing and wait (a tarpit) until stopped or the lifetime ends."""
        self.drain()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._alive()
        self.sock.settimeout(5.0)
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()
        finally:
            self.sock.settimeout(POLL)

    def reply(self, text, delay=0.0):
        """Send *text* as one CRLF-terminated line (or several, '\\n'-separated)."""
        self.sleep(delay)
        self.send("".join(line + "\r\n" for line in text.split("\n")))

    def sleep(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._alive()
            time.sleep(min(POLL, max(0.0, end - time.monotonic())))

    def reset(self):
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def starttls(self, ctx):
        """Switch to TLS (server side); Closed if the handshake fails."""
        self.sock.settimeout(5.0)
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.server.errors.append("TLS handshake: %s" % exc)
            raise Closed()
        self.sock.settimeout(POLL)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class FaultServer:
    """Listen on 127.0.0.1:<free port> and run *handler(conn)* per connection.

    tls: a server SSLContext for implicit TLS (handshake on accept).
    max_connections, lifetime: bounds of the accept loop.
    received: every line read from clients; errors: handshake failures etc.
    """

    def __init__(self, handler, tls=None, max_connections=20, lifetime=60.0):
        self.handler = handler
        self.tls = tls
        self.max_connections = max_connections
        self.lifetime = lifetime
        self.stopping = threading.Event()
        self.received = []
        self.errors = []
        self.accepted = 0
        self._conns = []
        self._threads = []
        self._lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.listener.settimeout(POLL)
        self.host, self.port = self.listener.getsockname()
        self._acceptor = None

    def start(self):
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="fault-accept-%d" % self.port)
        self._acceptor.start()
        return self

    def stop(self):
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        for t in [self._acceptor] + self._threads:
            if t is not None:
                t.join(timeout=2.0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        end = time.monotonic() + self.lifetime
        while not self.stopping.is_set() and time.monotonic() < end \
                and self.accepted < self.max_connections:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                 name="fault-conn-%d" % self.port)
            self._threads.append(t)
            t.start()

    def _serve(self, sock):
        conn = Conn(sock, self)
        with self._lock:
            self._conns.append(conn)
        try:
            if self.tls is not None:
                conn.starttls(self.tls)
            self.handler(conn)
        except Closed:
            pass
        except Exception as exc:  # noqa: BLE001  (a broken handler must not hang a test)
            self.errors.append("handler: %r" % exc)
        finally:
            conn.close()
