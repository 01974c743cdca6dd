"""Background helper of the mail lab's delay fault.

While the delay fault is set, Postfix puts every accepted mail on hold
(header_checks HOLD). This process watches the hold queue and releases each
message once it has been there for the given number of seconds, then asks
Postfix to deliver it at once. It exits when the fault is cleared or changed
(faults.json), when the lab's Postfix is gone, on SIGTERM, or after
--max-lifetime seconds. Runs detached, so it also works when the fault was
set from the command line.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

POLL = 0.1


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--max-lifetime", type=float, default=6 * 3600)
    args = ap.parse_args(argv)

    postfix_dir = os.path.join(args.dir, "postfix")
    hold_dir = os.path.join(args.dir, "spool", "hold")
    master_pid = os.path.join(args.dir, "spool", "pid", "master.pid")
    faults_file = os.path.join(args.dir, "faults.json")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def log(msg):
        print("%s releaser[%d]: %s" % (time.strftime("%H:%M:%S"), os.getpid(), msg),
              flush=True)

    def still_wanted():
        try:
            with open(faults_file) as fh:
                faults = json.load(fh)
        except (OSError, ValueError):
            return False
        if faults.get("path") != "delay" or float(faults.get("delay", 0)) != args.seconds:
            return False
        try:
            with open(master_pid) as fh:
                os.kill(int(fh.read().split()[0]), 0)
        except (OSError, ValueError, IndexError):
            return False
        return True

    log("delaying mail by %ss" % args.seconds)
    first_seen = {}
    deadline = time.monotonic() + args.max_lifetime
    checked = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now - checked >= 0.5:
            if not still_wanted():
                log("fault cleared or lab gone, exiting")
                return 0
            checked = now
        try:
            held = set(os.listdir(hold_dir))
        except OSError:
            held = set()
        for qid in held:
            first_seen.setdefault(qid, now)
        for qid in list(first_seen):
            if qid not in held:
                del first_seen[qid]
            elif now - first_seen[qid] >= args.seconds:
                subprocess.run(["postsuper", "-c", postfix_dir, "-H", qid],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                subprocess.run(["postqueue", "-c", postfix_dir, "-i", qid],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                log("released %s after %.2fs" % (qid, time.monotonic() - first_seen[qid]))
                del first_seen[qid]
        time.sleep(POLL)
    log("max lifetime reached, exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
