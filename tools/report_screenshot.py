#!/usr/bin/env python3
"""docs/img/report.png: a report of a history the real check wrote against the mail lab, as Chromium shows it.

    sudo .venv/bin/python tools/report_screenshot.py                 # about 30 minutes
    sudo .venv/bin/python tools/report_screenshot.py --runs 20 --every 10 --output /tmp/report.png

Starts a private mail lab (tests/lab, needs root) and runs the real
``check_mail_roundtrip`` command (-w 10 -c 20 --lost-after 60) --runs times,
one run every --every seconds, while the lab delivers normally, then holds
every mail for 25 seconds, files the probes into Junk, and holds them long
enough for two to be counted lost before it releases them (they come back
late).  Then ``mail_roundtrip_report`` writes the page from the history the
check kept, and headless Chromium takes its screenshot (the top of the page:
the overview, the delivery table and the charts), written to --output as
Chromium wrote it.  The lab is stopped and removed at the end; the page is
left in a temporary directory, whose name is printed.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab import MailLab, browser, install  # noqa: E402
from tools import checkcmd  # noqa: E402

USER = "monitor@lab.test"
THRESHOLDS = ["-w", "10", "-c", "20", "--lost-after", "60"]


def phase(run, runs):
    """What the lab does to the mail around run number *run* of *runs*."""
    share = run / runs
    if 0.2 <= share < 0.3:
        return "delay"
    if 0.45 <= share < 0.5:
        return "junk"
    if 0.65 <= share < 0.75:
        return "hold"
    return "clear"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=120, help="check runs (default: 120)")
    ap.add_argument("--every", type=float, default=15.0, help="seconds between runs (default: 15)")
    ap.add_argument("--output", default=os.path.join(ROOT, "docs", "img", "report.png"),
                    help="the screenshot (default: docs/img/report.png)")
    ap.add_argument("--height", type=int, default=1800, help="screenshot height in pixels (default: 1800)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("report_screenshot: the mail lab needs root: sudo .venv/bin/python tools/report_screenshot.py")
    install(verbose=False)
    lab = MailLab()
    state = tempfile.mkdtemp(prefix="cmr-report-state-")
    pages = tempfile.mkdtemp(prefix="cmr-report-page-")
    os.chmod(pages, 0o755)
    env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD="")
    try:
        lab.start()
        env["CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD"] = lab.users[USER]
        base = ["-H", lab.host, "--smtp-port", str(lab.ports["smtp"]), "--imap-port", str(lab.ports["imaps"]),
                "--ca-file", lab.ca_file, "--from", USER, "--state-dir", state, *THRESHOLDS]
        current = "clear"
        for run in range(args.runs):
            wanted = phase(run, args.runs)
            if wanted != current:
                if current == "hold":
                    lab.release()
                lab.clear()
                {"delay": lambda: lab.delay(25), "junk": lab.junk, "hold": lab.hold, "clear": lambda: None}[wanted]()
                current = wanted
            started = time.monotonic()
            p = checkcmd.run(base, env=env)
            print("%3d %-5s %s" % (run, current, p.stdout.split("|")[0].strip() or p.stderr.strip()[-200:]))
            time.sleep(max(0.0, args.every - (time.monotonic() - started)))
        lab.release()
        lab.clear()
        time.sleep(5)
        checkcmd.run(base, env=env)  # collects what the last release brought
    finally:
        lab.stop()
    page = os.path.join(pages, "report.html")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "mail_roundtrip_report"), "--state-dir", state,
                        "--output", page], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        sys.exit("report_screenshot: the report failed: %s" % p.stderr.strip())
    browser.install()
    browser.screenshot(page, args.output, window=(1100, args.height))
    print("page %s, screenshot %s (%d bytes)" % (page, args.output, os.path.getsize(args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
