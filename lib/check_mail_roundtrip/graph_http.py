"""Microsoft Graph over HTTPS: the run's one keep-alive connection, bounded answers, Graph's own words.

A run that uses Graph for either leg has one :class:`Graph` client, shared by
the collector (graph.py) and the sender (graph_send.py): one TLS connection
(HTTP/1.1 keep-alive) carries every request of the run.  The connection is
made the way every connection of the check is (connection.py: the addresses
of the host in turn, the run's TLS context, ``--ca-file`` and ``--insecure``,
steps ``Graph connect`` and ``Graph TLS``); a connection the server closed
between two requests is opened again once.

Each request is one named step (``Graph list``, ``Graph delete``, ``Graph
send``) within its deadline, the access token in the ``Authorization``
header (never in a trace or a status line).  What may come back:

- 2xx: the JSON object (at most MAX_ANSWER bytes; nothing for 202 and 204);
- an error in Graph's JSON (``{"error": {"code", "message"}}``): the code and
  the message in the status line, with the HTTP status; 401 asks the token
  source for a fresh token and tries once more; 403 says which permissions
  the app needs and how they are limited to the mailbox; 404 names the
  mailbox or the folder (the caller says which request it was);
- 429 or 503 (throttled, or the service busy): the request is made again
  after ``Retry-After`` seconds when that fits in the step's time (at most
  MAX_RETRIES times), else the step fails naming Graph's error and the wait
  it asked for;
- an HTML page (a proxy's or a gateway's), an answer that is not JSON, JSON
  cut off, an answer too long, or none in time (a tarpit): each its own words.

With ``-vvv`` each request line and each response's status line are traced
(the ``Graph`` lines of trace.py); the token is in neither.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from . import tracing
from .connection import Connection, Wire
from .failure import StepFailure, step
from .net import host_arg, tcp
from .record import record
from .settings import Endpoint

if TYPE_CHECKING:
    from .budget import Deadline
    from .trace import GraphTrace

API = "/v1.0"
MAX_ANSWER = 8 << 20     # bytes of one answer read at most (a page of 50 probes with all their headers is far less)
MAX_ERROR = 64 << 10     # bytes of an error answer kept for its words
CHUNK = 64 << 10         # bytes read at once
MAX_RETRIES = 3          # throttled answers (429, 503) waited out per request at most
NO_RETRY_AFTER = 1.0     # seconds waited after a throttled answer without Retry-After
AFTER_WAIT = 1.0         # seconds a retry needs after its wait: else the wait does not fit
MAX_DEPTH_TEXT = "nested too deep"
# How a connection the server closed shows (a kept one: it may have closed it between two requests).
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
USER_AGENT = "check_mail_roundtrip"

# Graph's codes for a mailbox that is not there (or has no mailbox in Exchange Online), and
# for a folder or message that is not there or whose id is malformed.
USER_MISSING = {"ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "MailboxNotHostedInExchangeOnline",
                "Request_ResourceNotFound", "ResourceNotFound", "ErrorNonExistentMailbox"}
ITEM_MISSING = {"ErrorItemNotFound", "ErrorInvalidIdMalformed", "ErrorFolderNotFound"}
PERMISSIONS_FIX = ("the app needs the application permissions Mail.ReadWrite and Mail.Send for this mailbox "
                   "(application access policy or RBAC for Applications)")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)


class Refused(StepFailure):
    """Graph answered the request with an error: its HTTP *status*, Graph's *code* (or "") and
    *words* (the code and message, without what the check adds to explain them)."""

    def __init__(self, step: str, detail: str, status: int, code: str, words: str = "") -> None:
        super().__init__(step, detail)
        self.status = status
        self.code = code
        self.words = words or detail


class Unclear(StepFailure):
    """No usable answer came: none, one cut off, or one that is not what Graph sends;
    *handed_over*: the request went out whole (it may have been acted on)."""

    def __init__(self, step: str, detail: str, handed_over: bool) -> None:
        super().__init__(step, detail)
        self.handed_over = handed_over


@record(frozen=True)
class Answer:
    """A successful answer: its status, and its JSON object (empty for 202, 204)."""

    status: int
    data: Mapping[str, Any]
    request_id: str = ""


@record(frozen=True)
class Missing:
    """What a 404 of one request means: the *mailbox*, and the *folder* the request names (if any)."""

    mailbox: str
    folder: Optional[str] = None


def user_path(user: str, *segments: str) -> str:
    """``/v1.0/users/<user>/<segments...>``, each part percent-encoded (``@`` kept)."""
    return "/".join([API, "users"] + [urllib.parse.quote(s, safe="@") for s in (user, *segments)])


def query_text(query: Mapping[str, str]) -> str:
    """OData query options as Graph's examples write them: ``$filter=...&$top=...``."""
    return "&".join("%s=%s" % (k, urllib.parse.quote(v, safe="'(),:@")) for k, v in query.items())


