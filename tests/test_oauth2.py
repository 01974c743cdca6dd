"""OAuth2 logins against the lab: real Dovecot (IMAP) and Postfix submission
(Dovecot SASL) checking tokens with the lab's own token service.

Both sides log in with tokens (no password anywhere in the environment).
Covered: a full round trip with each token source and each mechanism; the
token endpoint asked once across runs while the token is valid, and again
after expiry; a rotated refresh token written back; a revoked token
(CRITICAL, the server's words, exactly one retry); no secret in the output,
the -vvv trace, argv or the state file.
"""

import base64
import glob
import json
import os
import stat
import time

import pytest

from tests.checkrun import Checker

MONITOR = "monitor@lab.test"
PERF_SENT = r"lost=0;;;0 oldest_pending=0\.0s;120;600;0 pending=1;;;0"


def oauth_checker(lab, tmp_path, *source, mechanism=None):
    """The check for monitor@lab.test, SMTP over submission (STARTTLS), both sides with OAuth2."""
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission",
                    "--smtp-auth", "oauth2", "--imap-auth", "oauth2", *source)
    check.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD", None)
    if mechanism:
        check.args += ["--oauth2-mechanism", mechanism]
    return check


def client_credentials(lab, tmp_path):
    client_id, client_secret = lab.tokens.client("monitor")
    path = tmp_path / "client.secret"
    path.write_text(client_secret + "\n")
    path.chmod(0o600)
    os.chmod(path, 0o600)
    return ["--oauth2-token-url", lab.tokens.token_url, "--oauth2-client-id", client_id,
            "--oauth2-client-secret-file", str(path), "--oauth2-scope", "mail"], client_secret


def round_trip(lab, check, *extra):
    """Two runs: the first sends, the second collects; both OK; the second's result."""
    r = check(*extra)
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - first probe sent, 1 in flight"), r
    lab.wait_for(MONITOR, 1)
    r = check(*extra)
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    return r


def cache_files(check):
    return glob.glob(os.path.join(check.state_dir, "oauth2-*.token"))


@pytest.mark.parametrize("mechanism, imap_says, smtp_says", [
    (None, "AUTHENTICATE OAUTHBEARER", "AUTH OAUTHBEARER ****"),  # auto: both offered, OAUTHBEARER wins
    ("xoauth2", "AUTHENTICATE XOAUTH2", "AUTH XOAUTH2 ****"),
    ("oauthbearer", "AUTHENTICATE OAUTHBEARER", "AUTH OAUTHBEARER ****"),
])
def test_client_credentials_round_trip_asks_the_endpoint_once(lab, tmp_path, mechanism, imap_says, smtp_says):
    source, client_secret = client_credentials(lab, tmp_path)
    check = oauth_checker(lab, tmp_path, *source, mechanism=mechanism)
    r = round_trip(lab, check, "-vvv")
    assert imap_says in r.stdout and smtp_says in r.stdout, r.stdout
    assert "OAuth2: cached token, valid for" in r.stdout
    assert lab.tokens.count("client_credentials") == 1  # both sides, both runs: one token
    assert lab.tokens.count("introspect_active") == 4   # IMAP and SMTP logins of two runs
    [cache] = cache_files(check)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    with open(cache) as f:
        token = json.load(f)["access_token"]
    _no_secret(check, r, token, client_secret)


def test_refresh_token_grant_writes_the_rotated_token_back(lab, tmp_path):
    client_id, client_secret = lab.tokens.client("monitor")
    first = lab.tokens.refresh_token("monitor")
    refresh = tmp_path / "refresh"
    refresh.write_text(first + "\n")
    os.chmod(refresh, 0o400)  # private, and not the mode a new file gets
    os.chown(refresh, 65534, 65534)
    secret = tmp_path / "client.secret"
    secret.write_text(client_secret + "\n")
    secret.chmod(0o600)
    lab.tokens.expires_in(3)
    check = oauth_checker(lab, tmp_path, "--oauth2-token-url", lab.tokens.token_url,
                          "--oauth2-client-id", client_id, "--oauth2-client-secret-file", str(secret),
                          "--oauth2-refresh-token-file", str(refresh))
    r = check("-v")
    assert r.rc == 0 and "first probe sent" in r.line, r
    rotated = refresh.read_text().strip()
    assert rotated != first and rotated == lab.tokens.current_refresh_token("monitor")
    st = os.stat(refresh)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o400, 65534, 65534)
    assert "OAuth2: rotated refresh token written to %s" % refresh in r.stdout
    lab.wait_for(MONITOR, 1)
    time.sleep(3.2)  # the access token expired: the next run uses the rotated refresh token
    r = check("-vvv")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert lab.tokens.count("refresh_token") == 2
    assert refresh.read_text().strip() == lab.tokens.current_refresh_token("monitor") != rotated
    _no_secret(check, r, first, rotated, refresh.read_text().strip(), client_secret)


