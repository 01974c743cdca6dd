"""The -vvv protocol trace (issue 7, item 6): our commands and the servers'
replies, one line each, secrets redacted, no library internals.

The real command against the lab (Dovecot, Postfix's submission port with
AUTH PLAIN), and a fault server for an SMTP AUTH dialogue with continuations.
"""

import base64
import re
import time

from tests import faultservers as fs
from tests.checkrun import Checker

MONITOR = "monitor@lab.test"
TRACE = re.compile(r"^(IMAP|SMTP) (C|S): (.*)$")
NOTE = re.compile(r"^(IMAP|SMTP): (connected to \S+ port \d+|TLS established \(TLSv1\.[23]\))$")
INTERNALS = re.compile(r"(?m)^(?:> |< |\t)|b'|b\"|_get_response|untagged_responses|matched |"
                       r"^(?:smtp: )?(?:send|reply):|retcode|\*\*REDACTED\*\*")


def trace(r):
    """[(protocol, who, text)] of the trace lines of a run."""
    return [TRACE.match(line).groups() for line in r.stdout.splitlines() if TRACE.match(line)]


def commands(lines, protocol):
    """Our command lines of *protocol*, IMAP tags left out, verbs upper case."""
    out = []
    for proto, who, text in lines:
        if proto == protocol and who == "C":
            if protocol == "IMAP":
                text = text.split(" ", 1)[1] if " " in text else text
            verb, _, rest = text.partition(" ")
            out.append((verb.upper() + " " + rest).strip())
    return out


def assert_secrets_absent(out, user, password):
    forms = {
        "password": password,
        "base64 of the password": base64.b64encode(password.encode()).decode(),
        "base64 of the AUTH PLAIN response": base64.b64encode(
            b"\0" + user.encode() + b"\0" + password.encode()).decode(),
    }
    for what, text in forms.items():
        assert text not in out, "%s in the -vvv output" % what


def assert_only_known_lines(r):
    """Status line, -v lines, trace lines, perfdata: and no library internals."""
    assert not INTERNALS.search(r.stdout), r.stdout
    for line in r.stdout.splitlines()[1:]:
        if line.startswith(("IMAP", "SMTP")):
            assert TRACE.match(line) or NOTE.match(line), line


def test_trace_of_a_round_trip_through_submission_with_auth(lab, tmp_path):
    pwfile = tmp_path / "smtp.pw"
    password = lab.users[MONITOR]
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "submission",
                    "--smtp-user", MONITOR, "--smtp-password-file", str(pwfile), "--name", "trace", "-vvv")
    first = check()
    assert first.rc == 0 and first.text == "first probe sent, 1 in flight", first
    lab.wait_for(MONITOR, 1)
    second = check()
    assert second.rc == 0 and second.text.startswith("round trip "), second

    for r in (first, second):
        assert r.stderr == "", r
        assert len(r.stdout.splitlines()) < 90, r.stdout  # the Junk folder adds its SELECT and SEARCH
        assert_only_known_lines(r)
        assert_secrets_absent(r.stdout, MONITOR, password)
        lines = trace(r)
        imap, smtp = commands(lines, "IMAP"), commands(lines, "SMTP")
        assert "LOGIN %s ****" % MONITOR in imap, imap
        assert 'SELECT "INBOX"' in imap and imap[-1] == "LOGOUT", imap
        assert any(c.startswith("UID SEARCH UNDELETED SUBJECT MRTP1.") for c in imap), imap
        assert smtp[:2] == ["EHLO " + smtp[0].split(" ", 1)[1], "STARTTLS"], smtp
        assert smtp[3:] == ["AUTH PLAIN ****", "MAIL FROM:<%s>" % MONITOR, "RCPT TO:<%s>" % MONITOR, "DATA",
                            smtp[7], "QUIT"], smtp
        assert re.fullmatch(r"<MESSAGE, \d+ bytes>", smtp[7]), smtp
        # every tagged command has its tagged answer (imaplib does not wait for LOGOUT's)
        tags = [text.split(" ", 1)[0] for proto, who, text in lines if proto == "IMAP" and who == "C"]
        answered = {text.split(" ", 1)[0] for proto, who, text in lines if proto == "IMAP" and who == "S"}
        assert set(tags[:-1]) <= answered, lines
        replies = [text for proto, who, text in lines if proto == "SMTP" and who == "S"]
        assert replies[0].startswith("220 ") and replies[-1].startswith("221 "), replies
        assert any(x.startswith("235 ") for x in replies) and any(x.startswith("354 ") for x in replies)
        assert any(x.startswith("250 ") and " / " in x for x in replies)  # EHLO: one line

    imap = commands(trace(second), "IMAP")
    assert any(re.fullmatch(r"UID FETCH \d+ \(INTERNALDATE BODY\.PEEK\[HEADER\.FIELDS \(.*\)\]<0\.8192>\)", c)
               for c in imap), imap
    assert any(re.fullmatch(r"UID STORE \d+ \+FLAGS\.SILENT \(\\Deleted\)", c) for c in imap), imap
    assert any(re.fullmatch(r"UID EXPUNGE \d+", c) for c in imap), imap
    fetched = [text for proto, who, text in trace(second) if proto == "IMAP" and who == "S" and " FETCH " in text]
    assert fetched and all(re.fullmatch(r"\* \d+ FETCH \(.*\{\d+ bytes\}\)", f) for f in fetched), fetched


