"""The mail lab's OAuth2 authorization server (a program; stdlib only).

The lab (tokens.py) runs it as its own process: HTTPS on 127.0.0.1 with a
certificate of the lab CA, its state in this process's memory.

    POST /token       RFC 6749 token endpoint (application/x-www-form-urlencoded):
                      grant_type=client_credentials (client_id + client_secret in
                      the body or HTTP Basic, optional scope) and
                      grant_type=refresh_token (refresh_token, client_id, optional
                      client_secret), rotating: each use answers a new
                      refresh_token and makes the old one invalid_grant.
    POST /introspect  RFC 7662 for Dovecot's oauth2 passdb: token=... answers
                      {"active": true, "username": <mailbox>, ...} or
                      {"active": false} (unknown, expired or revoked).
    GET  /health      {"ok": true}
    /admin/...        for the tests (JSON in and out, loopback clients only):
                      POST clients {mailbox[, client_id, client_secret, new]},
                      POST refresh_tokens {mailbox}, GET refresh_tokens?mailbox=,
                      POST access_tokens {mailbox[, expires_in]},
                      POST settings {expires_in}, POST revoke {[token]},
                      POST unrevoke, GET counters, POST reset.

Every token is bound to a lab mailbox: a client registration names it, a
refresh token carries it.  Only access tokens introspect as active; a
refresh token used as a bearer token is refused.  revoke without a token is
a switch: every access token issued so far, and every one issued until
unrevoke, introspects as inactive.

Writes its pid to --pidfile once it listens; logs to stdout (the lab sends
that to <dir>/log/tokenservice.log).  Exits on SIGTERM, when the lab
directory is gone, or after --max-lifetime seconds.
"""

import argparse
import base64
import collections
import hmac
import http.server
import json
import os
import secrets
import signal
import ssl
import sys
import threading
import time
import urllib.parse

HOST = "127.0.0.1"
DEFAULT_EXPIRES_IN = 3600
MAX_BODY = 64 * 1024
CONN_TIMEOUT = 10.0      # seconds for a TLS handshake and a request
WATCH_INTERVAL = 1.0     # seconds between checks that the lab is still there
FORM = "application/x-www-form-urlencoded"


def log(msg):
    print("%s tokenservice[%d]: %s" % (time.strftime("%H:%M:%S"), os.getpid(), msg),
          flush=True)


def short(token):
    """A token as the log shows it: enough to tell tokens apart, not to use them."""
    return (token or "")[:14] + "..."


class OAuthError(Exception):
    """An RFC 6749 error answer: HTTP status, error code, description."""

    def __init__(self, status, error, description):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def payload(self):
        return {"error": self.error, "error_description": self.description}


# ------------------------------------------------------------------ state


