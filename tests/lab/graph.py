"""A Microsoft Graph v1.0 mail stand-in for the test lab: HTTPS on 127.0.0.1, backed by the lab's Dovecot and Postfix.

Beyond the agreed interface (nothing of it is left out): each .requests entry
also has "fault" (the fault kind that answered it, or None) and "request_id";
"query" is a dict of the decoded query options.  The session-scoped `graph`
fixture is reset (requests, connections, faults, and the lab as `lab` resets
it) before every test that uses it, by the autouse fixture graph_reset.

    standin = GraphStandIn(lab).start()      # or the `graph` pytest fixture
    standin.url                               # https://127.0.0.1:PORT (certificate of the lab CA)
    standin.requests, standin.connections     # since the last reset()
    standin.fault("429", retry_after=2)       # the next request answers 429
    standin.reset(); standin.stop()

The endpoints and their documented behaviour are in graph_api.py (requests),
graph_odata.py (query options and JSON) and graph_store.py (the mailbox over
IMAP and SMTP as the user).  Mail goes through the lab's real Postfix and
Dovecot, so the lab's faults (hold, delay, drop, junk, imap-down) act on Graph
as they act on IMAP and SMTP.

Faults (fault(kind, times=1, path_contains=None, method=None, **kw)): the next
*times* requests that match answer with
    "429", "503"   Retry-After: retry_after (default 1) and Graph's error body
    "401"          InvalidAuthenticationToken (with WWW-Authenticate)
    "403"          ErrorAccessDenied
    "404-user"     ErrorInvalidUser;  "404-folder": ErrorItemNotFound
    "html"         502 with an HTML page, as a proxy in front of Graph sends
    "garbage"      200, Content-Type JSON, a body that is not JSON
    "truncated"    200 JSON cut mid-way: Content-Length of the whole body, half
                   of it sent, then the connection closed (complete=True: a
                   whole HTTP answer whose JSON is cut)
    "tarpit"       reads the request, answers nothing for `seconds` (default
                   30), then closes the connection
code= and message= replace the error's code and message.  A faulted request
does nothing else (no mailbox change).

Deviations from Microsoft's documented behaviour, and choices where it is silent
(each also said where it is made):
- the user is addressed by its address (UPN) only, not by object id; /me is
  refused as Graph refuses it for an app-only token;
- a user that does not exist is 404 ErrorInvalidUser before the token's
  mailbox is compared (403 ErrorAccessDenied with the words an application
  access policy is reported to give); the order and the words are undocumented;
- a folder segment that is neither a well-known name (any case) nor the id of
  an existing folder is 404 ErrorItemNotFound (Exchange may answer 400
  ErrorInvalidIdMalformed for a string that cannot be an id); a folder's
  display name is not a folder segment, as in Graph;
- without $orderby a listing is newest first; $top outside 1..1000 is a 400
  whose words are the stand-in's own;
- $filter understands clauses joined by "and" (comparisons of receivedDateTime,
  sentDateTime, subject, isRead, from/emailAddress/address; startswith,
  endswith, contains); "or", "not" and parentheses are a 400 here;
- $orderby takes receivedDateTime, sentDateTime, subject;
- paging uses $skip in @odata.nextLink, as Exchange's links do; clients must
  follow the link whole;
- tokens are the lab's opaque ones, checked by RFC 7662 introspection on every
  request (Graph validates JWTs itself): a revoked token fails at once; a
  token whose scope names another resource than graph.microsoft.com is 401
  "Invalid audience" (a token minted without a scope is accepted);
- a 503 ErrorMailboxStoreUnavailable (Retry-After 5) when the lab's IMAP or
  SMTP is down (Exchange's store has no such outage mode to copy);
- a recipient outside the lab is refused by the lab's Postfix; sendMail still
  answers 202 and a non-delivery report lands in the sender's Inbox, as
  Exchange's transport does;
- sendMail with a "from" other than the mailbox is 403 ErrorSendAsDenied (no
  Send As right in the lab; the status is undocumented);
- the MailboxConcurrency 429 carries Retry-After: 1 (the value is undocumented);
- request bodies above 4 MiB get 413, a chunked request body 411.
"""

import http.server
import ssl
import threading
import time
import urllib.parse
import uuid

from .common import HOST
from .graph_api import GraphAPI, Request, error_response, unauthorized
from .graph_odata import GraphError

