"""The mail lab itself: endpoints, TLS, auth, relay, echo, faults, helpers.

Clients are the stdlib's smtplib/imaplib/poplib with SSL contexts built from
the lab CA, certificate verification on.
"""

import email
import email.policy
import imaplib
import os
import poplib
import secrets
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from tests.lab import LabError, MailLab
from tests.lab.lab import scratch_base

MONITOR = "monitor@lab.test"
OTHER = "other@lab.test"
ECHO = "echo@lab.test"
TIMEOUT = 10


def token():
    return secrets.token_hex(6)


# ---------------------------------------------------------------- clients


def imaps_subjects(lab, user, folder="INBOX"):
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        c.login(user, lab.users[user])
        return _imap_subjects(c, folder)


def imap_starttls_subjects(lab, user, folder="INBOX"):
    with imaplib.IMAP4(lab.host, lab.ports["imap"], timeout=TIMEOUT) as c:
        assert "STARTTLS" in c.capabilities
        c.starttls(ssl_context=lab.ssl_context())
        c.login(user, lab.users[user])
        return _imap_subjects(c, folder)


def _imap_subjects(c, folder):
    typ, _ = c.select('"%s"' % folder, readonly=True)
    assert typ == "OK"
    typ, data = c.search(None, "ALL")
    subjects = []
    for num in data[0].split():
        typ, msg = c.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        hdr = email.message_from_bytes(msg[0][1])
        subjects.append(str(hdr["Subject"]))
    return subjects


def _pop_subjects(p, user, lab):
    p.user(user)
    p.pass_(lab.users[user])
    count, _ = p.stat()
    subjects = []
    for i in range(1, count + 1):
        _, lines, _ = p.top(i, 0)
        hdr = email.message_from_bytes(b"\r\n".join(lines))
        subjects.append(str(hdr["Subject"]))
    p.quit()
    return subjects


def pop3s_subjects(lab, user):
    p = poplib.POP3_SSL(lab.host, lab.ports["pop3s"], context=lab.ssl_context(),
                        timeout=TIMEOUT)
    return _pop_subjects(p, user, lab)


def pop3_stls_subjects(lab, user):
    p = poplib.POP3(lab.host, lab.ports["pop3"], timeout=TIMEOUT)
    assert "STLS" in p.capa()
    p.stls(context=lab.ssl_context())
    return _pop_subjects(p, user, lab)


def wait_subject(lab, user, subject, folder="INBOX", timeout=TIMEOUT):
    return lab.wait_for(user, lambda ms: any(m["subject"] == subject for m in ms),
                        folder=folder, timeout=timeout)


# ------------------------------------------------------------- endpoints


def test_describe(lab):
    info = lab.describe()
    assert set(lab.ports) == {"smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s"}
    assert len(set(lab.ports.values())) == 7
    assert info["host"] == lab.host == "127.0.0.1"
    assert os.path.isfile(info["ca_file"])
    # the standard users; tests may add more with add_user() (they last for the session)
    assert {MONITOR, OTHER, ECHO} <= set(info["users"])
    assert all(info["users"][u] for u in (MONITOR, OTHER, ECHO))
    assert os.path.isfile(os.path.join(info["dir"], "lab.json"))


@pytest.mark.parametrize("port", ["smtp", "submission", "smtps"])
def test_each_smtp_endpoint_delivers_and_every_reader_sees_it(lab, port):
    subject = "via %s %s" % (port, token())
    auth = None if port == "smtp" else (OTHER, lab.users[OTHER])
    lab.send(to=MONITOR, sender=OTHER, subject=subject, port=port, auth=auth)
    wait_subject(lab, MONITOR, subject)
    assert subject in imaps_subjects(lab, MONITOR)
    assert subject in imap_starttls_subjects(lab, MONITOR)
    assert subject in pop3s_subjects(lab, MONITOR)
    assert subject in pop3_stls_subjects(lab, MONITOR)