class _HttpsTo(http.client.HTTPSConnection):
    """An HTTPS connection to one address of the host, TLS checked against the host's name."""

    def __init__(self, ep: Endpoint, address: str, timeout: float, trace: GraphTrace) -> None:
        super().__init__(ep.host, ep.port, timeout=timeout, context=ep.ssl_context)
        self.address = address
        self.trace = trace
        self.requests = 0  # requests answered on this connection

    def connect(self) -> None:
        sock = tcp(self.address, self.port, self.timeout)
        try:
            assert self._context is not None  # type: ignore[attr-defined]  # http.client's, not in its stubs
            self.sock = self._context.wrap_socket(sock, server_hostname=host_arg(self.host))  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
        self.trace.connected(self.address, self.port, self.sock)


def _open(ep: Endpoint, address: str, deadline: Deadline, why: Optional[str]) -> _HttpsTo:
    trace: GraphTrace = tracing.trace_for("GraphTrace", ep.secrets())
    if why:
        trace.note(why)
    conn = _HttpsTo(ep, address, deadline.left(), trace)
    conn.connect()
    return conn


def _no_starttls(conn: _HttpsTo, ctx: Optional[ssl.SSLContext], deadline: Deadline) -> None:
    raise StepFailure("Graph TLS", "Graph is HTTPS only")  # never called: a Graph Endpoint's TLS is "tls"


WIRE = Wire("Graph", _open, _no_starttls, lambda conn: conn.sock, lambda conn: conn.close(),
            lambda conn: conn.close())


