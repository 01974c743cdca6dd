"""No secret of the run in any output, whatever form a hostile server echoes it in.

Servers that repeat the client's login in their refusal (tests/faultservers/,
``Echo``): SMTP AUTH PLAIN in a 535, IMAP LOGIN and AUTHENTICATE data in a NO,
POP3 PASS and AUTH PLAIN in an -ERR, a token endpoint that repeats the request
body (client secret, refresh token, form-encoded) in its error, and an IMAP
server that repeats the XOAUTH2 response carrying the token the endpoint gave.
The real command runs at -v, -vv and -vvv: each time the whole status line is
asserted, and that no form of any secret shows anywhere in stdout or stderr;
likewise the reflector's log and the UNKNOWN line of an unexpected exception.

The redaction itself (check_mail_roundtrip.redact) has property tests: a
secret in any supported encoding, embedded in any text, never survives; a text
without secrets comes out unchanged.
"""

import base64
import html
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from check_mail_roundtrip.probe import RETURN_HEADER, Probe, build_message
from check_mail_roundtrip.redact import MASK, Redactor
from check_mail_roundtrip.reflection import return_header
from tests import faultservers as fs
from tests.checkrun import COMMAND, ROOT, Result

USER = "monitor@fault.test"
VERBOSITY = ["-v", "-vv", "-vvv"]
# a password with everything that changes in an encoding: quote, backslash, '|', space, '+', '/', '%'
PASSWORD = 'Zq8"Pw|d e+f/g%h\\i-password'
UMLAUT_PASSWORD = "Zq9-Pässwört-über-ünïcode"   # non-ASCII: AUTHENTICATE / AUTH PLAIN instead of LOGIN / PASS
IMAP_PASSWORD = "Zq7-imap-side-password"
CLIENT_SECRET = "Zq6~client+secret/with=form&chars"
REFRESH_TOKEN = "Zq5-refresh.token/abc+def=="
ACCESS_TOKEN = "Zq4-access.token.eyJhbGciOiJIUzI1NiJ9"
# the first run's figures (--no-junk: no junk figure), the probe refused or sent
PERF_UNSENT = r"lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=0;;;0"
PERF_SENT = r"lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"
TAG = r"\w+"


# -- what must never show -----------------------------------------------------------------

def encodings(secret):
    """{name: text} of the forms of *secret* a server could echo."""
    forms = {"as it is": secret, "IMAP quoted": secret.replace("\\", "\\\\").replace('"', '\\"'),
             "JSON": json.dumps(secret)[1:-1], "JSON, non-ASCII as is": json.dumps(secret, ensure_ascii=False)[1:-1],
             "HTML": html.escape(secret), "'|' as '/'": secret.replace("|", "/"),
             "whitespace collapsed": " ".join(secret.split())}
    for name, encode in (("URL", lambda s: urllib.parse.quote(s, safe="")), ("URL path", urllib.parse.quote),
                         ("form", lambda s: urllib.parse.quote_plus(s, safe=""))):
        forms[name] = encode(secret)
        forms[name + ", lower-case hex"] = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encode(secret))
    forms["base64"] = base64.b64encode(secret.encode()).decode()
    forms["URL-safe base64"] = base64.urlsafe_b64encode(secret.encode()).decode()
    return forms