def test_certificate_is_verified_against_the_lab_ca(lab):
    # the system trust store does not know the lab CA: verification must fail
    ctx = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=ctx, timeout=TIMEOUT)
    # the lab CA verifies 127.0.0.1 and localhost
    for host in ("127.0.0.1", "localhost"):
        with socket.create_connection((lab.host, lab.ports["smtps"]), timeout=TIMEOUT) as s:
            with lab.ssl_context().wrap_socket(s, server_hostname=host) as tls:
                assert tls.getpeercert()


def test_smtp_offers_starttls_and_auth_without_requiring_them(lab):
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=TIMEOUT) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        assert c.has_extn("auth")
        c.starttls(context=lab.ssl_context())
        c.ehlo()
        assert c.has_extn("auth")
        c.login(MONITOR, lab.users[MONITOR])
    subject = "plain smtp " + token()
    lab.send(to=MONITOR, subject=subject, starttls=False)
    wait_subject(lab, MONITOR, subject)


def test_wrong_password_is_refused(lab):
    with smtplib.SMTP_SSL(lab.host, lab.ports["smtps"], context=lab.ssl_context(),
                          timeout=TIMEOUT) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(MONITOR, "wrong")
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        with pytest.raises(imaplib.IMAP4.error):
            c.login(MONITOR, "wrong")


def test_submission_requires_starttls_and_auth(lab):
    with smtplib.SMTP(lab.host, lab.ports["submission"], timeout=TIMEOUT) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        assert not c.has_extn("auth")  # no AUTH before TLS
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            c.sendmail(OTHER, [MONITOR], b"Subject: x\r\n\r\nx\r\n")
        assert exc.value.smtp_code == 530
    with smtplib.SMTP(lab.host, lab.ports["submission"], timeout=TIMEOUT) as c:
        c.starttls(context=lab.ssl_context())
        c.ehlo()
        assert c.has_extn("auth")
        with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)):
            c.sendmail(OTHER, [MONITOR], b"Subject: no auth\r\n\r\nx\r\n")
    with smtplib.SMTP_SSL(lab.host, lab.ports["smtps"], context=lab.ssl_context(),
                          timeout=TIMEOUT) as c:
        with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)):
            c.sendmail(OTHER, [MONITOR], b"Subject: no auth\r\n\r\nx\r\n")
    time.sleep(0.3)
    assert lab.count(MONITOR) == (0, 0)


@pytest.mark.parametrize("port", ["smtp", "submission"])
def test_relay_to_other_domains_is_refused_at_rcpt(lab, port):
    with smtplib.SMTP(lab.host, lab.ports[port], timeout=TIMEOUT) as c:
        c.starttls(context=lab.ssl_context())
        if port == "submission":  # not even for an authenticated user
            c.login(MONITOR, lab.users[MONITOR])
        c.ehlo()
        code, _ = c.mail(MONITOR)
        assert code == 250
        code, msg = c.rcpt("someone@example.com")
        assert code in (454, 554), msg
        assert b"Relay access denied" in msg
        code, _ = c.rcpt("nobody@lab.test")  # unknown user of the lab domain
        assert code == 550
        c.rset()
    assert lab.queue() == []


def test_echo_returns_mail_to_its_sender_unchanged(lab):
    subject = "echo me " + token()
    body = "line one\nline two " + token() + "\n"
    lab.send(to=ECHO, sender=MONITOR, subject=subject, body=body)
    wait_subject(lab, MONITOR, subject)
    assert lab.count(ECHO) == (0, 0)
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        c.login(MONITOR, lab.users[MONITOR])
        c.select("INBOX")
        _, data = c.search(None, "ALL")
        _, msg = c.fetch(data[0].split()[-1], "(RFC822)")
    mail = email.message_from_bytes(msg[0][1], policy=email.policy.default)
    assert mail["Subject"] == subject
    assert mail.get_content().replace("\r\n", "\n") == body
    # exactly one copy: no loop
    time.sleep(1)
    assert len([m for m in lab.messages(MONITOR) if m["subject"] == subject]) == 1
    assert lab.count(ECHO) == (0, 0)


# ------------------------------------------------------------------ faults


