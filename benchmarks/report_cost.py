#!/usr/bin/env python3
"""What mail_roundtrip_report costs on a long history: time to render, size of the page.

    sudo bash benchmarks/run report_cost                 # 576,000 lines, 3 runs
    sudo bash benchmarks/run report_cost --lines 100000 --repeat 5
    .venv/bin/python benchmarks/report_cost.py           # this alone, once installed (no root needed)

Writes a synthetic history into a temporary state directory: --lines probes
(default 576,000: 400 days of a probe every minute, what --history-days 400
keeps) as tests/histories.py makes them (round trips of a few seconds, a slow
evening peak, one in 2,000 lost, one in 5,000 in Junk, an outage of 90
minutes).  Then runs the real ``mail_roundtrip_report`` command (a
subprocess of the checkout's command, the interpreter's start-up included)
--repeat times writing the page and the badge, and once more also writing
the merged CSV.  Needs no lab and no root.

Printed: the history's size; the wall time and CPU (user + system, of the
child alone) of each run and their medians; the page's and the badge's
sizes.  Goals: under 5 s, a page under 2 MB.

Not a timed test and not run by CI: it prints figures.  About a minute.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "lib"))

from tests.histories import synthetic, write_state  # noqa: E402

COMMAND = os.path.join(ROOT, "mail_roundtrip_report")
GOAL_SECONDS, GOAL_BYTES = 5.0, 2 * 1024 * 1024
TIMEOUT = 300.0


def timed(argv):
    """Run *argv*; (exit code, its output, wall seconds), bounded by TIMEOUT."""
    start = time.monotonic()
    p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("the report did not end within %gs" % TIMEOUT)
    return p.returncode, (out + err).decode("utf-8", "replace"), time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=576_000, help="probes in the history (default: 576000)")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs (default: 3)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="report_cost-") as tmp:
        state = os.path.join(tmp, "state")
        os.mkdir(state, 0o700)
        stem = "monitor@example.org_monitor@example.org_smtp_mail.example.org_25_imap_mail.example.org_993_INBOX-0123456789"
        history = os.path.join(state, stem + ".history.csv")
        t0 = time.monotonic()
        synthetic(history, args.lines, time.time())
        write_state(os.path.join(state, stem + ".json"), stem[:-11].replace("_", " "), 120, 600)
        print("history: %d probes, %.1f MB (written in %.0fs)" % (
            args.lines, os.path.getsize(history) / 1e6, time.monotonic() - t0))
        page, badge, merged = (os.path.join(tmp, name) for name in ("report.html", "badge.svg", "all.csv"))
        base = [sys.executable, COMMAND, "--state-dir", state, "--output", page, "--badge", badge]
        walls, cpus = [], []
        for n in range(args.repeat):
            before = os.times()  # the child's CPU: what os.times() counts of waited-for children
            code, words, wall = timed(base)
            after = os.times()
            if code != 0:
                print("the report failed (exit %d): %s" % (code, words.strip()))
                return 1
            cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
            walls.append(wall)
            cpus.append(cpu)
            print("  run %d: wall %.2fs, CPU %.2fs" % (n + 1, wall, cpu))
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        size = os.path.getsize(page)
        print("render (page and badge): median wall %.2fs, CPU %.2fs (goal < %gs: %s)" % (
            wall, cpu, GOAL_SECONDS, "met" if wall < GOAL_SECONDS else "NOT met"))
        print("page: %d bytes = %.0f KB (goal < 2 MB: %s); badge: %d bytes" % (
            size, size / 1024, "met" if size < GOAL_BYTES else "NOT met", os.path.getsize(badge)))
        code, words, wall = timed(base + ["--csv", merged])
        print("with --csv too: wall %.2fs, CSV %.1f MB%s" % (
            wall, os.path.getsize(merged) / 1e6 if code == 0 else 0, "" if code == 0 else " (failed: %s)" % words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