class Store:
    """Clients, tokens, revocations, counters; every method holds the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.clients = {}          # client_id -> {"secret", "mailbox"}
        self.mailbox_client = {}   # mailbox -> its default client_id
        self._clear()

    def _clear(self):
        # token -> {"mailbox", "client_id", "scope", "iat", "exp", "revoked"}
        self.access = {}
        # token -> {"mailbox", "client_id", "scope", "state"}: live, used, revoked
        self.refresh = {}
        self.revoke_all = False
        self.expires_in = DEFAULT_EXPIRES_IN
        self.counters = collections.Counter()

    def reset(self):
        """Forget every token, revocation and count; expires_in back to the
        default.  Client registrations stay (they are the lab's setup)."""
        with self.lock:
            self._clear()

    def count(self, *kinds):
        with self.lock:
            self.counters.update(kinds)

    def counts(self):
        with self.lock:
            return dict(self.counters)

    def set_expires_in(self, seconds):
        with self.lock:
            self.expires_in = seconds
            return seconds

    # ---------------------------------------------------------- clients

    def client(self, mailbox, client_id=None, secret=None, new=False):
        """The mailbox's default client (registered on first use), or a new
        registration (new=True, or a client_id given)."""
        with self.lock:
            if not new and client_id is None and mailbox in self.mailbox_client:
                cid = self.mailbox_client[mailbox]
                return cid, self.clients[cid]["secret"]
            cid = client_id or "lab-client-" + secrets.token_hex(6)
            secret = secret or secrets.token_urlsafe(18)
            self.clients[cid] = {"secret": secret, "mailbox": mailbox}
            self.mailbox_client.setdefault(mailbox, cid)
            return cid, secret

    def authenticate(self, client_id, secret, secret_required):
        """The client's registration; OAuthError invalid_client when it fails."""
        if not client_id:
            raise OAuthError(401, "invalid_client", "client_id is missing")
        with self.lock:
            reg = self.clients.get(client_id)
        if reg is None:
            raise OAuthError(401, "invalid_client", "unknown client %r" % client_id)
        if secret is None and secret_required:
            raise OAuthError(401, "invalid_client", "client authentication is required")
        if secret is not None and not hmac.compare_digest(secret.encode(),
                                                          reg["secret"].encode()):
            raise OAuthError(401, "invalid_client", "client authentication failed")
        return reg

    # ----------------------------------------------------------- tokens

    def issue_access(self, mailbox, client_id, scope, expires_in=None):
        """A new access token: (token, expires_in)."""
        with self.lock:
            lifetime = self.expires_in if expires_in is None else expires_in
            token = "lab-at-" + secrets.token_urlsafe(24)
            now = time.time()
            self.access[token] = {"mailbox": mailbox, "client_id": client_id,
                                  "scope": scope, "iat": now, "exp": now + lifetime,
                                  "revoked": self.revoke_all}
            return token, lifetime

    def issue_refresh(self, mailbox, client_id, scope):
        with self.lock:
            token = "lab-rt-" + secrets.token_urlsafe(24)
            self.refresh[token] = {"mailbox": mailbox, "client_id": client_id,
                                   "scope": scope, "state": "live"}
            return token

    def rotate(self, token, client_id):
        """Use a refresh token up: its record; OAuthError invalid_grant if it
        is unknown, used, revoked or another client's."""
        with self.lock:
            rec = self.refresh.get(token or "")
            if rec is None:
                raise OAuthError(400, "invalid_grant", "unknown refresh token")
            if rec["state"] != "live":
                raise OAuthError(400, "invalid_grant", "refresh token was %s" % rec["state"])
            if rec["client_id"] != client_id:
                raise OAuthError(400, "invalid_grant",
                                 "refresh token was issued to another client")
            rec["state"] = "used already (rotated)"
            return dict(rec)

    def current_refresh(self, mailbox):
        """The newest live refresh token of a mailbox (None: there is none)."""
        with self.lock:
            live = [t for t, r in self.refresh.items()
                    if r["mailbox"] == mailbox and r["state"] == "live"]
            return live[-1] if live else None

    def introspect(self, token):
        """(record or None, why it is inactive)."""
        with self.lock:
            rec = self.access.get(token or "")
            if rec is None:
                why = "a refresh token" if token in self.refresh else "unknown"
                return None, why
            if rec["revoked"]:
                return None, "revoked"
            if time.time() >= rec["exp"]:
                return None, "expired"
            return dict(rec), ""

    def revoke(self, token=None):
        """Revoke one token (access or refresh), or switch revoke-all on; the
        number of tokens revoked (None: unknown token)."""
        with self.lock:
            if token is None:
                self.revoke_all = True
                for rec in self.access.values():
                    rec["revoked"] = True
                return len(self.access)
            if token in self.access:
                self.access[token]["revoked"] = True
            elif token in self.refresh:
                self.refresh[token]["state"] = "revoked"
            else:
                return None
            return 1

    def unrevoke(self):
        """Switch revoke-all off: new tokens work again (revoked ones stay so)."""
        with self.lock:
            self.revoke_all = False


# ------------------------------------------------------------- endpoints


def single_values(form):
    """{name: value} of a parsed form; a repeated parameter is invalid_request."""
    out = {}
    for name, values in form.items():
        if len(values) != 1:
            raise OAuthError(400, "invalid_request", "parameter %s given more than once" % name)
        out[name] = values[0]
    return out


def client_credentials(headers, form):
    """(client_id, client_secret or None) from HTTP Basic or the body (RFC 6749 2.3.1)."""
    header = headers.get("Authorization")
    if not header:
        return form.get("client_id"), form.get("client_secret")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(401, "invalid_client", "client authentication must be HTTP Basic")
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise OAuthError(401, "invalid_client", "malformed HTTP Basic credentials")
    if "client_secret" in form:
        raise OAuthError(400, "invalid_request",
                         "client credentials both in the Authorization header and the body")
    user = urllib.parse.unquote_plus(user)
    if form.get("client_id", user) != user:
        raise OAuthError(400, "invalid_request",
                         "client_id in the body is not the one of the Authorization header")
    return user, urllib.parse.unquote_plus(password)


def token_answer(store, mailbox, client_id, scope, refresh=False):
    token, lifetime = store.issue_access(mailbox, client_id, scope)
    answer = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
    if scope:
        answer["scope"] = scope
    if refresh:
        answer["refresh_token"] = store.issue_refresh(mailbox, client_id, scope)
    return answer


def grant_client_credentials(store, headers, form):
    client_id, secret = client_credentials(headers, form)
    reg = store.authenticate(client_id, secret, secret_required=True)
    return token_answer(store, reg["mailbox"], client_id, form.get("scope", ""))


def grant_refresh_token(store, headers, form):
    if not form.get("refresh_token"):
        raise OAuthError(400, "invalid_request", "refresh_token is missing")
    client_id, secret = client_credentials(headers, form)
    store.authenticate(client_id, secret, secret_required=False)
    rec = store.rotate(form["refresh_token"], client_id)
    return token_answer(store, rec["mailbox"], client_id, rec["scope"], refresh=True)


GRANTS = {"client_credentials": grant_client_credentials,
          "refresh_token": grant_refresh_token}


def token_endpoint(store, headers, form):
    grant = form.get("grant_type", "")
    store.count("token", grant or "no grant_type")
    if grant not in GRANTS:
        raise OAuthError(400, "unsupported_grant_type" if grant else "invalid_request",
                         "grant_type %r is not supported" % grant)
    answer = GRANTS[grant](store, headers, form)
    log("token: %s for client %s -> %s" % (grant, form.get("client_id", "(basic)"),
                                           short(answer["access_token"])))
    return answer


def introspect_endpoint(store, headers, form):
    rec, why = store.introspect(form.get("token"))
    store.count("introspect", "introspect_active" if rec else "introspect_inactive")
    log("introspect %s: %s" % (short(form.get("token")), "active" if rec else why))
    if rec is None:
        return {"active": False}
    return {"active": True, "username": rec["mailbox"], "sub": rec["mailbox"],
            "client_id": rec["client_id"], "scope": rec["scope"], "token_type": "Bearer",
            "iat": int(rec["iat"]), "exp": int(rec["exp"])}


def lifetime_of(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OAuthError(400, "invalid_request", "expires_in must be a whole number >= 0")
    return value


def admin_clients(store, body):
    cid, secret = store.client(body["mailbox"], body.get("client_id"),
                               body.get("client_secret"), bool(body.get("new")))
    return {"client_id": cid, "client_secret": secret, "mailbox": body["mailbox"]}


def admin_refresh_tokens(store, body):
    mailbox = body["mailbox"]
    cid, _ = store.client(mailbox)
    return {"refresh_token": store.issue_refresh(mailbox, cid, body.get("scope", "")),
            "client_id": cid}


def admin_access_tokens(store, body):
    lifetime = body.get("expires_in")
    token, lifetime = store.issue_access(body["mailbox"], body.get("client_id", ""),
                                         body.get("scope", ""),
                                         None if lifetime is None else lifetime_of(lifetime))
    return {"access_token": token, "expires_in": lifetime}


def admin_settings(store, body):
    return {"expires_in": store.set_expires_in(lifetime_of(body.get("expires_in")))}


def admin_revoke(store, body):
    n = store.revoke(body.get("token"))
    if n is None:
        raise OAuthError(404, "not_found", "no such token")
    return {"revoked": n}


ADMIN_POST = {
    "clients": admin_clients,
    "refresh_tokens": admin_refresh_tokens,
    "access_tokens": admin_access_tokens,
    "settings": admin_settings,
    "revoke": admin_revoke,
    "unrevoke": lambda store, body: store.unrevoke() or {},
    "reset": lambda store, body: store.reset() or {},
}
ADMIN_GET = {
    "counters": lambda store, query: store.counts(),
    "refresh_tokens": lambda store, query: {
        "refresh_token": store.current_refresh(query.get("mailbox", ""))},
}


# ------------------------------------------------------------------ HTTP


class Handler(http.server.BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0 style: Connection: close)."""

    server_version = "MailLabOAuth2/1"
    timeout = CONN_TIMEOUT

    def log_message(self, fmt, *args):
        log("%s %s" % (self.client_address[0], fmt % args))

    def send_json(self, status, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        self.send_header("Connection", "close")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise OAuthError(411, "invalid_request", "Content-Length is required") from None
        if not 0 <= length <= MAX_BODY:
            raise OAuthError(413, "invalid_request", "request body too large")
        return self.rfile.read(length)

    def form(self):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != FORM:
            raise OAuthError(400, "invalid_request", "Content-Type must be " + FORM)
        try:
            text = self.body().decode("utf-8")
        except UnicodeDecodeError:
            raise OAuthError(400, "invalid_request", "the form is not UTF-8") from None
        return single_values(urllib.parse.parse_qs(text, keep_blank_values=True))

    def route(self):
        """(function, its argument) for this request; OAuthError 404/405/403."""
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/")
        store = self.server.store
        if path in ("/token", "/introspect"):
            if self.command != "POST":
                raise OAuthError(405, "invalid_request", "use POST")
            func = token_endpoint if path == "/token" else introspect_endpoint
            return lambda: func(store, self.headers, self.form())
        if path == "/health":
            return lambda: {"ok": True}
        if path.startswith("/admin/"):
            if self.client_address[0] != HOST:
                raise OAuthError(403, "access_denied", "admin endpoints are for 127.0.0.1 only")
            name = path[len("/admin/"):]
            if self.command == "GET" and name in ADMIN_GET:
                query = dict(urllib.parse.parse_qsl(url.query))
                return lambda: ADMIN_GET[name](store, query)
            if self.command == "POST" and name in ADMIN_POST:
                return lambda: ADMIN_POST[name](store, self.json_body())
        raise OAuthError(404, "not_found", "no such endpoint: %s %s" % (self.command, path))

    def json_body(self):
        try:
            body = json.loads(self.body() or b"{}")
        except ValueError:
            raise OAuthError(400, "invalid_request", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise OAuthError(400, "invalid_request", "the body must be a JSON object")
        return body

    def handle_any(self):
        try:
            self.send_json(200, self.route()())
        except OAuthError as exc:
            extra = [("WWW-Authenticate", 'Basic realm="mail lab"')] if exc.status == 401 else []
            log("%s %s: %s %s" % (self.command, self.path.split("?")[0], exc.error,
                                  exc.description))
            self.send_json(exc.status, exc.payload(), extra)
        except KeyError as exc:
            self.send_json(400, {"error": "invalid_request",
                                 "error_description": "missing field %s" % exc})

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    """HTTPS: the TLS handshake runs in the request's thread, bounded in time."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, context, store):
        self.context = context
        self.store = store
        super().__init__((HOST, port), Handler)

    def finish_request(self, request, client_address):
        request.settimeout(CONN_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log("%s: TLS handshake failed: %s" % (client_address[0], exc))
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def watch(server, lab_dir, lifetime):
    """Stop the server when the lab directory is gone or the lifetime is over."""
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline and os.path.isdir(lab_dir):
        time.sleep(WATCH_INTERVAL)
    log("lab directory gone or max lifetime reached, exiting")
    server.shutdown()


def write_pid(path):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as fh:
        fh.write("%d\n" % os.getpid())
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the lab directory")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--max-lifetime", type=float, default=6 * 3600)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server = Server(args.port, tls_context(args.cert, args.key), Store())
    except OSError as exc:
        log("cannot listen on %s:%s: %s" % (HOST, args.port, exc))
        return 2
    write_pid(args.pidfile)
    log("listening on https://%s:%s" % (HOST, args.port))
    threading.Thread(target=watch, args=(server, args.dir, args.max_lifetime),
                     daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