class Graph:
    """The run's client for the Graph endpoint *ep* (its host, port, TLS context, token source)."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.conn: Optional[_HttpsTo] = None
        self.connections = 0  # connections opened in this run

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def call(self, step_name: str, deadline: Deadline, method: str, target: str,
             body: Optional[bytes] = None, content_type: str = "application/json",
             missing: Optional[Missing] = None) -> Answer:
        """One request (*target*: the path and query, or a whole nextLink URL of this endpoint)
        as the step *step_name*; its :class:`Answer`, or a StepFailure in Graph's words
        (:class:`Refused` when Graph said no, :class:`Unclear` when it said nothing)."""
        path = self._path(step_name, target)
        tokens = self.ep.oauth2
        assert tokens is not None  # a Graph Endpoint has its token source (see cli.py)
        token = tokens.token(deadline)  # without a token there is no point in connecting
        renewed, waits = False, 0
        for _ in range(MAX_RETRIES + 3):  # the request, once more with a fresh token, once after each wait
            status, reason, headers, raw = self._exchange(step_name, deadline, method, path, body, content_type, token)
            if 200 <= status < 300:
                return Answer(status, _json(step_name, status, reason, headers, raw) if raw.strip() else {},
                              headers.get("request-id", ""))
            words, code = error_words(status, reason, headers.get("content-type", ""), raw)
            if status == 401 and not renewed:
                from .oauth2 import renewed as fresh_token  # only a run with a token source gets here
                token = fresh_token(tokens, deadline, step_name, words)
                tokens.notes.append("OAuth2: Graph refused the token (%s); one more try with a fresh one (%s)"
                                    % (words, step_name))
                renewed = True
                continue
            if status in (429, 503):
                if waits == MAX_RETRIES:
                    raise Refused(step_name, "%s; still throttled after %d waits" % (words, waits), status, code,
                                  words)
                wait = retry_after(headers.get("retry-after"), time.time())
                if wait is None or deadline.at - deadline.clock() < wait + AFTER_WAIT:
                    raise Refused(step_name, throttled(words, headers.get("retry-after"), wait, deadline), status,
                                  code, words)
                self.conn_trace().note("%s: waiting %gs (Retry-After) before trying again", words, wait)
                time.sleep(wait)
                waits += 1
                continue
            raise Refused(step_name, explained(words, status, code, missing, renewed), status, code, words)
        raise StepFailure(step_name, "no answer Graph stands by")  # not reached: every round returns or raises

    def conn_trace(self) -> Any:
        return self.conn.trace if self.conn is not None else tracing.QUIET

    def _path(self, step_name: str, target: str) -> str:
        """The request target for *target*; a URL (a nextLink) only of this endpoint."""
        if not target.startswith(("https://", "http://")):
            return target
        parts = urllib.parse.urlsplit(target)
        try:
            port = parts.port or 443
        except ValueError:
            port = None
        if parts.scheme != "https" or (parts.hostname or "").lower() != self.ep.host.lower() or port != self.ep.port:
            raise StepFailure(step_name, "Graph's next page is at another address, not followed: %s"
                              % target[:200])
        return parts.path + ("?" + parts.query if parts.query else "")

    def _connection(self, deadline: Deadline) -> _HttpsTo:
        if self.conn is None:
            self.conn = Connection(WIRE, self.ep, deadline).open(None)
            self.connections += 1
        return self.conn

    def _exchange(self, step_name: str, deadline: Deadline, method: str, path: str, body: Optional[bytes],
                  content_type: str, token: str) -> tuple[int, str, dict[str, str], bytes]:
        """Send one request and read its answer (bounded), on the kept connection or a new one:
        (status, reason, headers in lower case, body)."""
        headers = {"Authorization": "Bearer " + token, "Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = content_type
        for _ in range(2):  # a kept connection the server closed meanwhile: once more on a new one
            reused = self.conn is not None and self.conn.requests > 0
            conn = self._connection(deadline)
            sent = answered = False
            try:
                with step(step_name, deadline):
                    deadline.arm(conn.sock)
                    conn.trace.sent("%s %s HTTP/1.1%s" % (method, urllib.parse.unquote(path), _size(body)))
                    conn.request(method, path, body=body, headers=headers)
                    sent = True
                    deadline.arm(conn.sock)
                    response = conn.getresponse()
                    answered = True
                    raw = self._read(step_name, response, 200 <= response.status < 300)
                    conn.requests += 1
            except StepFailure as failure:
                self.close()
                closed = isinstance(failure.__cause__, _CLOSED)
                if closed and reused and not answered:
                    continue
                if failure.detail == "timed out":
                    raise Unclear(step_name, "timed out waiting for Graph's answer to %s" % _short(method, path),
                                  sent) from failure
                if answered:
                    raise Unclear(step_name, failure.detail, True) from failure
                if closed:
                    raise Unclear(step_name, "Graph closed the connection without an answer to %s"
                                  % _short(method, path), sent) from failure
                raise Unclear(step_name, failure.detail, sent) from failure
            answer = {k.lower(): v for k, v in response.getheaders()}
            conn.trace.reply("HTTP/1.1 %d %s <%s, %d bytes>" % (response.status, response.reason,
                                                                 answer.get("content-type", "no content type"),
                                                                 len(raw)))
            if response.will_close:
                self.close()
            return response.status, response.reason, answer, raw
        raise Unclear(step_name, "Graph closed the connection twice without an answer", False)

    def _read(self, step_name: str, response: http.client.HTTPResponse, status_ok: bool) -> bytes:
        """The body of *response*: at most MAX_ANSWER bytes (an error answer: MAX_ERROR kept)."""
        limit = MAX_ANSWER if status_ok else MAX_ERROR
        parts: list[bytes] = []
        size = 0
        for _ in range(MAX_ANSWER // CHUNK + 2):
            try:
                part = response.read(CHUNK)
            except http.client.IncompleteRead as exc:  # a chunked answer cut off
                raise StepFailure(step_name, "Graph's answer (HTTP %d) broke off after %d bytes: the connection "
                                  "closed before the end" % (response.status, size + len(exc.partial))) from None
            if not part:
                if response.length:  # http.client ends a read short of Content-Length without a word
                    raise StepFailure(step_name, "Graph's answer (HTTP %d) broke off after %d of %d bytes: the "
                                      "connection closed before the end"
                                      % (response.status, size, size + response.length))
                return b"".join(parts)
            size += len(part)
            if size > limit:
                if status_ok:
                    raise StepFailure(step_name, "Graph's answer is too long: more than %d MiB" % (MAX_ANSWER >> 20))
                continue  # an error answer: its start is enough for the words, the rest is read and dropped
            parts.append(part)
        raise StepFailure(step_name, "Graph's answer is too long: more than %d MiB" % (MAX_ANSWER >> 20))


def _size(body: Optional[bytes]) -> str:
    return " <body, %d bytes>" % len(body) if body is not None else ""


def _short(method: str, path: str) -> str:
    """The request in words, without its query: ``GET /v1.0/users/.../messages``."""
    return "%s %s" % (method, path.split("?", 1)[0])


def _json(step_name: str, status: int, reason: str, headers: Mapping[str, str], raw: bytes) -> Mapping[str, Any]:
    """The JSON object of a successful answer; else a StepFailure saying what came instead."""
    kind = headers.get("content-type", "")
    data, why = parse_json(raw)
    if why is not None:
        raise Unclear(step_name, not_json(status, reason, kind, raw, why), True)
    if not isinstance(data, dict):
        raise Unclear(step_name, "Graph's answer (HTTP %d) is JSON but not an object: %s"
                      % (status, _snippet(raw)), True)
    return data


def parse_json(raw: bytes) -> tuple[Any, Optional[str]]:
    """(the parsed JSON, None), or (None, why not): "truncated", "nested too deep" or "not JSON"."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not JSON"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, MAX_DEPTH_TEXT
    except json.JSONDecodeError as exc:
        return None, "truncated" if _cut_off(text, exc) else "not JSON"


