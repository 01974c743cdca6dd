"""The mail lab's OAuth2 side: the token service process and what tests ask of it.

TokenService(layout, tls) starts and stops tokenservice.py (its own process
and session, HTTPS on 127.0.0.1:layout.oauth2_port with the lab's server
certificate) and talks to it over HTTPS with the lab CA:

    tokens.token_url                       https://127.0.0.1:PORT/token
    tokens.client("monitor")               (client_id, client_secret), bound to the mailbox
    tokens.refresh_token("monitor")        a refresh token for the mailbox's client
    tokens.current_refresh_token("monitor")  the newest unused one (rotation)
    tokens.access_token("monitor", expires_in=2)
    tokens.expires_in(2)                   lifetime of the tokens issued from now on
    tokens.revoke(token) / tokens.revoke() / tokens.unrevoke()
    tokens.count("client_credentials")     also "refresh_token", "token", "introspect", ...
    tokens.post_token({...}, basic=(id, secret))   a client's request: (status, JSON)
    tokens.reset()                         what MailLab.reset() calls before each test
    tokens.stop() / tokens.start()         the service down (Dovecot: NO [UNAVAILABLE]) and up

A mailbox may be given without the domain ("monitor" is monitor@lab.test);
it need not exist (a token for an unknown mailbox is a test case too).  The
state lives in the service process, so a lab attached from another process
(MailLab.attach, the command line) sees the same tokens, and a restarted
service knows none of the old ones.
"""

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from .common import DOMAIN, HOST, LabError
from .procs import _end_session, _pid_alive, _read_pid, _tail

START_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenservice.py")


def mailbox_address(mailbox):
    return mailbox if "@" in mailbox else "%s@%s" % (mailbox, DOMAIN)


