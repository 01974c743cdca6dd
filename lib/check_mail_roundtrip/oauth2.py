"""OAuth2 access tokens for the mail logins: where they come from, and their cache.

One :class:`TokenSource` serves both sides (SMTP, IMAP) of a run:

- :class:`FileToken`: the first line of a file that something else keeps fresh;
- :class:`CommandToken`: the first line a command prints (run without a
  shell, bounded by the step's deadline; its stderr's first line explains a
  failure);
- :class:`GrantToken`: the token endpoint itself (RFC 6749), with the
  ``client_credentials`` grant or the ``refresh_token`` grant.  A refresh
  token the server rotates is written back to its file atomically, keeping
  its mode and owner.  The access token is cached in the state directory
  (a file of its own, 0600) and reused by later runs until shortly before it
  expires.

``token(deadline)`` gives the token; after a server rejected it,
``renew(deadline)`` gives a fresh one (or None when the source cannot do
better), so the transports retry the login once, no more.  Failures are
StepFailures of the step ``OAuth2 token`` with the other side's words.

Nothing another user could have put in place is trusted: token and refresh
token files are read as :mod:`private_file` reads secrets (regular files of
the running user or root, mode 0600, at most 16 KiB; else UNKNOWN); the token
cache is opened without following a link, and one of another user is UNKNOWN;
the endpoint's redirects are followed only to the same scheme, host and port.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import stat
import subprocess
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Union

from . import private_file, sasl
from .failure import StepFailure, step
from .owners import access_problem
from .redact import redact, register
from .state import set_aside, write_atomically

if TYPE_CHECKING:
    import http.client
    import ssl
    import urllib.request

    from .budget import Deadline
    from .settings import Endpoint

STEP = "OAuth2 token"
MAX_REPLY = 64 * 1024        # bytes of a token endpoint's answer (and of the token cache) read at most
TOKEN_BYTES = 16 * 1024      # a token or refresh token file larger than this is refused
MAX_REDIRECTS = 3            # redirects of the token endpoint followed (same scheme, host and port only)
EARLY = 60.0                 # renew this long before expiry (or a tenth of a short lifetime)
DEFAULT_LIFETIME = 3600.0    # when the endpoint does not say (expires_in)


class TokenSource:
    """Where the access token comes from (see the module doc)."""

    def __init__(self) -> None:
        self.notes: list[str] = []  # lines for -v
        self._token: Optional[str] = None
        self._failure: Optional[StepFailure] = None  # a failure is not repeated within one run
        self._renewed = False

    def token(self, deadline: Deadline) -> str:
        if self._failure is not None:
            raise self._failure
        if self._token is None:
            try:
                self._token = self._get(deadline, fresh=False)
            except StepFailure as failure:
                self._failure = failure
                raise
            register(self._token)  # a secret of the run from now on
        return self._token

    def renew(self, deadline: Deadline) -> Optional[str]:
        """A fresh token after the server rejected the last one, or None.

        Once per run: when a fresh token was refused too, the other side
        does not ask for yet another one.
        """
        if self._renewed:
            return None
        self._renewed = True
        old = self._token
        self._token = None
        try:
            self._token = self._get(deadline, fresh=True)
        except StepFailure as failure:
            self._failure = failure
            raise
        register(self._token)
        return self._token if self._token != old else None

    def secrets(self) -> list[str]:
        return [self._token] if self._token else []

    def _get(self, deadline: Deadline, fresh: bool) -> str:
        raise NotImplementedError


def _first_line(data: Union[str, bytes]) -> str:
    line = data.split(b"\n", 1)[0] if isinstance(data, bytes) else data.split("\n", 1)[0]
    return (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()


def _token_line(path: str, what: str) -> str:
    """The first line of the token file *path* (a *what*), read as :mod:`private_file` reads
    secrets: Refused (UNKNOWN) when the file must not be used, StepFailure when it cannot be
    read or is empty."""
    try:
        token = _first_line(private_file.read(path, what, TOKEN_BYTES))
    except OSError as exc:
        raise StepFailure(STEP, "cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    if not token:
        raise StepFailure(STEP, "%s %s is empty" % (what, path))
    return token


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    """(scheme, host, port) of *url*, the port filled in; None for the port when it is not a number."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"https": 443, "http": 80}.get(scheme)


