#!/usr/bin/env python3
"""What one steady-state run costs with Microsoft Graph for both legs, as the mailbox grows.

    sudo bash benchmarks/run graph_cost                  # 0 and 5 000 other messages
    sudo bash benchmarks/run graph_cost --sizes 0 5000 20000 --repeat 5
    sudo .venv/bin/python benchmarks/graph_cost.py       # this alone, once installed

Starts a private mail lab (tests/lab, needs root) and its Graph stand-in
(tests/lab/graph.py: Graph v1.0 as documented, backed by the lab's Dovecot
and Postfix), and for each size puts that many other messages in the monitor
INBOX and a tenth as many in its Junk folder, then runs the real
``check_mail_roundtrip --collect graph --send graph`` (a subprocess) with a
returned probe waiting to be collected: the run a monitoring system makes
every few minutes.  The check talks HTTPS to a byte-counting TCP relay in
front of the stand-in, so the bytes are those that crossed the wire, TLS
included; the token is the one cached in the state directory, as in any
run but the first of the hour.

Printed per size (medians over --repeat runs):
  requests     HTTP requests to Graph in one run (goal: at most 6)
  conns        TLS connections to Graph in one run (goal: 1)
  bytes in     bytes read from Graph during the run
  bytes out    bytes the check sent to Graph
  wall         wall time of the whole check invocation
and the ratio of the bytes in at the largest size to those at the smallest
(goal: at most 1.2: other mail never crosses the wire).

Not a timed test and not run by CI: it prints figures.  About a minute.
"""

import atexit
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from imap_cost import JUNK_SHARE, USER, Check, fmt_int, short, sized_runs, sizes_and_repeat, steady_runs  # noqa: E402

from tests.lab.graph import GraphStandIn  # noqa: E402

GOAL, MAX_REQUESTS = 1.2, 6
STANDIN: list[GraphStandIn] = []  # the stand-in of this benchmark, once started


def start_standin(lab):
    """Start the Graph stand-in on *lab*; the (host, port) the relay forwards to."""
    standin = GraphStandIn(lab).start()
    atexit.register(standin.stop)
    STANDIN.append(standin)
    return lab.host, standin.port


class GraphCheck(Check):
    """The check with both legs by Graph, through the relay; its runs also count the stand-in's requests."""

    def __init__(self, lab, relay, state_dir):
        super().__init__(lab, relay, state_dir)
        client_id, secret = lab.tokens.client("monitor")
        self.env.pop("CHECK_MAIL_ROUNDTRIP_IMAP_PASSWORD")
        self.env["CHECK_MAIL_ROUNDTRIP_OAUTH2_CLIENT_SECRET"] = secret
        self.args = [
            "--collect", "graph", "--send", "graph", "--graph-url", "https://%s:%d" % (lab.host, relay.port),
            "--ca-file", lab.ca_file, "--oauth2-token-url", lab.tokens.token_url, "--oauth2-client-id", client_id,
            "--from", USER, "--state-dir", state_dir, "-t", "60",
        ]

    def __call__(self, *extra):
        standin = STANDIN[-1]
        standin.reset()
        result = super().__call__(*extra)
        result.update(requests=len(standin.requests), graph_conns=standin.connections)
        return result


def measure(lab, relay, check, size, repeat):
    """*repeat* steady-state runs, each collecting the probe the run before sent (and looking into Junk)."""
    runs = steady_runs(lab, check, check(), size, repeat)  # the first: collect whatever is there, send a probe
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {"size": size, "requests": max(r["requests"] for r in runs), "conns": max(r["graph_conns"] for r in runs),
            "down": med("down"), "up": med("up"), "wall": med("wall"), "line": runs[-1]["line"]}


def report(rows):
    head = ("messages", "requests", "conns", "bytes in", "bytes out", "wall s")
    table = [head] + [(fmt_int(r["size"]), str(r["requests"]), str(r["conns"]), fmt_int(r["down"]),
                       fmt_int(r["up"]), "%.3f" % r["wall"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    print("\n".join(lines))
    lo, hi = rows[0], rows[-1]
    ratio = hi["down"] / lo["down"] if lo["down"] else float("nan")
    requests, conns = max(r["requests"] for r in rows), max(r["conns"] for r in rows)
    print()
    print("bytes in %s/%s: %.3f (goal <= %.1f: %s); requests at most %d (goal <= %d: %s); connections at most %d "
          "(goal 1: %s)" % (short(hi["size"]), short(lo["size"]), ratio, GOAL, "met" if ratio <= GOAL else "NOT MET",
                            requests, MAX_REQUESTS, "met" if requests <= MAX_REQUESTS else "NOT MET", conns,
                            "met" if conns == 1 else "NOT MET"))
    print()
    for r in rows:
        print("%8s: %s" % (fmt_int(r["size"]), r["line"]))


def main():
    args = sizes_and_repeat(__doc__, [0, 5000])
    sized_runs("graph_cost", start_standin, GraphCheck,
               lambda lab, relay, check, size, _added: measure(lab, relay, check, size, args.repeat),
               args.sizes, "Graph cost of one steady-state check run (a returned probe waiting), median of %d "
               "runs; lab on %%s, Graph's HTTPS through a counting relay" % args.repeat, report,
               junk_share=JUNK_SHARE)


if __name__ == "__main__":
    main()
