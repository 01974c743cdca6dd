"""Small loopback servers that misbehave on purpose, for the network fault tests.

Every server binds 127.0.0.1 on a free port, serves in daemon threads and is
stopped by the test (use it as a context manager).  Every loop is bounded:
the accept loop by a number of connections and a lifetime, each connection
by a lifetime and a byte limit, every wait by a short socket timeout that
re-checks the stop flag.  Nothing here talks to anything but loopback.

    with FaultServer(tarpit) as srv:          # accepts, never answers
        check("--imap-host", "127.0.0.1", "--imap-port", str(srv.port))

Handlers get a :class:`Conn` and do one scripted thing: greet and reset on
the first command, greet in plain text where TLS is expected, speak SMTP from
a script of replies (:class:`SMTPScript`), relay to a real server with a
delay (:class:`DelayProxy`), or relay to a real plain-text server and cut
the connection when the client sends a given command (:class:`CutRelay`).
"""

import re
import select
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


# -- simple handlers ----------------------------------------------------------------

def tarpit(conn):
    """Accept and never say a word."""
    conn.hold()


def greet_then_reset(greeting):
    """Send *greeting*, read the first command, then abort with a RST."""
    def handler(conn):
        conn.reply(greeting)
        conn.readline()
        conn.reset()
    return handler


def greet_then_close(greeting):
    """Send *greeting*, read the first command, then close (FIN) without a reply."""
    def handler(conn):
        conn.reply(greeting)
        conn.readline()
        conn.close()
    return handler


def plain_greeting(greeting):
    """A plain-text server: greet at once (where the client expects a TLS handshake)."""
    def handler(conn):
        conn.reply(greeting)
        conn.drain()
    return handler