def _cut_off(text: str, exc: json.JSONDecodeError) -> bool:
    """Is *text* JSON that breaks off (its start is JSON, and the parser ran out of text)?"""
    body = text.strip()
    if not body.startswith(("{", "[")):
        return False
    if exc.msg.startswith("Unterminated string"):
        return True
    rest = text[exc.pos:].rstrip()
    return not rest or any(word.startswith(rest) for word in ("true", "false", "null"))


def not_json(status: int, reason: str, kind: str, raw: bytes, why: str) -> str:
    """Words for an answer that is not the JSON Graph sends: an HTML page, garbage, JSON cut off."""
    head = "HTTP %d %s" % (status, reason) if reason else "HTTP %d" % status
    if is_html(kind, raw):
        title = _TITLE.search(raw[:MAX_ERROR])
        named = " (%s)" % _text(title.group(1)) if title and _text(title.group(1)) else ""
        return "%s: an HTML page%s instead of Graph's JSON (a proxy or gateway in the way?)" % (head, named)
    if why == "truncated":
        return "%s: Graph's JSON breaks off after %d bytes (answer truncated)" % (head, len(raw))
    if why == MAX_DEPTH_TEXT:
        return "%s: Graph's JSON is %s" % (head, MAX_DEPTH_TEXT)
    return "%s: the answer is not JSON (%s): %s" % (head, kind or "no content type", _snippet(raw))


def is_html(kind: str, raw: bytes) -> bool:
    return "html" in kind.lower() or raw.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def error_words(status: int, reason: str, kind: str, raw: bytes) -> tuple[str, str]:
    """(words, code) of an error answer: ``"ErrorAccessDenied: Access is denied (HTTP 403)"`` from
    Graph's JSON error, else what came instead (an HTML page, garbage); code "" then."""
    data, why = parse_json(raw) if raw.strip() else (None, "empty")
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        code = str(error.get("code") or "")
        message = " ".join(str(error.get("message") or "").split())
        message = message[:-1] if message.endswith(".") and not message.endswith("..") else message
        text = ": ".join(t for t in (code, message) if t)
        return "%s (HTTP %d)" % (text, status), code
    if why == "empty":
        return ("HTTP %d %s, no body" % (status, reason)).replace(" ,", ","), ""
    return not_json(status, reason, kind, raw, why or "not JSON"), ""


def explained(words: str, status: int, code: str, missing: Optional[Missing], renewed: bool) -> str:
    """An error answer's words with what it means for the check and the fix, where there is one."""
    if status == 401:
        return words + (" (with a fresh token too)" if renewed else "")
    if status == 403:
        return "%s; %s" % (words, PERMISSIONS_FIX)
    if status == 404 and missing is not None:
        if code in USER_MISSING or (missing.folder is None and code not in ITEM_MISSING):
            return ("mailbox %s not found: %s; --graph-user names it (its user principal name or id)"
                    % (missing.mailbox, words))
        if missing.folder is not None:
            return ('folder "%s" not found in mailbox %s: %s; --graph-folder takes a well-known name (inbox, '
                    'junkemail, ...) or a folder id' % (missing.folder, missing.mailbox, words))
    return words


def retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds a Retry-After header asks for (a number of seconds, or an HTTP date); NO_RETRY_AFTER
    when there is none, None when it cannot be read."""
    if value is None or not value.strip():
        return NO_RETRY_AFTER
    text = value.strip()
    if text.isdigit():
        return float(int(text[:9]))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def throttled(words: str, header: Optional[str], wait: Optional[float], deadline: Deadline) -> str:
    """A throttled answer whose wait does not fit in the step's time, in words."""
    left = max(0.0, deadline.at - deadline.clock())
    if wait is None:
        return "%s; Retry-After %r unreadable" % (words, (header or "")[:40])
    asked = "Retry-After %ds" % round(wait) if header else "no Retry-After"
    return "%s; %s does not fit in the %.0fs left (-t)" % (words, asked, left)


def _text(data: bytes) -> str:
    """*data* as one line of printable text (what is not: "?"), at most 80 characters."""
    text = "".join(c if c.isprintable() or c.isspace() else "?" for c in data[:1000].decode("utf-8", "replace"))
    return " ".join(text.replace("\ufffd", "?").split())[:80]


def _snippet(raw: bytes, limit: int = 60) -> str:
    text = _text(raw)
    return (text[:limit] + ("..." if len(text) > limit else "")) if text else "(empty)"