def test_hold_then_release(lab):
    lab.hold()
    subject = "held " + token()
    lab.send(subject=subject)
    deadline = time.monotonic() + 5
    while not lab.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(lab.held()) == 1
    time.sleep(1)
    assert lab.count(MONITOR) == (0, 0)
    lab.release()
    wait_subject(lab, MONITOR, subject, timeout=5)
    assert lab.held() == []
    assert lab.faults()["path"] is None


def test_drop_accepts_with_250_but_never_delivers(lab):
    lab.drop()
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=TIMEOUT) as c:
        c.starttls(context=lab.ssl_context())
        c.ehlo()
        c.mail(OTHER)
        c.rcpt(MONITOR)
        code, _ = c.data(b"Subject: dropped\r\n\r\ngone\r\n")
        assert code == 250
    time.sleep(3)
    assert lab.count(MONITOR) == (0, 0)
    assert lab.queue() == []


def test_delay_delivers_no_earlier_than_asked(lab):
    lab.delay(5)
    subject = "delayed " + token()
    t0 = time.monotonic()
    lab.send(subject=subject)
    accepted = time.monotonic()
    while time.monotonic() - t0 < 4.0:
        assert lab.count(MONITOR)[0] == 0, "delivered after %.2fs" % (time.monotonic() - t0)
        time.sleep(0.2)
    wait_subject(lab, MONITOR, subject, timeout=6)
    elapsed = time.monotonic() - accepted
    assert 5.0 <= time.monotonic() - t0
    assert elapsed < 7.0, elapsed


def test_junk_delivers_into_junk_not_inbox(lab):
    lab.junk()
    subject = "spam? " + token()
    lab.send(subject=subject)
    wait_subject(lab, MONITOR, subject, folder="Junk")
    assert lab.count(MONITOR, "INBOX") == (0, 0)
    assert subject in imaps_subjects(lab, MONITOR, "Junk")
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        c.login(MONITOR, lab.users[MONITOR])
        typ, data = c.list('""', "*")
        junk = [line for line in data if b"Junk" in line]
        assert junk and b"\\Junk" in junk[0]


def test_junk_folder_exists_for_every_user_from_the_start(lab):
    for user in lab.users:
        assert lab.count(user, "Junk") == (0, 0)


def test_imap_down_refuses_connections_while_smtp_delivers(lab):
    lab.imap_down()
    for port in ("imap", "imaps"):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((lab.host, lab.ports[port]), timeout=3)
    subject = "while imap is down " + token()
    lab.send(subject=subject)
    wait_subject(lab, MONITOR, subject)
    assert subject in pop3s_subjects(lab, MONITOR)
    lab.imap_up()
    assert subject in imaps_subjects(lab, MONITOR)
    assert subject in imap_starttls_subjects(lab, MONITOR)


def test_a_temporary_lab_goes_to_memory_only_where_that_will_do(monkeypatch, tmp_path):
    monkeypatch.delenv("TMPDIR", raising=False)
    assert scratch_base(str(tmp_path), room=1) == str(tmp_path)
    assert scratch_base(str(tmp_path), room=1 << 62) is None            # too little room
    assert scratch_base(str(tmp_path / "missing"), room=1) is None
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert scratch_base(str(tmp_path), room=1) is None                  # $TMPDIR is followed


def test_fill_and_count(lab):
    t0 = time.monotonic()
    lab.fill(MONITOR, 10000)
    assert time.monotonic() - t0 < 15
    assert lab.count(MONITOR) == (10000, 10000)
    lab.fill(MONITOR, 5, seen=True)
    assert lab.count(MONITOR) == (10005, 10000)
    lab.fill(OTHER, 3, folder="Junk")
    assert lab.count(OTHER, "Junk") == (3, 3)
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        c.login(MONITOR, lab.users[MONITOR])
        typ, data = c.select("INBOX", readonly=True)
        assert int(data[0]) == 10005


