#!/usr/bin/env python3
"""What one steady-state check run costs in CPU, against importing its two libraries.

    sudo bash benchmarks/run run_cost                    # 20 runs of each
    sudo bash benchmarks/run run_cost --repeat 40 --counted 5
    sudo .venv/bin/python benchmarks/run_cost.py         # this alone, once installed

benchmarks/run installs what is missing (the mail lab, a virtualenv .venv
with the check's libraries) and runs this with the virtualenv's python; with
a Python that cannot run the check this says so and exits 1 at once.

Starts a private mail lab (tests/lab, needs root) and runs the real
``check_mail_roundtrip`` command (a subprocess, IMAPS and SMTP with STARTTLS
straight to the lab) a few times until it is in steady state: its secret and
state file exist, the Junk folder was found and is remembered, a returned
probe waits for each run, its bytecode is compiled (as an installed
plugin's is; PYTHONDONTWRITEBYTECODE is not passed on).  Then, in turn,
--repeat rounds of four runs, each a child process: the check trusting the
system's store (no --ca-file: the hashed certificate directory, a copy of the
system's links with the lab CA added, in SSL_CERT_DIR), as a run against a
mail server with a public certificate does; the check with --ca-file (the lab
CA alone); the check reading a whole CA bundle (the system's bundle with the
lab CA added, in SSL_CERT_FILE: what every run without --ca-file read before
the hashed directory was used); and ``python -c "import nagiosplugin, imapclient"``
with the same interpreter: the floor no run of the check can go below.  Each
check run collects the probe of the run before, looks into the Junk folder and
sends the next probe: the run a monitoring system makes every few minutes.
Measured for each child: user + system CPU seconds (os.wait4), so waiting for
the servers costs nothing and the lab's own work is not counted.

Then --counted rounds (default 3) of the check trusting the system's store
and of the floor under valgrind's callgrind, which counts the instructions
each executes in user space: a figure that, unlike CPU seconds, does not move
with what else the machine does (the lab's daemons working on the other core
while the check waits for them, the clock's speed), so the same work counts
the same in every run of the benchmark.

Printed: the median and the mean CPU seconds of each, and their ratios to the
floor; the instructions of each and their ratio.  Goal: the check trusting the
system's store at most 1.25 times the floor.

Not a timed test and not run by CI: it prints figures.  About two minutes.
"""

import argparse
import compileall
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from imap_cost import JUNK_METRIC, USER, wait_for_probe  # noqa: E402

from check_mail_roundtrip import tls  # noqa: E402
from tests.lab import MailLab, install, packages  # noqa: E402
from tests.lab.tls import link_hashed  # noqa: E402
from tools import checkcmd  # noqa: E402

PROG = "run_cost"
GOAL = 1.25
SETTLE = 3  # runs before measuring: the first creates the secret and state, finds the Junk folder
FLOOR = "import nagiosplugin, imapclient"
INSTRUCTIONS = re.compile(r"Collected : ([0-9,]+)")
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


def trust_store(lab, where):
    """A hashed certificate directory and a CA bundle under *where*, both the system's with the lab CA added.

    The directory holds the system directory's hashed links (to the same
    files) and the lab CA under its own hash, as update-ca-certificates would
    after the CA were installed; the bundle is OpenSSL's default bundle with
    the lab CA at its end.  (directory, bundle, number of system CAs linked)."""
    paths = ssl.get_default_verify_paths()
    certs = os.path.join(where, "certs")
    os.makedirs(certs)
    linked = 0
    if paths.openssl_capath and os.path.isdir(paths.openssl_capath):
        for entry in sorted(os.listdir(paths.openssl_capath)):
            if tls.is_hashed_name(entry):
                os.symlink(os.path.realpath(os.path.join(paths.openssl_capath, entry)), os.path.join(certs, entry))
                linked += 1
    link_hashed(certs, lab.ca_file, "lab-ca.pem")
    with open(lab.ca_file, "rb") as fh:
        lab_ca = fh.read()
    bundle = os.path.join(where, "bundle.pem")
    system_bundle = b""
    if paths.openssl_cafile and os.path.isfile(paths.openssl_cafile):
        with open(paths.openssl_cafile, "rb") as fh:
            system_bundle = fh.read()
    with open(bundle, "wb") as fh:
        fh.write(system_bundle.rstrip(b"\n") + b"\n" + lab_ca)
    return certs, bundle, linked


