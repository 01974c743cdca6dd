#!/usr/bin/env python3
"""What one steady-state run costs on the IMAP side, as the mailbox grows.

    sudo bash benchmarks/run                             # 0, 10 000, 100 000 messages
    sudo bash benchmarks/run imap_cost --sizes 0 5000 --repeat 5
    sudo .venv/bin/python benchmarks/imap_cost.py        # this alone, once installed

benchmarks/run installs what is missing (the mail lab, a virtualenv .venv
with the check's libraries) and runs this with the virtualenv's python; with
a Python that cannot run the check this says so and exits 1 at once.

Starts a private mail lab (tests/lab, needs root), and for each size puts
that many other messages in the monitor INBOX and a tenth as many (size//10)
in its Junk folder, then runs the real ``check_mail_roundtrip`` command (a
subprocess) with a returned probe waiting to be collected, i.e. the run a
monitoring system makes every few minutes.  That run also looks into the
Junk folder (found once, then remembered: one more SELECT and UID SEARCH, no
download); as many runs again with ``--no-junk`` show what that look-up
costs.  The check talks IMAPS to a small byte-counting TCP relay on
127.0.0.1 that forwards to the lab (TLS passes through unchanged), so the
figures are the bytes that really crossed the wire, handshake included.

Printed per size (medians over --repeat runs):
  bytes in     bytes read from the IMAP server during one check run
               (Junk folder looked into, as by default)
  bytes out    bytes the check sent to the IMAP server
  bare in      bytes of a bare TLS + LOGIN + SELECT + LOGOUT session
  wall         wall time of the whole check invocation (interpreter start-up,
               IMAP, SMTP, state file included)
  select       the server's own time to open the folder (imaplib SELECT alone)
  expunge      the server's time for UID STORE \\Deleted + UID EXPUNGE of one message
  rest         wall time less SELECT and EXPUNGE: what the check costs besides
               (its own search looks only at mail newer than the last run's)
  full search  the server's time for a subject search over the whole folder
               (what a first run, or a run after UIDVALIDITY changed, costs)
  daily in     bytes read by the one run a day that also looks for abandoned
               profiles' probes (an extra UID SEARCH ... BEFORE), for comparison
  daily wall   wall time of that run
  no-junk in   bytes read by a steady-state run with --no-junk (same run otherwise)
  junk +in     bytes in less no-junk in: what the Junk look-up reads
  no-junk wall wall time of a run with --no-junk
  junk +wall   wall less no-junk wall
and the ratios 100k/0 (the largest size over the smallest).  Goal: the
bytes ratio at most 1.2, i.e. the check never downloads the mailbox.  Last,
the bytes in with / without the Junk look-up at the largest size.

Not a timed test and not run by CI: it prints figures.  A few minutes.
"""

import argparse
import imaplib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab import MailLab, install  # noqa: E402
from tools import checkcmd  # noqa: E402

USER = "monitor@lab.test"
GOAL = 1.2
WALL_GOAL = 0.5  # seconds the largest mailbox's run may take more than the empty one's
JUNK_SHARE = 10  # the Junk folder holds size // JUNK_SHARE filler messages
NO_JUNK = "--no-junk"
JUNK_METRIC = re.compile(r"(?:^|[\s'])junk=")  # the perfdata of a run that looked into Junk


class CountingRelay:
    """A TCP relay 127.0.0.1:<port> -> target that counts the bytes each way.

    Bounded: every socket has a timeout, at most *max_conns* connections are
    relayed, and close() ends the threads within a few seconds.
    """

    def __init__(self, target, timeout=60.0, max_conns=1000):
        self.target = target
        self.timeout = timeout
        self.max_conns = max_conns
        self.conns = []                 # [{"down": n, "up": n, "threads": [...]}]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                client, _addr = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if len(self.conns) >= self.max_conns:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=self.timeout)
            except OSError:
                client.close()
                continue
            client.settimeout(self.timeout)
            rec = {"down": 0, "up": 0, "threads": []}
            for src, dst, key in ((server, client, "down"), (client, server, "up")):
                t = threading.Thread(target=self._pump, args=(src, dst, rec, key), daemon=True)
                rec["threads"].append(t)
            with self.lock:
                self.conns.append(rec)
            for t in rec["threads"]:
                t.start()

    def _pump(self, src, dst, rec, key):
        try:
            while not self.stopping.is_set():
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                with self.lock:
                    rec[key] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def mark(self):
        with self.lock:
            return len(self.conns)

    def since(self, mark, wait=5.0):
        """(bytes down, bytes up, connections) of the connections after *mark*."""
        with self.lock:
            recs = self.conns[mark:]
        end = time.monotonic() + wait
        for rec in recs:
            for t in rec["threads"]:
                t.join(max(0.0, end - time.monotonic()))
        with self.lock:
            return sum(r["down"] for r in recs), sum(r["up"] for r in recs), len(recs)

    def close(self):
        self.stopping.set()
        self.listener.close()
        self.thread.join(2)
        for rec in self.conns:
            for t in rec["threads"]:
                t.join(2)


