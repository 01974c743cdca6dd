"""Read one profile's history file (``<stem>.history.csv``) into columns.

The file is streamed in chunks of CHUNK bytes, never read whole, and every
line is bounded (MAX_LINE bytes): a longer one is skipped without being held
in memory.  A chunk whose lines are all well formed is taken apart column by
column at once (the usual case, and what keeps a year of probes fast); a
chunk with anything unusual in it goes line by line, and a line that is not
a probe (wrong number of fields, a send time that is no time, an unknown
outcome, a round trip that is no number, not UTF-8) is skipped and counted,
with its number and why for the first few.  A last line without its newline
(a run writing now, or one that was killed) is left out and not counted.
The header line names the columns; further columns a later version may add
are ignored.  Only a regular file is opened, never through a symlink, and
at most MAX_LINES lines of it are read.

The columns (:class:`History`) keep what the report needs of each probe: its
send time as text in one fixed form (``2026-12-06T23:04:22.123Z``, which
sorts as time does: :func:`epoch` turns it into seconds), its round trip in
seconds (NaN for a lost probe), its outcome as a small number, folder, node
and probe id, and the legs (NaN when not stamped).  ``arrived_utc`` is not
used: the round trip is.
"""

from __future__ import annotations

import calendar
import csv
import errno
import math
import operator
import os
import re
import stat
import sys
import time
from array import array
from collections.abc import Iterator
from typing import Optional, cast

HEADER = ("sent_utc", "arrived_utc", "rtt_s", "outcome", "folder", "leg_out_s", "leg_back_s", "node", "probe_id")
OUTCOMES = ("returned", "junk", "lost", "late")
RETURNED, JUNK, LOST, LATE = range(4)
MAX_LINE = 4096           # bytes of one line; a longer line is damaged
MAX_LINES = 20_000_000    # lines of one file read at most (400 days of probes every 2 seconds)
CHUNK = 1 << 20
EXAMPLES = 5              # damaged lines named on the page, the rest only counted
NAN = float("nan")
_CODE = {name: code for code, name in enumerate(OUTCOMES)}
_SENT_COLUMN = re.compile(r"(?:\d{4}-[01]\d-[0-3]\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z\n)*").fullmatch
_COMMAS = operator.methodcaller("count", ",")
_DAY = operator.itemgetter(slice(0, 10))
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z").fullmatch
_DAYS: dict[str, float] = {}


class HistoryError(Exception):
    """The history file cannot be read at all: what is wrong with it, without its name."""


class History:
    """The probes of one history file, as columns; ``damaged`` counts the lines skipped."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.rtt = array("d")
        self.outcome = bytearray()
        self.folder: list[str] = []
        self.node: list[str] = []
        self.probe_id: list[str] = []
        self.leg_out = array("d")
        self.leg_back = array("d")
        self.lines: Optional[list[str]] = None  # the lines themselves, when asked for
        self.columns: tuple[str, ...] = HEADER  # the columns of the lines, as the header names them
        self.damaged = 0
        self.examples: list[str] = []  # "line 7: why" for the first EXAMPLES damaged lines
        self.truncated = False  # MAX_LINES reached: lines after them were not read

    def __len__(self) -> int:
        return len(self.sent)

    def damage(self, number: int, why: str) -> None:
        """Count line *number* as damaged for the reason *why*."""
        self.damaged += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append("line %d: %s" % (number, why))


def day_start(day: str) -> float:
    """Epoch seconds of 00:00 UTC of the date *day* (YYYY-MM-DD); ValueError when there is no such date."""
    start = _DAYS.get(day)
    if start is None:
        if len(day) != 10 or day[4] != "-" or day[7] != "-" or not (day[:4] + day[5:7] + day[8:]).isdigit():
            raise ValueError("%r is not a date" % day)
        year, month, mday = int(day[:4]), int(day[5:7]), int(day[8:])
        if year < 1970 or not (1 <= month <= 12 and 1 <= mday <= calendar.monthrange(year, month)[1]):
            raise ValueError("%r is not a date" % day)
        start = _DAYS[day] = float(calendar.timegm((year, month, mday, 0, 0, 0)))
    return start


def epoch(sent: str) -> float:
    """Epoch seconds of a send time in the fixed form of :attr:`History.sent`."""
    return day_start(sent[:10]) + int(sent[11:13]) * 3600 + int(sent[14:16]) * 60 + float(sent[17:23])


def sent_text(seconds: float) -> str:
    """Epoch *seconds* in the fixed form of :attr:`History.sent` (milliseconds cut, not rounded)."""
    whole = math.floor(seconds)
    millis = min(999, int((seconds - whole) * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % millis


def normal_time(text: str) -> str:
    """*text*, an ISO 8601 UTC time with Z, in the fixed form (milliseconds); ValueError when it is none."""
    m = _TIME(text)
    if not m or int(m.group(4)) > 23 or int(m.group(5)) > 59 or int(m.group(6)) > 59:
        raise ValueError("%r is not a UTC time like 2026-12-06T23:04:22.123Z" % text[:40])
    day_start(text[:10])
    return "%sT%s:%s:%s.%sZ" % (text[:10], m.group(4), m.group(5), m.group(6), (m.group(7) or "").ljust(3, "0")[:3])


def _seconds(text: str, what: str, empty_ok: bool) -> float:
    """A number of seconds from the field *text* (NaN when empty and that is allowed)."""
    if not text:
        if empty_ok:
            return NAN
        raise ValueError("%s is empty" % what)
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("%s %r is not a number of seconds" % (what, text[:40]))
    return value


def _open(path: str) -> int:
    """A descriptor of the regular file *path*, opened without following a symlink or waiting on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HistoryError("is a symlink (not followed)")
        raise HistoryError("cannot be read (%s)" % (exc.strerror or exc))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise HistoryError("is not a regular file")
    return fd