class Runs:
    """The check's steady-state runs, each way of trusting the lab CA, and the floor's, each with its CPU seconds."""

    def __init__(self, lab, state_dir, certs, bundle):
        self.lab = lab
        self.env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD=lab.users[USER])
        for var in ("CHECK_MAIL_ROUNDTRIP_STATE_DIR", "SSL_CERT_FILE", "SSL_CERT_DIR"):
            self.env.pop(var, None)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as an installed plugin's is
        self.argv = [sys.executable, checkcmd.COMMAND,
                     "-H", lab.host, "--smtp-port", str(lab.ports["smtp"]),
                     "--imap-port", str(lab.ports["imaps"]),
                     "--from", USER, "--state-dir", state_dir, "-t", "60"]
        empty = os.path.join(os.path.dirname(certs), "empty")
        os.makedirs(empty, exist_ok=True)
        self.ways = {  # how a run trusts the lab's certificate: (extra arguments, extra environment)
            "store": ([], {"SSL_CERT_DIR": certs}),
            "ca_file": (["--ca-file", lab.ca_file], {"SSL_CERT_DIR": empty}),
            "bundle": ([], {"SSL_CERT_FILE": bundle, "SSL_CERT_DIR": empty}),
        }
        self.last = None
        self.line = ""

    def check(self, way="store", steady=True, prefix=()):
        """One check run (after waiting for the last run's probe), trusting the lab CA *way*; its CPU seconds.

        A *steady* run must have collected a probe and looked into the Junk folder.
        *prefix*: a command the run goes through (valgrind)."""
        if self.last is not None:
            wait_for_probe(self.lab, self.last)
        extra, env = self.ways[way]
        rc, out, err, cpu = cpu_run([*prefix, *self.argv, *extra], dict(self.env, **env))
        line = out.split("\n", 1)[0]
        self.last = {"rc": rc, "output": (out + err)[-2000:]}
        if rc not in checkcmd.STATES or not out.startswith("MAIL_ROUNDTRIP "):
            raise RuntimeError("the check itself cannot run (exit code %d):\n%s" % (rc, (out + err)[-2000:]))
        if steady and (rc != 0 or "round trip" not in line or not JUNK_METRIC.search(out)):
            raise RuntimeError("a steady-state run (%s) did not collect a probe and look into the Junk "
                               "folder (exit code %d):\n%s" % (way, rc, (out + err)[-2000:]))
        self.line = line
        return cpu

    def floor(self, prefix=()):
        """One ``python -c "import nagiosplugin, imapclient"``; its CPU seconds.  *prefix* as for check()."""
        rc, out, err, cpu = cpu_run([*prefix, sys.executable, "-c", FLOOR], self.env)
        if rc != 0:
            raise RuntimeError("%s -c %r failed (exit code %d):\n%s" % (sys.executable, FLOOR, rc, err[-2000:]))
        return cpu


def measure(runs, repeat):
    """The check's bytecode compiled, SETTLE runs, then *repeat* rounds of a
    run of each way and a floor run: {name: [CPU seconds]}."""
    compileall.compile_dir(os.path.join(ROOT, "lib", "check_mail_roundtrip"), quiet=1)
    for _ in range(SETTLE):
        runs.check(steady=False)
    cpu = {way: [] for way in runs.ways}
    cpu["floor"] = []
    for _ in range(repeat):
        for way in runs.ways:
            cpu[way].append(runs.check(way))
        cpu["floor"].append(runs.floor())
    return cpu