@functools.cache
def _same_origin() -> type:
    """The token endpoint's redirect handler, made on first use: urllib.request (and with it
    http.client) is loaded only by a run that asks a token endpoint."""
    import urllib.request

    class SameOrigin(urllib.request.HTTPRedirectHandler):
        """Follows a redirect of the token endpoint only to the same scheme, host and port, posting
        the form there again, at most MAX_REDIRECTS times; any other is a StepFailure naming the
        Location: the form holds the client secret or the refresh token, and a token that came over
        plain HTTP, or from elsewhere, could be anyone's."""

        max_redirections = MAX_REDIRECTS

        def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                             headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request:
            if _origin(newurl) != _origin(req.full_url) or None in _origin(newurl):
                fp.close()
                raise StepFailure(STEP, "%s redirects to %s (HTTP %d): not followed (another scheme, host or port)"
                                  % (req.full_url, newurl, code))
            return urllib.request.Request(newurl, data=req.data, headers=req.headers, method=req.get_method())

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = \
            urllib.request.HTTPRedirectHandler.http_error_302

    return SameOrigin


class FileToken(TokenSource):
    """The first line of *path*."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _get(self, deadline: Deadline, fresh: bool) -> str:
        token = _token_line(self.path, "token file")
        if fresh:
            self.notes.append("OAuth2: token file %s read again" % self.path)
        return token


class CommandToken(TokenSource):
    """The first line *argv* prints on stdout."""

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__()
        self.argv = list(argv)

    def _get(self, deadline: Deadline, fresh: bool) -> str:
        name = os.path.basename(self.argv[0])
        with step(STEP, deadline):
            try:
                p = subprocess.run(self.argv, stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=deadline.left())
            except subprocess.TimeoutExpired:
                raise StepFailure(STEP, "token command %s did not finish in time" % name)
            except OSError as exc:
                raise StepFailure(STEP, "cannot run token command %s: %s" % (name, exc.strerror or exc))
        why = _first_line(p.stderr)
        if p.returncode != 0:
            raise StepFailure(STEP, "token command %s exited with %d%s"
                              % (name, p.returncode, ": " + why if why else ""))
        token = _first_line(p.stdout)
        if not token:
            raise StepFailure(STEP, "token command %s printed no token%s" % (name, ": " + why if why else ""))
        self.notes.append("OAuth2: token from command %s" % name)
        return token


class GrantToken(TokenSource):
    """The token endpoint *url*: client_credentials, or refresh_token when
    *refresh_file* is given; the access token cached in *cache_dir*."""

    def __init__(self, url: str, client_id: str, client_secret: Optional[str] = None, scope: Optional[str] = None,
                 refresh_file: Optional[str] = None, cache_dir: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.url, self.client_id, self.client_secret = url, client_id, client_secret
        self.scope, self.refresh_file = scope, refresh_file
        self.ssl_context, self.clock = ssl_context, clock
        self.grant = "refresh_token" if refresh_file else "client_credentials"
        key = "\0".join((url, client_id, scope or "", self.grant, os.path.abspath(refresh_file or "")))
        self.cache = (os.path.join(cache_dir, "oauth2-%s.token" % hashlib.sha256(key.encode()).hexdigest()[:16])
                      if cache_dir else None)
        self._refresh_token: Optional[str] = None

    def secrets(self) -> list[str]:
        return super().secrets() + [s for s in (self.client_secret, self._refresh_token) if s]

    def _get(self, deadline: Deadline, fresh: bool) -> str:
        if not fresh:
            cached = self._cached()
            if cached:
                return cached
        form = {"grant_type": self.grant, "client_id": self.client_id}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        if self.scope:
            form["scope"] = self.scope
        if self.refresh_file:
            form["refresh_token"] = self._read_refresh_token()
        with step(STEP, deadline):
            answer = self._post(form, deadline)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token.strip():
            raise StepFailure(STEP, "the answer of %s holds no access_token" % self.url)
        lifetime = _lifetime(answer.get("expires_in"))
        now = self.clock()
        self.notes.append("OAuth2: new token from %s (%s grant), valid for %ds"
                          % (self.url, self.grant, lifetime))
        rotated = answer.get("refresh_token")
        if self.refresh_file and isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            self._write_refresh_token(rotated)
        self._store(token.strip(), now, now + lifetime)
        return token.strip()

    # -- the endpoint -------------------------------------------------------------------------
    def _post(self, form: dict[str, str], deadline: Deadline) -> dict[str, Any]:
        import urllib.error  # with urllib.request: loaded only by a run that asks a token endpoint
        import urllib.request
        request = urllib.request.Request(
            self.url, data=urllib.parse.urlencode(form).encode("ascii"), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
                     "User-Agent": "check_mail_roundtrip"})
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.ssl_context), _same_origin())
        try:
            with opener.open(request, timeout=deadline.left()) as r:
                status, kind, body = r.status, r.headers.get("Content-Type", ""), r.read(MAX_REPLY)
        except urllib.error.HTTPError as exc:
            status, kind = exc.code, exc.headers.get("Content-Type", "") if exc.headers else ""
            try:
                body = exc.read(MAX_REPLY)
            except OSError:
                body = b""
            raise StepFailure(STEP, _error_words(status, kind, body)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise (reason if isinstance(reason, BaseException) else StepFailure(STEP, str(reason))) from None
        try:
            answer = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise StepFailure(STEP, "HTTP %d from %s is not JSON (%s): %s"
                              % (status, self.url, kind or "no content type", _snippet(body))) from None
        if not isinstance(answer, dict):
            raise StepFailure(STEP, "HTTP %d from %s: not a JSON object: %s" % (status, self.url, _snippet(body)))
        if "error" in answer:
            raise StepFailure(STEP, _error_words(status, kind, body))
        return answer

    # -- the cache ------------------------------------------------------------------------------
    def _cached(self) -> Optional[str]:
        """The cached token while it is fresh enough, else None.

        The cache is the check's own file: a symlink is not followed, and
        one that is no regular file, too large or not the JSON written by
        :meth:`_store` is set aside (a note for -v); one that belongs to
        another user is refused (StateError: UNKNOWN).
        """
        if not self.cache:
            return None
        try:
            raw, _ = private_file.load(self.cache, "token cache", MAX_REPLY, private=False, follow=False, owned=True,
                                        on_denied=lambda path, exc: "token cache " + access_problem(path, exc))
            data = json.loads(raw.decode("utf-8"))
            token, issued, expires = data["access_token"], float(data["issued_at"]), float(data["expires_at"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            reason = _damage(exc)
            if reason:
                self.notes.append("OAuth2: " + set_aside(self.cache, reason, "token cache"))
            return None
        now = self.clock()
        if not isinstance(token, str) or not token or now >= expires - min(EARLY, (expires - issued) / 10):
            return None
        self.notes.append("OAuth2: cached token, valid for %ds more" % (expires - now))
        return token

    def _store(self, token: str, issued: float, expires: float) -> None:
        if not self.cache:
            return
        data = json.dumps({"access_token": token, "issued_at": issued, "expires_at": expires,
                           "url": self.url, "grant": self.grant}).encode("utf-8")
        try:
            write_atomically(self.cache, data)
        except OSError as exc:  # the token still serves this run
            self.notes.append("OAuth2: cannot cache the token in %s: %s" % (self.cache, exc.strerror or exc))

    # -- the refresh token --------------------------------------------------------------------
    def _read_refresh_token(self) -> str:
        assert self.refresh_file is not None  # the refresh_token grant has its file
        token = _token_line(self.refresh_file, "refresh token file")
        self._refresh_token = token
        register(token)
        return token

    def _write_refresh_token(self, token: str) -> None:
        """Replace the refresh token file atomically, keeping its mode and owner."""
        self._refresh_token = token
        register(token)
        path = self.refresh_file
        assert path is not None  # the refresh_token grant has its file
        try:
            st = os.stat(path)
            write_atomically(path, (token + "\n").encode("utf-8"), stat.S_IMODE(st.st_mode),
                             (st.st_uid, st.st_gid))
        except OSError as exc:
            raise StepFailure(STEP, "the endpoint rotated the refresh token, but %s cannot be "
                                    "rewritten: %s" % (path, exc.strerror or exc))
        self.notes.append("OAuth2: rotated refresh token written to %s" % path)


def _damage(exc: Exception) -> Optional[str]:
    """Why the token cache is set aside, for an exception reading it; None to leave it be
    (not there, or a passing read error)."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ELOOP:
            return "is a symlink (not followed)"
        if isinstance(exc, IsADirectoryError):
            return "is a directory"
        return "is %s" % exc.strerror if isinstance(exc, private_file.Unfit) else None
    if isinstance(exc, (KeyError, TypeError)):
        return "is damaged (not the cache's JSON)"
    return "is damaged (%s)" % ("nested too deep" if isinstance(exc, RecursionError) else exc)