def in_base64(text, data):
    """Whether some base64 run in *text*, read at any of the 4 offsets, decodes to bytes holding *data*."""
    for run in re.findall(r"[A-Za-z0-9+/_-]{4,}", text):
        run = run.replace("-", "+").replace("_", "/")
        for offset in range(4):
            piece = run[offset:]
            piece = piece[:len(piece) // 4 * 4]
            if data in base64.b64decode(piece):
                return True
    return False


def leaks(out, *secrets):
    """The forms of *secrets* found in *out* (an empty list when none shows)."""
    found = []
    for secret in secrets:
        found += ["%s %r" % (name, secret) for name, form in encodings(secret).items() if form in out]
        if secret[:8] in out:
            found.append("the start of %r" % secret)
        if in_base64(out, secret.encode()):
            found.append("base64 holding %r" % secret)
    return found


def assert_no_secret(r, *secrets):
    shown = r.stdout + r.stderr
    assert not leaks(shown, *secrets), (leaks(shown, *secrets), r)
    assert "Traceback" not in shown, r


def assert_line(r, rc, pattern):
    assert r.rc == rc, r
    assert re.fullmatch(pattern, r.full_line), "%s\n  pattern: %s" % (r, pattern)


def private(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return str(path)


def environment():
    """This process's environment without the commands' own variables (passwords, state directory)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CHECK_MAIL_ROUNDTRIP_")}


def run(tmp_path, *args):
    """The check from the checkout, as a monitoring system runs it."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, COMMAND, "--from", USER, "--state-dir", str(tmp_path / "state"),
                        "--no-junk", "-t", "8", *args],
                       capture_output=True, text=True, env=environment(), timeout=60, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def at(protocol, srv):
    return ["--%s-host" % protocol, "127.0.0.1", "--%s-port" % protocol, str(srv.port), "--%s-tls" % protocol, "none"]


def mailbox(**kw):
    """An IMAP server with an empty INBOX that lets anyone in (unless *replies* say otherwise)."""
    return fs.IMAPScript(folders=["INBOX"], **kw)


def collecting(tmp_path, protocol, script, password, verbose):
    """A run collecting from *script* (an IMAP or POP3 fault server) with *password*; the probe
    goes to an SMTP server that takes it."""
    collect = ["--collect", "pop3"] if protocol == "pop3" else []
    with fs.FaultServer(script) as srv, fs.FaultServer(fs.SMTPScript()) as smtp:
        return run(tmp_path, *collect, *at(protocol, srv), *at("smtp", smtp),
                   "--%s-password-file" % protocol, private(tmp_path, protocol + ".pw", password), verbose)


# -- the check against servers that echo the login -------------------------------------------

@pytest.mark.parametrize("verbose", VERBOSITY)
def test_smtp_auth_plain_echoed_in_a_535(tmp_path, verbose):
    smtp = fs.SMTPScript({"AUTH": fs.Echo("535 5.7.8 Authentication failed: {line}")}, auth="PLAIN")
    with fs.FaultServer(mailbox()) as imap, fs.FaultServer(smtp) as srv:
        r = run(tmp_path, *at("imap", imap), *at("smtp", srv), "--smtp-user", USER,
                "--smtp-password-file", private(tmp_path, "smtp.pw", PASSWORD),
                "--imap-password-file", private(tmp_path, "imap.pw", IMAP_PASSWORD), verbose)
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - SMTP auth failed: 535 5\.7\.8 Authentication failed: "
                      r"AUTH PLAIN \*\*\*\*, no probe out yet, 0 in flight \| " + PERF_UNSENT)
    assert any(line.startswith("AUTH PLAIN ") and len(line) > 20 for line in srv.received), srv.received
    assert_no_secret(r, PASSWORD, IMAP_PASSWORD)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_imap_login_echoed_in_a_no(tmp_path, verbose):
    imap = mailbox(replies={"LOGIN": fs.Echo("{tag} NO [AUTHENTICATIONFAILED] Authentication failed for {line}")})
    r = collecting(tmp_path, "imap", imap, PASSWORD, verbose)
    assert_line(r, 2, r'MAIL_ROUNDTRIP CRITICAL - IMAP login failed: \[AUTHENTICATIONFAILED\] Authentication '
                      r'failed for %s LOGIN %s "\*\*\*\*", probe sent, 1 in flight \| %s'
                % (TAG, re.escape(USER), PERF_SENT))
    assert_no_secret(r, PASSWORD)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_imap_authenticate_plain_echoed_in_a_no(tmp_path, verbose):
    imap = mailbox(replies={"AUTHENTICATE": fs.Echo("{tag} NO [AUTHENTICATIONFAILED] {line} refused: {data}")})
    r = collecting(tmp_path, "imap", imap, UMLAUT_PASSWORD, verbose)
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - IMAP login failed: \[AUTHENTICATIONFAILED\] %s AUTHENTICATE "
                      r"PLAIN refused: \*\*\*\*, probe sent, 1 in flight \| %s" % (TAG, PERF_SENT))
    assert_no_secret(r, UMLAUT_PASSWORD)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_pop3_pass_echoed_in_an_err(tmp_path, verbose):
    pop3 = fs.POP3Script({"PASS": fs.Echo("-ERR [AUTH] Authentication failed: {line}")})
    r = collecting(tmp_path, "pop3", pop3, PASSWORD, verbose)
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - POP3 login failed: -ERR \[AUTH\] Authentication failed: "
                      r"PASS \*\*\*\*, probe sent, 1 in flight \| " + PERF_SENT)
    assert_no_secret(r, PASSWORD)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_pop3_auth_plain_echoed_in_an_err(tmp_path, verbose):
    pop3 = fs.POP3Script({"CAPA": "+OK\nTOP\nUIDL\nUSER\nSASL PLAIN\n.",
                          "AUTH": fs.Echo("-ERR [AUTH] Authentication failed: {line}")})
    r = collecting(tmp_path, "pop3", pop3, UMLAUT_PASSWORD, verbose)
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - POP3 login failed: -ERR \[AUTH\] Authentication failed: "
                      r"AUTH PLAIN \*\*\*\*, probe sent, 1 in flight \| " + PERF_SENT)
    assert_no_secret(r, UMLAUT_PASSWORD)


