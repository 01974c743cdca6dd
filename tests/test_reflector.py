"""mail_roundtrip_reflector at the far end of the loop, against the lab.

The reflector installed as README says (/opt/check_mail_roundtrip, the
``installed_plugin`` fixture) runs behind Postfix pipe(8) transports as the
unprivileged user ``nagios``: reflector@lab.test, reflector2@lab.test (for
the loop test) and reflector3@lab.test (re-pointed for the retry test);
from an aliases entry run by Postfix's local(8) as ``nobody``
(reflector@local.lab.test, the envelope in the environment); and from a
Sieve ``pipe`` run by Dovecot as the mail user (sieve-reflector@lab.test).
Each user has its own copy of the secret and its own state directory.  A
far mailbox, far@lab.test, is read by ``poll``.  Where a test plays the MTA
itself, it runs ``pipe`` from the checkout with a probe made by the
library and a scripted SMTP server on the way back (faultservers.SMTPScript),
which shows what was, or was not, sent.
"""

import base64
import email.policy
import json
import os
import pwd
import re
import secrets
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

import pytest

from check_mail_roundtrip.probe import RETURN_HEADER, STAMP_HEADER, Probe, build_message, header_values, profile_key
from check_mail_roundtrip.reflection import return_header
from tests import faultservers as fs
from tests.checkrun import ROOT, Checker
from tests.lab.common import VMAIL_USER

MONITOR = "monitor@lab.test"
FAR = "far@lab.test"
FAR_PASSWORD = "far-mailbox-pw-1"
SIEVE = "sieve-reflector@lab.test"
REFLECTOR = "/opt/check_mail_roundtrip/bin/mail_roundtrip_reflector"
SHIM = os.path.join(ROOT, "mail_roundtrip_reflector")
PIPE_USER = "nagios"
NUM = r"\d+(?:\.\d+)?"
WIRE = email.policy.SMTP.clone(max_line_length=998)


