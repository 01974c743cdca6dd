"""The profile's history file: every settled probe appended as a CSV line, old lines pruned.

``<state file stem>.history.csv`` beside the state file, UTF-8, the header
:data:`HEADER`, then one line per probe whose fate a run settled (returned,
filed as Junk, declared lost, back late after that)::

    sent_utc,arrived_utc,rtt_s,outcome,folder,leg_out_s,leg_back_s,node,probe_id
    2026-12-06T23:03:21.000Z,2026-12-06T23:04:22.000Z,61.000,returned,INBOX,,,mon1,4f0a9c1d2e3b4a59

Times are UTC with milliseconds and ``Z``; ``arrived_utc``, ``rtt_s`` and
``folder`` are empty for a lost probe, the legs unless a reflector stamped
it.  A field holding ``,`` or ``"`` is quoted as CSV does; line ends and other
control characters never appear in a field.

- :func:`append` adds the lines of one collection in a single ``write``
  (O_APPEND, under the profile's lock, after the state that settled them is
  saved: a run killed in between leaves a line out, never writes one twice;
  a run with --wait collects, and appends, twice at most).  Only the
  last bytes are read: a last line without its line end (a run killed while
  writing) is cut off first.  A symlink, a directory or a file without a
  line end in its last :data:`TAIL` bytes in its place is set aside and the
  history starts afresh; a file of another user is not written to.
- :func:`prune` drops the lines sent before a cutoff by a streaming copy to a
  temp file and an atomic rename, in bounded memory and time (the run calls
  it once a day, :func:`due`).
- New files are 0600, owned like the state file (:func:`owners.adopt`).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence
from typing import BinaryIO, Callable, Optional

from .ledger import Settled
from .owners import StateError, access_problem, adopt, foreign
from .state import replace_with, set_aside

HEADER = "sent_utc,arrived_utc,rtt_s,outcome,folder,leg_out_s,leg_back_s,node,probe_id"
TAIL = 64 * 1024       # bytes read back from the end, at most, to find the last line end
PRUNE_EVERY = 86400.0  # seconds between prunings
CHECK_EVERY = 10000    # lines copied between looks at the clock while pruning
_STAMP = len("2026-12-06T23:04:22.123Z")
_WHAT = "history file"


class Unwritable(StateError):
    """The history file cannot be written (the words say why and what to do)."""


class OutOfTime(Exception):
    """Pruning did not end before its deadline (the file is left as it was)."""


def utc(seconds: float) -> str:
    """Epoch *seconds* as ISO 8601 UTC with milliseconds: 2026-12-06T23:04:22.123Z."""
    whole, ms = divmod(int(round(seconds * 1000)), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % ms


def _seconds(value: Optional[float]) -> str:
    return "" if value is None else "%.3f" % value


def _field(text: str) -> str:
    """*text* as one CSV field on one line: control characters made spaces, quoted where needed."""
    text = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)
    return '"%s"' % text.replace('"', '""') if "," in text or '"' in text else text


def line(probe: Settled, node: str) -> str:
    """The history line of *probe* (settled by *node*), without its line end."""
    arrived = "" if probe.arrived is None else utc(probe.arrived)
    return ",".join((utc(probe.sent_ms / 1000.0), arrived, _seconds(probe.rtt), probe.outcome, _field(probe.folder),
                     _seconds(probe.legs[0]), _seconds(probe.legs[1]), _field(node), probe.probe_id))


def append(path: str, settled: Sequence[Settled], node: str, notes: list[str]) -> Optional[str]:
    """Append the lines of *settled* to the history file *path* (the header first in a new
    file); notes for -v go to *notes*.  The problem in words when the file in *path*'s place
    was set aside (the lines are written to a fresh one), else None.  Unwritable when
    the file cannot be written (nothing of it changed)."""
    if not settled:
        return None
    data = "".join(line(p, node) + "\n" for p in settled).encode("utf-8")
    problem = None
    for _ in range(2):  # a second time after setting aside what was there
        fd, damage = _open(path)
        if fd is None:
            problem = set_aside(path, damage, _WHAT)
            continue
        try:
            _write(fd, path, data, notes)
            return problem
        except _Damaged as exc:
            problem = set_aside(path, str(exc), _WHAT)
        finally:
            os.close(fd)
    raise Unwritable("%s %s: cannot be set aside for good" % (_WHAT, path))


class _Damaged(Exception):
    """What stands in the history file's place is no history file (the words say why)."""