def imap_session(lab, port):
    conn = imaplib.IMAP4_SSL(lab.host, port, ssl_context=lab.ssl_context(), timeout=60)
    conn.login(USER, lab.users[USER])
    return conn


def wait_for_probe(lab, sent_by, timeout=30.0):
    """Poll (server-side search, directly at the lab) until a probe is in the INBOX.

    sent_by: the check run that should have sent it (shown if none comes).
    """
    deadline = time.monotonic() + timeout
    conn = imap_session(lab, lab.ports["imaps"])
    try:
        while True:
            conn.select("INBOX", readonly=True)
            typ, data = conn.uid("SEARCH", None, "SUBJECT", "MRTP1.")
            if typ == "OK" and data and data[0].split():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("no probe arrived in the monitor INBOX within %ss of this "
                                   "check run (exit code %d):\n%s"
                                   % (timeout, sent_by["rc"], sent_by["output"]))
            time.sleep(0.2)
    finally:
        conn.logout()


def server_cost(lab, relay, repeat):
    """Medians of: SELECT seconds, SEARCH seconds, bytes of a bare session.

    SELECT alone is the server's cost of opening the folder; the SEARCH is
    the check's own kind of query (a subject search for a profile key, here
    one no message has), timed in a separate session so the SELECT's bytes
    stay those of a bare login + SELECT + logout.
    """
    selects, searches, sizes = [], [], []
    for _ in range(repeat):
        mark = relay.mark()
        conn = imap_session(lab, relay.port)
        t0 = time.perf_counter()
        typ, _data = conn.select("INBOX", readonly=True)
        selects.append(time.perf_counter() - t0)
        conn.logout()
        if typ != "OK":
            raise RuntimeError("SELECT INBOX failed: %s" % typ)
        sizes.append(relay.since(mark)[0])
        conn = imap_session(lab, lab.ports["imaps"])
        conn.select("INBOX", readonly=True)
        t0 = time.perf_counter()
        typ, _data = conn.uid("SEARCH", None, "SUBJECT", "MRTP1.000000000000")
        searches.append(time.perf_counter() - t0)
        conn.logout()
        if typ != "OK":
            raise RuntimeError("UID SEARCH failed: %s" % typ)
    return statistics.median(selects), statistics.median(searches), statistics.median(sizes)


def expunge_cost(lab, repeat):
    """Median seconds of the server's UID STORE \\Deleted + UID EXPUNGE of one message
    (what a run does to remove the probe it collected)."""
    times = []
    for _ in range(repeat):
        conn = imap_session(lab, lab.ports["imaps"])
        try:
            typ, data = conn.append("INBOX", None, None, b"Subject: to be expunged\r\n\r\nx\r\n")
            uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1).decode()
            conn.select("INBOX")
            t0 = time.perf_counter()
            conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
            typ, _data = conn.uid("EXPUNGE", uid)
            times.append(time.perf_counter() - t0)
        finally:
            conn.logout()
        if typ != "OK":
            raise RuntimeError("UID EXPUNGE failed: %s" % typ)
    return statistics.median(times)


class Check:
    def __init__(self, lab, relay, state_dir):
        self.relay = relay
        self.state_dir = state_dir
        self.env = dict(os.environ, CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD=lab.users[USER])
        self.env.pop("CHECK_MAIL_ROUNDTRIP_STATE_DIR", None)
        self.args = [
            "-H", lab.host,
            "--smtp-port", str(lab.ports["smtp"]),
            "--imap-port", str(relay.port), "--ca-file", lab.ca_file,
            "--from", USER, "--state-dir", state_dir, "-t", "60",
        ]

    def make_daily_look_due(self):
        """Forget when the profile last looked for abandoned profiles (as on the next day)."""
        for name in os.listdir(self.state_dir):
            if name.endswith(".json"):
                path = os.path.join(self.state_dir, name)
                with open(path) as f:
                    data = json.load(f)
                data["swept"] = None
                with open(path, "w") as f:
                    json.dump(data, f)

    def __call__(self, *extra):
        """One check run, with *extra* arguments (e.g. "--no-junk") after the usual ones."""
        mark = self.relay.mark()
        t0 = time.perf_counter()
        p = checkcmd.run(self.args + list(extra), env=self.env, timeout=120)
        wall = time.perf_counter() - t0
        down, up, conns = self.relay.since(mark)
        if not checkcmd.is_result(p):
            raise RuntimeError("the check itself cannot run (exit code %d):\n%s"
                               % (p.returncode, checkcmd.output(p)))
        return {"rc": p.returncode, "line": p.stdout.split("\n", 1)[0], "stderr": p.stderr,
                "output": checkcmd.output(p), "wall": wall, "down": down, "up": up,
                "conns": conns, "junk": JUNK_METRIC.search(p.stdout) is not None}


