"""OAuth2 when things go wrong before any mail server sees a token.

The token endpoint down, silent, answering HTML or garbage, refusing the
client; a token command that fails, hangs or prints nothing; a token file
that is missing.  Each is a CRITICAL (UNKNOWN with --error-state unknown)
naming the step ``OAuth2 token`` with the other side's words, inside -t,
and the SMTP side still sends the probe.  Real HTTPS on loopback (fault
servers with the lab's certificate); the pure parts (SASL, cache, rotation
write-back) are unit-tested.
"""

import base64
import json
import os
import stat
import subprocess
import sys

import pytest

from check_mail_roundtrip import oauth2, sasl
from tests import faultservers as fs
from tests.test_network_faults import PERF_SENT_UNREAD, assert_line, checker


def first_run_line(words, state="CRITICAL"):
    """A first run whose IMAP side could not get a token and whose probe went out."""
    return r"MAIL_ROUNDTRIP %s - OAuth2 token failed: %s, probe sent, 1 in flight \| %s" % (
        state, words, PERF_SENT_UNREAD)


def with_endpoint(lab, tmp_path, url, *extra):
    check = checker(lab, tmp_path)
    secret = tmp_path / "client.secret"
    secret.write_text("s3cret-client\n")
    secret.chmod(0o600)
    return check("--imap-auth", "oauth2", "--oauth2-token-url", url, "--oauth2-client-id", "monitor-app",
                 "--oauth2-client-secret-file", str(secret), "--oauth2-scope", "mail", "-t", "6", *extra)


def https(lab, handler):
    return fs.FaultServer(handler, tls=fs.server_context(lab.cert_file, lab.key_file))


# -- the token endpoint ----------------------------------------------------------------------------

def test_token_endpoint_down(lab, tmp_path):
    r = with_endpoint(lab, tmp_path, "https://127.0.0.1:%d/token" % fs.free_port())
    assert_line(r, first_run_line("connection refused"), budget=6)


def test_token_endpoint_tarpit_ends_inside_the_budget(lab, tmp_path):
    with https(lab, fs.tarpit) as srv:
        r = with_endpoint(lab, tmp_path, "https://127.0.0.1:%d/token" % srv.port)
    assert_line(r, first_run_line("timed out"), budget=6)


def test_token_endpoint_answering_html(lab, tmp_path):
    page = "<html><head><title>Sign in</title></head><body>Please sign in</body></html>"
    with https(lab, fs.http_answer(200, "text/html; charset=utf-8", page)) as srv:
        url = "https://127.0.0.1:%d/token" % srv.port
        r = with_endpoint(lab, tmp_path, url)
    assert_line(r, first_run_line(r"HTTP 200 from %s is not JSON \(text/html; charset=utf-8\): "
                                  r"<html><head><title>Sign in</title></head><body>Please sign in</body></html>"
                                  % url), budget=6)


def test_token_endpoint_answering_garbage_json(lab, tmp_path):
    with https(lab, fs.http_answer(200, "application/json", '{"access_token": ')) as srv:
        url = "https://127.0.0.1:%d/token" % srv.port
        r = with_endpoint(lab, tmp_path, url)
    assert_line(r, first_run_line(r'HTTP 200 from %s is not JSON \(application/json\): \{"access_token":' % url),
                budget=6)


