"""Which probe candidates a run reads, and what it remembers of those it leaves.

A candidate is a mail whose Subject holds the profile's key, which anyone
can compute from the profile name: a flood of forged candidates is cheap.
A run reads at most a fixed number of them.  When more are waiting it reads
first those that carry the id of a probe the check waits for (found by a
server-side search: an id's random part is known to the check alone), then
the newest of the rest; the older ones wait for the next runs.

What was not read is remembered as a few ranges of UIDs (the *backlog*,
all below the highest UID examined, the *floor*), so each candidate is read
once, and the memory stays small however many candidates wait.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MAX_BACKLOG = 20   # UID ranges remembered at most (beyond that the oldest two become one)
MAX_WANTED = 100   # probe ids searched for by name at most (the newest)


def uid_set(floor: int, backlog: Sequence[Sequence[int]]) -> str:
    """The IMAP UID set of what was not examined: the backlog's ranges and all above *floor*."""
    parts = ["%d:%d" % (lo, hi) if lo != hi else "%d" % lo for lo, hi in backlog]
    return ",".join(parts + ["%d:*" % (floor + 1)])


def unexamined(uid: int, floor: int, backlog: Sequence[Sequence[int]]) -> bool:
    """True if *uid* lies above *floor* or in a range of the backlog."""
    return uid > floor or any(lo <= uid <= hi for lo, hi in backlog)


def valid_backlog(value: object) -> bool:
    """True if *value* is a backlog as remembered: a list of [lo, hi] UID pairs."""
    return isinstance(value, list) and len(value) <= MAX_BACKLOG and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(u, int) and not isinstance(u, bool) for u in r)
        and 0 < r[0] <= r[1] for r in value)


def wanted_criteria(key: str, probe_ids: Sequence[str]) -> list[str]:
    """IMAP SEARCH criteria for a Subject that holds *key* followed by one of *probe_ids*
    (the first MAX_WANTED of them)."""
    ids = list(probe_ids)[:MAX_WANTED]
    terms = [word for pid in ids for word in ("SUBJECT", "%s.%s" % (key, pid))]
    return ["OR"] * (len(ids) - 1) + terms


def choose(candidates: Iterable[int], first: Iterable[int], limit: int) -> list[int]:
    """At most *limit* of *candidates*: those also in *first*, then the newest (highest) of
    the rest; sorted."""
    pool = sorted(set(candidates))
    chosen = sorted(set(first) & set(pool))[-limit:]
    taken = set(chosen)
    rest = [u for u in pool if u not in taken]
    room = limit - len(chosen)
    return sorted(chosen + (rest[-room:] if room > 0 else []))


def backlog(candidates: Iterable[int], read: Iterable[int], old: Sequence[Sequence[int]] = (),
            limit: int = MAX_BACKLOG) -> list[list[int]]:
    """The ranges of *candidates* not *read*, found in the *old* backlog's ranges and above
    the floor: each a run of unread candidates with no read one between, within one of
    those (so a range never spans UIDs examined before).  More than *limit* ranges: the
    oldest are joined (what lies between is read once more), never dropped."""
    done = set(read)
    ranges: list[list[int]] = []
    last = None  # where the last candidate was: None after a read one, else its part of the search
    for uid in sorted(set(candidates)):
        part = next((i for i, (lo, hi) in enumerate(old) if lo <= uid <= hi), len(old))
        if uid in done:
            last = None
        elif last != part:
            ranges.append([uid, uid])
            last = part
        else:
            ranges[-1][1] = uid
    while len(ranges) > limit:
        ranges[0:2] = [[ranges[0][0], ranges[1][1]]]
    return ranges


def newest(refs: Sequence, limit: int, notes: list[str], what: str) -> list:
    """The last *limit* of *refs* (oldest first in, the newest kept: the older ones wait for
    the next runs), with a note for -v when there are more; *what* names them."""
    if len(refs) <= limit:
        return list(refs)
    notes.append("%d %s; reading the newest %d this run, the older ones in the next runs"
                 % (len(refs), what, limit))
    return list(refs[-limit:])
