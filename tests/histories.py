"""History files for the report's tests and benchmark: written line by line as the check writes them.

    write(path, [probe(t0, 2.1), probe(t0 + 60, None, "lost"), ...])
    synthetic(path, lines=576_000, end=now)   # a year of 1-minute probes, a few lost and in Junk
"""

import json
import random
import time

from check_mail_roundtrip.history_read import HEADER
from check_mail_roundtrip.state import file_stem


def utc(seconds):
    """2026-12-06T23:04:22.123Z for epoch *seconds*."""
    whole, ms = divmod(int(round(seconds * 1000)), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % ms


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
    """A history of *lines* probes, one every *step* seconds up to *end*, as a busy year looks: round trips
    of a few seconds, slower in the evening peak, one in 2,000 lost (a few of them back late), one in
    5,000 filed as Junk, and an outage of 90 minutes in the last week."""
    rnd = random.Random(seed)
    start = end - lines * step
    outage = (end - 3 * 86400 - 7200, end - 3 * 86400 - 1800)
    late = []

    def one(i):
        sent = start + i * step
        roll = rnd.random()
        if roll < 0.0005 or outage[0] <= sent < outage[1]:
            if roll < 0.0001:
                late.append(probe(sent, 3600 + 600 * rnd.random(), "late", probe_id="p%d" % int(sent * 1000)))
            return probe(sent, None)
        evening = 19 <= (sent // 3600) % 24 < 21
        rtt = rnd.lognormvariate(0.7, 0.35) + (rnd.expovariate(1 / 15.0) if evening else 0.0)
        return probe(sent, rtt, "junk" if roll < 0.0007 else "returned")

    write(path, (one(i) for i in range(lines)))
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in late)

KNOWN_NOW = 1796000000.0  # 2026-11-30T00:53:20Z, the report's --until for the known history
KNOWN_UNTIL = "2026-11-30T00:53:20"
KNOWN_PROFILE = "monitor@lab.test>monitor@lab.test smtp:127.0.0.1:25 imap:127.0.0.1:993/INBOX"
KNOWN_STEM = file_stem(KNOWN_PROFILE)


def known(directory):
    """A profile with probes whose figures are known, its state file recording -w 30 -c 90.

    Last 24 h: round trips of 1 to 100 s (one probe each), 6 lost of which one came back after
    4000 s; 3 days before: 4 in Junk after 2 s; 5 days before: 10 back after 1 s; 40 days
    before: one back after 700 s."""
    now, hour, day = KNOWN_NOW, 3600.0, 86400.0
    lines = [probe(now - 23 * hour + i * 600, float(i + 1), node="mon1") for i in range(100)]
    lines += [probe(now - 6 * hour + i * 60, None, probe_id="lost%d" % i) for i in range(6)]
    lines += [probe(now - 3 * day - i * 60, 2.0, "junk") for i in range(4)]
    lines += [probe(now - 5 * day - i * 60, 1.0) for i in range(10)]
    lines += [probe(now - 40 * day, 700.0)]
    lines.append(probe(now - 6 * hour, 4000.0, "late", probe_id="lost0"))
    write("%s/%s.history.csv" % (directory, KNOWN_STEM), lines)
    write_state("%s/%s.json" % (directory, KNOWN_STEM), KNOWN_PROFILE, 30, 90)