class TokenService:
    """The lab's OAuth2 authorization server (tokenservice.py) and its admin API."""

    def __init__(self, layout, tls):
        self.layout = layout
        self.tls = tls
        self.proc = None

    # ------------------------------------------------------------- addresses

    @property
    def port(self):
        return self.layout.oauth2_port

    def url(self, path):
        return "https://%s:%s%s" % (HOST, self.port, path)

    @property
    def token_url(self):
        return self.url("/token")

    @property
    def introspection_url(self):
        return self.url("/introspect")

    def describe(self):
        return {"port": self.port, "token_url": self.token_url,
                "introspection_url": self.introspection_url}

    # ------------------------------------------------------------ start/stop

    def pid(self):
        """The service's pid from its pid file, if that process is the lab's service."""
        pid = _read_pid(self.layout.tokenservice_pid)
        if not pid or not _pid_alive(pid):
            return None
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            return None
        return pid if SCRIPT in argv and self.layout.dir in argv else None

    def alive(self):
        return self.pid() is not None

    def start(self, timeout=START_TIMEOUT):
        """Start the service; return once it answers /health (LabError if it
        does not within *timeout* s: the message has its log, "in use" for a
        taken port)."""
        self.stop()
        lay = self.layout
        with open(lay.tokenservice_log, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, SCRIPT, "--dir", lay.dir, "--port", str(self.port),
                 "--cert", lay.cert_file, "--key", lay.key_file,
                 "--pidfile", lay.tokenservice_pid],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.pid() == self.proc.pid and self._healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise LabError("the OAuth2 token service did not come up on port %s within %ss:\n%s"
                       % (self.port, timeout, _tail(lay.tokenservice_log, 10)))

    def _healthy(self):
        try:
            return self._call("GET", "/health").get("ok") is True
        except LabError:
            return False

    def stop(self):
        """SIGTERM, then kill whatever is left of the service's session; bounded."""
        proc, self.proc = self.proc, None
        pid = proc.pid if proc is not None and proc.poll() is None else self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _end_session(pid, wait=3.0)
        if proc is not None:
            proc.poll()  # reap it: _end_session leaves a zombie at most
        if self.layout.dir:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.tokenservice_pid)

    # ------------------------------------------------------------------ HTTP

    def _request(self, method, path, data=None, headers=None):
        """(status, JSON answer) of one HTTPS request to the service."""
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers=headers or {})
        # the lab CA, and no proxy from the environment: the service is on loopback
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=self.tls.ssl_context()))
        try:
            with opener.open(req, timeout=HTTP_TIMEOUT) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    return exc.code, json.load(exc)
                except ValueError:
                    return exc.code, {}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise LabError("OAuth2 token service %s %s: %s" % (method, path, exc)) from exc

    def _call(self, method, path, body=None):
        """An admin request: the JSON answer, LabError unless HTTP 200."""
        data = None if body is None else json.dumps(body).encode()
        status, answer = self._request(method, path, data,
                                       {"Content-Type": "application/json"})
        if status != 200:
            raise LabError("OAuth2 token service %s %s: HTTP %s %s"
                           % (method, path, status, answer))
        return answer

    def post_token(self, form, basic=None):
        """POST a form to the token endpoint as a client does: (status, JSON).

        basic: (client_id, client_secret) sent as HTTP Basic (form-urlencoded
        first, as RFC 6749 2.3.1 says) instead of in the form.
        """
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if basic:
            pair = ":".join(urllib.parse.quote_plus(v) for v in basic)
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return self._request("POST", "/token", urllib.parse.urlencode(form).encode(), headers)

    # ------------------------------------------------------------ test API

    def client(self, mailbox):
        """(client_id, client_secret) of the mailbox's client, registered on first use."""
        answer = self._call("POST", "/admin/clients", {"mailbox": mailbox_address(mailbox)})
        return answer["client_id"], answer["client_secret"]

    def register_client(self, mailbox, client_id=None, client_secret=None):
        """Another client for the mailbox (e.g. an id or secret with odd characters)."""
        answer = self._call("POST", "/admin/clients", {
            "mailbox": mailbox_address(mailbox), "client_id": client_id,
            "client_secret": client_secret, "new": True})
        return answer["client_id"], answer["client_secret"]

    def refresh_token(self, mailbox):
        """A new refresh token of the mailbox's client (see client())."""
        return self._call("POST", "/admin/refresh_tokens",
                          {"mailbox": mailbox_address(mailbox)})["refresh_token"]

    def current_refresh_token(self, mailbox):
        """The mailbox's newest refresh token not yet used or revoked (None: none)."""
        query = urllib.parse.urlencode({"mailbox": mailbox_address(mailbox)})
        return self._call("GET", "/admin/refresh_tokens?" + query)["refresh_token"]

    def access_token(self, mailbox, expires_in=None):
        """An access token for the mailbox, minted directly (no client request)."""
        body = {"mailbox": mailbox_address(mailbox)}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._call("POST", "/admin/access_tokens", body)["access_token"]

    def expires_in(self, seconds):
        """The lifetime (whole seconds, 0 = expired at once) of tokens issued from now on."""
        self._call("POST", "/admin/settings", {"expires_in": seconds})

    def revoke(self, token=None):
        """Revoke one token (access or refresh; LabError if unknown) or, with
        none given, every access token: those issued so far and those issued
        until unrevoke()."""
        self._call("POST", "/admin/revoke", {} if token is None else {"token": token})

    def unrevoke(self):
        """Tokens issued from now on work again (revoked ones stay revoked)."""
        self._call("POST", "/admin/unrevoke", {})

    def counts(self):
        """Every request counter: token, client_credentials, refresh_token,
        introspect, introspect_active, introspect_inactive, ..."""
        return self._call("GET", "/admin/counters")

    def count(self, kind):
        return self.counts().get(kind, 0)

    def reset(self):
        """Forget every token, revocation and counter; expires_in back to 3600.
        Client registrations stay.  A service a test stopped is started again
        (empty: its state was in the process that ended)."""
        if not self.alive():
            self.start()
        self._call("POST", "/admin/reset", {})