MAX_CONNECTIONS = 32         # connections served at once; more wait up to ACCEPT_WAIT, then are closed
ACCEPT_WAIT = 10.0
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0          # a keep-alive connection idle this long is closed
CONN_LIFETIME = 600.0        # a connection is closed after this long whatever happens
MAX_REQUESTS_PER_CONN = 2000
MAX_BODY = 4 * 1024 * 1024   # Graph's documented 4 MB limit of a request (sendMail included)
MAX_TARPIT = 300.0
MAX_LIFETIME = 6 * 3600.0    # the server stops itself after this long
MAX_RECORDS = 100000         # requests remembered between resets
FAULT_KINDS = ("429", "503", "401", "403", "404-user", "404-folder", "html", "garbage", "truncated", "tarpit")
HTML_PAGE = (b"<!DOCTYPE html>\r\n<html><head><title>502 Bad Gateway</title></head>\r\n"
             b"<body><h1>Bad Gateway</h1><p>The proxy server received an invalid response from an upstream "
             b"server.</p></body></html>\r\n")
GARBAGE = b"\x00\x1f\x8b\x08 <<not JSON>> \xff\xfe garbage from a broken middlebox }{\r\n"
FORBIDDEN = "Access is denied. Check credentials and try again."


class Fault:
    def __init__(self, kind, times, path_contains, method, kw):
        if kind not in FAULT_KINDS:
            raise ValueError("fault kind %r is not one of %s" % (kind, ", ".join(FAULT_KINDS)))
        if not isinstance(times, int) or times < 1:
            raise ValueError("times: a whole number >= 1")
        self.kind, self.times, self.path_contains, self.method, self.kw = kind, times, path_contains, method, kw

    def matches(self, method, path):
        return ((self.path_contains is None or self.path_contains in path)
                and (self.method is None or self.method.upper() == method))

    def error(self, path):
        """The GraphError a status fault answers with."""
        kw = self.kw
        retry = [("Retry-After", str(kw.get("retry_after", 1)))]
        segs = [urllib.parse.unquote(s) for s in path.split("/")]
        user = segs[3] if len(segs) > 3 else ""
        code, message, status, headers = {
            "429": ("ApplicationThrottled", "Application is over its MailboxConcurrency limit.", 429, retry),
            "503": ("serviceNotAvailable", "The service is not available. Try the request again after a delay.",
                    503, retry),
            "403": ("ErrorAccessDenied", FORBIDDEN, 403, []),
            "404-user": ("ErrorInvalidUser", "The requested user '%s' is invalid." % user, 404, []),
            "404-folder": ("ErrorItemNotFound", "The specified object was not found in the store.", 404, []),
        }.get(self.kind, (None, None, None, None))
        if self.kind == "401":
            exc = unauthorized("Lifetime validation failed, the token is expired.")
        else:
            exc = GraphError(status, code, message, headers)
        exc.code = kw.get("code", exc.code)
        exc.message = kw.get("message", exc.message)
        return exc


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; every request bounded in size, every connection in time and count."""

    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def log_message(self, fmt, *args):
        pass

    def handle(self):
        standin = self.server.standin
        until = time.monotonic() + CONN_LIFETIME
        self.connection_number = standin._connection_number(self.request)
        self.close_connection = True
        self.handle_one_request()
        served = 1
        while (not self.close_connection and served < MAX_REQUESTS_PER_CONN and time.monotonic() < until
               and not standin._stopping.is_set()):
            self.handle_one_request()
            served += 1

    def _body(self):
        """The request body (bounded); GraphError 411/413 (the connection is then closed)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise GraphError(411, "BadRequest", "A request body must have a Content-Length.")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            self.close_connection = True
            raise GraphError(400, "BadRequest", "Invalid Content-Length.")
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise GraphError(413, "RequestEntityTooLarge", "The request is larger than %d bytes." % MAX_BODY)
        return self.rfile.read(int(length))

    def serve(self):
        url = urllib.parse.urlsplit(self.path)
        request_id = str(uuid.uuid4())
        self.record = record = {
            "method": self.command, "path": url.path, "query": {}, "status": None,
            "bytes_in": len(self.raw_requestline) + len(str(self.headers)), "bytes_out": 0,
            "connection": self.connection_number, "fault": None, "request_id": request_id}
        client_id = self.headers.get("client-request-id")
        try:
            try:
                answer = self._answer(url, record)
            except GraphError as exc:
                answer = error_response(exc, request_id, client_id)
            if answer is not None:
                self._send(answer.status, answer.headers, answer.body, request_id, client_id)
        finally:
            self._count()  # a request that got no answer

    def _count(self):
        """Put this request in the stand-in's requests (once)."""
        record, self.record = self.record, None
        if record is not None:
            self.server.standin._record(record)

    def _answer(self, url, record):
        """The Response to this request (None: a fault has answered already, or not at all)."""
        standin = self.server.standin
        body = self._body()
        record["bytes_in"] += len(body)
        query = {}
        for name, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            name = name.lower() if name.startswith("$") else name
            if name in query:
                raise GraphError(400, "BadRequest", "Query option '%s' was specified more than once." % name)
            query[name] = value
        record["query"] = query
        fault = standin._take_fault(self.command, url.path)
        if fault is not None:
            record["fault"] = fault.kind
            if fault.kind in ("html", "garbage", "truncated", "tarpit"):
                self._misbehave(fault, record["request_id"])
                return None
            raise fault.error(url.path)
        return standin.api.handle(Request(self.command, url.path, query, self.headers, body, record["request_id"]))

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = serve

    def _send(self, status, headers, body, request_id, client_id=None, length=None):
        self.send_response(status)
        self.send_header("request-id", request_id)
        self.send_header("client-request-id", client_id or request_id)
        self.send_header("Strict-Transport-Security", "max-age=31536000")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        head, self._headers_buffer = b"".join(self._headers_buffer), []
        # counted before the client can see the answer: a test reading .requests after it sees it whole
        self.record.update(status=status, bytes_out=len(head) + len(body))
        self._count()
        self.wfile.write(head + body)

    def _misbehave(self, fault, request_id):
        """Answer as a broken Graph or middlebox would (a tarpit: not at all)."""
        if fault.kind == "tarpit":
            seconds = min(float(fault.kw.get("seconds", 30)), MAX_TARPIT)
            self.server.standin._stopping.wait(seconds)
            self.close_connection = True
            return
        if fault.kind == "html":
            self._send(502, [("Content-Type", "text/html")], HTML_PAGE, request_id)
            return
        if fault.kind == "garbage":
            self._send(200, [("Content-Type", "application/json")], GARBAGE, request_id)
            return
        whole = ('{"@odata.context":"%s/v1.0/$metadata#users(\'x\')/messages","value":[{"@odata.etag":"W/\\"x\\"",'
                 '"id":"AAMkAGtruncated","subject":"a message whose answer is cut","receivedDateTime":'
                 '"2026-01-01T00:00:00Z"}]}' % self.server.standin.url).encode()
        half = whole[:len(whole) // 2]
        if fault.kw.get("complete"):
            self._send(200, [("Content-Type", "application/json")], half, request_id)
        else:
            self.close_connection = True
            self._send(200, [("Content-Type", "application/json")], half, request_id, length=len(whole))


class Server(http.server.ThreadingHTTPServer):
    """TLS per connection in the connection's thread; at most MAX_CONNECTIONS threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, standin, context, port):
        self.standin = standin
        self.context = context
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((HOST, port), Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(timeout=ACCEPT_WAIT):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request, client_address):
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        tls.settimeout(IDLE_TIMEOUT)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass
        finally:
            self.standin._forget(tls)
            tls.close()


class GraphStandIn:
    """The stand-in's server thread and its test API (see the module docstring)."""

    def __init__(self, lab, port=0):
        self.lab = lab
        self.port = port
        self.api = GraphAPI(lab, lambda: self.url)
        self.server = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests = []
        self._faults = []
        self._connections = 0
        self._live = {}
        self._timer = None

    @property
    def url(self):
        return "https://%s:%d" % (HOST, self.port)

    def start(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.lab.cert_file, self.lab.key_file)
        self._stopping.clear()
        self.server = Server(self, context, self.port)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="graph-standin", daemon=True).start()
        self._timer = threading.Timer(MAX_LIFETIME, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self):
        """Stop serving and close every connection (tarpits end at once)."""
        self._stopping.set()
        server, self.server = self.server, None
        if self._timer is not None:
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(2)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------ test API

    @property
    def requests(self):
        """[{method, path, query, status, bytes_in, bytes_out, connection, fault, request_id}] since reset()."""
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def connections(self):
        """TLS connections accepted since reset()."""
        with self._lock:
            return self._connections

    def fault(self, kind, times=1, path_contains=None, method=None, **kw):
        """The next *times* requests (those whose path contains *path_contains*, of *method*) answer with *kind*."""
        with self._lock:
            self._faults.append(Fault(kind, times, path_contains, method, kw))

    def clear_faults(self):
        with self._lock:
            self._faults = []

    def reset(self):
        """Forget the requests, connections and faults."""
        with self._lock:
            self._requests = []
            self._faults = []
            self._connections = 0

    # ------------------------------------------------------------ internal

    def _connection_number(self, sock):
        with self._lock:
            self._connections += 1
            self._live[sock] = self._connections
            return self._connections

    def _forget(self, sock):
        with self._lock:
            self._live.pop(sock, None)

    def _take_fault(self, method, path):
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, record):
        with self._lock:
            if len(self._requests) < MAX_RECORDS:
                self._requests.append(record)