def test_an_imap_authenticate_dialogue_is_redacted(lab, tmp_path):
    """A non-ASCII password goes by AUTHENTICATE PLAIN: its continuation is secret."""
    user = lab.add_user("trace-umlaut@lab.test", "Pässwört-über-ünïcode")
    time.sleep(1.1)  # Dovecot looks at its users file at most once a second
    check = Checker(lab, tmp_path, user, None, "imaps", "smtp", "--name", "trace-authenticate", "-vvv")
    r = check()
    assert r.rc == 0 and r.text == "first probe sent, 1 in flight", r
    assert_only_known_lines(r)
    assert_secrets_absent(r.stdout, user, lab.users[user])
    imap = [text for proto, who, text in trace(r) if proto == "IMAP" and who == "C"]
    i = next(i for i, c in enumerate(imap) if " AUTHENTICATE " in c)
    assert re.fullmatch(r"\S+ AUTHENTICATE PLAIN", imap[i]) and imap[i + 1] == "****", imap


def test_an_smtp_auth_dialogue_with_a_challenge_is_redacted(lab, tmp_path):
    """CRAM-MD5 (preferred without TLS): the challenge is shown, our answer is not."""
    password = "cram-s3cret"
    pwfile = tmp_path / "smtp.pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    script = fs.SMTPScript({"AUTH": "334 PDEyMzQ1LjY3ODlAZmF1bHQudGVzdD4="}, auth="CRAM-MD5")
    check = Checker(lab, tmp_path, MONITOR, None, "imaps", "smtp", "--name", "trace-cram", "-vvv")
    with fs.FaultServer(script) as srv:
        r = check("--smtp-port", str(srv.port), "--smtp-tls", "none", "--smtp-user", "u@lab.test",
                  "--smtp-password-file", str(pwfile), "-t", "6")
    assert r.line.startswith("MAIL_ROUNDTRIP CRITICAL - SMTP auth failed: 502 5.5.2 Error: command not "
                             "recognized, no probe out yet"), r
    lines = [(who, text) for proto, who, text in trace(r) if proto == "SMTP"]
    i = lines.index(("C", "AUTH CRAM-MD5"))
    assert lines[i + 1:i + 4] == [("S", "334 PDEyMzQ1LjY3ODlAZmF1bHQudGVzdD4="), ("C", "****"),
                                  ("S", "502 5.5.2 Error: command not recognized")], lines
    # the server did get the answer; the trace only hides it
    answer = srv.received[srv.received.index("AUTH CRAM-MD5") + 1]
    assert answer and answer not in r.stdout
    assert_secrets_absent(r.stdout, "u@lab.test", password)
