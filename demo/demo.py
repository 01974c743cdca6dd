#!/usr/bin/env python3
"""check_mail_roundtrip as a new admin sees it, against a private mail lab.

    sudo bash demo/run                   # installs what is missing, then this
    sudo bash demo/run --keep-lab        # leave the lab running afterwards
    sudo .venv/bin/python demo/demo.py   # this alone, once demo/run installed it

It needs a Python with the check's libraries (nagiosplugin, imapclient), as
in the virtualenv .venv that demo/run makes; with any other it says so and
exits 1 before starting anything.

Starts the project's mail lab (Postfix + Dovecot on 127.0.0.1, see
tests/lab; needs root), then runs the real command the way a monitoring
system would, printing every command line and its output:

1. the first run: nothing to collect yet, the first probe goes out (OK);
2. the next run: the probe came back, round trip and perfdata (OK), and
   the same with -v;
3. a fault: the mail server holds every mail for 8 seconds.  With -w 3 -c 6
   the probe in flight turns the check WARNING, then CRITICAL, while nothing
   has come back yet; when the mail is released the slow round trips are
   reported (CRITICAL), and the next run is OK again;
4. a spam filter files a probe into Junk: the check finds it there and
   warns (WARNING, probe delivered to Junk);
5. --wait: the run waits for its own probe and reports its round trip;
6. mail_roundtrip_report writes a page of these runs from the history the
   check kept (the page stays after the demo; the demo says where).

Passwords reach the check through the environment, never the command line.
The lab is stopped and removed at the end (unless --keep-lab).
"""

import argparse
import email.header
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab import MailLab, install  # noqa: E402
from tools import checkcmd  # noqa: E402
from tools.checkcmd import STATES  # noqa: E402

USER = "monitor@lab.test"
ENV_PASSWORD = "CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"
DELAY = 8


class DemoError(RuntimeError):
    """The demo could not go on; the message says why."""


def say(text=""):
    print(text, flush=True)


def title(text):
    say()
    say("=" * 78)
    say(text)
    say("=" * 78)


def show(argv, env_note=None):
    line = " ".join(shlex.quote(a) for a in argv)
    say("$ %s%s" % (env_note + " " if env_note else "", line))


