"""The mail lab's OAuth2 side, proved with real clients (no product code).

Tokens come from the lab's token service (RFC 6749 client_credentials and
refresh_token grants, or minted by the test), and the lab's real Dovecot
checks them by RFC 7662 introspection: IMAP AUTHENTICATE XOAUTH2 and
OAUTHBEARER (imaplib and raw), SMTP AUTH on submission after STARTTLS
(Postfix asks Dovecot).  A refused token gets Dovecot's error challenge
first (IMAP "+ <base64 JSON>", SMTP "334 <base64 JSON>"); the client answers
it with an empty line and then gets NO [AUTHENTICATIONFAILED] or 535, about
2 s later (Dovecot's auth_failure_delay).
"""

import base64
import imaplib
import json
import os
import poplib
import smtplib
import socket
import ssl
import time

import pytest

from tests.lab import LabError

MONITOR = "monitor@lab.test"
OTHER = "other@lab.test"
TIMEOUT = 10
# Dovecot 2.3's error challenges (decoded) for a token it refuses
XOAUTH2_CHALLENGE = {"status": "401", "schemes": "bearer", "scope": "mail"}
OAUTHBEARER_CHALLENGE = {"status": "invalid_token"}
IMAP_FAILED = b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
SMTP_FAILED = (535, b"5.7.8 Error: authentication failed: (reason unavailable)")


# ------------------------------------------------------------------ SASL


def xoauth2(user, token, port):
    return "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)


def oauthbearer(user, token, port):
    """RFC 7628 initial client response."""
    return "n,a=%s,\x01host=127.0.0.1\x01port=%d\x01auth=Bearer %s\x01\x01" % (user, port, token)


SASL = {"XOAUTH2": xoauth2, "OAUTHBEARER": oauthbearer}


def initial_response(mech, user, token, port):
    return base64.b64encode(SASL[mech](user, token, port).encode())


def decoded_challenge(line, prefix):
    assert line.startswith(prefix), line
    return json.loads(base64.b64decode(line[len(prefix):].strip()))


# --------------------------------------------------------------- clients