def _open(path: str) -> tuple[Optional[int], str]:
    """(descriptor opened for appending, "") or (None, why it is no history file); Unwritable
    when this user may not write it, or it belongs to a user this run must not trust."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise Unwritable(_WHAT + " " + access_problem(path, exc))
        if exc.errno == errno.ELOOP:
            return None, "is a symlink (not followed)"
        if exc.errno == errno.EISDIR:
            return None, "is a directory"
        raise Unwritable("cannot open %s %s: %s" % (_WHAT, path, exc.strerror or exc))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, "is not a regular file"
    planted = foreign(path, st, _WHAT)
    if planted:
        os.close(fd)
        raise Unwritable(planted)
    return fd, ""


def _write(fd: int, path: str, data: bytes, notes: list[str]) -> None:
    """Write *data* at the end of the open history file *fd*, after cutting off a torn last
    line (the header first into an empty file); a failed write is undone."""
    size = _repair(fd, path, notes)
    if size == 0:
        os.fchmod(fd, 0o600)
        adopt(fd, os.path.dirname(path) or ".")
        data = (HEADER + "\n").encode("ascii") + data
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, "only %d of %d bytes written" % (written, len(data)))
    except OSError as exc:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise Unwritable("cannot write %s %s: %s" % (_WHAT, path, exc.strerror or exc))


def _repair(fd: int, path: str, notes: list[str]) -> int:
    """The size of the history file *fd* once a last line without its line end (a run killed
    while writing) is cut off; _Damaged when there is no line end in its last TAIL bytes."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = max(0, size - TAIL)
    end = os.pread(fd, size - start, start).rfind(b"\n")
    if end < 0 and start > 0:
        raise _Damaged("has no line end in its last %d KiB (not a history file)" % (TAIL // 1024))
    keep = start + end + 1  # 0 when the torn line is the file's first
    os.ftruncate(fd, keep)
    notes.append("%s %s: an incomplete last line (%d bytes, from a run that was stopped while writing) "
                 "cut off" % (_WHAT, os.path.basename(path), size - keep))
    return keep


def due(pruned: Optional[float], now: float) -> bool:
    """Is a pruning due, the last one (epoch seconds, None: never) at *pruned*?"""
    return pruned is None or not 0 <= now - pruned < PRUNE_EVERY


def prune(path: str, cutoff: float, until: Callable[[], bool], notes: list[str]) -> None:
    """Drop the lines of the history file *path* sent before *cutoff* (epoch seconds), and
    lines that are no history lines, by a streaming copy that replaces the file atomically
    when something was dropped.  *until* says when time is up (asked every CHECK_EVERY
    lines): OutOfTime, the file left as it was.  Unwritable when the file cannot be read
    or replaced.  A file not there, or not a regular file, is left alone (:func:`append`
    sets the latter aside)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise Unwritable(_WHAT + " " + access_problem(path, exc))
        return
    counts = [0, 0, 0]  # lines kept, dropped as old, dropped as damaged
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        planted = foreign(path, st, _WHAT)
        if planted:
            raise Unwritable(planted)
        try:
            replace_with(path, lambda target: _copy(source, target, utc(cutoff).encode("ascii"), until, counts))
        except _Unchanged:
            return
        except OSError as exc:
            raise Unwritable("cannot prune %s %s: %s" % (_WHAT, path, exc.strerror or exc))
    notes.append("%s %s pruned: %d line(s) sent before %s dropped%s, %d kept"
                 % (_WHAT, os.path.basename(path), counts[1], utc(cutoff),
                    ", and %d damaged one(s)" % counts[2] if counts[2] else "", counts[0]))


class _Unchanged(Exception):
    """Pruning found nothing to drop: the file stays as it is."""


def _kept(raw: bytes, limit: bytes) -> Optional[bool]:
    """Is the history line *raw* kept (sent at or after the time *limit*)?  None: no history line."""
    stamp = raw[:_STAMP]
    if not raw.endswith(b"\n") or raw[_STAMP:_STAMP + 1] != b"," or stamp[10:11] != b"T" \
            or stamp[-1:] != b"Z" or not stamp[:4].isdigit():
        return None
    return stamp >= limit


def _copy(source: BinaryIO, target: BinaryIO, limit: bytes, until: Callable[[], bool], counts: list[int]) -> None:
    """The header and the lines of *source* that are kept (see :func:`_kept`) written to
    *target*, *counts* (kept, old, damaged) counted; _Unchanged when none was dropped."""
    target.write((HEADER + "\n").encode("ascii"))
    for n, raw in enumerate(source):
        if n and n % CHECK_EVERY == 0 and until():
            raise OutOfTime()
        verdict = _kept(raw, limit)
        if verdict is None and n == 0:
            continue  # the header
        counts[0 if verdict else 1 if verdict is not None else 2] += 1
        if verdict:
            target.write(raw)
    if not counts[1] and not counts[2]:
        raise _Unchanged()
