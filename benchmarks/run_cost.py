#!/usr/bin/env python3
"""What one steady-state check run costs in CPU, against importing its two libraries.

    sudo bash benchmarks/run run_cost                    # 20 runs of each
    sudo bash benchmarks/run run_cost --repeat 40
    sudo .venv/bin/python benchmarks/run_cost.py         # this alone, once installed

benchmarks/run installs what is missing (the mail lab, a virtualenv .venv
with the check's libraries) and runs this with the virtualenv's python; with
a Python that cannot run the check this says so and exits 1 at once.

Starts a private mail lab (tests/lab, needs root) and runs the real
``check_mail_roundtrip`` command (a subprocess, IMAPS and SMTP with STARTTLS
straight to the lab) a few times until it is in steady state: its secret and
state file exist, the Junk folder was found and is remembered, a returned
probe waits for each run, its bytecode is compiled (as an installed
plugin's is; PYTHONDONTWRITEBYTECODE is not passed on).  Then, alternately, --repeat such runs (each one
collects the probe of the run before, looks into the Junk folder and sends
the next probe: the run a monitoring system makes every few minutes) and
--repeat runs of ``python -c "import nagiosplugin, imapclient"`` with the
same interpreter: the floor no run of the check can go below.  Measured for
each child: user + system CPU seconds (os.wait4), so waiting for the servers
costs nothing and the lab's own work is not counted.

Printed: the median and the mean CPU seconds of the check and of the floor,
and their ratio.  Goal: the check's median at most 1.25 times the floor's.

Not a timed test and not run by CI: it prints figures.  About a minute.
"""

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from imap_cost import JUNK_METRIC, USER, wait_for_probe  # noqa: E402

from tests.lab import MailLab, install  # noqa: E402
from tools import checkcmd  # noqa: E402

PROG = "run_cost"
GOAL = 1.25
SETTLE = 3  # runs before measuring: the first creates the secret and state, finds the Junk folder
FLOOR = "import nagiosplugin, imapclient"
TIMEOUT = 120.0


def cpu_run(argv, env):
    """Run *argv* (stdin closed, output kept); (exit code, stdout, stderr, CPU seconds of the child).

    The CPU seconds are user + system time of that child alone (os.wait4),
    bounded: after TIMEOUT seconds the child is killed and this raises."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + TIMEOUT
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        while pid == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid == 0:
            p.kill()
            p.wait()
            raise RuntimeError("%s did not end within %gs" % (" ".join(argv[:3]), TIMEOUT))
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                usage.ru_utime + usage.ru_stime)


class Runs:
    """The check's steady-state runs and the floor's, each with its CPU seconds."""

    def __init__(self, lab, state_dir):
        self.lab = lab
        self.env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD=lab.users[USER])
        self.env.pop("CHECK_MAIL_ROUNDTRIP_STATE_DIR", None)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as an installed plugin's is
        self.argv = [sys.executable, checkcmd.COMMAND,
                     "-H", lab.host, "--smtp-port", str(lab.ports["smtp"]),
                     "--imap-port", str(lab.ports["imaps"]), "--ca-file", lab.ca_file,
                     "--from", USER, "--state-dir", state_dir, "-t", "60"]
        self.last = None
        self.line = ""

    def check(self, steady=True):
        """One check run (after waiting for the last run's probe); its CPU seconds.

        A *steady* run must have collected a probe and looked into the Junk folder."""
        if self.last is not None:
            wait_for_probe(self.lab, self.last)
        rc, out, err, cpu = cpu_run(self.argv, self.env)
        line = out.split("\n", 1)[0]
        self.last = {"rc": rc, "output": (out + err)[-2000:]}
        if rc not in checkcmd.STATES or not out.startswith("MAIL_ROUNDTRIP "):
            raise RuntimeError("the check itself cannot run (exit code %d):\n%s" % (rc, (out + err)[-2000:]))
        if steady and (rc != 0 or "round trip" not in line or not JUNK_METRIC.search(out)):
            raise RuntimeError("a steady-state run did not collect a probe and look into the Junk "
                               "folder (exit code %d):\n%s" % (rc, (out + err)[-2000:]))
        self.line = line
        return cpu

    def floor(self):
        """One ``python -c "import nagiosplugin, imapclient"``; its CPU seconds."""
        rc, out, err, cpu = cpu_run([sys.executable, "-c", FLOOR], self.env)
        if rc != 0:
            raise RuntimeError("%s -c %r failed (exit code %d):\n%s" % (sys.executable, FLOOR, rc, err[-2000:]))
        return cpu


def measure(runs, repeat):
    """The check's bytecode compiled, SETTLE runs, then *repeat* check runs and
    *repeat* floor runs, alternating."""
    compileall.compile_dir(os.path.join(ROOT, "lib", "check_mail_roundtrip"), quiet=1)
    for _ in range(SETTLE):
        runs.check(steady=False)
    checks, floors = [], []
    for _ in range(repeat):
        checks.append(runs.check())
        floors.append(runs.floor())
    return checks, floors


def report(checks, floors, line):
    ms = lambda values, how: "%.1f ms" % (1000 * how(values))  # noqa: E731
    print("CPU (user + system) of one run, %d of each, alternating:" % len(checks))
    print("  check (steady state, IMAP, Junk look-up)  median %s  mean %s" % (
        ms(checks, statistics.median), ms(checks, statistics.mean)))
    print("  floor (python -c %r)  median %s  mean %s" % (
        FLOOR, ms(floors, statistics.median), ms(floors, statistics.mean)))
    ratio = statistics.median(checks) / statistics.median(floors)
    print("ratio check/floor: median %.2f (goal <= %.2f: %s), mean %.2f" % (
        ratio, GOAL, "met" if ratio <= GOAL else "NOT MET", statistics.mean(checks) / statistics.mean(floors)))
    print("last run: %s" % line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20, help="measured runs of each (default: 20)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("%s: the mail lab needs root (Postfix and Dovecot switch users): "
                 "sudo bash benchmarks/run %s" % (PROG, PROG))
    checkcmd.require(PROG, "bash benchmarks/run (as root)")
    lab = MailLab()
    failed = None
    t_start = time.monotonic()
    try:
        install(verbose=False)
        lab.start()
        with tempfile.TemporaryDirectory(prefix="%s-" % PROG) as tmp:
            runs = Runs(lab, os.path.join(tmp, "state"))
            checks, floors = measure(runs, max(1, args.repeat))
        print()
        print("lab on %s, %s" % (lab.host, sys.executable))
        report(checks, floors, runs.line)
        print("\n(benchmark took %.0fs)" % (time.monotonic() - t_start))
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:  # LabError among them
        failed = exc
    finally:
        lab.stop()
    if failed is not None:
        sys.exit("%s: FAILED: %s" % (PROG, failed))


if __name__ == "__main__":
    main()