def imap_login(lab, mech, user, token):
    """imaplib AUTHENTICATE over IMAPS with the lab CA; then SELECT INBOX.
    An error challenge gets the empty answer RFC 7628 asks for."""
    port = lab.ports["imaps"]
    calls = []

    def respond(challenge):
        calls.append(challenge)
        return SASL[mech](user, token, port).encode() if len(calls) == 1 else b""

    with imaplib.IMAP4_SSL(lab.host, port, ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        typ, _ = c.authenticate(mech, respond)
        assert c.select("INBOX", readonly=True)[0] == "OK"
        return typ


def imap_exchange(lab, mech, user, token):
    """AUTHENTICATE with SASL-IR over IMAPS on a raw socket: every line the
    server sent after the command (an error challenge gets an empty line)."""
    port = lab.ports["imaps"]
    with socket.create_connection((lab.host, port), timeout=TIMEOUT) as raw, \
            lab.ssl_context().wrap_socket(raw, server_hostname=lab.host) as s, \
            s.makefile("rb") as f:
        f.readline(4096)  # greeting
        s.sendall(b"a AUTHENTICATE %s %s\r\n" % (mech.encode(),
                                                  initial_response(mech, user, token, port)))
        lines = []
        for _ in range(3):
            lines.append(f.readline(65536))
            if not lines[-1].startswith(b"+"):
                break
            s.sendall(b"\r\n")
        return lines


def submission(lab):
    """smtplib on the submission port, after STARTTLS with the lab CA."""
    c = smtplib.SMTP(lab.host, lab.ports["submission"], timeout=TIMEOUT)
    c.starttls(context=lab.ssl_context())
    c.ehlo("client.lab.test")
    return c


def smtp_exchange(lab, mech, user, token):
    """AUTH <mech> <initial response> on submission: [(code, text), ...] the
    server answered (a 334 error challenge gets an empty line)."""
    with submission(lab) as c:
        replies = [c.docmd("AUTH", "%s %s" % (mech, initial_response(
            mech, user, token, lab.ports["submission"]).decode()))]
        if replies[0][0] == 334:
            replies.append(c.docmd(""))
        return replies


def client_credentials_token(lab, mailbox=MONITOR, **form):
    client_id, secret = lab.tokens.client(mailbox)
    status, answer = lab.tokens.post_token({"grant_type": "client_credentials",
                                            "client_id": client_id,
                                            "client_secret": secret, **form})
    assert status == 200, answer
    return answer


# ------------------------------------------------------------- the service


def test_the_token_service_is_described_and_verified_by_the_lab_ca(lab):
    info = lab.describe()["oauth2"]
    port = lab.tokens.port
    assert info == {"port": port, "token_url": "https://127.0.0.1:%d/token" % port,
                    "introspection_url": "https://127.0.0.1:%d/introspect" % port}
    assert lab.tokens.token_url == info["token_url"]
    assert port not in lab.ports.values()
    with open(os.path.join(lab.dir, "lab.json")) as fh:
        assert json.load(fh)["oauth2"] == info
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((lab.host, port), timeout=TIMEOUT) as s:
            with lab.ssl_context().wrap_socket(s, server_hostname=host) as tls:
                assert tls.getpeercert()
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection((lab.host, port), timeout=TIMEOUT) as s:
            ssl.create_default_context().wrap_socket(s, server_hostname=lab.host)
    assert os.path.isfile(lab.describe()["logs"]["tokenservice"])


def test_client_credentials_in_the_body_or_by_http_basic(lab):
    client_id, secret = lab.tokens.client("monitor")
    assert lab.tokens.client(MONITOR) == (client_id, secret)  # one client per mailbox
    answer = client_credentials_token(lab, scope="mail")
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    assert answer["scope"] == "mail" and "refresh_token" not in answer
    # RFC 6749 2.3.1: id and secret form-urlencoded, then HTTP Basic
    odd = lab.tokens.register_client(MONITOR, "lab client:1", "s3cr+t/%=")
    status, answer = lab.tokens.post_token({"grant_type": "client_credentials"}, basic=odd)
    assert status == 200 and answer["access_token"], answer


@pytest.mark.parametrize("form, basic, status, error", [
    ({"client_id": "ID", "client_secret": "wrong"}, None, 401, "invalid_client"),
    ({}, ("ID", "wrong"), 401, "invalid_client"),
    ({"client_id": "nobody", "client_secret": "x"}, None, 401, "invalid_client"),
    ({"client_id": "ID"}, None, 401, "invalid_client"),  # no secret
    ({"client_id": "ID", "client_secret": "SECRET", "grant_type": "password"}, None,
     400, "unsupported_grant_type"),
    ({"client_id": "ID", "client_secret": "SECRET", "grant_type": ""}, None,
     400, "invalid_request"),
    ({"client_secret": "SECRET"}, ("ID", "SECRET"), 400, "invalid_request"),  # both ways
])
def test_refused_token_requests_answer_rfc6749_errors(lab, form, basic, status, error):
    client_id, secret = lab.tokens.client(MONITOR)
    real = {"ID": client_id, "SECRET": secret}
    form = {"grant_type": "client_credentials", **{k: real.get(v, v) for k, v in form.items()}}
    basic = basic and tuple(real.get(v, v) for v in basic)
    got, answer = lab.tokens.post_token(form, basic=basic)
    assert (got, answer["error"]) == (status, error), answer
    assert answer["error_description"]
    assert lab.tokens.count("token") == 1 and lab.tokens.count("introspect") == 0


def test_refresh_tokens_rotate_and_the_old_one_is_refused(lab):
    client_id, secret = lab.tokens.client(MONITOR)
    first = lab.tokens.refresh_token(MONITOR)
    assert lab.tokens.current_refresh_token(MONITOR) == first
    form = {"grant_type": "refresh_token", "refresh_token": first, "client_id": client_id}
    status, answer = lab.tokens.post_token(form)  # a public client: no secret
    assert status == 200, answer
    second = answer["refresh_token"]
    assert second != first and lab.tokens.current_refresh_token(MONITOR) == second
    assert imap_login(lab, "XOAUTH2", MONITOR, answer["access_token"]) == "OK"
    status, answer = lab.tokens.post_token(form)
    assert (status, answer["error"]) == (400, "invalid_grant"), answer
    status, answer = lab.tokens.post_token({**form, "refresh_token": second,
                                            "client_secret": "wrong"})
    assert (status, answer["error"]) == (401, "invalid_client"), answer
    status, answer = lab.tokens.post_token({**form, "refresh_token": second,
                                            "client_secret": secret})
    assert status == 200 and answer["refresh_token"] not in (first, second)
    assert lab.tokens.count("refresh_token") == 4  # every request, refused ones too


def test_counters_count_and_reset_clears_them(lab):
    client_credentials_token(lab)
    token = lab.tokens.access_token(MONITOR)
    assert imap_login(lab, "XOAUTH2", MONITOR, token) == "OK"
    assert lab.tokens.counts() == {"token": 1, "client_credentials": 1, "introspect": 1,
                                   "introspect_active": 1}
    lab.tokens.expires_in(5)
    lab.reset()
    assert lab.tokens.counts() == {}
    assert client_credentials_token(lab)["expires_in"] == 3600
    assert lab.tokens.current_refresh_token(MONITOR) is None


# --------------------------------------------------------- Dovecot, Postfix


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_logs_in_with_a_client_credentials_token(lab, mech):
    token = client_credentials_token(lab)["access_token"]
    assert imap_login(lab, mech, MONITOR, token) == "OK"
    assert lab.tokens.count("introspect_active") == 1


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
def test_smtp_submission_accepts_a_token_and_delivers(lab, mech):
    token = client_credentials_token(lab, mailbox=OTHER)["access_token"]
    with submission(lab) as c:
        assert "XOAUTH2" in c.esmtp_features["auth"].split()
        assert "OAUTHBEARER" in c.esmtp_features["auth"].split()
        code, _ = c.docmd("AUTH", "%s %s" % (mech, initial_response(
            mech, OTHER, token, lab.ports["submission"]).decode()))
        assert code == 235
        subject = "oauth2 %s %s" % (mech, token[-6:])
        c.sendmail(OTHER, [MONITOR], ("Subject: %s\r\n\r\nx\r\n" % subject).encode())
    lab.wait_for(MONITOR, lambda ms: any(m["subject"] == subject for m in ms))


def test_a_revoked_token_is_refused_with_dovecots_error_challenge(lab):
    token = client_credentials_token(lab)["access_token"]
    assert imap_login(lab, "XOAUTH2", MONITOR, token) == "OK"
    lab.tokens.revoke(token)
    t0 = time.monotonic()
    lines = imap_exchange(lab, "XOAUTH2", MONITOR, token)
    assert len(lines) == 2 and lines[1] == IMAP_FAILED, lines
    assert decoded_challenge(lines[0], b"+ ") == XOAUTH2_CHALLENGE
    assert time.monotonic() - t0 < 5  # auth_failure_delay, no growing penalty
    lines = imap_exchange(lab, "OAUTHBEARER", MONITOR, token)
    assert decoded_challenge(lines[0], b"+ ") == OAUTHBEARER_CHALLENGE
    assert lines[1:] == [IMAP_FAILED]
    replies = smtp_exchange(lab, "XOAUTH2", MONITOR, token)
    assert replies[0][0] == 334 and replies[1:] == [SMTP_FAILED], replies
    assert decoded_challenge(replies[0][1], b"") == XOAUTH2_CHALLENGE
    assert lab.tokens.count("introspect_inactive") == 3


def test_revoking_all_holds_until_unrevoke(lab):
    before = client_credentials_token(lab)["access_token"]
    lab.tokens.revoke()
    during = client_credentials_token(lab)["access_token"]  # issued, but born revoked
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(lab, "XOAUTH2", MONITOR, during)
    lab.tokens.unrevoke()
    assert imap_login(lab, "XOAUTH2", MONITOR, lab.tokens.access_token(MONITOR)) == "OK"
    with pytest.raises(LabError, match="no such token"):
        lab.tokens.revoke("lab-at-unknown")
    assert lab.tokens.count("introspect_inactive") == 1 and before


def test_a_token_expires_after_its_expires_in(lab):
    lab.tokens.expires_in(2)
    assert client_credentials_token(lab)["expires_in"] == 2
    t0 = time.monotonic()
    token = lab.tokens.access_token(MONITOR, expires_in=2)
    assert imap_login(lab, "XOAUTH2", MONITOR, token) == "OK"
    time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(lab, "XOAUTH2", MONITOR, token)


def test_a_token_opens_only_its_own_mailbox(lab):
    token = lab.tokens.access_token(MONITOR)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap_login(lab, "XOAUTH2", OTHER, token)


def test_no_token_service_is_a_temporary_failure_and_reset_brings_it_back(lab):
    token = lab.tokens.access_token(MONITOR)
    lab.tokens.stop()
    try:
        assert not lab.tokens.alive()
        lines = imap_exchange(lab, "XOAUTH2", MONITOR, token)
        assert lines[0].startswith(b"a NO [UNAVAILABLE] Temporary authentication failure."), lines
        assert smtp_exchange(lab, "XOAUTH2", MONITOR, token) == [SMTP_FAILED]
    finally:
        lab.reset()
    assert lab.tokens.alive()
    assert imap_login(lab, "XOAUTH2", MONITOR, lab.tokens.access_token(MONITOR)) == "OK"


def test_password_logins_still_work(lab):
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        assert c.login(MONITOR, lab.users[MONITOR])[0] == "OK"
    p = poplib.POP3_SSL(lab.host, lab.ports["pop3s"], context=lab.ssl_context(),
                        timeout=TIMEOUT)
    p.user(MONITOR)
    assert p.pass_(lab.users[MONITOR]).startswith(b"+OK")
    p.quit()
    with submission(lab) as c:
        assert c.login(OTHER, lab.users[OTHER])[0] == 235
    assert lab.tokens.count("introspect") == 0