def test_messages_report_subjects_ids_and_flags(lab):
    lab.fill(MONITOR, 3)
    mid = lab.send(subject="flag me")
    wait_subject(lab, MONITOR, "flag me")
    with imaplib.IMAP4_SSL(lab.host, lab.ports["imaps"], ssl_context=lab.ssl_context(),
                           timeout=TIMEOUT) as c:
        c.login(MONITOR, lab.users[MONITOR])
        c.select("INBOX")
        _, data = c.search(None, "SUBJECT", '"flag me"')
        c.store(data[0].split()[0], "+FLAGS", "(\\Seen \\Flagged)")
    msgs = {m["message_id"]: m for m in lab.messages(MONITOR)}
    assert len(msgs) == 4
    assert {"\\Seen", "\\Flagged"} <= msgs[mid]["flags"]
    assert msgs[mid]["subject"] == "flag me"
    assert lab.count(MONITOR) == (4, 3)


def test_reset_empties_everything(lab):
    lab.fill(MONITOR, 50)
    lab.fill(OTHER, 5, folder="Junk")
    lab.send(subject="before reset")
    wait_subject(lab, MONITOR, "before reset")
    lab.hold()
    lab.send(subject="held at reset")
    lab.junk()
    lab.imap_down()
    t0 = time.monotonic()
    lab.reset()
    assert time.monotonic() - t0 < 3
    assert lab.faults() == {"path": None, "delay": 0, "only": None, "junk": False, "imap_down": False}
    assert lab.held() == [] and lab.queue() == []
    for user in lab.users:
        for folder in ("INBOX", "Junk"):
            assert lab.count(user, folder) == (0, 0)
    assert imaps_subjects(lab, MONITOR) == []
    t0 = time.monotonic()
    lab.reset()
    assert time.monotonic() - t0 < 1  # nothing to do: fast
    subject = "after reset " + token()
    lab.send(subject=subject)
    wait_subject(lab, MONITOR, subject)
    assert lab.count(MONITOR, "Junk") == (0, 0)


def test_make_cert_signed_by_the_lab_ca(lab):
    cert, key = lab.make_cert("wrong.example", ["DNS:wrong.example"], days=1)
    expired, _ = lab.make_cert("localhost", ["IP:127.0.0.1", "DNS:localhost"], expired=True)
    res = subprocess.run(["openssl", "verify", "-CAfile", lab.ca_file, cert],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(["openssl", "verify", "-CAfile", lab.ca_file, expired],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "expired" in (res.stdout + res.stderr)
    assert os.path.isfile(lab.ca_key_file) and os.path.isfile(key)


def _processes_mentioning(text):
    """PIDs whose command line mentions *text* (the lab's directory)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def _children_of(parent):
    kids = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                    kids.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def _alive(pids):
    """The PIDs still running (zombies count as gone)."""
    running = set()
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    running.add(p)
        except (OSError, IndexError):
            pass
    return running


def test_second_lab_runs_in_parallel_without_port_clash(lab):
    with MailLab() as second:
        assert not set(second.ports.values()) & set(lab.ports.values())
        subject = "second lab " + token()
        second.send(subject=subject)
        wait_subject(second, MONITOR, subject)
        assert lab.count(MONITOR) == (0, 0)
        sdir = second.dir
        with open(os.path.join(second.queue_dir, "pid", "master.pid")) as f:
            master = int(f.read().split()[0])
        ours = set(_processes_mentioning(sdir)) | {master} | set(_children_of(master))
        assert len(ours) >= 4  # dovecot and its helpers, postfix master and its services
    assert not os.path.exists(sdir)
    # stopping leaves no process behind (postfix master and its children, dovecot, releaser)
    deadline = time.monotonic() + 5
    while _alive(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(ours) == set() and _processes_mentioning(sdir) == []
    assert lab.is_running()
    lab.send(subject="first lab still fine")
    wait_subject(lab, MONITOR, "first lab still fine")


def test_wait_for_times_out_with_a_reason(lab):
    t0 = time.monotonic()
    with pytest.raises(LabError, match="not met"):
        lab.wait_for(MONITOR, 1, timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_a_user_whose_password_starts_with_a_dash_is_added_and_logs_in(lab):
    """secrets.token_urlsafe() starts one password in 64 with "-": the wait for the new user's
    login must not hand it to doveadm as an option ("test: invalid option")."""
    user = lab.add_user("dash-%s" % token(), "-q" + token())
    assert imaps_subjects(lab, user) == []