# -- OAuth2: the token endpoint and the token it gives -----------------------------------------

def https(lab, handler):
    return fs.FaultServer(handler, tls=fs.server_context(lab.cert_file, lab.key_file))


def oauth2_run(lab, tmp_path, endpoint, imap_port, verbose, *extra):
    with fs.FaultServer(fs.SMTPScript()) as smtp:
        return run(tmp_path, "--imap-host", "127.0.0.1", "--imap-port", str(imap_port), "--imap-tls", "none",
                   *at("smtp", smtp), "--ca-file", lab.ca_file, "--imap-auth", "oauth2",
                   "--oauth2-token-url", "https://127.0.0.1:%d/token" % endpoint.port,
                   "--oauth2-client-id", "monitor-app", "--oauth2-scope", "mail",
                   "--oauth2-client-secret-file", private(tmp_path, "client.secret", CLIENT_SECRET),
                   verbose, *extra)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_a_token_endpoint_echoing_a_refresh_request_in_its_json_error(lab, tmp_path, verbose):
    answer = fs.http_answer(400, "application/json",
                            '{"error": "invalid_grant", "error_description": "no grant for {body}"}')
    with https(lab, answer) as endpoint:
        r = oauth2_run(lab, tmp_path, endpoint, fs.free_port(), verbose, "--oauth2-refresh-token-file",
                       private(tmp_path, "refresh.token", REFRESH_TOKEN))
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - OAuth2 token failed: invalid_grant: no grant for "
                      r"grant_type=refresh_token&client_id=monitor-app&client_secret=\*\*\*\*&scope=mail&"
                      r"refresh_token=\*\*\*\* \(HTTP 400\), probe sent, 1 in flight \| " + PERF_SENT)
    assert_no_secret(r, CLIENT_SECRET, REFRESH_TOKEN)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_a_token_endpoint_echoing_the_start_of_a_request(lab, tmp_path, verbose):
    """The answer is no JSON: the check shows its first 80 characters, where the client
    secret would be cut in two; it is masked first."""
    with https(lab, fs.http_answer(401, "text/plain", "{body}")) as endpoint:
        r = oauth2_run(lab, tmp_path, endpoint, fs.free_port(), verbose)
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - OAuth2 token failed: HTTP 401, text/plain: "
                      r"grant_type=client_credentials&client_id=monitor-app&client_secret=\*\*\*\*&scope=mai\.\.\., "
                      r"probe sent, 1 in flight \| " + PERF_SENT)
    assert_no_secret(r, CLIENT_SECRET)