def test_an_expired_token_is_replaced(lab, tmp_path):
    source, _secret = client_credentials(lab, tmp_path)
    lab.tokens.expires_in(2)
    check = oauth_checker(lab, tmp_path, *source)
    assert check().rc == 0
    assert lab.tokens.count("client_credentials") == 1
    lab.wait_for(MONITOR, 1)
    time.sleep(2.1)
    r = check("-v")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert "OAuth2: new token from %s (client_credentials grant), valid for 2s" % lab.tokens.token_url in r.stdout
    assert lab.tokens.count("client_credentials") == 2


def test_token_file_and_token_command(lab, tmp_path):
    token = lab.tokens.access_token("monitor")
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    r = round_trip(lab, oauth_checker(lab, tmp_path, "--oauth2-token-file", str(path)), "-vvv")
    assert token not in r.stdout + r.stderr
    lab.reset()
    token = lab.tokens.access_token("monitor")
    script = tmp_path / "print-token"
    script.write_text("#!/bin/sh\necho '%s'\necho 'ignored second line'\n" % token)
    os.chmod(script, 0o700)
    check = oauth_checker(lab, tmp_path / "cmd", "--oauth2-token-command", "%s --quiet" % script)
    r = round_trip(lab, check, "-v")
    assert "OAuth2: token from command print-token" in r.stdout


def test_a_revoked_token_is_critical_with_the_servers_words_after_exactly_one_retry(lab, tmp_path):
    source, _secret = client_credentials(lab, tmp_path)
    check = oauth_checker(lab, tmp_path, *source)
    assert check().rc == 0
    lab.tokens.revoke()  # every token, also the fresh one the check asks for
    r = check("-t", "20")
    assert r.rc == 2, r
    assert r.line.startswith(
        "MAIL_ROUNDTRIP CRITICAL - IMAP login failed: [AUTHENTICATIONFAILED] Authentication failed; "
        "the server's OAuth2 answer: invalid_token (with a fresh token too), SMTP auth failed: "
        "535 5.7.8 Error: authentication failed: (reason unavailable); the server's OAuth2 answer: "
        "invalid_token, "), r
    assert lab.tokens.count("client_credentials") == 2  # the first run's token, one fresh one: no more
    lab.tokens.unrevoke()
    lab.wait_for(MONITOR, 1)
    r = check()
    assert r.rc == 0 and "round trip" in r.line, r


def test_a_token_the_server_refuses_once_is_replaced_and_the_login_succeeds(lab, tmp_path):
    """The cached token was revoked (say, by an admin); a fresh one works: OK, and -v says so."""
    source, _secret = client_credentials(lab, tmp_path)
    check = oauth_checker(lab, tmp_path, *source)
    assert check().rc == 0
    [cache] = cache_files(check)
    with open(cache) as f:
        lab.tokens.revoke(json.load(f)["access_token"])
    lab.wait_for(MONITOR, 1)
    r = check("-v", "-t", "20")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    assert "OAuth2: the server refused the token (" in r.stdout, r.stdout
    assert lab.tokens.count("client_credentials") == 2


def _no_secret(check, r, *secrets):
    """No token, client secret, refresh token or SASL blob in the output, the argv or the state file."""
    with open(glob.glob(os.path.join(check.state_dir, "*INBOX*.json"))[0]) as f:
        state = f.read()
    argv = " ".join(check.args)
    for secret in secrets:
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            assert form not in r.stdout + r.stderr, "secret in the output"
            assert form not in state and form not in argv
    assert "auth=Bearer" not in r.stdout and "dXNlcj1" not in r.stdout and "bixhPW" not in r.stdout


def test_client_secret_from_an_extra_opts_file(lab, tmp_path):
    """The whole OAuth2 configuration, the client secret included, from a private ini file."""
    client_id, client_secret = lab.tokens.client("monitor")
    ini = tmp_path / "m365.ini"
    ini.write_text("[mail]\nimap-auth = oauth2\nsmtp-auth = oauth2\noauth2-token-url = %s\n"
                   "oauth2-client-id = %s\noauth2-client-secret = %s\noauth2-scope = mail\n"
                   % (lab.tokens.token_url, client_id, client_secret))
    os.chmod(ini, 0o600)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission", "--extra-opts", "mail@%s" % ini)
    check.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD", None)
    r = round_trip(lab, check)
    assert client_secret not in r.stdout + r.stderr + " ".join(check.args)
    assert lab.tokens.count("client_credentials") == 1
