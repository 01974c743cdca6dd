"""State store: one JSON file per profile, locked, written atomically.

- The file is replaced atomically (temp file in the same directory, fsync,
  rename, fsync of the directory), so a crash never leaves it half-written.
- An exclusive ``flock`` on a separate ``.lock`` file serialises runs of one
  profile; waiting for it is bounded.
- A missing file starts fresh.  A damaged one (unreadable, not JSON, wrong
  shape, newer schema, a directory or a symlink at its place) is renamed
  aside under a timestamped name and the run goes on with a fresh state,
  reporting what happened.  Symlinks are never followed.
- The directory is created 0700, files 0600.  Run as root in a directory
  that belongs to another user (the monitoring user), new files are given to
  that user, so a test run as root never leaves files the monitoring user
  cannot use.
- A file or directory this user may not read or write is not damage: the
  run is UNKNOWN, naming the owner and the fix, and nothing is moved aside.
- Another local user must not be able to put files here (a secret, a state
  file, a lock, a token cache) and make the check report a false OK: a state
  directory anyone may write to (even 1777), or whose group may write to it
  (unless that group is the owner's own private group, which no other user is
  in), is refused (:func:`owners.open_to_others`), and so is a state, secret or token
  cache file that belongs to another user (:func:`owners.foreign`): trusted are the
  files of the user running the check and root's; a run as root trusts any
  owner (it gives the files it creates to the directory's owner, see
  :func:`owners.adopt`).
- Profiles that have not run for a long time are *abandoned*:
  :func:`abandoned` lists their state files and :func:`remove_abandoned`
  deletes them (and their history, see :mod:`history`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import stat
import time
from typing import Any, BinaryIO, Callable, NoReturn, Optional, TypeVar

from . import private_file
from .lazy_re import LazyPattern
from .owners import (
    StateError,
    _denied,
    _user,
    access_problem,
    adopt,
    open_to_others,
)
from .record import field, record

SCHEMA = 1
_COUNTERS = ("sent", "returned", "lost", "late")
HISTORY = ".history.csv"  # a profile's history file: its state file's stem and this
_BOUNDS = ("warning", "critical")


class LockTimeout(StateError):
    """Another run holds the profile's lock."""