def chunks(path: str) -> Iterator[tuple[int, list[Optional[bytes]]]]:
    """(number of the first line, lines without their newlines) of *path*, a chunk at a time.

    A line longer than MAX_LINE is None.  A last line without a newline is
    not yielded.  Stops after MAX_LINES lines."""
    fd = _open(path)
    with os.fdopen(fd, "rb", buffering=0) as f:
        number, rest, oversized = 1, b"", False
        while number <= MAX_LINES:
            data = f.read(CHUNK)
            if not data:
                return
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data if len(data) <= MAX_LINE else b""
                oversized = oversized or len(data) > MAX_LINE
                continue
            parts = data[:cut].split(b"\n")
            lines: list[Optional[bytes]] = list(parts)
            if max(map(len, parts)) > MAX_LINE:
                lines = [part if len(part) <= MAX_LINE else None for part in parts]
            rest = data[cut + 1:]
            if oversized:
                lines[0], oversized = None, False
            if len(rest) > MAX_LINE:
                rest, oversized = b"", True
            lines = lines[:MAX_LINES + 1 - number]
            yield number, lines
            number += len(lines)


class _Reader:
    """What reading one file has learnt so far: the columns and the header's order."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.index = {name: i for i, name in enumerate(HEADER)}
        self.width = len(HEADER)

    def header(self, fields: list[str]) -> None:
        """Take the columns' order from the header line *fields*."""
        missing = [name for name in HEADER if name not in fields]
        if missing:
            raise HistoryError("the header line has no column %s" % ", ".join(missing))
        self.index = {name: i for i, name in enumerate(fields)}
        self.width = len(fields)
        self.history.columns = tuple(fields)

    def chunk(self, number: int, lines: list[Optional[bytes]]) -> None:
        """Add the probes of *lines* (the first is line *number*)."""
        if number == 1 and lines and lines[0] is not None:
            first = fields_of(lines[0].decode("utf-8", "replace").rstrip("\r"))
            if HEADER[0] in first:
                self.header(first)
                number, lines = 2, lines[1:]
        if not self.at_once(lines):
            for offset, raw in enumerate(lines):
                self.line(number + offset, raw)

    def at_once(self, lines: list[Optional[bytes]]) -> bool:
        """Add all of *lines* column by column when every one is well formed; False (nothing added) if not."""
        if not lines or None in lines:
            return not lines
        whole = cast("list[bytes]", lines)
        try:
            text = b"\n".join(whole).decode("utf-8")
        except UnicodeDecodeError:
            return False
        if '"' in text or "\r" in text:
            return False
        commas = self.width - 1
        if set(map(_COMMAS, text.split("\n"))) != {commas}:
            return False
        flat = text.replace("\n", ",").split(",")
        columns = [flat[k::self.width] for k in range(self.width)]
        i = self.index
        sent = columns[i["sent_utc"]]
        if not _SENT_COLUMN("\n".join(sent) + "\n"):
            return False
        try:
            for day in set(map(_DAY, sent)):
                day_start(day)
            outcome = bytes(map(_CODE.__getitem__, columns[i["outcome"]]))
            rtt = _floats(columns[i["rtt_s"]], outcome)
            legs = _floats(columns[i["leg_out_s"]]), _floats(columns[i["leg_back_s"]])
        except (KeyError, ValueError):
            return False
        h = self.history
        h.sent.extend(sent)
        h.rtt.extend(rtt)
        h.outcome.extend(outcome)
        h.folder.extend(map(sys.intern, columns[i["folder"]]))
        h.node.extend(map(sys.intern, columns[i["node"]]))
        h.probe_id.extend(columns[i["probe_id"]])
        h.leg_out.extend(legs[0])
        h.leg_back.extend(legs[1])
        if h.lines is not None:
            h.lines.extend(text.split("\n"))
        return True

    def line(self, number: int, raw: Optional[bytes]) -> None:
        """Add the probe of line *number*, or count it as damaged."""
        h = self.history
        if raw is None:
            return h.damage(number, "longer than %d bytes" % MAX_LINE)
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            return h.damage(number, "not UTF-8")
        fields = fields_of(line)
        if len(fields) != self.width:
            return h.damage(number, "%d fields, not %d" % (len(fields), self.width))
        i = self.index
        try:
            sent = normal_time(fields[i["sent_utc"]])
            outcome = _CODE.get(fields[i["outcome"]])
            if outcome is None:
                raise ValueError("outcome %r is none of %s" % (fields[i["outcome"]][:40], ", ".join(OUTCOMES)))
            rtt = _seconds(fields[i["rtt_s"]], "rtt_s", outcome == LOST)
            leg_out = _seconds(fields[i["leg_out_s"]], "leg_out_s", True)
            leg_back = _seconds(fields[i["leg_back_s"]], "leg_back_s", True)
        except ValueError as exc:
            return h.damage(number, str(exc))
        h.sent.append(sent)
        h.rtt.append(NAN if outcome == LOST else rtt)
        h.outcome.append(outcome)
        folder, node = fields[i["folder"]], fields[i["node"]]
        h.folder.append(sys.intern(folder))
        h.node.append(sys.intern(node))
        h.probe_id.append(fields[i["probe_id"]])
        h.leg_out.append(leg_out)
        h.leg_back.append(leg_back)
        if h.lines is not None:
            h.lines.append(line)