class Demo:
    def __init__(self, lab, state_dir):
        self.lab = lab
        self.env = dict(os.environ, **{ENV_PASSWORD: lab.users[USER]})
        self.env.pop("CHECK_MAIL_ROUNDTRIP_STATE_DIR", None)
        self.base = [
            "-H", lab.host,
            "--smtp-port", str(lab.ports["smtp"]),      # Postfix, STARTTLS
            "--imap-port", str(lab.ports["imaps"]),     # Dovecot, IMAPS
            "--ca-file", os.path.relpath(lab.ca_file, ROOT) if lab.ca_file.startswith(ROOT) else lab.ca_file,
            "--from", USER,
            "--state-dir", state_dir,
        ]

    def check(self, *extra):
        args = self.base + list(extra)
        show(["./check_mail_roundtrip"] + args)
        p = checkcmd.run(args, env=self.env)
        if not checkcmd.is_result(p):
            raise DemoError("the check gave no result (exit code %d):\n%s"
                            % (p.returncode, checkcmd.output(p)))
        out = p.stdout.rstrip("\n")
        say(out)
        if p.stderr.strip():
            say("[stderr] " + p.stderr.strip())
        say("[exit code %d: %s]" % (p.returncode, STATES.get(p.returncode, "?")))
        return p.returncode, out

    def lab_cli(self, *args):
        argv = ["python3", "-m", "tests.lab", *args, "--dir", self.lab.dir]
        show(argv)
        p = subprocess.run([sys.executable] + argv[1:], cwd=ROOT, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        if p.stdout.strip():
            say(p.stdout.strip())
        if p.returncode != 0:
            raise DemoError("lab command failed: %s" % p.stderr.strip())

    def wait_for_probes(self, n=1, timeout=30.0, folder="INBOX"):
        t0 = time.monotonic()
        self.lab.wait_for(USER, lambda msgs: sum(is_probe(m["subject"]) for m in msgs) >= n,
                          folder=folder, timeout=timeout)
        say("(%d probe%s now in the monitor %s, after %.1fs of waiting)"
            % (n, "" if n == 1 else "s", folder, time.monotonic() - t0))

    def pause(self, seconds, why):
        say("(waiting %ds: %s)" % (seconds, why))
        time.sleep(seconds)


def is_probe(subject):
    """Does a raw (possibly RFC 2047 encoded) Subject carry a probe token?"""
    try:
        subject = str(email.header.make_header(email.header.decode_header(subject)))
    except Exception:  # noqa: BLE001  (undecodable: look at it as it is)
        pass
    return "MRTP1." in subject


def expect(result, state, what):
    rc, out = result
    if STATES.get(rc) != state:
        raise DemoError("expected %s for %s, got exit code %d:\n%s" % (state, what, rc, out))


def run(lab, state_dir):
    d = Demo(lab, state_dir)
    say("Lab: Postfix SMTP on %s:%d, Dovecot IMAPS on %s:%d, CA %s"
        % (lab.host, lab.ports["smtp"], lab.host, lab.ports["imaps"], lab.ca_file))
    say("Mailbox %s; the check sends probes to it and collects them from it." % USER)
    say()
    say("The IMAP password goes in the environment, not on the command line:")
    say("$ export %s='********'   # %s's lab password" % (ENV_PASSWORD, USER))

    title("1. First run: nothing to collect yet; the first probe goes out")
    expect(d.check(), "OK", "the first run")

    title("2. Next run: the probe came back; round trip time and perfdata")
    d.wait_for_probes()
    expect(d.check(), "OK", "the round trip")
    say()
    say("The same with -v: what was found, and where the state lives")
    d.wait_for_probes()
    expect(d.check("-v"), "OK", "the round trip with -v")

    title("3. A fault: the server holds every mail for %d seconds (thresholds -w 3 -c 6)" % DELAY)
    d.wait_for_probes()
    d.lab_cli("fault", "delay", str(DELAY))
    say()
    say("This run still collects the probe that came back before the fault; its")
    say("successor is held by the server:")
    expect(d.check("-w", "3", "-c", "6"), "OK", "the run before the delay bites")
    say()
    d.pause(4, "the probe has now been in flight longer than -w 3")
    expect(d.check("-w", "3", "-c", "6"), "WARNING", "a probe in flight > 3s")
    say()
    d.pause(3, "and now longer than -c 6")
    expect(d.check("-w", "3", "-c", "6"), "CRITICAL", "a probe in flight > 6s")
    say()
    say("The fault is cleared and the held mail delivered; the slow round trips")
    say("are reported when the probes come back:")
    d.lab_cli("fault", "release")
    d.wait_for_probes(3)
    expect(d.check("-w", "3", "-c", "6"), "CRITICAL", "the slow round trips")
    say()
    say("Mail flows normally again:")
    d.wait_for_probes()
    expect(d.check("-w", "3", "-c", "6"), "OK", "the recovery")

    title("4. A spam filter files a probe into Junk: it is found there, WARNING")
    d.lab_cli("fault", "junk")
    d.wait_for_probes()
    expect(d.check(), "OK", "the run before the filter bites")
    d.wait_for_probes(1, folder="Junk")
    d.lab_cli("fault", "clear")
    expect(d.check(), "WARNING", "a probe in Junk")

    title("5. --wait: the run's own probe is measured in the same run (0 in flight)")
    d.wait_for_probes()
    expect(d.check("--wait", "10", "-t", "25"), "OK", "the round trip with --wait")

    title("6. A report of these runs, from the history the check kept")
    report_dir = tempfile.mkdtemp(prefix="cmr-demo-report-")
    os.chmod(report_dir, 0o755)
    argv = ["./mail_roundtrip_report", "--state-dir", state_dir, "--output", os.path.join(report_dir, "report.html"),
            "--badge", os.path.join(report_dir, "badge.svg")]
    show(argv)
    p = subprocess.run([sys.executable] + argv, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       timeout=120)
    if p.returncode != 0:
        raise DemoError("the report failed (exit code %d): %s" % (p.returncode, (p.stdout + p.stderr).strip()))
    say("The page (one file, no script, nothing from outside: any web server can serve it):")
    say("  %s/report.html   (open file://%s/report.html in a browser)" % (report_dir, report_dir))
    say("  %s/badge.svg     (a status badge for a wiki or a dashboard)" % report_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab running afterwards")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("demo: the mail lab needs root (Postfix and Dovecot switch users): "
                 "sudo bash demo/run")
    checkcmd.require("demo", "bash demo/run (as root)")
    t0 = time.monotonic()
    lab = MailLab(keep=args.keep_lab)
    state_dir = tempfile.mkdtemp(prefix="cmr-demo-state-")
    ok = False
    try:
        install(verbose=False)  # Postfix, Dovecot, openssl: a no-op when present
        title("Starting the mail lab (Postfix + Dovecot on 127.0.0.1, private config)")
        lab.start()
        run(lab, state_dir)
        ok = True
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # LabError, DemoError among them
        say()
        say("demo: FAILED: %s" % exc)
    finally:
        if args.keep_lab and lab.dir:
            say()
            say("The lab keeps running in %s (state in %s); stop it with:" % (lab.dir, state_dir))
            say("$ python3 -m tests.lab stop --dir %s" % lab.dir)
        else:
            lab.stop()
            subprocess.run(["rm", "-rf", "--", state_dir], check=False)
            say()
            say("Lab stopped and removed.")
    if not ok:
        sys.exit(1)
    say("Demo finished in %.0fs." % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