@pytest.mark.parametrize("verbose", VERBOSITY)
def test_a_token_from_the_endpoint_echoed_by_the_imap_server_in_its_xoauth2_form(lab, tmp_path, verbose):
    token = fs.http_answer(200, "application/json", json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 600}))
    imap = mailbox(capabilities="AUTH=XOAUTH2",
                   replies={"AUTHENTICATE": fs.Echo("{tag} NO [AUTHENTICATIONFAILED] {line} refused: {data}")})
    with https(lab, token) as endpoint, fs.FaultServer(imap) as srv:
        r = oauth2_run(lab, tmp_path, endpoint, srv.port, verbose)
    assert_line(r, 2, r"MAIL_ROUNDTRIP CRITICAL - IMAP login failed: \[AUTHENTICATIONFAILED\] %s AUTHENTICATE "
                      r"XOAUTH2 refused: \*\*\*\*, probe sent, 1 in flight \| %s" % (TAG, PERF_SENT))
    assert_no_secret(r, ACCESS_TOKEN, CLIENT_SECRET)
    xoauth2 = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (USER, ACCESS_TOKEN)).encode()).decode()
    assert xoauth2 in srv.received and xoauth2 not in r.stdout + r.stderr, srv.received


# -- the UNKNOWN line of an unexpected failure --------------------------------------------------

UNEXPECTED = """
import sys
from check_mail_roundtrip import cli

def build(settings, budget):
    raise RuntimeError("cannot go on with %s" % settings.collect.password)

cli.build = build
cli.main(sys.argv[1:])
"""


def test_an_unexpected_exception_holding_a_password_is_told_without_it(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"), CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD=PASSWORD)
    p = subprocess.run([sys.executable, "-c", UNEXPECTED, "-H", "127.0.0.1", "--from", USER,
                        "--state-dir", str(tmp_path), "-vvv"],
                       capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stdout) == (3, "UNKNOWN: RuntimeError: cannot go on with ****\n"), p
    assert not leaks(p.stdout + p.stderr, PASSWORD), p


# -- the reflector ----------------------------------------------------------------------------

def reflector(tmp_path, secret, mode, *args, stdin=b""):
    """mail_roundtrip_reflector *mode* from the checkout, with the signing *secret*; (exit code, its log)."""
    argv = [sys.executable, os.path.join(ROOT, "mail_roundtrip_reflector"), mode, *args, "-H", "127.0.0.1",
            "--secret-file", private(tmp_path, "secret", secret), "--state-dir", str(tmp_path / "reflector"),
            "-t", "8"]
    p = subprocess.run(argv, input=stdin, capture_output=True, env=environment(), timeout=60)
    assert p.stdout == b"", p
    return p.returncode, p.stderr.decode()


def test_the_reflector_polling_a_server_that_echoes_its_login(tmp_path):
    secret = os.urandom(32).hex()
    imap = mailbox(replies={"LOGIN": fs.Echo("{tag} NO [AUTHENTICATIONFAILED] Authentication failed for {line}")})
    with fs.FaultServer(imap) as srv:
        code, log = reflector(tmp_path, secret, "poll", *at("imap", srv), "--imap-user", "far@fault.test",
                              "--imap-password-file", private(tmp_path, "imap.pw", PASSWORD))
    assert code == 1 and re.fullmatch(
        r'mail_roundtrip_reflector: poll: IMAP login failed: \[AUTHENTICATIONFAILED\] Authentication failed for '
        r'%s LOGIN far@fault\.test "\*\*\*\*"\n' % TAG, log), log
    assert not leaks(log, PASSWORD, secret), log


def test_the_reflector_sending_back_to_a_server_that_echoes_its_auth_plain(tmp_path):
    secret = os.urandom(32).hex()
    probe = Probe("redaction", "0123456789abcdef", int(time.time() * 1000))
    message = build_message(probe, secret.encode(), USER, "reflector@fault.test", "mon1", probe.sent)
    message[RETURN_HEADER] = return_header(probe.token(secret.encode()), USER, secret.encode())
    smtp = fs.SMTPScript({"AUTH": fs.Echo("535 5.7.8 Authentication failed: {line}")}, auth="PLAIN")
    with fs.FaultServer(smtp) as srv:
        code, log = reflector(tmp_path, secret, "pipe", "--sender", USER, "--recipient", "reflector@fault.test",
                              *at("smtp", srv), "--smtp-user", "reflector@fault.test",
                              "--smtp-password-file", private(tmp_path, "smtp.pw", PASSWORD),
                              stdin=message.as_bytes())
    assert code == 75 and re.fullmatch(
        r"mail_roundtrip_reflector: sending back failed for now, the MTA will retry: SMTP auth failed: "
        r"535 5\.7\.8 Authentication failed: AUTH PLAIN \*\*\*\*\n", log), log
    assert not leaks(log, PASSWORD, secret), log


# -- the redaction itself ------------------------------------------------------------------------

SECRET_CHARS = st.characters(blacklist_categories=["Cs"])
secrets_ = st.text(SECRET_CHARS, min_size=8, max_size=40).filter(lambda s: len("".join(s.split())) >= 8)
users = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=30)
texts = st.text(max_size=60)
ENCODINGS = {
    **{name: (lambda name: lambda s, user, head, tail: encodings(s)[name])(name) for name in encodings("x")},  # noqa: B023 (bound by the outer lambda)
    "inside a longer base64 run": lambda s, user, head, tail: base64.b64encode(head + s.encode() + tail).decode(),
    "inside a longer URL-safe base64 run": lambda s, user, head, tail: base64.urlsafe_b64encode(
        head + s.encode() + tail).decode(),
    "SASL PLAIN": lambda s, user, head, tail: base64.b64encode(("\0%s\0%s" % (user, s)).encode()).decode(),
    "user and password": lambda s, user, head, tail: base64.b64encode(("%s\0%s" % (user, s)).encode()).decode(),
    "XOAUTH2": lambda s, user, head, tail: base64.b64encode(
        ("user=%s\x01auth=Bearer %s\x01\x01" % (user, s)).encode()).decode(),
    "OAUTHBEARER": lambda s, user, head, tail: base64.b64encode(
        ("n,a=%s,\x01host=h\x01port=993\x01auth=Bearer %s\x01\x01" % (user, s)).encode()).decode(),
    "form body": lambda s, user, head, tail: urllib.parse.urlencode({"client_id": user, "client_secret": s}),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secrets_, user=users, encoding=st.sampled_from(sorted(ENCODINGS)), before=texts, after=texts,
       head=st.binary(max_size=5), tail=st.binary(max_size=5))