def fields_of(line: str) -> list[str]:
    """The fields of one CSV line (quoted ones too: a folder name with a comma, say); [] if unreadable."""
    if '"' not in line:
        return line.split(",")
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return []
    return rows[0] if rows else []


def _floats(column: list[str], outcome: Optional[bytes] = None) -> array:
    """Seconds from a column of numbers or empty fields (NaN); ValueError on anything else.

    With *outcome*: the round trips, given for every probe but the lost ones, whose value is NaN."""
    if outcome is None:
        if not any(column):
            return array("d", [NAN]) * len(column)
        values = array("d", [float(x) if x else NAN for x in column])
        if not all(v >= 0 and v != math.inf for v, x in zip(values, column) if x):
            raise ValueError("not a number of seconds")
        return values
    texts, lost = list(column), []
    at = outcome.find(LOST)
    while at >= 0:
        lost.append(at)
        texts[at] = "0"
        at = outcome.find(LOST, at + 1)
    values = array("d", map(float, texts))
    if not all(map((0.0).__le__, values)) or max(values, default=0.0) == math.inf:
        raise ValueError("not a number of seconds")
    for at in lost:
        values[at] = NAN
    return values


def read_history(path: str, keep_lines: bool = False) -> History:
    """The probes in the history file *path*; *keep_lines*: also each probe's line as it stands there."""
    history = History()
    if keep_lines:
        history.lines = []
    reader = _Reader(history)
    last = 0
    try:
        for number, lines in chunks(path):
            reader.chunk(number, lines)
            last = number + len(lines) - 1
    except OSError as exc:
        raise HistoryError("cannot be read (%s)" % (exc.strerror or exc))
    history.truncated = last >= MAX_LINES
    return history