@record()
class State:
    """What one profile remembers between runs.

    Times are epoch seconds (floats); probe send times are integer ms as in
    the probe token.
    """

    profile: str
    pending: dict[str, int] = field(default_factory=dict)   # id -> sent_ms, in flight
    unconfirmed: list[str] = field(default_factory=list)  # pending ids whose SMTP hand-over was not confirmed
    counted: dict[str, int] = field(default_factory=dict)   # id -> sent_ms, returned and counted
    lost: dict[str, int] = field(default_factory=dict)      # id -> sent_ms, declared lost
    last_success: Optional[float] = None          # arrival time of the newest success
    newest_returned_ms: Optional[int] = None      # send time of the newest probe back
    counted_floor_ms: Optional[int] = None        # counted ids this old were forgotten
    swept: Optional[float] = None                 # last look for abandoned profiles
    collector: dict[str, Any] = field(default_factory=dict)  # the collector's own memory (what it examined)
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    thresholds: dict[str, Optional[float]] = field(
        default_factory=lambda: dict.fromkeys(_BOUNDS))  # the round trip's -w/-c upper bounds (None: no plain bound)
    history_pruned: Optional[float] = None        # last pruning of the history file

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "profile": self.profile,
            "pending": self.pending,
            "unconfirmed": self.unconfirmed,
            "counted": self.counted,
            "lost": self.lost,
            "last_success": self.last_success,
            "newest_returned_ms": self.newest_returned_ms,
            "counted_floor_ms": self.counted_floor_ms,
            "swept": self.swept,
            "collector": self.collector,
            "totals": self.totals,
            "thresholds": self.thresholds,
            "history_pruned": self.history_pruned,
        }

    @classmethod
    def from_json(cls, data: Any, profile: str) -> State:
        """Validate and convert; raises ValueError on anything unexpected."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        schema = data.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise ValueError("no schema version")
        if schema > SCHEMA:
            raise ValueError("schema version %d is newer than this check (%d)" % (schema, SCHEMA))
        if schema < 1:
            raise ValueError("unknown schema version %d" % schema)
        if data.get("profile") != profile:
            raise ValueError("written for profile %r" % (data.get("profile"),))
        state = cls(profile)
        for name in ("pending", "counted", "lost"):
            table = data.get(name, {})
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and _is_time_ms(v) for k, v in table.items()
            ):
                raise ValueError("field %r is not a table of probe ids" % name)
            setattr(state, name, dict(table))
        unconfirmed = data.get("unconfirmed", [])
        if not isinstance(unconfirmed, list) or not all(isinstance(k, str) for k in unconfirmed):
            raise ValueError("field 'unconfirmed' is not a list of probe ids")
        state.unconfirmed = [k for k in unconfirmed if k in state.pending]
        state.last_success = _time_field(data, "last_success")
        state.swept = _time_field(data, "swept")
        state.history_pruned = _time_field(data, "history_pruned")
        bounds = data.get("thresholds", {})
        if not isinstance(bounds, dict) or not all(
                bounds.get(k) is None or (_is_number(bounds[k]) and 0 <= bounds[k] < _MAX_MS) for k in _BOUNDS):
            raise ValueError("field 'thresholds' is not a table of seconds")
        state.thresholds = {k: bounds.get(k) for k in _BOUNDS}
        memory = data.get("collector", {})
        if not isinstance(memory, dict):
            raise ValueError("field 'collector' is not a JSON object")
        state.collector = memory
        for name in ("newest_returned_ms", "counted_floor_ms"):
            value = data.get(name)
            if value is not None and not _is_time_ms(value):
                raise ValueError("field %r is not a time" % name)
            setattr(state, name, value)
        totals = data.get("totals", {})
        if not isinstance(totals, dict) or not all(
            _is_int(totals.get(k, 0)) and abs(totals.get(k, 0)) < _MAX_MS for k in _COUNTERS
        ):
            raise ValueError("field 'totals' is not a table of counters")
        state.totals = {k: totals.get(k, 0) for k in _COUNTERS}
        return state


def _time_field(data: dict[str, Any], name: str) -> Optional[float]:
    """The time (epoch seconds) or None in *data*[*name*]; ValueError when it is something else."""
    value = data.get(name)
    if value is not None and not (_is_number(value) and 0 <= value < _MAX_MS / 1000):
        raise ValueError("field %r is not a time" % name)
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_MAX_MS = 2 ** 53  # times beyond this are not times (and would overflow floats)


def _is_time_ms(v: Any) -> bool:
    return _is_int(v) and 0 <= v < _MAX_MS


def _no_constants(name: str) -> NoReturn:
    raise ValueError("%s is not a number" % name)


STEM_CHARS = 120  # readable part of a state file name, cut between fields only
_STATE_NAME = LazyPattern(r".+-[0-9a-f]{10}\.json\Z")


def is_state_name(name: str) -> bool:
    """Is *name* shaped like a state file's name (``<readable>-<10 hex>.json``, :func:`file_stem`)?"""
    return _STATE_NAME.match(name) is not None


def file_stem(profile: str) -> str:
    """A safe, stable file name for a profile: readable fields, then a hash.

    Runs of other characters become ``_``; when the name is long, whole
    fields (between ``_``) are dropped from the end, never cut in the middle;
    the hash keeps names unique.
    """
    readable = re.sub(r"[^A-Za-z0-9.@+-]+", "_", profile).strip("._")
    if len(readable) > STEM_CHARS:
        cut = readable[: STEM_CHARS + 1].rfind("_")
        readable = readable[: cut if cut > 0 else STEM_CHARS].rstrip("._")
    return "%s-%s" % (readable or "profile", _digest(profile))


def _digest(profile: str) -> str:
    return hashlib.sha256(profile.encode("utf-8")).hexdigest()[:10]


def _legacy_stem(profile: str) -> str:
    """The file name earlier versions used (60 characters, cut anywhere)."""
    readable = re.sub(r"[^A-Za-z0-9_.@+-]+", "_", profile).strip("._")[:60]
    return "%s-%s" % (readable or "profile", _digest(profile))