def fill_to(lab, have, want, chunk=10000, folder="INBOX"):
    """Add filler messages until *folder* holds *want* others (in chunks)."""
    t0 = time.monotonic()
    while have < want:
        n = min(chunk, want - have)
        lab.fill(USER, n, folder=folder)
        have += n
    return time.monotonic() - t0


def steady_runs(lab, check, last, size, repeat, *extra):
    """*repeat* steady-state runs with *extra* arguments, each collecting a returned probe.

    last: the run before, whose probe the first of them collects.  A run
    must have looked into the Junk folder unless *extra* has --no-junk.
    """
    runs = []
    for _ in range(repeat):
        wait_for_probe(lab, last)
        r = last = check(*extra)
        what = "steady-state run%s with %d messages" % ("".join(" " + a for a in extra), size)
        if r["rc"] != 0 or "round trip" not in r["line"]:
            raise RuntimeError("%s did not collect a probe:\n%s\n%s"
                               % (what, r["line"], r["stderr"][-2000:]))
        if r["junk"] == (NO_JUNK in extra):
            raise RuntimeError("%s %s the Junk folder:\n%s"
                               % (what, "looked into" if r["junk"] else "did not look into", r["output"]))
        runs.append(r)
    return runs


def median_of(runs, key):
    """The median of *key* over check results *runs*."""
    return statistics.median(r[key] for r in runs)


def measure(lab, relay, check, size, repeat):
    """Steady-state runs, as many with --no-junk, the daily run, and the server's own costs."""
    last = check()               # settle: collect whatever is there, send a probe
    runs = steady_runs(lab, check, last, size, repeat)
    no_junk = steady_runs(lab, check, runs[-1], size, repeat, NO_JUNK)
    wait_for_probe(lab, no_junk[-1])
    check.make_daily_look_due()
    daily = check()
    if daily["rc"] != 0 or "round trip" not in daily["line"]:
        raise RuntimeError("the daily run with %d messages did not collect a probe:\n%s"
                           % (size, daily["output"]))
    sel, search, bare = server_cost(lab, relay, max(3, repeat))
    expunge = expunge_cost(lab, max(3, repeat))
    return {
        "size": size, "down": median_of(runs, "down"), "up": median_of(runs, "up"),
        "wall": median_of(runs, "wall"),
        "select": sel, "search": search, "bare": bare, "expunge": expunge, "conns": max(r["conns"] for r in runs),
        "line": runs[-1]["line"], "daily_down": daily["down"], "daily_wall": daily["wall"],
        "no_junk_down": median_of(no_junk, "down"), "no_junk_wall": median_of(no_junk, "wall"),
    }


def fmt_int(n):
    return f"{int(n):,}".replace(",", " ")


