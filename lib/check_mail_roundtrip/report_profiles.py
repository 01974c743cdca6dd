"""Which profiles a state directory holds for the report: their history files, names and thresholds.

A profile is there when its history file (``<stem>.history.csv``) or its
state file (``<stem>.json``, the stem ending in ``-`` and 10 hex digits) is:
a profile that has run but settled no probe yet has only the latter, and the
page says so.  The name shown is the one the state file records (else the
stem); the thresholds are those the check last ran with, as its state file
records them.  State files are read as the check reads them
(:func:`state.read_json`: no symlink followed, bounded in size); one that
cannot be read leaves the profile with its stem and the default thresholds.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .record import record
from .state import HISTORY, Damaged, StateError, is_state_name, read_json

MAX_PROFILES = 1000  # profiles listed at most (a state directory holds a few)


class ReportError(Exception):
    """Nothing can be reported: the words say why (and what to do)."""


@record(frozen=True)
class Profile:
    """One profile of the state directory."""

    name: str
    stem: str
    history: Optional[str]     # the history file's path, None when there is none yet
    warning: Optional[float]   # the thresholds its state file records (None: not recorded)
    critical: Optional[float]
    problem: str = ""          # why its state file could not be read, if it could not


def _recorded(data: Any) -> tuple[str, Optional[float], Optional[float]]:
    """(profile name, warning, critical) from a state file's JSON; ValueError when it is no state."""
    if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
        raise ValueError("names no profile")
    bounds = data.get("thresholds")
    bounds = bounds if isinstance(bounds, dict) else {}
    values = [bounds.get(k) for k in ("warning", "critical")]
    usable = [v if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e9 else None for v in values]
    return data["profile"], float(usable[0]) if usable[0] else None, float(usable[1]) if usable[1] else None


def _profile(directory: str, stem: str, has_history: bool) -> Profile:
    history = os.path.join(directory, stem + HISTORY) if has_history else None
    try:
        found = read_json(os.path.join(directory, stem + ".json"), _recorded)
    except (Damaged, StateError) as exc:
        return Profile(stem, stem, history, None, None, "state file %s.json %s" % (stem, exc))
    if found is None:
        return Profile(stem, stem, history, None, None)
    return Profile(found[0], stem, history, found[1], found[2])


def find_profiles(directory: str, wanted: Optional[list[str]] = None) -> list[Profile]:
    """The profiles in *directory*, by name; only those *wanted* (by name or stem) when given.

    ReportError when the directory cannot be listed, holds no profile, or a wanted one is not there."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except FileNotFoundError:
        raise ReportError("state directory %s does not exist (give the check's --state-dir)" % directory)
    except NotADirectoryError:
        raise ReportError("state directory %s is not a directory" % directory)
    except OSError as exc:
        raise ReportError("cannot list state directory %s: %s (run the report as the user the check runs as, "
                          "or as root)" % (directory, exc.strerror or exc))
    stems = {n[: -len(HISTORY)]: True for n in names if n.endswith(HISTORY) and len(n) > len(HISTORY)}
    for n in names:
        if is_state_name(n):
            stems.setdefault(n[:-5], False)
    if not stems:
        raise ReportError("no history in state directory %s: no profile has run there with a check that "
                          "keeps a history (--history-days above 0)" % directory)
    profiles = [_profile(directory, stem, has) for stem, has in sorted(stems.items())[:MAX_PROFILES]]
    if wanted:
        missing = [w for w in wanted if not any(w in (p.name, p.stem) for p in profiles)]
        if missing:
            raise ReportError("no profile %s in state directory %s; there are: %s" % (
                ", ".join(repr(m) for m in missing), directory, ", ".join(repr(p.name) for p in profiles)[:2000]))
        profiles = [p for p in profiles if p.name in wanted or p.stem in wanted]
    return sorted(profiles, key=lambda p: (p.name, p.stem))