def ensure_directory(directory: str) -> None:
    """Create the state directory 0700 if missing; it must be a real directory we may use."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        if _denied(exc) and os.path.isdir(directory):
            raise StateError("state directory " + access_problem(directory, exc, directory))
        if _denied(exc):
            me = _user(os.geteuid())
            raise StateError("cannot create or reach state directory %s: %s; this check runs as %s: "
                             "e.g. install -d -o %s -m 0700 %s" % (directory, exc.strerror, me, me, directory))
        raise StateError("cannot create state directory %s: %s" % (directory, exc.strerror or exc))
    if not os.path.isdir(directory):
        raise StateError("state directory %s is not a directory" % directory)
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        raise StateError("state directory " + access_problem(
            directory, OSError(errno.EACCES, "Permission denied"), directory))
    problem = open_to_others(directory)
    if problem:
        raise StateError(problem)


def write_atomically(path: str, data: bytes, mode: int = 0o600, owner: Optional[tuple[int, int]] = None) -> None:
    """Replace *path* with *data* (bytes): temp file, fsync, rename, fsync dir.

    The file gets *mode* exactly, and as root *owner* (uid, gid) or else the
    directory's owner (see :func:`adopt`).
    """
    replace_with(path, lambda f: f.write(data), mode, owner)


def replace_with(path: str, fill: Callable[[BinaryIO], object], mode: int = 0o600,
                 owner: Optional[tuple[int, int]] = None) -> None:
    """Replace *path* atomically with what *fill* writes to the open temp file
    (*mode* and *owner* as :func:`write_atomically` says); an exception in
    *fill* leaves *path* as it was and no temp file behind."""
    directory = os.path.dirname(path) or "."
    tmp = "%s.tmp-%d-%d" % (path, os.getpid(), time.monotonic_ns())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # not narrowed by the umask
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        elif owner is None:
            adopt(fd, directory)
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def set_aside(path: str, reason: str, what: str = "state file") -> str:
    """Rename a damaged *path* (a *what*) aside under a timestamped name; the words saying so."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = "%s.damaged-%s-%d" % (path, stamp, os.getpid())
    try:
        os.rename(path, aside)
    except OSError as exc:
        raise StateError("%s %s %s and cannot be moved aside: %s" % (what, path, reason, exc.strerror or exc))
    return "%s %s; kept aside as %s, started afresh" % (what, reason, os.path.basename(aside))