class IMAPScript:
    """A tiny IMAP server: greeting, CAPABILITY, STARTTLS, LOGOUT; BAD for the rest.

    Enough to reach the TLS handshake (implicit with FaultServer(tls=...), or
    STARTTLS with *starttls* = a server SSLContext).

    With *folders* (names as on the wire, modified UTF-7) it is a mailbox
    server that behaves like Courier or Cyrus: personal namespace *namespace*
    (prefix, separator), LOGIN accepts anyone, SELECT/EXAMINE open a listed
    folder and answer ``NO Mailbox does not exist`` otherwise, LIST and
    NAMESPACE answer from the folders, UID SEARCH finds nothing.  *missing*
    is the answer to SELECT of another folder ("{name}": the name as sent).

    replies: {COMMAND: reply} overriding any of that; "{tag}" in the reply
    stands for the command's tag, '\\n' separates lines; a callable reply
    (a :class:`Flood`) is called with the connection and the tag instead.
    *capabilities* are announced in addition to IMAP4rev1 (and STARTTLS LOGINDISABLED with
    *starttls*).  ``commands`` lists the commands received, in order.
    """

    def __init__(self, starttls=None, greeting="* OK [CAPABILITY IMAP4rev1] fault server ready",
                 folders=None, namespace=("INBOX.", "."), replies=None, capabilities="",
                 missing="{tag} NO Mailbox does not exist"):
        self.starttls = starttls
        self.greeting = greeting
        self.folders = list(folders) if folders is not None else None
        self.namespace = namespace
        self.missing = missing
        self.replies = dict(replies or {})
        self.capabilities = capabilities
        self.commands = []

    def __call__(self, conn):
        conn.reply(self.greeting)
        tls_active = False
        for _ in range(100):
            line = conn.readline().decode("utf-8", "replace").strip()
            tag, _, rest = line.partition(" ")
            cmd, _, args = rest.partition(" ")
            cmd = cmd.upper()
            if cmd == "UID":
                sub, _, args = args.partition(" ")
                cmd = "UID " + sub.upper()
            self.commands.append(cmd)
            if callable(self.replies.get(cmd)):  # e.g. a Flood
                self.replies[cmd](conn, tag)
            elif cmd in self.replies:
                conn.reply(self.replies[cmd].replace("{tag}", tag))
            elif cmd == "CAPABILITY":
                caps = "IMAP4rev1"
                if self.starttls and not tls_active:
                    caps += " STARTTLS LOGINDISABLED"
                caps += (" " + self.capabilities) if self.capabilities else ""
                conn.reply("* CAPABILITY %s\n%s OK CAPABILITY completed" % (caps, tag))
            elif cmd == "STARTTLS" and self.starttls and not tls_active:
                conn.reply("%s OK Begin TLS negotiation now" % tag)
                conn.starttls(self.starttls)
                tls_active = True
            elif cmd == "LOGOUT":
                conn.reply("* BYE fault server logging out\n%s OK LOGOUT completed" % tag)
                return
            elif self.folders is not None and cmd in self._MAILBOX:
                conn.reply(self._MAILBOX[cmd](self, tag, _arguments(args)))
            else:
                conn.reply("%s BAD command not supported here" % tag)

    def _login(self, tag, args):
        return "%s OK LOGIN Ok." % tag

    def _select(self, tag, args):
        name = args[0] if args else ""
        if not any(_same_folder(name, f) for f in self.folders):
            return self.missing.replace("{tag}", tag).replace("{name}", name)
        return ("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n* 0 EXISTS\n* 0 RECENT\n"
                "* OK [UIDVALIDITY 1] Ok\n%s OK [READ-WRITE] Ok" % tag)

    def _list(self, tag, args):
        ref, pattern = (args + ["", ""])[:2]
        sep = self.namespace[1]
        out = []
        if pattern == "":
            out.append('* LIST (\\Noselect) "%s" ""' % sep)
        else:
            wanted = _list_pattern(ref + pattern, sep)
            out += ['* LIST (\\HasNoChildren) "%s" "%s"' % (sep, f) for f in self.folders
                    if wanted.fullmatch(f)]
        return "\n".join(out + ["%s OK LIST completed" % tag])

    def _namespace(self, tag, args):
        prefix, sep = self.namespace
        return '* NAMESPACE (("%s" "%s")) NIL (("#shared%s" "%s"))\n%s OK NAMESPACE completed' % (
            prefix, sep, sep, sep, tag)

    def _search(self, tag, args):
        return "* SEARCH\n%s OK SEARCH done." % tag

    _MAILBOX = {"LOGIN": _login, "SELECT": _select, "EXAMINE": _select, "LIST": _list,
                "NAMESPACE": _namespace, "UID SEARCH": _search}