def test_token_endpoint_error_in_its_own_words(lab, tmp_path):
    body = json.dumps({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"})
    with https(lab, fs.http_answer(401, "application/json", body)) as srv:
        r = with_endpoint(lab, tmp_path, "https://127.0.0.1:%d/token" % srv.port, "--error-state", "unknown")
        sent = " ".join(srv.received)
    assert_line(r, first_run_line(r"invalid_client: AADSTS7000215: Invalid client secret \(HTTP 401\)",
                                  "UNKNOWN"), rc=3, budget=6)
    assert "s3cret-client" not in r.stdout + r.stderr
    assert "POST /token" in sent


def test_token_endpoint_with_an_untrusted_certificate(lab, tmp_path):
    """Verified like the mail servers: a certificate no trusted CA signed is refused."""
    key, cert = tmp_path / "self.key", tmp_path / "self.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = fs.server_context(str(cert), str(key))
    with fs.FaultServer(fs.http_answer(200, "application/json", "{}"), tls=ctx) as srv:
        r = with_endpoint(lab, tmp_path, "https://127.0.0.1:%d/token" % srv.port)
    assert r.rc == 2 and r.line.startswith("MAIL_ROUNDTRIP CRITICAL - OAuth2 token failed: certificate "
                                           "verify failed: self-signed certificate"), r


# -- token file and command --------------------------------------------------------------------------

def with_source(lab, tmp_path, *source):
    return checker(lab, tmp_path)("--imap-auth", "oauth2", *source, "-t", "6")


def test_token_command_that_fails_shows_its_first_stderr_line(lab, tmp_path):
    cmd = "%s -c 'import sys; sys.stderr.write(\"no session: run login first\\nmore\\n\"); sys.exit(4)'" \
        % sys.executable
    r = with_source(lab, tmp_path, "--oauth2-token-command", cmd)
    assert_line(r, first_run_line("token command %s exited with 4: no session: run login first"
                                  % os.path.basename(sys.executable)), budget=6)


def test_token_command_that_hangs_ends_inside_the_budget(lab, tmp_path):
    r = with_source(lab, tmp_path, "--oauth2-token-command", "sleep 60")
    assert_line(r, first_run_line("(token command sleep did not finish in time|timed out)"), budget=6)


def test_token_command_that_prints_nothing(lab, tmp_path):
    r = with_source(lab, tmp_path, "--oauth2-token-command", "true")
    assert_line(r, first_run_line("token command true printed no token"), budget=6)


def test_missing_token_file(lab, tmp_path):
    missing = tmp_path / "nowhere" / "token"
    r = with_source(lab, tmp_path, "--oauth2-token-file", str(missing))
    assert_line(r, first_run_line("cannot read token file %s: No such file or directory" % missing), budget=6)


# -- pure parts --------------------------------------------------------------------------------------

def test_sasl_initial_responses():
    assert sasl.initial_response("XOAUTH2", "mon@x.org", "tok", "h", 993) == \
        b"user=mon@x.org\x01auth=Bearer tok\x01\x01"
    assert sasl.initial_response("OAUTHBEARER", "a=b,c@x.org", "tok", "imap.x.org", 993) == \
        b"n,a=a=3Db=2Cc@x.org,\x01host=imap.x.org\x01port=993\x01auth=Bearer tok\x01\x01"


def test_sasl_mechanism_choice():
    assert sasl.choose("auto", ["PLAIN", "XOAUTH2", "OAUTHBEARER"]) == "OAUTHBEARER"
    assert sasl.choose("auto", ["plain", "xoauth2"]) == "XOAUTH2"
    assert sasl.choose("xoauth2", ["OAUTHBEARER"]) == "XOAUTH2"
    with pytest.raises(sasl.NoMechanism, match=r"neither OAUTHBEARER nor XOAUTH2 \(it offers: LOGIN PLAIN\)"):
        sasl.choose("auto", ["PLAIN", "LOGIN"])


def test_sasl_error_challenge_is_read():
    challenge = base64.b64encode(b'{"status":"invalid_token","schemes":"bearer","scope":"mail"}').decode()
    assert sasl.error_text(challenge) == "invalid_token (scope mail, schemes bearer)"
    assert sasl.error_text(b'{"status":"401","schemes":"bearer","scope":"mail"}') == \
        "status 401 (scope mail, schemes bearer)"
    assert sasl.error_text(b"not json at all") == "not json at all"
    assert sasl.error_text("%%%") == "%%%"


def test_cached_token_is_used_until_shortly_before_it_expires(tmp_path):
    now = [1000000.0]
    source = oauth2.GrantToken("https://127.0.0.1:1/token", "app", "secret", cache_dir=str(tmp_path),
                               clock=lambda: now[0])
    source._store("tok-1", now[0], now[0] + 3600)
    assert stat.S_IMODE(os.stat(source.cache).st_mode) == 0o600
    now[0] += 3600 - 61
    assert source._cached() == "tok-1"
    now[0] += 2  # less than a minute left
    assert source._cached() is None
    source._store("tok-2", now[0], now[0] + 10)  # a short lifetime: renewed a tenth before its end
    now[0] += 8.9
    assert source._cached() == "tok-2"
    now[0] += 0.2
    assert source._cached() is None


def test_rotated_refresh_token_keeps_mode_and_owner(tmp_path):
    path = tmp_path / "refresh"
    path.write_text("old-refresh\n")
    os.chmod(path, 0o640)
    os.chown(path, 65534, 65534)
    source = oauth2.GrantToken("https://127.0.0.1:1/token", "app", refresh_file=str(path))
    source._write_refresh_token("new-refresh")
    st = os.stat(path)
    assert (path.read_text(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == ("new-refresh\n", 0o640, 65534, 65534)
    assert [n for n in os.listdir(tmp_path)] == ["refresh"]