def report(rows):
    head = ("messages", "bytes in", "bytes out", "bare in", "wall s", "select s", "expunge s",
            "rest s", "full search s", "daily in", "daily wall s", "no-junk in", "junk +in",
            "no-junk wall s", "junk +wall s")
    table = [head]
    for r in rows:
        table.append((fmt_int(r["size"]), fmt_int(r["down"]), fmt_int(r["up"]), fmt_int(r["bare"]),
                      "%.3f" % r["wall"], "%.4f" % r["select"], "%.4f" % r["expunge"],
                      "%.3f" % rest(r), "%.4f" % r["search"],
                      fmt_int(r["daily_down"]), "%.3f" % r["daily_wall"],
                      fmt_int(r["no_junk_down"]), fmt_int(r["down"] - r["no_junk_down"]),
                      "%.3f" % r["no_junk_wall"], "%+.3f" % (r["wall"] - r["no_junk_wall"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines))
    lo, hi = rows[0], rows[-1]
    ratio = lambda key: hi[key] / lo[key] if lo[key] else float("nan")  # noqa: E731
    label = "%s/%s" % (short(hi["size"]), short(lo["size"]))
    print()
    print("ratios %s: bytes in %.3f (goal <= %.1f: %s), bytes out %.3f, wall %.2f, select %.1f, "
          "expunge %.1f, rest %.2f"
          % (label, ratio("down"), GOAL, "met" if ratio("down") <= GOAL else "NOT MET", ratio("up"),
             ratio("wall"), ratio("select"), ratio("expunge"), rest(hi) / rest(lo)))
    print("wall %s - wall %s: %.3f s (goal <= %.1f s: %s), of which the server's SELECT and EXPUNGE %.3f s"
          % (short(hi["size"]), short(lo["size"]), hi["wall"] - lo["wall"], WALL_GOAL,
             "met" if hi["wall"] - lo["wall"] <= WALL_GOAL else "NOT MET",
             hi["select"] + hi["expunge"] - lo["select"] - lo["expunge"]))
    print("Junk look-up: bytes in with/without at %s %s (one more SELECT and SEARCH), wall %+.3f s"
          % (short(hi["size"]), "%.3f" % (hi["down"] / hi["no_junk_down"]) if hi["no_junk_down"] else "nan",
             hi["wall"] - hi["no_junk_wall"]))
    print()
    for r in rows:
        print("%8s: %s" % (fmt_int(r["size"]), r["line"]))


def rest(r):
    """Wall time less the server's own SELECT and EXPUNGE: what the check's run costs besides."""
    return r["wall"] - r["select"] - r["expunge"]


def short(n):
    return "%dk" % (n // 1000) if n >= 1000 and n % 1000 == 0 else str(n)


def fill_folder(lab, have, want, folder):
    """Fill *folder* from *have* up to *want* filler messages; what it holds now, for the progress line."""
    took = fill_to(lab, have, want, folder=folder)
    total, _unseen = lab.count(USER, folder)
    return "%s other messages in %s (%d in all, filled in %.1fs)" % (
        fmt_int(want), "the INBOX" if folder == "INBOX" else "the %s folder" % folder, total, took)


def sized_runs(prog, port, make_check, measure_size, sizes, title, report, junk_share=None):
    """Start a lab and a counting relay to its *port* ("imaps", "pop3s"; or a function
    of the lab that starts a server of its own and gives its (host, port)); for
    each size, fill the INBOX up to it (and, with *junk_share*, the Junk
    folder up to size // junk_share) and append measure_size(lab, relay,
    check, size, added) to the rows; print *title* (with the lab's host) and
    report(rows).  Any failure ends the benchmark with a sentence from *prog*."""
    if os.geteuid() != 0:
        sys.exit("%s: the mail lab needs root (Postfix and Dovecot switch users): "
                 "sudo bash benchmarks/run %s" % (prog, prog))
    checkcmd.require(prog, "bash benchmarks/run (as root)")
    lab = MailLab()
    relay = failed = None
    t_start = time.monotonic()
    try:
        install(verbose=False)
        lab.start()
        relay = CountingRelay(port(lab) if callable(port) else (lab.host, lab.ports[port]))
        with tempfile.TemporaryDirectory(prefix="%s-" % prog) as tmp:
            check = make_check(lab, relay, os.path.join(tmp, "state"))
            rows, have, junk_have = [], 0, 0
            for size in sorted(sizes):
                filled = [fill_folder(lab, have, size, "INBOX")]
                added, have = size - have, size
                if junk_share:
                    filled.append(fill_folder(lab, junk_have, size // junk_share, "Junk"))
                    junk_have = size // junk_share
                print("%s; measuring..." % ", ".join(filled), file=sys.stderr, flush=True)
                rows.append(measure_size(lab, relay, check, size, added))
        print()
        print(title % lab.host)
        print()
        report(rows)
        print("\n(benchmark took %.0fs)" % (time.monotonic() - t_start))
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:  # LabError among them
        failed = exc
    finally:
        if relay is not None:
            relay.close()
        lab.stop()
    if failed is not None:
        sys.exit("%s: FAILED: %s" % (prog, failed))


def sizes_and_repeat(doc, sizes):
    """The options --sizes (default *sizes*) and --repeat of a benchmark whose docstring is *doc*."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=sizes,
                    help="numbers of other messages in the INBOX, ascending (default: %s)" % " ".join(map(str, sizes)))
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per size (default: 3)")
    return ap.parse_args()


def main():
    args = sizes_and_repeat(__doc__, [0, 10000, 100000])
    sized_runs("imap_cost", "imaps", Check,
               lambda lab, relay, check, size, _added: measure(lab, relay, check, size, args.repeat),
               args.sizes, "IMAP cost of one steady-state check run (a returned probe waiting), median of "
               "%d runs; lab on %%s, IMAPS through a counting relay" % args.repeat, report,
               junk_share=JUNK_SHARE)

if __name__ == "__main__":
    main()
