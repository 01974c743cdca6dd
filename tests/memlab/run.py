"""Run the real check in-process against a MailSystem, as tests/checkrun.py runs the command.

    mail = MailSystem()
    check = MemCheck(mail, tmp_path, "-w", "5")
    r = check("-v")                  # one run: a checkrun.Result (rc, stdout, line, perf, ...)
    mail.clock.advance(60)

The argv goes through the check's own parser and settings (cli.parser,
cli.settings_from: the options are the real ones); the run goes through
nagiosplugin (check.build, Check.main) with the mail system's transports and
its fake clock, on a fresh nagiosplugin Runtime (a singleton: the one before
is put back afterwards), with the output redacted as the command's is.  No
network, no subprocess, no sleeping.  -vvv (the protocol trace) is the
transports' business and is not offered here.
"""

import contextlib
import io
import json
import logging
import os
import re
import secrets

import nagiosplugin

from check_mail_roundtrip import cli
from check_mail_roundtrip.budget import Budget
from check_mail_roundtrip.check import build
from check_mail_roundtrip.redact import Stream
from check_mail_roundtrip.settings import Settings
from check_mail_roundtrip.state import file_stem
from tests.checkrun import Result

from .system import MONITOR, MailSystem

# The passwords of every run (registered with the redaction like any password).
PASSWORD = "memory-" + secrets.token_hex(16)
# The signing secret of every check in the fast tier, unless a test gives its own.
SECRET = secrets.token_hex(32)
# A CA certificate for --ca-file: nothing in memory speaks TLS, but one small CA
# file loads in a fraction of the time the system store takes.
CA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ca.pem")


def secret_file(directory: str, secret: str = SECRET) -> str:
    """A file holding *secret*, readable by its owner only (as the check demands)."""
    path = os.path.join(directory, "secret-%s" % secret[:8])
    if not os.path.exists(path):
        os.makedirs(directory, exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secret + "\n")
    return path


class MemCheck:
    """The check for the mailbox of *user* in *mail*: its own state directory under
    *tmp_path*; *options* are used for every run, those given to a call for that run."""

    def __init__(self, mail: MailSystem, tmp_path: object, *options: str, user: str = MONITOR,
                 state: str = "state", secret: str = SECRET) -> None:
        self.mail = mail
        self.user = user
        self.state_dir = os.path.join(str(tmp_path), state)
        self.secret = secret.encode("ascii")
        mail.mailbox(user)
        self.args = ["-H", "mx.memory.test", "--from", user, "--state-dir", self.state_dir,
                     "--secret-file", secret_file(str(tmp_path), secret), "--smtp-helo", "monitor.memory.test",
                     "--ca-file", CA_FILE, *options]

    def settings(self, *extra: str) -> Settings:
        """The Settings of a run with *extra* options, as the command makes them."""
        args = cli.parser().parse_args(self.args + list(extra))
        return cli.settings_from(args, None, {"imap-password": PASSWORD, "pop3-password": PASSWORD})

    def __call__(self, *extra: str) -> Result:
        settings = self.settings(*extra)
        clock = self.mail.clock
        check = build(settings, Budget(cli.internal_budget(settings.timeout), clock.monotonic),
                      self.mail.transports, clock.time)
        rc, out = run_check(check, settings.verbose)
        return Result(rc, out, "", 0.0)

    def state(self) -> dict:
        """The profile's state file, as JSON."""
        with open(os.path.join(self.state_dir, file_stem(self.settings().profile) + ".json")) as f:
            return json.load(f)

    def books(self) -> tuple:
        """(sent, returned, lost, pending, late) from the state file; that they balance is asserted."""
        state = self.state()
        t = state["totals"]
        assert t["sent"] == t["returned"] + len(state["pending"]) + t["lost"], state
        return t["sent"], t["returned"], t["lost"], len(state["pending"]), t["late"]


def sent_id(r: Result) -> str:
    """The id of the probe a run with -v sent."""
    m = re.search(r"^probe ([0-9a-f]{16}) (?:sent: 250 |kept as pending)", r.stdout, re.M)
    assert m, r
    return m.group(1)


def run_check(check: nagiosplugin.Check, verbose: int) -> tuple[int, str]:
    """(exit code, standard output) of *check* run by a fresh nagiosplugin Runtime, without its timeout."""
    saved = nagiosplugin.Runtime.instance
    nagiosplugin.Runtime.instance = None
    runtime = nagiosplugin.Runtime()
    out = io.StringIO()
    rc = -1   # Check.main always ends in SystemExit
    try:
        with contextlib.redirect_stdout(out):
            runtime.stdout = Stream()   # what the command prints goes through the redaction
            try:
                check.main(verbose=verbose, timeout=0)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else -1
    finally:
        logging.getLogger("nagiosplugin").removeHandler(runtime.logchan)
        nagiosplugin.Runtime.instance = saved
    return rc, out.getvalue()