def _arguments(text):
    """The arguments of an IMAP command line: atoms and quoted strings (no literals)."""
    return [atom or re.sub(r"\\(.)", r"\1", quoted)
            for quoted, atom in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', text)]


def _same_folder(a, b):
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _list_pattern(pattern, sep):
    """A LIST pattern as a regular expression: * anything, % anything but the separator."""
    parts = [".*" if c == "*" else "[^%s]*" % re.escape(sep) if c == "%" else re.escape(c)
             for c in pattern]
    return re.compile("".join(parts), re.I if pattern.upper().startswith("INBOX") else 0)


class SMTPScript:
    """An SMTP server that answers from a script.

    replies: {verb: reply} overriding the defaults; verbs are the commands
    (EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and
    "GREETING" and "DOT" (the answer to the end of the message).  A reply is
    the text to send ('\\n' between lines of a multi-line reply), a callable
    called with the connection instead (an :class:`Echo`), or one of
    CLOSE (close without answering), RESET (abort with RST), SILENT (never
    answer).  starttls: a server SSLContext; STARTTLS is then offered.
    auth: mechanisms to offer ("PLAIN LOGIN"), none by default.
    delay: seconds to wait before every reply (a slow server).
    messages: the message data received (up to the final dot).
    """

    CLOSE, RESET, SILENT = "<close>", "<reset>", "<silent>"

    DEFAULTS = {
        "GREETING": "220 fault.test ESMTP fault server",
        "HELO": "250 fault.test",
        "STARTTLS": "220 2.0.0 Ready to start TLS",
        "AUTH": "235 2.7.0 Authentication successful",
        "MAIL": "250 2.1.0 Ok",
        "RCPT": "250 2.1.5 Ok",
        "DATA": "354 End data with <CR><LF>.<CR><LF>",
        "DOT": "250 2.0.0 Ok: queued as FAULT1",
        "RSET": "250 2.0.0 Ok",
        "NOOP": "250 2.0.0 Ok",
        "QUIT": "221 2.0.0 Bye",
    }

    def __init__(self, replies=None, starttls=None, auth=None, delay=0.0):
        self.replies = dict(self.DEFAULTS, **(replies or {}))
        self.starttls = starttls
        self.auth = auth
        self.delay = delay
        self.messages = []

    def _ehlo(self, tls_active):
        ext = ["fault.test", "PIPELINING", "SIZE 10240000", "8BITMIME"]
        if self.starttls and not tls_active:
            ext.append("STARTTLS")
        if self.auth:
            ext.append("AUTH " + self.auth)
        return "\n".join(("250-" if i < len(ext) - 1 else "250 ") + e for i, e in enumerate(ext))

    def _answer(self, conn, verb, default=None):
        """Send the scripted reply for *verb*; False when the dialogue must end."""
        text = self.replies.get(verb, default)
        if callable(text):
            text(conn)
            return True
        if text == self.CLOSE:
            conn.close()
            return False
        if text == self.RESET:
            conn.reset()
            return False
        if text == self.SILENT:
            conn.hold()
            return False
        conn.reply(text, self.delay)
        return True

    def __call__(self, conn):
        if not self._answer(conn, "GREETING"):
            return
        tls_active = False
        for _ in range(100):
            line = conn.readline().decode("utf-8", "replace").strip()
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if not self._answer(conn, "EHLO", self._ehlo(tls_active)):
                    return
            elif verb == "STARTTLS" and self.starttls and not tls_active:
                if not self._answer(conn, "STARTTLS"):
                    return
                if self.replies["STARTTLS"].startswith("220"):
                    conn.starttls(self.starttls)
                    tls_active = True
            elif verb == "DATA":
                if not self._answer(conn, "DATA"):
                    return
                if self.replies["DATA"].startswith("354"):
                    self.messages.append(conn.read_until(b"\r\n.\r\n"))
                    if not self._answer(conn, "DOT"):
                        return
            elif verb in self.replies and verb != "GREETING":
                if not self._answer(conn, verb):
                    return
                if verb == "QUIT":
                    return
            else:
                conn.reply("502 5.5.2 Error: command not recognized", self.delay)


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


def drip(prefix, interval=0.3, filler=b"x"):
    """Send *prefix*, then one byte of *filler* every *interval* seconds and never
    a line end (a slowloris): every read succeeds, the line never completes."""
    def handler(conn):
        conn.send(prefix)
        for _ in range(100000):
            conn.sleep(interval)
            conn.send(filler)
    return handler


def http_answer(status, content_type, body, delay=0.0, location=None):
    """An HTTP server that reads one request and answers it with *status*, *content_type*, *body*
    (and a Location header when *location* is given: a redirect); "{body}" in *body* stands for
    the request's body (a server that echoes it)."""
    reason = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
              308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "Status")
    where = b"Location: %s\r\n" % location.encode() if location else b""

    def handler(conn):
        head = conn.read_until(b"\r\n\r\n")
        conn.server.received.append(head.split(b"\r\n", 1)[0].decode("utf-8", "replace"))
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        request = conn.read_exactly(int(length.group(1))) if length else b""
        payload = (body.encode("utf-8") if isinstance(body, str) else body).replace(b"{body}", request)
        conn.sleep(delay)
        conn.send(b"HTTP/1.1 %d %s\r\n%sContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % (status, reason.encode(), where, content_type.encode(), len(payload)) + payload)
        conn.drain()
    return handler


class Echo:
    """A reply that repeats what the client said: a server that echoes a login in its refusal.

    *template* with "{line}" for the command line just read, "{tag}" for its
    IMAP tag, and "{data}" for the line the client answers to a "+ "
    continuation sent first (the response of an IMAP AUTHENTICATE).  A reply
    of :class:`SMTPScript`, :class:`IMAPScript` or :class:`POP3Script`.
    """

    def __init__(self, template):
        self.template = template

    def __call__(self, conn, tag=""):
        text = self.template.replace("{tag}", tag).replace("{line}", conn.line)
        if "{data}" in text:
            conn.reply("+ ")
            conn.readline()
            text = text.replace("{data}", conn.line)
        conn.reply(text)


# -- hostile servers: more than any client should take -------------------------------

FLOOD_TOTAL = 320 * 1024 * 1024   # bytes one Flood sends at most
FLOOD_SECONDS = 20.0              # and for this long at most


class Flood:
    """Send *head*, then chunks as fast as the client takes them, until
    FLOOD_TOTAL bytes or FLOOD_SECONDS have gone; then say nothing more and
    hold the connection open.  A handler (``FaultServer(Flood(...))``) or a
    reply of :class:`IMAPScript` or :class:`POP3Script` ("{tag}" in *head*
    stands for the command's tag).

    *chunk*: bytes sent over and over, or chunk(n) giving the n-th chunk.
    ``sent`` counts the bytes sent after the head.
    """

    def __init__(self, head, chunk, total=FLOOD_TOTAL, seconds=FLOOD_SECONDS):
        self.head = head
        self.chunk = chunk
        self.total = total
        self.seconds = seconds
        self.sent = 0

    def __call__(self, conn, tag=""):
        conn.send(self.head.replace(b"{tag}", tag.encode("ascii")))
        end = time.monotonic() + self.seconds
        for n in range(1 << 30):
            if self.sent >= self.total or time.monotonic() > end:
                break
            data = self.chunk(n) if callable(self.chunk) else self.chunk
            conn.send(data)
            self.sent += len(data)
        conn.hold()


class IdleNews:
    """An IDLE answer (a reply of :class:`IMAPScript`): *before* (untagged lines),
    the "+" continuation, then news of a new mail; after the client's DONE the
    tagged OK.  Each IDLE then takes a little more than *before*."""

    def __init__(self, before):
        self.before = before
        self.idles = 0

    def __call__(self, conn, tag):
        self.idles += 1
        conn.send(self.before + b"+ idling\r\n* 1 EXISTS\r\n")
        conn.readline()  # DONE
        conn.reply("%s OK IDLE terminated" % tag)


def lines(line, size=1024 * 1024):
    """About *size* bytes of *line* (CRLF-terminated) over and over: a Flood chunk."""
    line = line.rstrip(b"\r\n") + b"\r\n"
    return line * max(1, size // len(line))


class POP3Script:
    """A tiny POP3 server: greeting, CAPA (TOP UIDL USER), USER and PASS
    accepted for anyone, QUIT; ``-ERR`` for the rest.

    replies: {VERB: reply} overriding any of that ('\\n' separates lines),
    or a callable (a :class:`Flood`) called with the connection.
    ``commands`` lists the verbs received, in order.
    """

    DEFAULTS = {"CAPA": "+OK\nTOP\nUIDL\nUSER\n.", "USER": "+OK", "PASS": "+OK logged in",
                "QUIT": "+OK bye"}

    def __init__(self, replies=None, greeting="+OK fault server ready"):
        self.replies = dict(self.DEFAULTS, **(replies or {}))
        self.greeting = greeting
        self.commands = []

    def __call__(self, conn):
        conn.reply(self.greeting)
        for _ in range(100):
            verb = conn.readline().decode("utf-8", "replace").split(" ", 1)[0].strip().upper()
            self.commands.append(verb)
            reply = self.replies.get(verb, "-ERR unknown command")
            if callable(reply):
                reply(conn)
            else:
                conn.reply(reply)
            if verb == "QUIT":
                return