class FarEnd:
    """The secret shared by the checks and the reflectors, the reflectors' state, the pipes."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = tempfile.mkdtemp(prefix="reflector-lab-")
        os.chmod(self.dir, 0o755)  # the pipe users must reach the files in it
        self.value = os.urandom(32).hex() + "\n"
        self.secret, self.state = self.files_for(PIPE_USER)

    def files_for(self, user):
        """(secret file, state directory) of the reflector running as *user*."""
        pw = pwd.getpwnam(user)
        secret = os.path.join(self.dir, "secret-" + user)
        with open(secret, "w") as f:
            f.write(self.value)
        os.chmod(secret, 0o600)
        os.chown(secret, pw.pw_uid, pw.pw_gid)
        state = os.path.join(self.dir, "state-" + user)
        os.mkdir(state, 0o700)
        os.chown(state, pw.pw_uid, pw.pw_gid)
        return secret, state

    def options(self, secret, state, smtp_port=None):
        return ["-H", self.lab.host, "--smtp-port", str(smtp_port or self.lab.ports["smtp"]), "--smtp-tls", "none",
                "--secret-file", secret, "--state-dir", state, "--max-per-minute", "1000"]

    def argv(self, smtp_port=None):
        return [REFLECTOR, "pipe", "--sender", "${sender}", "--recipient", "${recipient}",
                *self.options(self.secret, self.state, smtp_port)]

    def secret_bytes(self):
        with open(self.secret, "rb") as f:
            return f.read().strip()

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def far_end(lab_session, installed_plugin):
    end = FarEnd(lab_session)
    for address in ("reflector@lab.test", "reflector2@lab.test", "reflector3@lab.test"):
        lab_session.pipe(address, end.argv(), PIPE_USER)
    lab_session.alias_command("reflector", [REFLECTOR, "pipe", *end.options(*end.files_for("nobody"))])
    for user, password in ((FAR, FAR_PASSWORD), (SIEVE, "sieve-reflector-pw-1")):
        if user not in lab_session.users:
            lab_session.add_user(user, password)
    lab_session.sieve_pipe(SIEVE, REFLECTOR, ["pipe", "--sender", "${sender}", "--recipient", SIEVE,
                                              *end.options(*end.files_for(VMAIL_USER))])
    yield end
    end.close()


def check_via(lab, tmp_path, far_end, to, *options):
    """A check whose probes go to *to*, named after the test (a reflection still on its way
    from an earlier test is another profile's)."""
    name = os.environ.get("PYTEST_CURRENT_TEST", "reflector").split(" ")[0]
    check = Checker(lab, tmp_path, MONITOR, to, "imaps", "smtp", "--secret-file", far_end.secret,
                    "--no-junk", "--name", name, *options)
    check.key = "MRTP1.%s." % profile_key(name)
    return check


def probes_back(check, n=1, timeout=20):
    """Wait until *n* of *check*'s probes are in the monitor INBOX."""
    return check.lab.wait_for(MONITOR, lambda msgs: sum(check.key in (m["subject"] or "") for m in msgs) >= n,
                              timeout=timeout)


def legs_of(r):
    """(rtt, out, back) from the status line and perfdata."""
    m = re.search(r"round trip (%s)s \(out (%s)s, back (%s)s\)" % (NUM, NUM, NUM), r.line)
    assert m, r
    rtt, out, back = (float(x) for x in m.groups())
    assert (r.perf["rtt"], r.perf["leg_out"], r.perf["leg_back"]) == (rtt, out, back), r
    return rtt, out, back


def pipe_log(lab, service_text):
    """The Postfix log lines of pipe deliveries that mention *service_text*."""
    with open(os.path.join(lab.dir, "log", "postfix.log"), errors="replace") as f:
        return [line for line in f if "postfix/pipe" in line and service_text in line]


# -- through Postfix --------------------------------------------------------------------

@pytest.mark.parametrize("to", ["reflector@lab.test", "reflector@local.lab.test", SIEVE],
                         ids=["postfix-pipe", "aliases", "sieve-pipe"])
def test_a_round_trip_through_a_piped_reflector_reports_its_legs(lab, tmp_path, far_end, to):
    check = check_via(lab, tmp_path, far_end, to)
    assert check().rc == 0
    probes_back(check)
    r = check("-v")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    rtt, out, back = legs_of(r)
    assert abs(out + back - rtt) < 1.0, r  # the pipe sends back at once: the legs add up
    assert re.search(r" leg_back=%ss;;;0 leg_out=%ss;;;0 " % (NUM, NUM), r.full_line), r
    assert re.search(r"^probe \w+: out %ss to the reflector, back %ss$" % (NUM, NUM), r.stdout, re.M), r.stdout


def test_a_round_trip_through_a_polled_far_mailbox(lab, tmp_path, far_end):
    check = check_via(lab, tmp_path, far_end, FAR)
    env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD=FAR_PASSWORD)
    poll = [sys.executable, SHIM, "poll", "-H", lab.host, "--smtp-port", str(lab.ports["smtp"]), "--smtp-tls", "none",
            "--imap-port", str(lab.ports["imaps"]), "--ca-file", lab.ca_file, "--imap-user", FAR,
            "--secret-file", far_end.secret, "--state-dir", str(tmp_path / "poll-state"), "--max-per-minute", "100"]
    # one pass, as from cron: the probe waiting in the far mailbox is sent back, then removed there
    assert check().rc == 0
    lab.wait_for(FAR, 1)
    p = subprocess.run(poll, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and re.search(r"probe \w+ reflected to monitor@lab.test", p.stderr), p
    assert lab.count(FAR) == (0, 0)
    probes_back(check)
    # --loop: IDLE on the far mailbox, the probe goes back at once
    looping = subprocess.Popen(poll + ["--loop", "--loop-for", "20"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        r = check()
        assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
        probes_back(check)
        r = check("-v")
        rtt, out, back = legs_of(r)
        assert abs(out + back - rtt) < 1.0, r  # received is the far mailbox's INTERNALDATE: whole seconds
    finally:
        looping.terminate()
        _out, err = looping.communicate(timeout=20)
    assert err.count("reflected to monitor@lab.test") >= 1, err


def test_two_reflectors_pointed_at_each_other_stop_after_one_step(lab, tmp_path, far_end):
    # the check's return address is the second reflector: the first sends the probe there, the
    # second finds a reflected probe and answers nothing
    check = check_via(lab, tmp_path, far_end, "reflector@lab.test", "--from", "reflector2@lab.test",
                      "--imap-user", MONITOR)
    r = check()
    assert r.rc == 0, r
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not pipe_log(lab, "reflected already"):
        time.sleep(0.2)
    dropped = pipe_log(lab, "reflected already")
    assert dropped and "relay=pipe2" in dropped[-1], dropped
    time.sleep(2)  # nothing more comes: no third step
    probe_id = re.search(r"probe (\w+): reflected already", dropped[-1]).group(1)
    assert len([line for line in pipe_log(lab, probe_id) if "relay=pipe1" in line]) == 1


def test_a_temporary_failure_on_the_way_back_is_deferred_and_retried_by_postfix(lab, tmp_path, far_end):
    check = check_via(lab, tmp_path, far_end, "reflector3@lab.test")
    lab.pipe("reflector3@lab.test", far_end.argv(fs.free_port()), PIPE_USER)  # nothing listens there
    try:
        assert check().rc == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not pipe_log(lab, "status=deferred"):
            time.sleep(0.2)
        deferred = pipe_log(lab, "status=deferred")
        assert deferred and "sending back failed for now" in deferred[-1], deferred
        assert "bounced" not in "".join(pipe_log(lab, "reflector3"))
    finally:
        lab.pipe("reflector3@lab.test", far_end.argv(), PIPE_USER)
    lab.release()  # flush the queue: Postfix tries the pipe again
    probes_back(check, timeout=30)
    r = check("-v")
    assert r.rc == 0 and r.line.startswith("MAIL_ROUNDTRIP OK - round trip "), r
    rtt, out, back = legs_of(r)
    assert out > back, r  # the time in Postfix's queue was on the way out


@pytest.mark.parametrize("header, slow", [("X-Mail-Roundtrip-Reflected", "back"), ("X-Mail-Roundtrip-Return", "out")])
def test_a_delayed_leg_shows_in_its_figure(lab, tmp_path, far_end, header, slow):
    check = check_via(lab, tmp_path, far_end, "reflector@lab.test")
    lab.delay(4, only=header)
    assert check().rc == 0
    probes_back(check, timeout=30)
    r = check()
    rtt, out, back = legs_of(r)
    delayed, other = (back, out) if slow == "back" else (out, back)
    assert delayed >= 3.5 and other < 1.5 and abs(out + back - rtt) < 1.0, r


# -- the reflector's own rules, with the test as the MTA ------------------------------------

def _probe(far_end, sent=None, mail_from=MONITOR, pid="0123456789abcdef"):
    secret = far_end.secret_bytes()
    p = Probe("reflector-rules", pid, int((sent or time.time()) * 1000))
    msg = build_message(p, secret, mail_from, "reflector@lab.test", "mon1", p.sent)
    msg[RETURN_HEADER] = return_header(p.token(secret), mail_from, secret)
    return msg.as_bytes(policy=WIRE)


def _pipe(far_end, tmp_path, message, smtp_port, *extra, sender=MONITOR, command=(SHIM,), timeout=60):
    argv = [sys.executable, *command, "pipe", "--sender", sender, "--recipient", "reflector@lab.test",
            "-H", "127.0.0.1", "--smtp-port", str(smtp_port), "--smtp-tls", "none",
            "--secret-file", far_end.secret, "--state-dir", str(tmp_path / "rules-state"), *extra]
    return subprocess.run(argv, input=message, capture_output=True, timeout=timeout)


def test_forged_unsigned_bounced_replayed_and_reflected_mail_gets_no_reply(far_end, tmp_path):
    genuine = _probe(far_end)
    signature = re.search(rb"X-Mail-Roundtrip: MRTP1\.\S+\.([0-9a-f]{32})", genuine).group(1)
    cases = [
        ("forged", genuine.replace(signature, b"0" * 32), "no probe signed with this secret"),
        ("From changed", genuine.replace(b"From: monitor@lab.test", b"From: victim@lab.test"),
         "From (victim@lab.test) is not the signed return address"),
        ("unsigned", b"From: someone@lab.test\nSubject: hello\n\nhi\n", "no probe signed with this secret"),
        ("no return address", re.sub(rb"X-Mail-Roundtrip-Return: [^\n]*\n", b"", genuine), "no signed return address"),
        ("report", genuine.replace(b"Content-Type: text/plain", b"Content-Type: multipart/report"),
         "a delivery report (bounce)"),
        ("stamped", genuine.replace(b"Subject:", b"X-Mail-Roundtrip-Reflected: x\nSubject:"), "reflected already"),
        ("auto-reply", genuine.replace(b"Subject:", b"Auto-Submitted: auto-replied\nSubject:"), "an automatic mail"),
    ]
    script = fs.SMTPScript()
    with fs.FaultServer(script) as srv:
        for name, message, why in cases:
            p = _pipe(far_end, tmp_path, message, srv.port)
            assert p.returncode == 0 and why in p.stderr.decode(), (name, p)
        p = _pipe(far_end, tmp_path, genuine, srv.port, sender="")
        assert p.returncode == 0 and b"a bounce (null envelope sender)" in p.stderr, p
        assert not script.messages and not srv.received  # nothing was even connected for
        p = _pipe(far_end, tmp_path, genuine, srv.port)
        assert p.returncode == 0 and b"reflected to monitor@lab.test" in p.stderr, p
        p = _pipe(far_end, tmp_path, genuine, srv.port)  # replayed
        assert p.returncode == 0 and b"reflected before (a duplicate)" in p.stderr, p
        old = _probe(far_end, sent=time.time() - 90000, pid="00000000000000aa")
        p = _pipe(far_end, tmp_path, old, srv.port)
        assert p.returncode == 0 and b"more than --max-age 86400s" in p.stderr, p
    assert len(script.messages) == 1
    sent = script.messages[0]
    assert b"Auto-Submitted: auto-replied" in sent and b"X-Mail-Roundtrip-Reflected: MRTP1." in sent
    assert any(line.upper().startswith("RCPT TO:<MONITOR@LAB.TEST>") for line in srv.received), srv.received


def test_the_rate_limit_holds_per_address(far_end, tmp_path):
    script = fs.SMTPScript()
    with fs.FaultServer(script) as srv:
        results = [_pipe(far_end, tmp_path, _probe(far_end, pid="%016x" % (0xabc0 + i)), srv.port,
                         "--max-per-minute", "2") for i in range(3)]
    assert [r.returncode for r in results] == [0, 0, 0]
    assert b"reflected to" in results[0].stderr and b"reflected to" in results[1].stderr
    assert b"rate limit: 2 reflections to monitor@lab.test in the last minute" in results[2].stderr
    assert len(script.messages) == 2


def test_a_temporary_smtp_refusal_exits_75_and_a_permanent_one_0(far_end, tmp_path):
    genuine = _probe(far_end, pid="00000000000000bb")
    with fs.FaultServer(fs.SMTPScript({"MAIL": "451 4.3.0 try again later"})) as srv:
        p = _pipe(far_end, tmp_path, genuine, srv.port)
    assert p.returncode == 75 and b"sending back failed for now" in p.stderr and b"451 4.3.0" in p.stderr, p
    with fs.FaultServer(fs.SMTPScript({"RCPT": "550 5.1.1 no such user"})) as srv:
        p = _pipe(far_end, tmp_path, genuine, srv.port)
    assert p.returncode == 0 and b"was refused" in p.stderr and b"550 5.1.1" in p.stderr, p  # never a bounce
    script = fs.SMTPScript()
    with fs.FaultServer(script) as srv:  # not remembered as reflected: a later try sends it
        p = _pipe(far_end, tmp_path, genuine, srv.port)
    assert p.returncode == 0 and len(script.messages) == 1, p


def test_a_reflector_that_cannot_work_defers_instead_of_bouncing(far_end, tmp_path):
    p = subprocess.run([sys.executable, SHIM, "pipe", "--secret-file", str(tmp_path / "missing"), "-H", "127.0.0.1"],
                       input=_probe(far_end), capture_output=True, timeout=30)
    assert p.returncode == 75 and b"secret file" in p.stderr and b"does not exist" in p.stderr, p
    p = subprocess.run([sys.executable, SHIM, "pipe", "--bogus"], input=b"", capture_output=True, timeout=30)
    assert p.returncode == 75 and b"usage error" in p.stderr, p
    p = subprocess.run([sys.executable, SHIM, "poll", "--bogus"], capture_output=True, timeout=30)
    assert p.returncode == 64 and b"usage error" in p.stderr, p


# -- hostile probes, a hostile state, errors: never a bounce, never a traceback -------------

FORCED = ("import sys\n"
          "sys.path.insert(0, %r)\n"
          "from check_mail_roundtrip import reflector\n"
          "def fail(*args, **kwargs):\n"
          "    raise RuntimeError('forced\\nfailure')\n"
          "reflector.%s = fail\n"
          "reflector.main()\n")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _encoded(text):
    return "=?utf-8?b?%s?=" % base64.b64encode(text.encode("utf-8")).decode("ascii")


def _hostile_probe(far_end, pid):
    """A genuine probe whose Subject and Message-ID decode to CR, LF, NUL, BEL and ESC; (mail, token)."""
    raw = _probe(far_end, pid=pid)
    token = re.search(rb"X-Mail-Roundtrip: (\S+)", raw).group(1).decode("ascii")
    subject = _encoded("Mail round-trip probe %s\r\nBcc: victim@lab.test\x00\x07\x1b[2J" % token)
    message_id = _encoded("<%s@lab.test>\r\nX-Injected: yes\x1b" % pid)
    raw = re.sub(rb"Subject: [^\r\n]*", b"Subject: " + subject.encode("ascii"), raw, count=1)
    return re.sub(rb"Message-ID: [^\r\n]*", b"Message-ID: " + message_id.encode("ascii"), raw, count=1), token


def test_a_probe_whose_headers_decode_to_control_characters_is_reflected_clean_and_once(lab, far_end):
    pid = secrets.token_hex(8)
    hostile, token = _hostile_probe(far_end, pid)
    for n in (1, 2):  # the second is a resend of the captured probe
        with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=30) as c:
            c.sendmail(MONITOR, ["reflector@lab.test"], hostile)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(pipe_log(lab, pid)) < n:
            time.sleep(0.2)
    delivered = pipe_log(lab, pid)  # Postfix bounces what exits 1 to the envelope sender: never here
    assert len(delivered) == 2 and all("status=sent" in line for line in delivered), delivered
    assert "reflected to monitor@lab.test" in delivered[0], delivered
    assert "reflected before (a duplicate)" in delivered[1], delivered
    back = lab.wait_for(MONITOR, lambda msgs: any(pid in (m["subject"] or "") for m in msgs), timeout=20)
    assert len([m for m in back if pid in (m["subject"] or "")]) == 1
    rows = json.loads(lab._doveadm("-f", "json", "fetch", "-u", MONITOR, "hdr", "mailbox", "INBOX",
                                   "header", STAMP_HEADER, pid).stdout)
    header = rows[0]["hdr"]
    assert not [line for line in header.splitlines() if CONTROL.search(line.replace("\t", " "))], header
    assert not re.search(r"^(Bcc|X-Injected):", header, re.M | re.I), header
    values = dict(header_values(header, ("Subject", "In-Reply-To", "References", "From", "To")))
    assert not [v for v in values.values() if CONTROL.search(v)], values
    assert values["subject"] == "Mail round-trip probe %sBcc: victim@lab.test[2J" % token, values
    assert values["in-reply-to"] == values["references"] == "<%s@lab.test>X-Injected: yes" % pid, values


@pytest.mark.parametrize("where", ["build_reflection", "send_back"])
def test_an_internal_error_drops_the_mail_in_one_line_and_the_probe_stays_remembered(far_end, tmp_path, where):
    genuine = _probe(far_end, pid="00000000000000cc")
    script = fs.SMTPScript()
    with fs.FaultServer(script) as srv:
        p = _pipe(far_end, tmp_path, genuine, srv.port, command=("-c", FORCED % (os.path.join(ROOT, "lib"), where)))
        assert (p.returncode, p.stderr.decode()) == (0, "mail_roundtrip_reflector: mail dropped after an internal "
                                                        "error: RuntimeError: forced failure\n"), p
        p = _pipe(far_end, tmp_path, genuine, srv.port)  # the same probe again: a replay
        assert p.returncode == 0 and b"probe 00000000000000cc: reflected before (a duplicate)" in p.stderr, p
    assert not script.messages


@pytest.mark.parametrize("fault, why", [("symlink", "is a symlink (not followed)"), ("fifo", "is not a regular file"),
                                        ("huge", "is damaged (larger than 16 MiB)"),
                                        ("deep", "is damaged (maximum recursion depth exceeded")])
def test_a_hostile_reflector_json_is_set_aside_in_bounded_time(far_end, tmp_path, fault, why):
    pid = "00000000000000dd"
    state = tmp_path / "rules-state"
    state.mkdir(mode=0o700)
    path = state / "reflector.json"
    recorded = json.dumps({"reflected": {pid: time.time()}, "recent": {}}).encode()  # read, it drops the probe
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(recorded)
    if fault == "symlink":
        os.symlink(elsewhere, path)
    elif fault == "fifo":
        os.mkfifo(path)
    elif fault == "huge":
        path.write_bytes(recorded + b" " * 16 * 1024 * 1024)
    else:
        path.write_bytes(b"[" * 100000 + b"]" * 100000)
    script = fs.SMTPScript()
    started = time.monotonic()
    with fs.FaultServer(script) as srv:
        p = _pipe(far_end, tmp_path, _probe(far_end, pid=pid), srv.port, timeout=30)
    assert time.monotonic() - started < 20
    stderr = p.stderr.decode()
    assert p.returncode == 0 and "Traceback" not in stderr, p
    assert re.search(r"^mail_roundtrip_reflector: state file %s.*; kept aside as reflector\.json\.damaged-\S+, "
                     r"started afresh$" % re.escape(why), stderr, re.M), stderr
    assert "probe %s reflected to monitor@lab.test" % pid in stderr and len(script.messages) == 1, stderr
    assert pid in json.loads(path.read_bytes())["reflected"]  # a regular file again, the probe remembered
    assert elsewhere.read_bytes() == recorded


def test_the_rate_limit_counts_an_address_in_any_case(far_end, tmp_path):
    senders = ("monitor@lab.test", "MONITOR@lab.test", "Monitor@lab.test")
    script = fs.SMTPScript()
    with fs.FaultServer(script) as srv:
        results = [_pipe(far_end, tmp_path, _probe(far_end, mail_from=s, pid="%016x" % (0xcaf0 + i)), srv.port,
                         "--max-per-minute", "2", sender=s) for i, s in enumerate(senders)]
    assert [r.returncode for r in results] == [0, 0, 0]
    assert b"reflected to monitor@lab.test" in results[0].stderr and b"reflected to MONITOR@lab.test" in results[1].stderr
    assert b"rate limit: 2 reflections to Monitor@lab.test in the last minute" in results[2].stderr, results[2]
    assert len(script.messages) == 2


# -- the options ----------------------------------------------------------------------------

def test_the_options_become_the_reflectors_own_typed_settings(tmp_path):
    from check_mail_roundtrip import reflector
    from check_mail_roundtrip.reflector_settings import ReflectorSettings
    from check_mail_roundtrip.settings import Endpoint
    password = tmp_path / "far.pw"
    password.write_text(FAR_PASSWORD + "\n")
    password.chmod(0o600)
    args = reflector.parser().parse_args([
        "poll", "-H", "127.0.0.1", "--imap-user", FAR, "--imap-password-file", str(password),
        "--imap-folder", "Probes", "--secret-file", str(tmp_path / "secret"), "--state-dir", str(tmp_path),
        "--sendmail", "/usr/sbin/sendmail", "--loop", "--loop-for", "90", "-t", "20"])
    given = dict(vars(args))
    settings = reflector.settings_from(args)
    assert settings == ReflectorSettings(
        "poll", str(tmp_path / "secret"), str(tmp_path), 20.0, 10, 86400.0, sendmail="/usr/sbin/sendmail",
        imap=Endpoint("IMAP", "127.0.0.1", 993, "tls", FAR, FAR_PASSWORD), folder="Probes", loop=True, loop_for=90.0)
    assert settings.imap.ssl_context is not None
    assert vars(args) == given  # the parsed options are read, not filled in
    args = reflector.parser().parse_args(["pipe", "-H", "127.0.0.1", "--smtp-port", "2525", "--smtp-tls", "none",
                                          "--secret-file", "s", "--sender", "", "--recipient", "r@lab.test"])
    assert reflector.settings_from(args) == ReflectorSettings(
        "pipe", "s", reflector.DEFAULT_STATE_DIR, 60.0, 10, 86400.0,
        smtp=Endpoint("SMTP", "127.0.0.1", 2525, "none"), sender="", recipient="r@lab.test")