@example(secret='Zq8"Pw|d e+f/g%h\\i', user="u", encoding="URL, lower-case hex", before="", after="",
         head=b"", tail=b"")
def test_a_secret_in_any_supported_form_never_survives(secret, user, encoding, before, after, head, tail):
    redact = Redactor()
    redact.add(secret, user=user)
    form = ENCODINGS[encoding](secret, user, head, tail)
    out = redact(before + form + after)
    assert form not in out and MASK in out
    assert not in_base64(out, secret.encode())
    assert secret not in out and " ".join(secret.split()) not in out


def views(text):
    """*text* and what a decoder could make of it, for comparing with a secret."""
    shown = [text, urllib.parse.unquote(text), urllib.parse.unquote_plus(text), html.unescape(text)]
    return ["".join(re.sub(r"[|/+\\%]", "", v).split()) for v in shown]


@settings(max_examples=300, deadline=None)
@given(secrets=st.lists(secrets_, min_size=1, max_size=4), text=st.text(max_size=200))
def test_a_text_without_secrets_is_unchanged(secrets, text):
    for secret in secrets:
        plain = "".join(re.sub(r"[|/+\\%]", "", secret).split())
        assume(not any(plain in v for v in views(text)) and not in_base64(text, secret.encode()))
    redact = Redactor()
    for secret in secrets:
        redact.add(secret, user="monitor@lab.test")
    assert redact(text) == text


def test_a_short_password_is_masked_only_in_its_sasl_plain_forms():
    """A secret of under 4 characters would mask ordinary words: only its logins are masked."""
    redact = Redactor()
    redact.add("abc", user=USER)
    blob = base64.b64encode(("\0%s\0abc" % USER).encode()).decode()
    assert redact("abc AUTH PLAIN %s" % blob) == "abc AUTH PLAIN ****"