def lock(lock_path: str, directory: str, timeout: float, holder: str) -> int:
    """An open descriptor holding the exclusive flock on *lock_path* (created
    0600), waiting at most *timeout* seconds; LockTimeout names *holder*
    ("another run of this check").  Closing the descriptor drops the lock."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if _denied(exc):
            raise StateError("lock file " + access_problem(lock_path, exc))
        raise StateError("cannot open lock file %s: %s" % (lock_path, exc.strerror or exc))
    adopt(fd, directory)
    deadline = time.monotonic() + max(0.0, timeout)
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.close(fd)
                raise LockTimeout("%s holds the lock %s (waited %.1fs)" % (holder, lock_path, timeout))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.2)


MAX_STATE_BYTES = 16 * 1024 * 1024
_T = TypeVar("_T")


class Damaged(Exception):
    """A state file that cannot be used; the words (for :func:`set_aside`) say why."""


def read_json(path: str, convert: Callable[[Any], _T]) -> Optional[_T]:
    """*convert* applied to the JSON in the state file *path*; None when there is no file.

    The file is read as the check's own files are (:func:`private_file.load`):
    a symlink is not followed, a FIFO is not waited on, only a regular file of
    a trusted owner is read, and at most MAX_STATE_BYTES of it.  Damaged when
    it is none, cannot be read, is not JSON (or nested too deep) or *convert*
    refuses it with ValueError; StateError when this user may not read it or
    another user owns it (not damage: nothing to move).
    """
    try:
        raw, _ = private_file.load(path, "state file", MAX_STATE_BYTES, private=False, follow=False, owned=True,
                                   on_denied=lambda path, exc: "state file " + access_problem(path, exc))
    except FileNotFoundError:
        return None
    except private_file.Unfit as exc:
        if exc.errno == errno.EFBIG:
            raise Damaged("is damaged (larger than %d MiB)" % (MAX_STATE_BYTES // (1024 * 1024)))
        raise Damaged("is not a regular file")
    except IsADirectoryError:
        raise Damaged("is a directory")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Damaged("is a symlink (not followed)")
        raise Damaged("cannot be read (%s)" % (exc.strerror or exc))
    try:
        return convert(json.loads(raw.decode("utf-8"), parse_constant=_no_constants))
    except (ValueError, RecursionError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
            raise Damaged("is not valid JSON (%s)" % reason)
        raise Damaged("is damaged (%s)" % reason)


class StateStore:
    """The state file of one profile in *directory*."""

    def __init__(self, directory: str, profile: str) -> None:
        self.directory = directory
        self.profile = profile
        stem = file_stem(profile)
        self.path = os.path.join(directory, stem + ".json")
        self.lock_path = os.path.join(directory, stem + ".lock")
        self.history_path = os.path.join(directory, stem + HISTORY)
        self.legacy_path = os.path.join(directory, _legacy_stem(profile) + ".json")
        self._lock_fd: Optional[int] = None

    # -- locking -----------------------------------------------------------
    def acquire(self, timeout: float) -> None:
        """Take the exclusive lock, waiting at most *timeout* seconds."""
        ensure_directory(self.directory)
        self._lock_fd = lock(self.lock_path, self.directory, timeout, "another run of this check")
        self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a run killed mid-write (only the lock holder writes)."""
        prefixes = tuple(os.path.basename(p) + ".tmp-" for p in (self.path, self.history_path))
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith(prefixes)]
        except OSError:
            return
        for name in names[:100]:
            try:
                os.unlink(os.path.join(self.directory, name))
            except OSError:
                pass

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- reading and writing -------------------------------------------------
    def load(self) -> tuple[State, Optional[str]]:
        """Read the state: (State, problem or None).

        A damaged file is kept aside and a fresh state returned, with a
        message saying so as *problem*.  A file this user may not read is
        not damaged: StateError (UNKNOWN), nothing moved.
        """
        self._adopt_legacy()
        try:
            state = read_json(self.path, lambda data: State.from_json(data, self.profile))
        except Damaged as exc:
            return State(self.profile), self._set_aside(str(exc))
        return (State(self.profile) if state is None else state), None

    def _adopt_legacy(self) -> None:
        """Take over the file an earlier version wrote under its old name."""
        if self.legacy_path == self.path or os.path.lexists(self.path):
            return
        try:
            os.rename(self.legacy_path, self.path)
        except OSError:
            pass

    def _set_aside(self, reason: str) -> str:
        return set_aside(self.path, reason)

    def save(self, state: State) -> None:
        """Write the state atomically (the lock must be held)."""
        data = json.dumps(state.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")
        try:
            write_atomically(self.path, data)
        except OSError as exc:
            if _denied(exc):
                raise StateError("state file " + access_problem(self.path, exc))
            raise StateError("cannot write state file %s: %s" % (self.path, exc.strerror or exc))


def abandoned(directory: str, profile: str, now: float, horizon: float, limit: int = 100) -> list[tuple[str, str]]:
    """State files of *other* profiles in *directory* untouched for *horizon* seconds.

    Only files this check wrote count: ``<stem>.json`` whose content names a
    profile that yields that very stem.  Returns [(profile, path)], at most
    *limit*.
    """
    found: list[tuple[str, str]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    mine = file_stem(profile) + ".json"
    for entry in entries:
        name = entry.name
        if len(found) >= limit:
            break
        if name == mine or not is_state_name(name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < horizon or st.st_size > 16 * 1024 * 1024:
                continue
            with open(entry.path, "rb") as f:
                other = json.loads(f.read().decode("utf-8"), parse_constant=_no_constants).get("profile")
        except (OSError, ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            continue
        if isinstance(other, str) and other != profile and file_stem(other) + ".json" == name:
            found.append((other, entry.path))
    return found


def remove_abandoned(path: str) -> bool:
    """Delete an abandoned profile's state file, history file and lock, if no run holds its lock.

    Returns True when removed.
    """
    lock_path = path[: -len(".json")] + ".lock"
    history = path[: -len(".json")] + HISTORY
    fd: Optional[int]
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = None
    except OSError:
        return False
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # it runs after all
        os.unlink(path)
        try:
            os.unlink(history)
        except FileNotFoundError:
            pass
        if fd is not None:
            os.unlink(lock_path)
        return True
    except OSError:
        return False
    finally:
        if fd is not None:
            os.close(fd)
