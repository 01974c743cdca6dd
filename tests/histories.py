"""History files for the report's tests and benchmark: written line by line as the check writes them.

    write(path, [probe(t0, 2.1), probe(t0 + 60, None, "lost"), ...])
    synthetic(path, lines=576_000, end=now)   # a year of 1-minute probes, a few lost and in Junk
"""

import json
import random
import time

from check_mail_roundtrip.history_read import HEADER


def utc(seconds):
    """2026-12-06T23:04:22.123Z for epoch *seconds*."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % int(round((seconds - whole) * 1000) % 1000)


def probe(sent, rtt, outcome=None, folder=None, leg_out="", leg_back="", node="", probe_id=None):
    """One history line (without newline): a probe sent at *sent* that came back after *rtt* seconds
    (None: lost)."""
    outcome = outcome or ("lost" if rtt is None else "returned")
    folder = folder if folder is not None else {"lost": "", "junk": "Junk"}.get(outcome, "INBOX")
    arrived = "" if rtt is None else utc(sent + rtt)
    rtt_s = "" if rtt is None else "%.3f" % rtt
    return ",".join([utc(sent), arrived, rtt_s, outcome, folder, str(leg_out), str(leg_back), node,
                     probe_id or "p%d" % int(sent * 1000)])


def write(path, lines, header=True):
    """Write a history file of *lines* (each without newline)."""
    with open(path, "w", encoding="utf-8") as fh:
        if header:
            fh.write(",".join(HEADER) + "\n")
        for line in lines:
            fh.write(line + "\n")


def write_state(path, profile, warning=None, critical=None, thresholds=True):
    """Write the profile's state file beside its history: its name and the thresholds it ran with."""
    data = {"schema": 1, "profile": profile}
    if thresholds:
        data["thresholds"] = {"warning": warning, "critical": critical}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)


def synthetic(path, lines, end, step=60.0, seed=18):
    """A history of *lines* probes every *step* seconds up to *end*: round trips of a few seconds with a
    slow evening now and then, one in 2,000 lost, one in 5,000 in Junk."""
    rnd = random.Random(seed)
    start = end - lines * step

    def one(i):
        sent = start + i * step
        roll = rnd.random()
        if roll < 0.0005:
            return probe(sent, None)
        rtt = rnd.lognormvariate(0.7, 0.35) + (30 * rnd.random() if (sent // 3600) % 24 == 19 else 0)
        return probe(sent, rtt, "junk" if roll < 0.0007 else "returned")

    write(path, (one(i) for i in range(lines)))