def counted(run, log):
    """The instructions *run* (a function taking a command prefix) executed in user space, counted by callgrind.

    Unlike CPU seconds they do not depend on what else the machine does (the other
    core running the lab's daemons, the clock's speed): the same work counts the
    same.  Kernel work (system calls) is not counted."""
    if os.path.exists(log):
        os.unlink(log)
    run(("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--log-file=" + log))
    with open(log, encoding="utf-8", errors="replace") as fh:
        found = INSTRUCTIONS.search(fh.read())
    if not found:
        raise RuntimeError("callgrind counted nothing (see %s)" % log)
    return int(found.group(1).replace(",", ""))


def count(runs, repeat, where):
    """*repeat* runs of the check (system store) and of the floor under callgrind: {name: [instructions]}."""
    log = os.path.join(where, "callgrind.log")
    counts = {"store": [], "floor": []}
    for _ in range(repeat):
        counts["store"].append(counted(lambda prefix: runs.check("store", prefix=prefix), log))
        counts["floor"].append(counted(lambda prefix: runs.floor(prefix=prefix), log))
    return counts


def report_counts(counts):
    mi = lambda values: "%.1f M" % (statistics.median(values) / 1e6)  # noqa: E731
    print("Instructions executed in user space (callgrind), %d of each:" % len(counts["floor"]))
    for name, values in counts.items():
        print("  %-44s median %9s  (%s to %s)" % (NAMES[name], mi(values), f"{min(values):,}",
                                                f"{max(values):,}"))
    ratio = statistics.median(counts["store"]) / statistics.median(counts["floor"])
    print("ratio check (system store) / floor: %.2f (goal <= %.2f: %s)" % (ratio, GOAL, "met" if ratio <= GOAL else "NOT MET"))


NAMES = {
    "store": "check, system store (hashed directory)",
    "ca_file": "check, --ca-file (the lab CA alone)",
    "bundle": "check, whole CA bundle read (as before)",
    "floor": "floor: python -c %r" % FLOOR,
}


def report(cpu, line, linked):
    ms = lambda values, how: "%.1f ms" % (1000 * how(values))  # noqa: E731
    floor = statistics.median(cpu["floor"])
    print("CPU (user + system) of one run, %d of each, in turn; each check run a steady-state IMAP run "
          "with the Junk look-up (%d system CAs linked beside the lab CA):" % (len(cpu["floor"]), linked))
    for name, values in cpu.items():
        print("  %-44s median %9s  mean %9s  median/floor %.2f" % (
            NAMES[name], ms(values, statistics.median), ms(values, statistics.mean),
            statistics.median(values) / floor))
    ratio = statistics.median(cpu["store"]) / floor
    print("ratio check (system store) / floor: median %.2f (goal <= %.2f: %s), mean %.2f" % (
        ratio, GOAL, "met" if ratio <= GOAL else "NOT MET",
        statistics.mean(cpu["store"]) / statistics.mean(cpu["floor"])))
    print("last run: %s" % line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20, help="measured runs of each (default: 20)")
    ap.add_argument("--counted", type=int, default=3, metavar="N",
                    help="runs of the check and of the floor under callgrind, counting instructions "
                         "(default: 3; 0: none; valgrind is installed when missing)")
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
        if args.counted > 0:
            packages.ensure(["valgrind"], verbose=False)
        lab.start()
        with tempfile.TemporaryDirectory(prefix="%s-" % PROG) as tmp:
            certs, bundle, linked = trust_store(lab, tmp)
            runs = Runs(lab, os.path.join(tmp, "state"), certs, bundle)
            cpu = measure(runs, max(1, args.repeat))
            counts = count(runs, args.counted, tmp) if args.counted > 0 else None
        print()
        print("lab on %s, %s" % (lab.host, sys.executable))
        report(cpu, runs.line, linked)
        if counts:
            print()
            report_counts(counts)
        print("\n(benchmark took %.0fs)" % (time.monotonic() - t_start))
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:  # LabError among them
        failed = exc
    finally:
        lab.stop()
    if failed is not None:
        sys.exit("%s: FAILED: %s" % (PROG, failed))


if __name__ == "__main__":
    main()