def _lifetime(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME
    return seconds if 0 < seconds < 10 * 365 * 86400 else DEFAULT_LIFETIME


def _snippet(body: bytes, limit: int = 80) -> str:
    text = " ".join(redact(body[:1000].decode("utf-8", "replace")).split())  # before the cut
    return text[:limit] + ("..." if len(text) > limit else "") if text else "(empty)"


def _error_words(status: int, kind: str, body: bytes) -> str:
    """'invalid_client: <description> (HTTP 401)' from an RFC 6749 error answer."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("error"):
        text = str(data["error"])
        if data.get("error_description"):
            text += ": " + " ".join(str(data["error_description"]).split())
        return "%s (HTTP %d)" % (text, status)
    return "HTTP %d, %s: %s" % (status, kind or "no content type", _snippet(body))


def renewed(source: TokenSource, deadline: Deadline, step_name: str, refused: str) -> str:
    """A fresh token after the server refused one (*refused*: the server's
    words), for the one retry; else a StepFailure of *step_name*."""
    try:
        fresh = source.renew(deadline)
    except StepFailure as failure:
        raise StepFailure(step_name, "%s; no fresh token: %s failed: %s"
                          % (refused, failure.step, failure.detail)) from None
    if fresh is None:
        raise StepFailure(step_name, refused)
    return fresh


def sign_in(endpoint: Endpoint, deadline: Deadline, step_name: str, offered: Iterable[str],
            authenticate: Callable[[str, str], Optional[str]], hide: Callable[[str], object]) -> None:
    """Log *endpoint* in with its OAuth2 token, retrying once with a fresh one.

    The SASL mechanism is chosen from *offered* (the server's mechanism
    names, see :func:`sasl.choose`); ``authenticate(mechanism, token)`` runs
    one dialogue and returns None when the server took the token, else its
    words.  When it refused the token, a fresh one (:func:`renewed`) is
    handed to ``hide`` (the trace) and tried once more, with a note for -v
    among the token source's notes;
    a second refusal is a StepFailure of *step_name*.
    """
    try:
        mechanism = sasl.choose(endpoint.mechanism, offered)
    except sasl.NoMechanism as exc:
        raise StepFailure(step_name, str(exc)) from None
    assert endpoint.oauth2 is not None  # an OAuth2 login has its token source
    refused = authenticate(mechanism, endpoint.oauth2.token(deadline))
    if refused is None:
        return
    fresh = renewed(endpoint.oauth2, deadline, step_name, refused)
    endpoint.oauth2.notes.append("OAuth2: the server refused the token (%s); one more try with a fresh one "
                                 "(%s)" % (refused, step_name))
    hide(fresh)
    refused = authenticate(mechanism, fresh)
    if refused is not None:
        raise StepFailure(step_name, "%s (with a fresh token too)" % refused)
