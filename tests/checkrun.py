"""Run the real check_mail_roundtrip command against the lab, as a monitoring system would.

    check = Checker(lab, tmp_path)
    r = check()                      # one invocation
    assert r.status == "OK"
    assert r.line == "MAIL_ROUNDTRIP OK - first probe sent, 1 in flight | ..."

Each Checker has its own state directory; options given to the Checker are
used for every run, options given to a call are added for that run only.
"""

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = os.path.join(ROOT, "check_mail_roundtrip")
STATES = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
_PERF = re.compile(r"([\w]+)=([0-9.]+)(s?);([^;\s]*);([^;\s]*);([^;\s]*);?([^;\s]*)")


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def line(self):
        return self.stdout.split("\n", 1)[0]

    @property
    def status(self):
        return STATES.get(self.rc, "rc=%s" % self.rc)

    @property
    def text(self):
        """The status text between 'STATE - ' and '|'."""
        head = self.line.split(" | ")[0]
        return head.split(" - ", 1)[1] if " - " in head else head

    @property
    def perf(self):
        """{label: value} from the perfdata (wherever it stands in the output)."""
        tail = self.stdout.split("|", 1)[1] if "|" in self.stdout else ""
        return {m.group(1): float(m.group(2)) for m in _PERF.finditer(tail)}

    @property
    def full_line(self):
        """The status line with its perfdata, also with -v (where nagiosplugin puts the
        perfdata after the long output)."""
        if "|" in self.line or "|" not in self.stdout:
            return self.line
        return "%s | %s" % (self.line, self.perfdata)

    @property
    def perfdata(self):
        return self.stdout.split("|", 1)[1].strip() if "|" in self.stdout else ""

    def __str__(self):
        return "rc=%s stdout=%r stderr=%r" % (self.rc, self.stdout, self.stderr[-2000:])


class Checker:
    """Invoke the command for the monitor mailbox of *lab*."""

    def __init__(self, lab, tmp_path, user="monitor@lab.test", to=None, imap="imaps", smtp="smtp",
                 *options):
        self.lab = lab
        self.state_dir = str(tmp_path / "state")
        self.user = user
        self.env = dict(os.environ)
        self.env.pop("CHECK_MAIL_ROUNDTRIP_STATE_DIR", None)
        self.env["CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"] = lab.users[user]
        imap_tls = {"imaps": "tls", "imap": "starttls"}[imap]
        smtp_tls = {"smtp": "starttls", "submission": "starttls", "smtps": "tls"}[smtp]
        self.args = [
            "-H", lab.host,
            "--smtp-port", str(lab.ports[smtp]), "--smtp-tls", smtp_tls,
            "--imap-port", str(lab.ports[imap]), "--imap-tls", imap_tls,
            "--ca-file", lab.ca_file,
            "--from", user,
            "--state-dir", self.state_dir,
        ]
        if to:
            self.args += ["--to", to]
        self.args += list(options)

    def __call__(self, *extra, env=None, timeout=90):
        environ = dict(self.env, **(env or {}))
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, COMMAND, *self.args, *extra],
            capture_output=True, text=True, env=environ, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        return Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)

    def until(self, predicate, *extra, timeout=20.0, interval=0.5, env=None):
        """Run repeatedly until predicate(result) holds (bounded); the last result."""
        deadline = time.monotonic() + timeout
        while True:
            r = self(*extra, env=env)
            if predicate(r) or time.monotonic() > deadline:
                return r
            time.sleep(interval)
