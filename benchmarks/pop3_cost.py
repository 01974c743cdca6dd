#!/usr/bin/env python3
"""What one steady-state run costs on the POP3 side, as the maildrop grows.

    sudo bash benchmarks/run pop3_cost                   # 0, 1 000, 10 000 messages
    sudo bash benchmarks/run pop3_cost --sizes 0 5000 --repeat 5
    sudo .venv/bin/python benchmarks/pop3_cost.py        # this alone, once installed

Like imap_cost.py (whose byte-counting relay, probe wait and check runner it
uses): starts a private mail lab (tests/lab, needs root), and for each size
puts that many other messages in the monitor INBOX, lets the check examine
them (POP3 cannot search: a run reads the header of each message it has not
seen before, at most 2000 a run, so a new batch takes a few runs once), then
runs the real ``check_mail_roundtrip --collect pop3`` command with a returned
probe waiting, i.e. the run a monitoring system makes every few minutes.  The
check talks POP3S to the counting relay on 127.0.0.1 (TLS passes through
unchanged), so the figures are the bytes that really crossed the wire,
handshake included.

Printed per size (medians over --repeat runs):
  bytes in     bytes read from the POP3 server during one check run
  bytes out    bytes the check sent to the POP3 server
  bare in      bytes of a bare TLS + USER/PASS + UIDL + QUIT session: the
               listing every run needs, whatever else it does
  ratio        bytes in / bare in
  wall         wall time of the whole check invocation (interpreter start-up,
               POP3, SMTP, state file included)
  once in      bytes read by the runs that examined the new messages once
               (one TOP n 0 each), and how many runs that took
Goal: the ratio stays near 1 (at most 1.2 at the largest size): beyond the
listing, a steady-state run reads the new probe's header only.

Not a timed test and not run by CI: it prints figures.  A few minutes.
"""

import argparse
import math
import os
import poplib
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from imap_cost import USER, Check, fmt_int, short, sized_runs, wait_for_probe  # noqa: E402

GOAL = 1.2
PER_RUN = 2000  # messages a run examines at most (pop3.MAX_READ)


class Pop3Check(Check):
    """The check collecting by POP3S through the relay."""

    def __init__(self, lab, relay, state_dir):
        super().__init__(lab, relay, state_dir)
        self.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD")
        self.env["CHECK_MAIL_ROUNDTRIP_POP3_PASSWORD"] = lab.users[USER]
        self.args = [
            "-H", lab.host, "--smtp-port", str(lab.ports["smtp"]),
            "--collect", "pop3", "--pop3-port", str(relay.port), "--ca-file", lab.ca_file,
            "--from", USER, "--state-dir", state_dir, "-t", "60",
        ]


def bare_listing(lab, relay, repeat):
    """Median bytes read by a bare POP3S session: TLS, USER/PASS, UIDL, QUIT."""
    sizes = []
    for _ in range(repeat):
        mark = relay.mark()
        try:
            conn = poplib.POP3_SSL(lab.host, relay.port, context=lab.ssl_context(), timeout=60)
            conn.user(USER)
            conn.pass_(lab.users[USER])
            conn.uidl()
            conn.quit()
        except poplib.error_proto as exc:
            raise RuntimeError("a bare POP3S session failed: %s" % exc) from exc
        sizes.append(relay.since(mark)[0])
    return statistics.median(sizes)


def measure(lab, relay, check, size, new, repeat):
    """The runs that examine *new* messages once, then *repeat* steady-state runs."""
    once, runs = [], []
    for _ in range(math.ceil(new / PER_RUN) + 1):  # every new message examined, a probe sent
        once.append(check())
    last = once[-1]
    for _ in range(repeat):
        wait_for_probe(lab, last)
        r = last = check()
        if r["rc"] != 0 or "round trip" not in r["line"]:
            raise RuntimeError("steady-state run with %d messages did not collect a probe:\n%s"
                               % (size, r["output"]))
        runs.append(r)
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    bare = bare_listing(lab, relay, max(3, repeat))
    return {"size": size, "down": med("down"), "up": med("up"), "wall": med("wall"), "bare": bare,
            "once": sum(r["down"] for r in once[:-1]), "once_runs": len(once) - 1, "line": runs[-1]["line"]}


def report(rows):
    head = ("messages", "bytes in", "bytes out", "bare in", "ratio", "wall s", "once in", "once runs")
    table = [head] + [(fmt_int(r["size"]), fmt_int(r["down"]), fmt_int(r["up"]), fmt_int(r["bare"]),
                       "%.3f" % (r["down"] / r["bare"]), "%.3f" % r["wall"], fmt_int(r["once"]),
                       str(r["once_runs"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines))
    hi = rows[-1]
    ratio = hi["down"] / hi["bare"]
    print()
    print("ratio bytes in / bare listing at %s: %.3f (goal <= %.1f: %s); bytes in %s/%s: %.2f"
          % (short(hi["size"]), ratio, GOAL, "met" if ratio <= GOAL else "NOT MET", short(hi["size"]),
             short(rows[0]["size"]), hi["down"] / rows[0]["down"]))
    print()
    for r in rows:
        print("%8s: %s" % (fmt_int(r["size"]), r["line"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 1000, 10000],
                    help="numbers of other messages in the INBOX, ascending (default: 0 1000 10000)")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per size (default: 3)")
    args = ap.parse_args()
    sized_runs("pop3_cost", "pop3s", Pop3Check,
               lambda lab, relay, check, size, added: measure(lab, relay, check, size, added, args.repeat),
               args.sizes, "POP3 cost of one steady-state check run (a returned probe waiting), median of "
               "%d runs; lab on %%s, POP3S through a counting relay" % args.repeat, report)

if __name__ == "__main__":
    main()
